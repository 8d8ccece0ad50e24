"""Training jobs: separate processes, one per device at a time.

A job holds an exclusive `flock` on checkpoints/.locks/<device>.lock while it trains; the
next job blocks on the lock (its run shows as 'queued') and starts when the holder ends.
Each job also holds its run's own lock (core.store.folder.RunLock) for as long as it lives, from
before the run is queued: the kernel drops both when the process dies, so a crashed job frees
its slot and its run shows as 'interrupted' by itself, and nothing guesses from pids.

The dashboard calls `launch` (new run), `launch_prepared` (runs made by `prepare_sweep`),
`resume` and `cancel`; they only start or signal `python -m core train` processes, so a job
survives a page reload, a closed tab and every Streamlit rerun.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.errors import Cancelled
from core.fsio import flock
from core.store.folder import (LOCK_NAME, LOG_NAME, STATUS, RunError, RunLock, checkpoints_dir, lock_held,
                               read_json, read_owner, run_dir)
from core.store.runs import is_resumable, load_run
from core.store.writer import RunWriter


_interruptible = 0  # read by signal handlers: inside such a stretch a job can be cancelled at once


def interruptible_now() -> bool:
    """Whether the job is in a stretch that SIGTERM may end at once (Cancelled raised where it
    is): waiting for the device's slot, or preparing its data before the first step."""
    return _interruptible > 0


@contextlib.contextmanager
def interruptible(stop: threading.Event | None = None):
    """A stretch that writes nothing a Cancelled raised anywhere inside it could leave half done:
    a wait, or a computation of what the run needs before it trains (loading MNIST, drawing the
    exposure images), which the training loop's own checks of the stop flag would only reach after
    it. Entered after a stop was asked for (`stop` set), it raises Cancelled at once."""
    global _interruptible
    _interruptible += 1
    try:
        if stop is not None and stop.is_set():
            raise Cancelled()
        yield
    finally:
        _interruptible -= 1


@contextlib.contextmanager
def device_slot(device_type: str, root: str | os.PathLike | None = None):
    """Hold the device's slot for the block, waiting (as 'queued') while another job has it."""
    locks = checkpoints_dir(root) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{device_type}.lock", "a") as handle:  # closing it lets the next job in
        with interruptible():
            flock(handle)  # blocks while another job trains on this device
        yield


def spawn(args: list[str], log_path: Path | None = None, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start `python -m core <args>` in its own session, detached from the caller."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "core", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=pass_fds,
                                cwd=os.getcwd())
    finally:
        if log_path:
            out.close()


def _spawn_trainer(writer: RunWriter, flag: str, root, data_root, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`python -m core train <flag> RUN [extra]`, its output appended to the run's train.log.
    The run's lock passes to the child: its descriptor is inherited, the child's pid is written
    into it, and this process lets go of it."""
    data_args = ["--data", str(Path(data_root).resolve())] if data_root else []
    lock = writer.lock
    try:
        process = spawn(["--checkpoints", str(checkpoints_dir(root).resolve()), *data_args, "train", flag,
                         writer.run_id, *extra, "--quiet", "--lock-fd", str(lock.fileno())],
                        log_path=writer.path / LOG_NAME, pass_fds=(lock.fileno(),))
        lock.set_owner(process.pid)
    finally:
        writer.release()
    return process


def launch_prepared(writer: RunWriter, root=None, data_root=None) -> subprocess.Popen:
    """Start the trainer for a run created by `prepare_run` (its writer holds the lock)."""
    return _spawn_trainer(writer, "--run-id", root, data_root)


def launch(config, root=None, data_root=None) -> str:
    """Create a run for `config` (a TrainConfig) and start training it; return its id."""
    writer = RunWriter.create(config.to_dict(), None, root)
    launch_prepared(writer, root, data_root)
    return writer.run_id


def resume(run_id: str, root=None, data_root=None, device: str | None = None) -> subprocess.Popen:
    """Continue a stopped run from its last saved epoch; `device` (e.g. 'cpu' for a run made
    for 'cuda' on a machine without a GPU) replaces the device in its config."""
    run = load_run(run_id, root)
    if not is_resumable(run):
        raise RunError(f"run {run_id!r} is {run.status}" + (f" after {run.epochs_done} epochs" if run.epochs_done
                       else " without a finished epoch") + "; only an interrupted, cancelled or failed run with a "
                       "finished epoch resumes")
    extra = ("--device", device) if device else ()
    return _spawn_trainer(RunWriter(run_id, root, RunLock.claim(run.path)), "--resume", root, data_root, extra)


def cancel(run_id: str, root=None, wait_s: float = 2.0) -> bool:
    """Ask the process that owns a queued or running run to stop (SIGTERM: it saves what it
    has and marks the run 'cancelled'). Only the holder of the run's lock is signalled, through
    a pidfd, so a recycled pid is never hit. Returns False if no live process owns the run."""
    path = run_dir(run_id, root)
    host = (read_json(path / STATUS) or {}).get("host")
    if lock_held(path) and host and host != socket.gethostname():  # its pid means nothing here
        raise RunError(f"run {run_id!r} runs on {host} (a Ray sweep's trial): cancel it there, or cancel its sweep")
    deadline = time.monotonic() + wait_s
    while lock_held(path):
        pid = read_owner(path / LOCK_NAME)
        if pid is None:  # the lock is being handed to a job that is starting: wait for its pid
            if time.monotonic() > deadline:
                raise RunError(f"run {run_id!r} is starting; try again in a moment")
            time.sleep(0.05)
            continue
        return signal_owner(path, pid)
    return False


def signal_owner(path: Path, pid: int) -> bool:
    """SIGTERM to `pid` if, and only while, it holds the lock in `path` (a run's, or a Ray sweep's
    driver's): through a pidfd, so a recycled pid is never hit. False if it holds it no longer."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        # The pidfd pins the process it was opened on: if the lock is still held and still
        # names this pid, the process behind the pidfd is the owner, and only it is signalled.
        if not lock_held(path) or read_owner(path / LOCK_NAME) != pid:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)
