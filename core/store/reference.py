"""Reference runs: MNIST Lab's own trained models, shipped in the repository's checkpoints/.

A reference run is an ordinary finished run folder with one more file, `reference.json`, that
says so (and what was done to make it small). Every page and command reads it like any other
run; the store refuses to delete or rename it (`core.store.runs.delete_run`, `rename_run`).

`ship(run_id, root)` turns a finished run into a reference run: it drops what only a resume
or a live job needs (train_state.pt, the log, the lock, progress.json), stores the test
probabilities as float16 and the labels as uint8 when every predicted digit stays exactly
the recorded one, names a run called "reference" "<arch> reference" (so legends tell them
apart), writes the marker and, unless it is a sweep's cell, computes its UMAP embedding map
(core.analysis.embedding), so the Embedding map page opens without a wait. `verify(run_id, root)`
rebuilds the model from its committed weights on the CPU, predicts the 10,000 test images and compares the predicted
digits and the test accuracy with the run's own files: the test suite runs it on every
shipped run, so a reference run cannot rot.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.fsio import atomic_write_bytes, atomic_write_json
from core.metrics import evaluate
from core.models import channels_last
from core.store.folder import (CONFIG, LOCK_NAME, LOG_NAME, PREDICTIONS, PROGRESS, REFERENCE, TRAIN_STATE, RunError,
                               run_dir)
from core.store.runs import list_run_ids, load_model, load_predictions, load_run
from core.store.writer import tensors_bytes

DROPPED = (TRAIN_STATE, LOG_NAME, LOCK_NAME, PROGRESS)  # only a resume or a live job reads these


def ship(run_id: str, root: str | os.PathLike | None = None, commit: str | None = None) -> dict:
    """Make the finished run `run_id` a compact reference run; return its reference.json.
    `commit`: the commit it was trained at (default: the repository's HEAD now)."""
    run = load_run(run_id, root)
    if not run.finished_with("weights"):
        raise RunError(f"run {run_id!r} is {run.status}: only a finished run with weights can be a reference run")
    preds = load_predictions(run_id, root)
    half = preds["probabilities"].astype(np.float16)
    # float16 keeps the ranking a page needs; it is used only if no predicted digit changes
    compact = bool((half.astype(np.float32).argmax(1) == preds["predicted"]).all())
    tensors = {"labels": torch.from_numpy(preds["labels"].astype(np.uint8)),
               "predicted": torch.from_numpy(preds["predicted"].astype(np.uint8)),
               "probabilities": torch.from_numpy(half if compact else preds["probabilities"].astype(np.float32))}
    atomic_write_bytes(run.path / PREDICTIONS, tensors_bytes(tensors))
    for name in DROPPED:
        (run.path / name).unlink(missing_ok=True)
    if run.config.get("name") in (None, "reference"):  # curves' legends and tables tell them apart
        atomic_write_json(run.path / CONFIG, {**run.config, "name": f"{run.arch} reference"})
    marker = {"reference": True, "recipe": run.arch,
              "probabilities": "float16" if compact else "float32",
              "trained_at_commit": commit or _commit(), "note": "shipped with MNIST Lab; verified by tests/test_reference.py"}
    atomic_write_json(run.path / REFERENCE, marker)
    return marker


def _commit() -> str | None:
    """The repository's HEAD, when known."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Verdict:
    run_id: str
    recorded_accuracy: float
    accuracy: float
    differing: int   # test images whose predicted digit differs from the recorded one

    @property
    def ok(self) -> bool:
        return self.differing == 0 and self.accuracy == self.recorded_accuracy


def verify(run_id: str, root: str | os.PathLike | None = None, data_root=None) -> Verdict:
    """Rebuild the run's model from its weights on the CPU, predict MNIST's test set the way
    the trainer did (batches of 1,000, the run's memory layout) and compare."""
    run = load_run(run_id, root)
    model = load_model(run_id, root)
    mnist = load_mnist(data_root)
    x, y = normalize_uint8(mnist.test_images), mnist.test_labels.long()
    if run.metrics.get("channels_last"):
        model, x = channels_last(model, x)
    _, accuracy, probs = evaluate(model, x, y)
    recorded = load_predictions(run_id, root)
    if not np.array_equal(recorded["labels"], y.numpy()):
        raise RunError(f"run {run_id!r}: its recorded labels are not MNIST's test labels in order")
    differing = int((probs.argmax(1).numpy() != recorded["predicted"]).sum())
    return Verdict(run_id, float(run.metrics.get("test_accuracy", float("nan"))), accuracy, differing)


def reference_ids(root: str | os.PathLike | None = None) -> list[str]:
    """The reference runs in the checkpoints folder `root`, in the store's order."""
    return [i for i in list_run_ids(root) if (run_dir(i, root) / REFERENCE).is_file()]
