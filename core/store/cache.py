"""A long-lived reader of one checkpoints folder: every run, read again only when its files
change. The dashboard keeps one per folder for its whole process; anything that lists runs over
and over (a page rerun every second) can use it.

A run folder's files are each written by renaming a new file into place (core.fsio), so the
(mtime, size, inode) of the small files load_run reads change with every write: a finished run
costs a few stats per listing. Liveness (does a process hold an active run's lock?) is in no
file, so it is checked on every call.
"""
from __future__ import annotations

import dataclasses
import os
import threading

from core.store.folder import ACTIVE, SMALL_FILES, RunError, effective_status
from core.store.runs import Run, list_run_ids, load_run


def run_signature(folder: str | os.PathLike) -> tuple:
    """(mtime, size, inode) of each file `load_run` reads (folder.SMALL_FILES), None where missing."""
    out = []
    for name in SMALL_FILES:
        try:
            stat = os.stat(os.path.join(folder, name))
            out.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _folder_stamp(base: str) -> tuple | None:
    try:
        stat = os.stat(base)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def live(run: Run) -> Run:
    """The run with its status as of now: an active one (by its files) counts only while a
    process holds its lock. A copy where the status differs; the run itself is never changed."""
    if run.status_info.get("status") not in ACTIVE:
        return run
    status = effective_status(run.status_info, run.path)
    return run if status == run.status else dataclasses.replace(run, status=status)


class RunCache:
    """What the checkpoints folder `base` held when last read: run id -> (signature, Run), and the
    folder's listing with the (mtime, inode) of the folder it came from. Safe to share between
    threads (the dashboard's sessions); a Run in it is never changed, so no reader sees another's
    edit."""

    def __init__(self, base: str | os.PathLike) -> None:
        self.base = str(base)
        self._runs: dict[str, tuple[tuple, Run]] = {}
        self._listing: tuple[tuple | None, list[str]] | None = None
        self._lock = threading.Lock()

    def _read(self, run_id: str) -> Run | None:
        """The run, read again only if its files changed since it was last read."""
        signature = run_signature(os.path.join(self.base, run_id))
        cached = self._runs.get(run_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            run = load_run(run_id, self.base)
        except RunError:  # removed while we listed
            self._runs.pop(run_id, None)
            return None
        self._runs[run_id] = (signature, run)
        return run

    def runs(self, *, active_only: bool = False) -> list[Run]:
        """Every run, in the store's order (newest first). Each run folder is read once and then
        only when one of its files changed (a finished, failed or cancelled run is read once);
        liveness is checked anew.

        active_only (a page's one-second timer): only the runs whose files say queued or running
        are looked at; every other run is the one read last time, and the folder is listed again
        only when runs were added or removed."""
        with self._lock:
            stamp = _folder_stamp(self.base)
            if active_only and self._listing is not None and self._listing[0] == stamp:
                ids = self._listing[1]
            else:
                ids = list_run_ids(self.base)
                self._listing = (stamp, ids)
                for gone in set(self._runs) - set(ids):
                    self._runs.pop(gone, None)
            runs = []
            for run_id in ids:
                cached = self._runs.get(run_id)
                if active_only and cached is not None and cached[1].status_info.get("status") not in ACTIVE:
                    run = cached[1]  # settled: its folder is not even looked at
                else:
                    run = self._read(run_id)
                if run is not None:
                    runs.append(live(run))
            return runs
