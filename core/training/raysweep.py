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
import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from core.config import TrainConfig
from core.data.mnist import data_dir
from core.fsio import atomic_write_bytes, atomic_write_json
from core.store.folder import DRIVER_INFO, DRIVERS, HANDOVER_NAME, LOG_NAME, Busy, RunLock, checkpoints_dir, lock_held, now_iso, run_dir
from core.store.runs import load_run
from core.store.writer import RunWriter
from core.training.grids import prepare_sweep
from core.data.source import load_source
from core.training.loop import train
from core.training.rayaddress import ClusterError, check_address

GPU_FRACTION = 0.25   # of one GPU per trial where the cluster has GPUs: MNIST models are small
RETRIES = 3           # times Ray reruns a trial whose worker or node died
TAKEOVER_S = 600      # seconds a trial waits for its run's lock (a dying worker may still hold it)


class SweepCancelled(ClusterError):
    """Cancelled (SIGTERM, Ctrl-C) while joining the cluster, before any run was created: exit
    status 3, as a cancelled `train`."""
    exit_code = 3


# --- the driver: check the address, connect, check the store, send the grid, wait --------------


def connect(address: str) -> str:
    """Join the Ray cluster at `address` ('HOST:PORT' of the head, or 'auto': the cluster started
    on this machine or named by $RAY_ADDRESS), checked first by check_address. Returns the
    head's 'HOST:PORT'."""
    try:
        import ray  # heavy: Ray loads only for a sweep
    except ImportError:
        raise ClusterError("Ray is not installed in this environment: pip install -r requirements.txt") from None
    target = check_address(address)
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"could not join the Ray cluster at {target}: {str(exc).splitlines()[0]}") from None
    return target


def join(address: str) -> str:
    """`connect`, keeping this process's SIGTERM and Ctrl-C handlers (ray.init puts its own, fatal,
    ones in their place): a driver's Cancel still cancels its trials."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    address = connect(address)
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
    return address


# Telling a Ray GCS from anything else: one unary gRPC call, NodeInfoGcsService.GetClusterId,
# through grpcio and the stub Ray ships (ray.core.generated), whose reply holds the cluster's
# id. A web server, a database, a Ray dashboard or client port fails it in one exchange.


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
    import ray  # heavy: Ray loads only for a sweep
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # heavy: Ray loads only for a sweep
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
    import ray  # heavy: Ray loads only for a sweep
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
    stop = stop or threading.Event()
    address = check_address(address)  # before anything is read, created or joined
    if stop.is_set():
        raise SweepCancelled("the sweep was cancelled before any of its runs was created")
    load_source(base, data_root)  # the data is readable (the device is the cluster's to check)
    store = checkpoints_dir(root).resolve()
    store.mkdir(parents=True, exist_ok=True)
    address = join(address)
    import ray  # heavy: Ray loads only for a sweep
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
    import ray  # heavy: Ray loads only for a sweep
    from ray.exceptions import RayTaskError, TaskCancelledError  # heavy: Ray loads only for a sweep
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
                if cancelled:
                    writer.cancel("the sweep was cancelled before this run started")
                else:
                    writer.fail("its Ray trial ended before it started")
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
    atomic_write_json(folder / DRIVER_INFO, {"sweep": sweep_id, "address": address, "host": socket.gethostname(),
                                             "pid": os.getpid(), "started": now_iso()})
    return lock


# --- the Sweep page: which sweeps run on a cluster, and stopping one ---------------------------


# --- a trial, on a worker node ------------------------------------------------------------------

def train_cell(run_id: str, root: str, data_root: str) -> str:
    """One grid point, in a Ray worker: take the run over, train it with core.training.loop (resuming
    after an attempt lost with its node), return its final status."""
    import ray  # heavy: Ray loads only for a sweep

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
    # Ray's cancel interrupts the main thread as SIGINT would; a worker whose cluster was started with
    # SIGINT ignored (from nohup, or a shell's background job) would never see it: take it back.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=target, name="mnist-lab-trial", daemon=True).start()
        while not finished.is_set():  # not Thread.join: one interrupted can think a live thread ended
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
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


