"""Training jobs: separate processes, one per device at a time.

A job holds an exclusive `flock` on checkpoints/.locks/<device>.lock while it trains; the
next job blocks on the lock (its run shows as 'queued') and starts when the holder ends.
The kernel drops the lock when a process dies, so a crashed job frees its slot by itself.

The dashboard calls `launch` (new run), `launch_prepared` (runs made by `prepare_sweep`),
`resume` and `cancel`; they only start or signal `python -m core train` processes, so a job
survives a page reload, a closed tab and every Streamlit rerun.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from core.runs import ACTIVE, RunError, RunWriter, checkpoints_dir, load_run, pid_alive, run_dir

LOG_NAME = "train.log"


class Cancelled(Exception):
    """The job was asked to stop (SIGTERM, Ctrl-C or the dashboard's Cancel)."""


_waiting_for_slot = False  # read by signal handlers: a queued job can be cancelled at once


def waiting_for_slot() -> bool:
    return _waiting_for_slot


@contextlib.contextmanager
def device_slot(device_type: str, root: str | os.PathLike | None = None):
    global _waiting_for_slot
    locks = checkpoints_dir(root) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{device_type}.lock", "a") as handle:
        _waiting_for_slot = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another job trains on this device
        finally:
            _waiting_for_slot = False
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spawn(args: list[str], log_path: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m core <args>` in its own session, detached from the caller."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "core", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=os.getcwd(), env={**os.environ, **(env or {})})
    finally:
        if log_path:
            out.close()


def _root_args(root) -> list[str]:
    return ["--checkpoints", str(checkpoints_dir(root).resolve())]


def _spawn_trainer(run_id: str, flag: str, root, data_root) -> subprocess.Popen:
    """`python -m core train <flag> RUN`, its output appended to the run's train.log."""
    data_args = ["--data", str(Path(data_root).resolve())] if data_root else []
    return spawn([*_root_args(root), *data_args, "train", flag, run_id, "--quiet"],
                 log_path=run_dir(run_id, root) / LOG_NAME)


def launch_prepared(run_id: str, root=None, data_root=None) -> subprocess.Popen:
    """Start the trainer for a run already created with status 'queued'."""
    return _spawn_trainer(run_id, "--run-id", root, data_root)


def launch(config, root=None, data_root=None) -> str:
    """Create a run for `config` (a TrainConfig) and start training it; return its id."""
    run_id = RunWriter.create(config.to_dict(), None, root, owner_pid=None).run_id
    launch_prepared(run_id, root, data_root)
    return run_id


def resume(run_id: str, root=None, data_root=None) -> subprocess.Popen:
    run = load_run(run_id, root)
    if run.status in ACTIVE or run.status == "finished":
        raise RunError(f"run {run_id!r} is {run.status}; only an interrupted, cancelled or failed run resumes")
    return _spawn_trainer(run_id, "--resume", root, data_root)


def cancel(run_id: str, root=None) -> bool:
    """Ask a queued or running job to stop (SIGTERM: it saves what it has and marks the run
    'cancelled'). Returns False if the run has no live process here."""
    run = load_run(run_id, root)
    pid = run.status_info.get("pid")
    if run.status == "queued" and pid is None:  # its job process has not started yet
        RunWriter(run_id, root).set_status("cancelled", "cancelled before it started", pid=None)
        return True
    if run.status not in ACTIVE or run.status_info.get("host") != socket.gethostname() or not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def queue(root=None) -> list:
    """Active runs (running first, then queued, oldest first)."""
    from core.runs import list_runs
    active = [r for r in list_runs(root) if r.status in ACTIVE]
    return sorted(active, key=lambda r: (r.status != "running", r.status_info.get("created", "")))
