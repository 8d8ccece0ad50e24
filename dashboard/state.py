"""What the pages read from disk, cached: the runs, a run's dataset record, its saved test
predictions and clean-label accuracy, and MNIST itself.

Caching: a run folder is read once and again only when one of its small files changes (the
store's RunCache, one per folder for the process), so a finished run costs a few stats per
render and the Train page's timer looks at the active runs alone; predictions are re-read when
their file changes. Every call into core passes root=None so
$MNIST_LAB_CHECKPOINTS / $MNIST_LAB_DATA steer it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import streamlit as st

from core.analysis import calibration, compare, label_issues
from core.data import mnist as data_mod
from core.store.cache import RunCache
from core.store.folder import CALIBRATION, DATASET, PREDICTIONS, WEIGHTS, RunError, checkpoints_dir, read_json
from core.store.runs import Run, load_predictions
from dashboard.text import md_text


# --- what one session computed for all -------------------------------------------------------

EXPORTS: dict[tuple, dict] = {}  # Evaluate's checked ONNX zips by (store, run, finished at): a visitor downloads the owner's
MAX_EXPORTS = 16


def keep_export(key: tuple, ready: dict) -> None:
    EXPORTS[key] = ready
    while len(EXPORTS) > MAX_EXPORTS:
        EXPORTS.pop(next(iter(EXPORTS)))  # the oldest


# --- cache keys -------------------------------------------------------------------------------

def checkpoints_base() -> str:
    """The checkpoints folder ($MNIST_LAB_CHECKPOINTS or the default), resolved: the first key of
    every cache of run data."""
    return _resolved(str(checkpoints_dir(None)), os.getcwd())


@functools.lru_cache(maxsize=16)
def _resolved(path: str, cwd: str) -> str:
    """`path` from `cwd`, resolved, once: a Sketch stroke asks for it twice per model."""
    return str((Path(cwd) / path).resolve())


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

@st.cache_resource(max_entries=8, show_spinner=False)
def _run_cache(base: str) -> RunCache:
    """One core.store.cache.RunCache per checkpoints folder, shared by every session."""
    return RunCache(base)


def load_runs(*, active_only: bool = False) -> list[Run]:
    """Every run, newest first, each folder read again only when its files changed
    (core.store.cache.RunCache); active_only for the Train page's one-second timer."""
    return _run_cache(checkpoints_base()).runs(active_only=active_only)


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
    try:
        return label_issues.accuracy_without_confirmed(run_id, base)[1], None
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


def _predictions_stamp() -> tuple:
    """What the label-issue ranking depends on: every run's id, name, status and the stamp of its
    saved predictions. Changes when a run finishes, is renamed, deleted or rewritten."""
    return tuple((r.run_id, r.name, r.status, r.reference, file_stamp(r.path / PREDICTIONS))
                 for r in load_runs())


@st.cache_data(max_entries=8, show_spinner=False)
def _usable_default_runs(base: str, stamp: tuple) -> tuple[list[str], list[str]]:
    return label_issues.usable_default_runs(base)


def usable_default_runs() -> tuple[list[str], list[str]]:
    """core.analysis.label_issues.usable_default_runs, read again only when a run changed."""
    return _usable_default_runs(checkpoints_base(), _predictions_stamp())


@st.cache_data(max_entries=8, show_spinner="Ranking the test images…")
def _ranking(base: str, run_ids: tuple[str, ...], stamp: tuple) -> label_issues.Ranking:
    return label_issues.rank(list(run_ids), base)


def label_ranking(run_ids: list[str]) -> label_issues.Ranking:
    """core.analysis.label_issues.rank of these runs, computed again only when a run changed
    (a LabError is raised, not kept)."""
    return _ranking(checkpoints_base(), tuple(run_ids), _predictions_stamp())


@st.cache_data(max_entries=16, show_spinner="Comparing the runs image by image…")
def _pairwise(base: str, run_ids: tuple[str, ...], stamp: tuple) -> compare.Pairwise:
    return compare.pairwise(list(run_ids), base)


def pairwise(run_ids: list[str]) -> compare.Pairwise:
    """core.analysis.compare.pairwise of these runs, computed again only when a run changed (a
    LabError is raised, not kept)."""
    return _pairwise(checkpoints_base(), tuple(run_ids), _predictions_stamp())


def kept_calibration(run: Run) -> calibration.Calibration | None:
    """The run's kept calibration (core.analysis.calibration.kept), read again when its file or
    its weights change."""
    return calibration_kept(run)[0]


def calibration_kept(run: Run) -> tuple[calibration.Calibration | None, str | None]:
    """(the run's kept calibration, None), or (None, why its file is damaged), or (None, None)."""
    return _kept_calibration(checkpoints_base(), run.run_id, file_stamp(run.path / CALIBRATION),
                             file_stamp(run.path / WEIGHTS))


@st.cache_data(max_entries=256, show_spinner=False)
def _kept_calibration(base: str, run_id: str, stamp: tuple | None, weights: tuple | None):
    return calibration.kept(run_id, base) if stamp else (None, None)


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
