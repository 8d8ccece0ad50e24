"""What the pages read from disk, cached: the runs, a run's dataset record, its saved test
predictions and clean-label accuracy, and MNIST itself.

Caching: a run folder is read once and again only when one of its small files changes
(load_runs keeps each Run beside the mtimes, sizes and inodes of its files), so a finished run
costs a few stats per render and the Train page's timer looks at the active runs alone;
predictions are re-read when their file changes. Every call into core passes root=None so
$MNIST_LAB_CHECKPOINTS / $MNIST_LAB_DATA steer it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import streamlit as st

from core.data import mnist as data_mod
from core.store.folder import (ACTIVE, DATASET, PREDICTIONS, SMALL_FILES, RunError, checkpoints_dir,
                               effective_status, read_json)
from core.store.runs import Run, list_run_ids, load_predictions, load_run
from dashboard.text import md_text


# --- cache keys -------------------------------------------------------------------------------

def checkpoints_base() -> str:
    """The checkpoints folder ($MNIST_LAB_CHECKPOINTS or the default), resolved: the first key of
    every cache of run data."""
    return str(checkpoints_dir(None).resolve())


def file_mtime(path) -> int:
    """The file's mtime in ns, 0 if it is missing."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def file_stamp(path) -> tuple | None:
    """(mtime, size, inode) of a file, None if it is missing: weights are written by renaming a
    new file into place, so a rewritten file always has another stamp."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# --- runs -------------------------------------------------------------------------------------

def run_signature(folder: str) -> tuple:
    """(mtime, size, inode) of each file `load_run` reads (core.store.runs.SMALL_FILES): every run file
    is written by renaming a new file into place, so any write changes the signature."""
    out = []
    for name in SMALL_FILES:
        try:
            stat = os.stat(os.path.join(folder, name))
            out.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class _RunStore:
    """What one checkpoints folder held when last read: run id -> (signature, Run), and the
    folder's listing with the (mtime, inode) of the folder it came from. Shared by every session
    of this process; a Run in it is never changed (load_runs hands out copies where the status
    differs), so no reader sees another's edit."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[tuple, Run]] = {}
        self.listing: tuple[tuple, list[str]] | None = None


@st.cache_resource(max_entries=8, show_spinner=False)
def _store(base: str) -> _RunStore:
    return _RunStore()


def _folder_stamp(base: str) -> tuple | None:
    try:
        stat = os.stat(base)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _read(store: _RunStore, base: str, run_id: str) -> Run | None:
    """The run, read again only if its files changed since it was last read."""
    signature = run_signature(os.path.join(base, run_id))
    cached = store.runs.get(run_id)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        run = load_run(run_id, base)
    except RunError:  # removed while we listed
        store.runs.pop(run_id, None)
        return None
    store.runs[run_id] = (signature, run)
    return run


def _live(run: Run) -> Run:
    """The run with its status as of now: an active one (by its files) counts only while a
    process holds its lock, which no file records, so it is checked on every call."""
    if run.status_info.get("status") not in ACTIVE:
        return run
    status = effective_status(run.status_info, run.path)
    return run if status == run.status else dataclasses.replace(run, status=status)


def load_runs(*, active_only: bool = False) -> list[Run]:
    """Every run, newest first. Each run folder is read once and then only when one of its
    files changed (a finished, failed or cancelled run is read once); liveness is checked anew.

    active_only (the Train page's one-second timer): only the runs whose files say queued or
    running are looked at; every other run is the one read last time, and the folder is listed
    again only when runs were added or removed."""
    base = checkpoints_base()
    store = _store(base)
    stamp = _folder_stamp(base)
    if active_only and store.listing is not None and store.listing[0] == stamp:
        ids = store.listing[1]
    else:
        ids = list_run_ids(base)
        store.listing = (stamp, ids)
        for gone in set(store.runs) - set(ids):
            store.runs.pop(gone, None)
    runs = []
    for run_id in ids:
        cached = store.runs.get(run_id)
        if active_only and cached is not None and cached[1].status_info.get("status") not in ACTIVE:
            run = cached[1]  # settled: its folder is not even looked at
        else:
            run = _read(store, base, run_id)
        if run is not None:
            runs.append(_live(run))
    return runs


# --- what a run saved -------------------------------------------------------------------------

def dataset_info(run: Run) -> dict:
    """What the run trained on (its dataset.json), or {} when it has none (older runs)."""
    path = run.path / DATASET
    return _read_dataset(str(path), file_mtime(path))


@st.cache_data(max_entries=256, show_spinner=False)
def _read_dataset(path: str, mtime: int) -> dict:
    if not mtime:  # no such file
        return {}
    return read_json(Path(path)) or {}


@st.cache_data(ttl=600, max_entries=24, show_spinner=False)
def _read_predictions(base: str, run_id: str, mtime: int) -> dict[str, np.ndarray]:
    return load_predictions(run_id, base)


@st.cache_data(max_entries=4096, show_spinner=False)
def _accuracy_without_confirmed(base: str, run_id: str, mtime: int) -> tuple[float | None, str | None]:
    """(the figure, None), or (None, why the predictions cannot be used). Kept apart from the
    predictions' own small cache: Compare's table asks it of every run on every rerun, and one
    figure per run is all it needs."""
    from core.analysis.label_issues import accuracy_without_confirmed
    try:
        return accuracy_without_confirmed(run_id, base)[1], None
    except RunError as exc:
        return None, str(exc)


def accuracy_without_confirmed(run: Run) -> float | None:
    """The run's test accuracy without the 15 confirmed label errors, None without predictions."""
    if not run.has_predictions:
        return None
    return _accuracy_without_confirmed(checkpoints_base(), run.run_id, file_mtime(run.path / PREDICTIONS))[0]


def predictions_problem(run: Run) -> str | None:
    """Why the run's saved test predictions cannot be used, None if they can (or there are none)."""
    if not run.has_predictions:
        return None
    return _accuracy_without_confirmed(checkpoints_base(), run.run_id, file_mtime(run.path / PREDICTIONS))[1]


def saved_predictions(run: Run) -> dict[str, np.ndarray] | None:
    """The run's saved test predictions, or None after showing a warning (load_predictions has
    checked them: a file that cannot be used is a RunError that says why)."""
    try:
        return _read_predictions(checkpoints_base(), run.run_id, file_mtime(run.path / PREDICTIONS))
    except RunError as exc:
        st.warning(f"**{md_text(run.name)}**: {md_text(exc)}", icon=":material/warning:")
        return None


# --- MNIST ------------------------------------------------------------------------------------

@st.cache_resource(max_entries=2, show_spinner="Reading MNIST…")
def cached_mnist(raw: str) -> dict[str, np.ndarray]:
    mnist = data_mod.load_mnist(None)
    return {"train_images": mnist.train_images.numpy(), "train_labels": mnist.train_labels.numpy(),
            "test_images": mnist.test_images.numpy(), "test_labels": mnist.test_labels.numpy()}


def mnist() -> dict[str, np.ndarray] | None:
    """MNIST as numpy arrays (cached), or None after showing why it is unusable."""
    try:
        return cached_mnist(str(data_mod.raw_dir(None).resolve()))
    except data_mod.DataError as exc:
        st.error(str(exc))
        return None


def test_images() -> np.ndarray | None:
    arrays = mnist()
    return None if arrays is None else arrays["test_images"]
