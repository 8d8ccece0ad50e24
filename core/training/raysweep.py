"""Sweeps on a Ray cluster: `python -m core sweep ... --ray ADDRESS` (or `--ray auto`).

Each grid point is one Ray task with declared resources (1 CPU; a fraction of a GPU where the
cluster has GPUs) that trains its run with core.training.loop, writing into the same run store as
every other run. The store must be one folder that every node reads and writes at the same
path (NFS or the like): before any run is created, a task on each node looks for a marker the
driver wrote there, and a store some node cannot see is refused.

Who owns a run (its core.store.runs lock) at each moment:
- the driver (the `sweep --ray` process) creates the runs and holds their locks while they
  wait for a worker: a waiting run reads 'queued', and 'interrupted' if the driver dies;
- a trial that starts asks for its run (the run's `handover` file), the driver lets go and
  the trial takes the lock;
- a worker node that dies takes its processes with it and the kernel drops their locks. Ray
  runs the task again on another node (`max_retries`), and the retry resumes the run from its
  last finished epoch (train_state.pt): each grid point ends as exactly one run.
Cancel (Ctrl-C or SIGTERM to the driver, the Sweep page's button) cancels the Ray tasks; a
running trial saves what it has and its run reads 'cancelled'.

The address is checked before a driver starts and before anything is created (check_address):
an empty or malformed one, or one where nothing or something other than a Ray cluster's GCS
answers, is refused in one line within 10 s. The Sweep page ends a driver that has not taken
its sweep within its wait (launch_driver), so none is left running that the page cannot cancel.

Ray is imported only inside these functions: a sweep without `--ray` never loads it.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from core.config import SWEPT_FIELDS, TrainConfig, field_specs
from core.errors import BadInput, LabError
from core.fsio import atomic_write_bytes, atomic_write_json
from core.store.runs import (HANDOVER_NAME, LOCK_NAME, LOG_NAME, Busy, RunLock, RunWriter, checkpoints_dir, load_run,
                       lock_held, now_iso, read_json, read_owner, run_dir)

GPU_FRACTION = 0.25   # of one GPU per trial where the cluster has GPUs: MNIST models are small
RETRIES = 3           # times Ray reruns a trial whose worker or node died
TAKEOVER_S = 600      # seconds a trial waits for its run's lock (a dying worker may still hold it)
CONNECT_S = 5.0       # seconds to wait for the cluster's address to answer (the TCP connect)
PROBE_S = 5.0         # seconds, after that, for it to answer as a Ray cluster's GCS
STOP_GRACE_S = 5.0    # seconds a driver the Sweep page ends has between SIGTERM and SIGKILL
DRIVERS = ".ray"      # <store>/.ray/<sweep id>/: the driver's lock (its pid) and driver.json


class ClusterError(LabError):
    """The cluster cannot be reached or cannot run this sweep; the message says why."""


class NoAddress(ClusterError, BadInput):
    """`--ray ''`: a usage error (exit status 2), as `--csv ''` is."""


class SweepCancelled(ClusterError):
    """Cancelled (SIGTERM, Ctrl-C) while joining the cluster, before any run was created: exit
    status 3, as a cancelled `train`."""
    exit_code = 3


# --- the driver: check the address, connect, check the store, send the grid, wait --------------

def check_address(address: str) -> str:
    """Check a `--ray ADDRESS` without joining the cluster, and return the 'HOST:PORT' to join
    ('[HOST]:PORT' for an IPv6 host). No driver starts and nothing is created before it passes.

    Refused, each with a one-line ClusterError: an empty address; one that is neither HOST:PORT
    nor 'auto' (a ray:// address; for 'auto', a $RAY_ADDRESS that is neither); 'auto' with no
    cluster found; an address where nothing answers (the TCP connect, CONNECT_S seconds at most);
    an address where something answers that is not a Ray cluster: the head's GCS must answer its
    GetClusterId gRPC call with a cluster id within PROBE_S seconds (ray.init alone would retry
    for minutes). A refusal comes within CONNECT_S + PROBE_S = 10 s."""
    target, origin = _resolve(address)
    host, port = _split(target, origin)
    where = target + _WHERE[origin]
    try:
        conn = socket.create_connection((host, port), timeout=CONNECT_S)
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {where}: {exc.strerror or exc or type(exc).__name__}; "
                           "start one with `ray start --head`") from None
    not_ray = (f"something answers at {where} but it is not a Ray cluster ({{}}); give the head's address as "
               "`ray start --head` prints it (port 6379 by default)")
    conn.close()
    code, said = _gcs_cluster_id(target)
    if code == "UNAUTHENTICATED" and (token := _auth_headers()):  # again, with this machine's token
        code, said = _gcs_cluster_id(target, token)
    if code == "UNAUTHENTICATED":  # a Ray GCS, with token authentication
        raise ClusterError(f"the Ray cluster at {where} asks for an authentication token "
                           f"({said or 'none was sent'}); set RAY_AUTH_MODE=token and the cluster's token "
                           "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here")
    if code == "DEADLINE_EXCEEDED":
        raise ClusterError(not_ray.format(f"no answer as one within {PROBE_S:.0f} s"))
    if code == "UNIMPLEMENTED":
        raise ClusterError(not_ray.format("it speaks gRPC, but has no Ray GCS service"))
    if code == "NO_ID":
        raise ClusterError(not_ray.format("it speaks gRPC, but its GetClusterId reply holds no cluster id"))
    if code is not None:
        raise ClusterError(not_ray.format(f"it does not answer a gRPC call as a Ray cluster's head does: {said}"))
    return target


def connect(address: str) -> str:
    """Join the Ray cluster at `address` ('HOST:PORT' of the head, or 'auto': the cluster started
    on this machine or named by $RAY_ADDRESS), checked first by check_address. Returns the
    head's 'HOST:PORT'."""
    import logging
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed in this environment: pip install -r requirements.txt") from None
    target = check_address(address)
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"could not join the Ray cluster at {target}: {str(exc).splitlines()[0]}") from None
    return target


_WHERE = {"given": "", "env": " ($RAY_ADDRESS, read by --ray auto)", "found": " (found by --ray auto)"}


def _resolve(address: str) -> tuple[str, str]:
    """(the address to check, where it came from: 'given', 'env' or 'found'). 'auto' is
    $RAY_ADDRESS where it is set (as ray.init reads it), else the cluster started on this machine."""
    address = address.strip()
    if not address:
        raise NoAddress("--ray needs an address (HOST:PORT or auto); leave the option out to train here")
    if address != "auto":
        return address, "given"
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if named and named != "auto":
        return named, "env"
    try:
        from ray._private.services import canonicalize_bootstrap_address  # how ray.init reads 'auto'
    except ImportError:
        raise ClusterError("Ray is not installed in this environment: pip install -r requirements.txt") from None
    try:
        found = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError, OSError):
        found = None
    if not found:
        raise ClusterError("--ray auto: no Ray cluster runs on this machine and $RAY_ADDRESS is not set; "
                           "start one with `ray start --head`, or give its address")
    return found, "found"


def _split(target: str, origin: str) -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port), the brackets taken off for the connect."""
    named = {"given": repr(target), "env": f"--ray auto reads $RAY_ADDRESS, which holds {target!r}",
             "found": f"--ray auto found {target!r}"}[origin]
    fix = {"given": "give HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'",
           "env": "set $RAY_ADDRESS to the head's HOST:PORT (e.g. 10.0.0.5:6379), or unset it to use the "
                  "cluster started on this machine",
           "found": "give the head's HOST:PORT"}[origin]

    def refuse(why: str = "") -> ClusterError:
        if origin == "given":
            return ClusterError(f"{named} is not a Ray cluster address{why}: {fix}")
        return ClusterError(f"{named}: not a Ray cluster address{why}; {fix}")
    if target.startswith("ray://"):
        raise ClusterError(f"{named}: Ray Client addresses (ray://) are not supported; give the head's HOST:PORT "
                           "(`ray start --head` prints it) and run the sweep on a cluster node")
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]:(\d{1,5})", target)
    if bracketed:
        host, port = bracketed[1], bracketed[2]
    else:
        host, sep, port = target.rpartition(":")
        if ":" in host:
            raise refuse(f" (an IPv6 address goes in brackets: [{host}]:{port})")
        if not sep or not re.fullmatch(r"[\w.-]+", host) or not port.isdigit():
            raise refuse()
    if not 0 < int(port) < 65536:
        raise refuse(f" (port {port} is not 1..65535)")
    return host, int(port)


# Telling a Ray GCS from anything else: one unary gRPC call, NodeInfoGcsService.GetClusterId,
# through grpcio and the stub Ray ships (ray.core.generated), whose reply holds the cluster's
# id. A web server, a database, a Ray dashboard or client port fails it in one exchange.

def _gcs_cluster_id(target: str, metadata: list[tuple[str, str]] = ()) -> tuple[str | None, str]:
    """Call GetClusterId at `target` within PROBE_S seconds: (None, '') when a cluster id came
    back, else (the gRPC status code's name, or 'NO_ID' for an empty reply; what the call said)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    with grpc.insecure_channel(target) as channel:
        try:
            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_S, metadata=list(metadata) or None)
        except grpc.RpcError as exc:
            said = (exc.details() or "").strip().splitlines()
            said = said[0].rpartition("last error: ")[2] if said else ""  # grpc's own wording before it
            said = re.sub(r"^[A-Z_]+: (ipv[46]:\S+: )?", "", said)  # 'UNAVAILABLE: ipv4:HOST:PORT: ' too
            return exc.code().name, said[:200]
    return (None, "") if reply.cluster_id else ("NO_ID", "")


def _auth_headers() -> list[tuple[str, str]]:
    """The header that carries this machine's Ray authentication token (RAY_AUTH_MODE=token), or none."""
    try:
        from ray._raylet import AuthenticationTokenLoader
        loader = AuthenticationTokenLoader.instance()
        return ([(k.lower(), v) for k, v in loader.get_token_for_http_header().items()]  # gRPC: lower-case keys
                if loader.has_token() else [])
    except Exception:  # no Ray here, or no token to read: the check goes on without one
        return []


def _sees_marker(path: str, token: str) -> str:
    """Runs on each node: '' if the marker is there with its token and the folder is writable,
    else why not."""
    try:
        if Path(path).read_text() != token:
            return "sees another folder at that path"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not os.access(Path(path).parent, os.W_OK):
        return "cannot write in it"
    return ""


def check_shared_store(root: Path, stop: threading.Event | None = None) -> None:
    """Refuse a run store that some live node of the cluster cannot read and write at `root`:
    each trial writes its run there, and a trial retried on another node resumes from there.
    `stop` set meanwhile ends the check (SweepCancelled)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    token = secrets.token_hex(8)
    marker = root / f".ray-store-check-{token}"
    marker.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        probe = ray.remote(_sees_marker)
        refs = [probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(marker), token) for n in nodes]
        deadline = time.monotonic() + 120
        while refs and len(ray.wait(refs, num_returns=len(refs), timeout=0.25)[0]) < len(refs):
            if stop is not None and stop.is_set():
                for ref in refs:
                    ray.cancel(ref)
                raise SweepCancelled("the sweep was cancelled before any of its runs was created")
            if time.monotonic() > deadline:
                raise ClusterError("the cluster's nodes did not answer within 2 minutes")
        answers = ray.get(refs)
    finally:
        marker.unlink(missing_ok=True)
    blind = [f"{n['NodeManagerAddress']} {answer}" for n, answer in zip(nodes, answers) if answer]
    if blind:
        raise ClusterError(
            f"the run store {root} is not shared by every node of the cluster ({'; '.join(blind)}). Each trial "
            "writes its run there and a retried trial resumes from it, so every node must read and write that "
            "folder at that same path (e.g. an NFS mount); choose one with --checkpoints")


def task_resources(device: str) -> dict:
    """What one trial asks of the cluster: 1 CPU, or GPU_FRACTION of a GPU where the cluster has GPUs."""
    import ray
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and not gpus:
        raise ClusterError("--device cuda, but the Ray cluster has no GPU")
    if gpus and device != "cpu":
        return {"num_cpus": 1, "num_gpus": GPU_FRACTION}
    return {"num_cpus": 1}


def run_sweep_on_ray(base: TrainConfig, lrs: list[float], batch_sizes: list[int], address: str,
                     root=None, data_root=None, stop: threading.Event | None = None,
                     report: Callable[[str], None] = print) -> tuple[str, dict[str, str]]:
    """Send the grid to the Ray cluster at `address` and wait for it; return the sweep id and
    each run's final status. The address is checked first (check_address: refused within 10 s),
    and nothing is created before the cluster and the store pass their checks; `stop` set before
    the runs exist (SIGTERM, Ctrl-C) ends it there, with SweepCancelled."""
    from core.data.mnist import data_dir
    from core.training.grids import prepare_sweep
    from core.training.loop import load_source
    stop = stop or threading.Event()
    address = check_address(address)  # before anything is read, created or joined
    if stop.is_set():
        raise SweepCancelled("the sweep was cancelled before any of its runs was created")
    load_source(base, data_root)  # the data is readable (the device is the cluster's to check)
    store = checkpoints_dir(root).resolve()
    store.mkdir(parents=True, exist_ok=True)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    address = connect(address)
    for sig, handler in handlers.items():  # ray.init puts its own (fatal) ones in their place
        if handler is not None:
            signal.signal(sig, handler)
    import ray
    try:
        check_shared_store(store, stop)
        resources = task_resources(base.device)
        if stop.is_set():
            raise SweepCancelled("the sweep was cancelled before any of its runs was created")
        sweep_id, writers = prepare_sweep(base, lrs, batch_sizes, root=store)
        driver = _claim_driver(store, sweep_id, address)
        try:
            report(f"sweep {sweep_id}: {len(writers)} run{'s' * (len(writers) != 1)} on the Ray cluster at {address} "
                   f"({len(ray.nodes())} nodes, {ray.cluster_resources().get('CPU', 0):g} CPUs)")
            trial = ray.remote(train_cell).options(**resources, max_retries=RETRIES)
            data = str(data_dir(data_root).resolve())
            refs = {trial.remote(w.run_id, str(store), data): w.run_id for w in writers}
            return sweep_id, _wait(refs, {w.run_id: w for w in writers}, stop, report)
        finally:
            driver.release()
    finally:
        ray.shutdown()


def _wait(refs: dict, held: dict[str, RunWriter], stop: threading.Event,
          report: Callable[[str], None]) -> dict[str, str]:
    """Hand each run to its trial when the trial asks, collect the trials' ends, cancel them
    all when `stop` is set. Runs no trial took are marked here."""
    import ray
    from ray.exceptions import RayTaskError, TaskCancelledError
    statuses, cancelled = {}, False
    paths = [writer.path for writer in held.values()]
    while refs:
        if stop.is_set() and not cancelled:
            for ref in refs:
                ray.cancel(ref)
            cancelled = True
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.25)
        for run_id in [r for r in held if (held[r].path / HANDOVER_NAME).exists()]:
            held.pop(run_id).release()  # the trial has started: the run is its own now
        for ref in done:
            run_id = refs.pop(ref)
            try:
                statuses[run_id] = ray.get(ref)
            except TaskCancelledError:
                statuses[run_id] = "cancelled"
            except RayTaskError as exc:
                statuses[run_id] = "failed"
                report(f"{run_id}: failed: {str(exc.cause).splitlines()[0] if exc.cause else exc}")
            except ray.exceptions.RayError as exc:  # its workers kept dying: RETRIES used up
                statuses[run_id] = "interrupted"
                report(f"{run_id}: lost: {str(exc).splitlines()[0]}")
            if run_id in held:  # the trial ended before it took the run (cancelled while waiting)
                writer = held.pop(run_id)
                writer.set_status("cancelled" if cancelled else "failed",
                                  "the sweep was cancelled before this run started" if cancelled
                                  else "its Ray trial ended before it started")
                writer.release()
            report(f"{run_id}: {statuses[run_id]}")
    deadline = time.monotonic() + 60
    while cancelled and any(map(lock_held, paths)) and time.monotonic() < deadline:
        time.sleep(0.2)  # a cancelled trial is still saving its run: this process leaving would kill it
    return statuses


def _claim_driver(store: Path, sweep_id: str, address: str) -> RunLock:
    """Hold <store>/.ray/<sweep id>/lock (with this pid) while the sweep runs: `cancel_sweep`
    signals its holder, as core.training.jobs.cancel does a run's."""
    folder = store / DRIVERS / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    lock = RunLock.claim(folder)
    atomic_write_json(folder / "driver.json", {"sweep": sweep_id, "address": address, "host": socket.gethostname(),
                                              "pid": os.getpid(), "started": now_iso()})
    return lock


# --- the Sweep page: which sweeps run on a cluster, and stopping one ---------------------------

def cluster_sweep(sweep_id: str, root=None) -> dict | None:
    """{'address', 'host', 'pid', 'active'} of a sweep sent to a Ray cluster, None for a local one."""
    if not re.fullmatch(r"sweep-[0-9]{8}-[0-9]{6}", sweep_id):  # ids come from config.json: no paths
        return None
    folder = checkpoints_dir(root) / DRIVERS / sweep_id
    info = read_json(folder / "driver.json")
    if info is None:
        return None
    return {**info, "active": lock_held(folder)}


def cancel_sweep(sweep_id: str, root=None) -> bool:
    """Ask the driver of a Ray sweep to cancel its trials (SIGTERM through a pidfd, as
    core.training.jobs.cancel). False if no driver runs it any longer."""
    from core.training.jobs import signal_owner
    folder = checkpoints_dir(root) / DRIVERS / sweep_id
    info = cluster_sweep(sweep_id, root)
    if not info or not info["active"]:
        return False
    if info.get("host") != socket.gethostname():
        raise ClusterError(f"sweep {sweep_id} is driven from {info.get('host')}: stop it there (Ctrl-C)")
    pid = read_owner(folder / LOCK_NAME)
    return pid is not None and signal_owner(folder, pid)


# --- a trial, on a worker node ------------------------------------------------------------------

def train_cell(run_id: str, root: str, data_root: str) -> str:
    """One grid point, in a Ray worker: take the run over, train it with core.training.loop (resuming
    after an attempt lost with its node), return its final status."""
    import ray

    from core.training.loop import train
    path = run_dir(run_id, root)
    writer = RunWriter(run_id, root, _take_over(path))
    run = load_run(run_id, root)
    if run.status_info.get("status") == "finished":  # an earlier attempt finished as its node went
        writer.release()
        return "finished"
    resume = run.status_info.get("status") != "queued"  # an earlier attempt started it
    log = TrialLog(path / LOG_NAME)
    log.write(f"attempt on node {ray.get_runtime_context().get_node_id()[:12]} ({socket.gethostname()}, "
              f"pid {os.getpid()}): " + (f"resuming after epoch {run.epochs_done}" if resume else "starting"))
    stop = threading.Event()
    return _stoppable(lambda: train(run_id, root=root, data_root=data_root, callback=log.event, stop=stop,
                                    resume=resume, writer=writer, queue=False), stop)


def _take_over(path: Path) -> RunLock:
    """Ask for the run's lock and wait until its holder lets go: the sweep's driver at once,
    a worker of a dead node when the kernel has ended it."""
    atomic_write_bytes(path / HANDOVER_NAME, f"{socket.gethostname()} {os.getpid()}\n".encode())
    deadline = time.monotonic() + TAKEOVER_S
    while True:
        try:
            lock = RunLock.claim(path)  # tries for a second
            break
        except Busy:
            if time.monotonic() > deadline:
                raise
    (path / HANDOVER_NAME).unlink(missing_ok=True)
    return lock


def _stoppable(work: Callable[[], str], stop: threading.Event) -> str:
    """Run `work` (the trainer) in a thread; Ray's cancel (a KeyboardInterrupt here) and a
    SIGTERM (the dashboard's Cancel of this run) set `stop`, so the run ends 'cancelled' and
    saved, instead of dying as a crashed worker that Ray would retry."""
    outcome: dict = {}
    finished = threading.Event()

    def target():
        try:
            outcome["status"] = work()
        except BaseException as exc:  # re-raised below, in Ray's thread
            outcome["error"] = exc
        finally:
            finished.set()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        threading.Thread(target=target, name="mnist-lab-trial", daemon=True).start()
        while not finished.is_set():  # not Thread.join: one interrupted can think a live thread ended
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]


class TrialLog:
    """The trial's lines in the run's train.log (where a job's output goes): attempts, epochs, end."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {line}\n")

    def event(self, e) -> None:
        if e.kind == "start":
            self.write(f"{e.run_id}: {e.message}; from epoch {e.epoch}/{e.epochs}")
        elif e.kind == "epoch":
            self.write(f"epoch {e.epoch}/{e.epochs}  train loss {e.train_loss:.4f}  val acc {e.val_acc:.2f}%")
        elif e.kind == "end":
            self.write(f"{e.run_id}: finished, {e.message}")


# --- sending a sweep from the dashboard -------------------------------------------------------

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
    from core.data.mnist import data_dir
    from core.training.jobs import spawn
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
