"""Ray sweeps as the Sweep page sees them: the driver started as its own process (launch_driver,
which ends a driver that has not taken its sweep in time), which sweeps run on a cluster
(cluster_sweep), and stopping one (cancel_sweep)."""
from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import signal
import socket
import subprocess
import time

from core.config import SWEPT_FIELDS, TrainConfig, field_specs
from core.data.mnist import data_dir
from core.store.folder import DRIVER_INFO, DRIVERS, LOCK_NAME, checkpoints_dir, lock_held, read_json, read_owner
from core.training.jobs import signal_owner, spawn
from core.training.rayaddress import ClusterError, check_address

STOP_GRACE_S = 5.0    # seconds a driver the Sweep page ends has between SIGTERM and SIGKILL
def cluster_sweep(sweep_id: str, root=None) -> dict | None:
    """{'address', 'host', 'pid', 'active'} of a sweep sent to a Ray cluster, None for a local one."""
    if not re.fullmatch(r"sweep-[0-9]{8}-[0-9]{6}", sweep_id):  # ids come from config.json: no paths
        return None
    folder = checkpoints_dir(root) / DRIVERS / sweep_id
    info = read_json(folder / DRIVER_INFO)
    if info is None:
        return None
    return {**info, "active": lock_held(folder)}


def cancel_sweep(sweep_id: str, root=None) -> bool:
    """Ask the driver of a Ray sweep to cancel its trials (SIGTERM through a pidfd, as
    core.training.jobs.cancel). False if no driver runs it any longer."""
    folder = checkpoints_dir(root) / DRIVERS / sweep_id
    info = cluster_sweep(sweep_id, root)
    if not info or not info["active"]:
        return False
    if info.get("host") != socket.gethostname():
        raise ClusterError(f"sweep {sweep_id} is driven from {info.get('host')}: stop it there (Ctrl-C)")
    pid = read_owner(folder / LOCK_NAME)
    return pid is not None and signal_owner(folder, pid)


def sweep_args(base: TrainConfig, lrs: list[float], batch_sizes: list[int]) -> list[str]:
    """`python -m core sweep` options that rebuild `base` field for field (every knob the driver
    must pass on, not only those the Sweep page shows), with the grid's values."""
    args = ["sweep"]
    for spec in field_specs():
        value = getattr(base, spec.name)
        if spec.name in SWEPT_FIELDS or value is None:
            continue
        if isinstance(value, bool):
            args.append(spec.flag if value else "--no-" + spec.flag[2:])
        else:
            args += [spec.flag, repr(value) if isinstance(value, float) else str(value)]
    return args + ["--lr", ",".join(map(repr, lrs)), "--batch-size", ",".join(map(str, batch_sizes))]


def launch_driver(base: TrainConfig, lrs: list[float], batch_sizes: list[int], address: str,
                  root=None, data_root=None, wait_s: float = 60.0) -> str:
    """Start `python -m core sweep ... --ray ADDRESS` as its own process (it outlives the page),
    wait until it has created the sweep's runs, and return the sweep id: from then on the driver
    holds <store>/.ray/<sweep id>/lock and the Sweep page's Cancel reaches it.

    The address is checked here first (check_address: refused within 10 s), so a refused one
    starts no driver and creates nothing in the store. A driver that gives up raises ClusterError
    with its own one-line message. A driver that has not taken the sweep within `wait_s` seconds,
    or that this call leaves in any other way (an exception, an interrupt), is ended: SIGTERM,
    then SIGKILL after STOP_GRACE_S seconds; no driver the page cannot cancel is left running."""
    address = check_address(address)
    store = checkpoints_dir(root).resolve()
    logs = store / DRIVERS
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"launch-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.log"
    process = spawn(["--checkpoints", str(store), "--data", str(data_dir(data_root).resolve()),
                     *sweep_args(base, lrs, batch_sizes), "--ray", address, "--quiet"], log_path=log_path)
    taken = False
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            lines = log_path.read_text(errors="replace").splitlines()
            started = _sweep_started(lines)
            if started:
                taken = True
                return started
            if process.poll() is not None:
                errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
                raise ClusterError(errors[-1] if errors else f"the sweep's driver stopped (exit status "
                                   f"{process.returncode}); its output is in {log_path}")
            time.sleep(0.2)
        how = end_driver(process)
        late = _sweep_started(log_path.read_text(errors="replace").splitlines())
        raise ClusterError(f"the cluster at {address} did not take the sweep within {wait_s:.0f} s, so its driver "
                           f"was stopped ({how})" + (f" as it sent {late}, whose runs it cancelled" if late else
                                                     "; no run was created") + f" (its output: {log_path})")
    finally:
        if not taken:
            end_driver(process)


def _sweep_started(lines: list[str]) -> str | None:
    """The sweep id in the driver's 'sweep <id>: N runs on the Ray cluster ...' line, once written."""
    started = [line.split()[1].rstrip(":") for line in lines if line.startswith("sweep ") and len(line.split()) > 1]
    return started[0] if started else None


def end_driver(process, grace: float = None) -> str:
    """End a driver process (its own session: its whole process group) and reap it: SIGTERM,
    which it answers by leaving before it creates any run (or by cancelling its trials), then
    SIGKILL after `grace` seconds (STOP_GRACE_S) if it is still there (inside ray.init a driver
    does not see signals). Returns what ended it ('' if it had already ended)."""
    grace = STOP_GRACE_S if grace is None else grace
    if process.poll() is not None:  # ended, and reaped: its pid may be another process's now
        return ""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
        return "SIGTERM"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"SIGKILL, {grace:g} s after a SIGTERM it did not act on"
    except ProcessLookupError:  # ended between the poll and the signal
        process.wait()
        return "SIGTERM"
