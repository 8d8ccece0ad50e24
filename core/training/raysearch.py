"""A study's trials on a Ray cluster: `python -m core search ... --ray ADDRESS`.

The driver (core.training.search.Driver) asks Optuna for each trial and hands its number to a
Ray task here; the task trains the trial's run with core.training.search.run_trial, reporting
each epoch to the study's journal file in the shared run store (every node reads and writes the
store at the same path: checked first, as for a grid, by core.training.raysweep), and returns how
it ended for the driver to tell the study. As many tasks run at once as the cluster has CPUs
(or GPU shares) for them.

A worker or node that dies mid-trial: Ray runs the task again (max_retries), and the new attempt
adopts the trial's run and resumes it from its last finished epoch: the trial loses the epoch in
progress, nothing more. Cancel (SIGTERM or Ctrl-C to the driver) cancels the tasks; each running
trial saves its run, which reads 'cancelled', and stays in the study as running, for
`search --resume` to go on with.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Callable

from core.data.mnist import data_dir
from core.errors import LabError
from core.store.folder import LOG_NAME, checkpoints_dir, run_dir
from core.training.raysweep import (RETRIES, SweepCancelled, TrialLog, _stoppable, check_shared_store, join,
                                    task_resources)
from core.training.rayaddress import check_address
from core.training.search import Outcome, Settings, run_trial


def trial_task(folder: str, number: int, root: str, data_root: str) -> Outcome:
    """One trial, in a Ray worker: Ray's cancel and a SIGTERM stop it with its run saved. Each
    attempt, and the trial's epochs, go to its run's train.log (as a grid's trial writes them)."""
    import ray  # heavy: Ray loads only for a study on a cluster
    stop = threading.Event()
    log: list[TrialLog] = []

    def attempt(run_id: str, resumed_after: int | None) -> None:
        log.append(TrialLog(run_dir(run_id, root) / LOG_NAME))
        log[0].write(f"attempt on node {ray.get_runtime_context().get_node_id()[:12]} ({socket.gethostname()}, "
                     f"pid {os.getpid()}): " + (f"resuming after epoch {resumed_after}" if resumed_after is not None
                                                else "starting"))

    def echo(event) -> None:
        if log:
            log[0].event(event)
    return _stoppable(lambda: run_trial(folder, number, root, data_root, stop, echo=echo, queue=False,
                                        on_run=attempt), stop)


class RayTrials:
    """The trials of one driver on the cluster at `address` (checked first: refused in one line
    within seconds when nothing or something other than Ray answers there)."""

    def __init__(self, address: str, folder: Path, settings: Settings, root, data_root,
                 stop: threading.Event, report: Callable[[str], None]):
        self.folder, self.stop, self.report = folder, stop, report
        address = check_address(address)
        self.store = checkpoints_dir(root).resolve()
        self.data = str(data_dir(data_root).resolve())
        address = join(address)
        import ray  # heavy: Ray loads only for a study on a cluster
        try:
            check_shared_store(self.store, stop)
            if stop.is_set():
                raise SweepCancelled("the study was cancelled before any of its trials started")
            resources = task_resources(settings.config.device)
            share = resources.get("num_gpus") or resources["num_cpus"]
            total = ray.cluster_resources().get("GPU" if "num_gpus" in resources else "CPU", 1)
            self.parallel = max(1, int(total / share))
        except BaseException:
            ray.shutdown()
            raise
        self.task = ray.remote(trial_task).options(**resources, max_retries=RETRIES)
        self.pending: dict = {}  # ref -> trial number
        self.cancelled = False
        report(f"study {settings.study}: on the Ray cluster at {address} ({len(ray.nodes())} nodes, "
               f"{ray.cluster_resources().get('CPU', 0):g} CPUs), up to {self.parallel} trials at once")

    def free(self) -> bool:
        return len(self.pending) < self.parallel

    def busy(self) -> bool:
        return bool(self.pending)

    def submit(self, number: int) -> None:
        ref = self.task.remote(str(self.folder), number, str(self.store), self.data)
        self.pending[ref] = number

    def next_end(self) -> Outcome:
        import ray  # heavy: Ray loads only for a study on a cluster
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError  # heavy: as above
        while True:
            if self.stop.is_set() and not self.cancelled:
                for ref in self.pending:
                    ray.cancel(ref)
                self.cancelled = True
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.25)
            if not done:
                continue
            ref = done[0]
            number = self.pending.pop(ref)
            try:
                return ray.get(ref)
            except TaskCancelledError:
                return Outcome(number, "cancelled")
            except RayTaskError as exc:  # the trial raised: ours is said in one line, the rest keeps its cause
                cause = exc.cause
                if isinstance(cause, LabError):
                    raise cause from None
                raise RuntimeError(f"trial {number} failed on the cluster: {cause or exc}") from None
            except RayError as exc:  # its workers kept dying (RETRIES used up): left running for --resume
                self.report(f"trial {number}: lost on the cluster: {str(exc).splitlines()[0]}")
                return Outcome(number, "cancelled", why="lost on the cluster")

    def close(self) -> None:
        import ray  # heavy: Ray loads only for a study on a cluster
        if self.pending:  # cancelled, or the driver is leaving on an error: its trials stop, saved
            if not self.cancelled:
                for ref in self.pending:
                    ray.cancel(ref)
            # a cancelled trial is still saving its run: leaving now would kill it half-way
            ray.wait(list(self.pending), num_returns=len(self.pending), timeout=60)
        ray.shutdown()
