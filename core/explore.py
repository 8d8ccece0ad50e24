"""What the dashboard's pages compute, kept here so it is testable without Streamlit.

Dataset views (splits, class counts, mean images, sample selection), run tables and curves
(seconds per epoch, ETA, smoothing, best run per architecture), saved-prediction views
(confusion cells, mistakes, disagreements between two runs) and sweep grids. Everything
takes plain arrays, DataFrames or `Run`s and returns the same; nothing here reads files
except through `core.runs`, and nothing imports streamlit.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.data import split_indices
from core.metrics import confusion_matrix, per_class, row_normalised
from core.models import list_models
from core.runs import ACTIVE, Run

SPLITS = ("train", "validation", "test")
VAL_SIZE = 5000   # TrainConfig's default: the split every run uses unless told otherwise
SPLIT_SEED = 0    # TrainConfig's default seed
CLASSES = 10
RESUMABLE = ("interrupted", "cancelled", "failed")


# --- the dataset ------------------------------------------------------------------------------

def split_positions(split: str, n_train: int = 60_000, val_size: int = VAL_SIZE,
                    seed: int = SPLIT_SEED) -> np.ndarray | None:
    """Indices into the training files for 'train' or 'validation' (ascending, so the first
    images are the first of the file); None for 'test' (the whole test file, in order)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test":
        return None
    train_idx, val_idx = split_indices(n_train, val_size, seed)
    return np.sort((train_idx if split == "train" else val_idx).numpy())


def split_arrays(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, split: str, val_size: int = VAL_SIZE,
                 seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, file indices) of one split, the way training splits MNIST."""
    positions = split_positions(split, len(train_labels), val_size, seed)
    if positions is None:
        return test_images, test_labels, np.arange(len(test_labels))
    return train_images[positions], train_labels[positions], positions


def class_counts(labels_by_split: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table: split, digit, count (every digit present for every split)."""
    rows = [{"split": split, "digit": digit, "count": int(count)}
            for split, labels in labels_by_split.items()
            for digit, count in enumerate(np.bincount(np.asarray(labels, dtype=np.int64),
                                                      minlength=CLASSES)[:CLASSES])]
    return pd.DataFrame(rows, columns=["split", "digit", "count"])


def counts_table(counts: pd.DataFrame) -> pd.DataFrame:
    """`class_counts` as digits x splits, with a 'total' row."""
    table = counts.pivot(index="digit", columns="split", values="count")
    table = table[[s for s in SPLITS if s in table.columns]
                  + [s for s in table.columns if s not in SPLITS]]
    table.index = table.index.astype(str)
    table.loc["total"] = table.sum()
    return table.astype(int)


def mean_images(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean image per class, float32 (10, 28, 28) on [0, 1] (zeros for an absent class)."""
    labels = np.asarray(labels, dtype=np.int64)
    means = np.zeros((CLASSES, *images.shape[1:]), dtype=np.float32)
    for digit in range(CLASSES):
        chosen = images[labels == digit]
        if len(chosen):
            # One class at a time: its float32 copy is at most ~27 MB (6,742 images).
            means[digit] = chosen.astype(np.float32).mean(0) / 255.0
    return means


def select_samples(labels: np.ndarray, digit: int | None = None, start: int = 0,
                   count: int = 30) -> np.ndarray:
    """Positions of `count` images from `start` on, optionally only of class `digit`."""
    positions = np.arange(len(labels)) if digit is None else np.flatnonzero(np.asarray(labels) == digit)
    start = max(0, int(start))
    return positions[start:start + max(0, int(count))]


# --- runs -----------------------------------------------------------------------------------

def seconds_per_epoch(run: Run) -> float | None:
    """Mean wall time of a finished epoch, from history.csv (else metrics)."""
    seconds = pd.to_numeric(run.history.get("seconds", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(seconds):
        return float(seconds.mean())
    total, epochs = run.metrics.get("seconds"), run.metrics.get("epochs")
    if isinstance(total, (int, float)) and isinstance(epochs, int) and epochs > 0:
        return float(total) / epochs
    return None


def planned_epochs(run: Run) -> int | None:
    value = run.config.get("epochs", run.progress.get("epochs"))
    return value if isinstance(value, int) else None


def epoch_fraction(progress: dict) -> float:
    """How far the current epoch is, 0..1, from progress.json."""
    step, steps = progress.get("step"), progress.get("steps")
    if not isinstance(step, (int, float)) or not isinstance(steps, (int, float)) or steps <= 0:
        return 0.0
    return float(min(1.0, max(0.0, step / steps)))


def eta_seconds(progress: dict, history: pd.DataFrame, epochs: int | None = None) -> float | None:
    """Seconds left for a running job: the rest of this epoch plus the epochs after it.

    An epoch's cost is the mean of the finished ones (history), else the current epoch's pace
    (epoch_seconds / fraction done). Evaluation at the end is not counted (seconds on MNIST).
    """
    epochs = epochs or progress.get("epochs")
    epoch = progress.get("epoch")
    if not isinstance(epochs, int) or not isinstance(epoch, int):
        return None
    done = epoch_fraction(progress)
    seconds = pd.to_numeric(history.get("seconds", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(seconds):
        per_epoch = float(seconds.mean())
    else:
        elapsed = progress.get("epoch_seconds")
        if not isinstance(elapsed, (int, float)) or done <= 0:
            return None
        per_epoch = float(elapsed) / done
    return max(0.0, (1.0 - done) * per_epoch + max(0, epochs - epoch) * per_epoch)


def is_resumable(run: Run) -> bool:
    """Stopped before its end with at least one saved epoch (history lists only epochs whose
    train state was saved first, so a listed epoch can always be resumed)."""
    return run.status in RESUMABLE and run.epochs_done > 0 and bool(run.config)


RUN_TABLE_COLUMNS = ["run_id", "name", "arch", "status", "parameters", "epochs", "epochs_planned",
                     "val_acc", "test_acc", "sec_per_epoch", "device", "created", "warnings"]


def run_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run, for Compare (numbers stay numbers so the table sorts)."""
    rows = []
    for run in runs:
        params = run.metrics.get("parameters")
        rows.append({
            "run_id": run.run_id, "name": run.name, "arch": run.arch, "status": run.status,
            "parameters": params if isinstance(params, int) else None,
            "epochs": run.epochs_done, "epochs_planned": planned_epochs(run),
            "val_acc": run.val_acc, "test_acc": run.test_acc,
            "sec_per_epoch": seconds_per_epoch(run),
            "device": run.metrics.get("device") or run.config.get("device"),
            "created": run.status_info.get("created"), "warnings": "; ".join(run.warnings)})
    frame = pd.DataFrame(rows, columns=RUN_TABLE_COLUMNS)
    for column in ("parameters", "epochs_planned"):
        frame[column] = frame[column].astype("Int64")
    for column in ("val_acc", "test_acc", "sec_per_epoch"):
        frame[column] = frame[column].astype("float64")
    return frame


def best_run_per_arch(runs: Iterable[Run]) -> list[Run]:
    """The finished run with weights and the best validation accuracy of each architecture,
    in registry order (unknown architectures last). Chosen on validation, never on the test set."""
    best: dict[str, Run] = {}
    for run in runs:
        if run.status != "finished" or not run.has_weights or run.val_acc is None:
            continue
        if run.arch not in best or run.val_acc > best[run.arch].val_acc:
            best[run.arch] = run
    order = {name: i for i, name in enumerate(list_models())}
    return sorted(best.values(), key=lambda r: (order.get(r.arch, len(order)), r.arch))


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average as TensorBoard draws it (debiased, NaNs skipped)."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    if weight == 0:
        return values.copy()
    out = np.full_like(values, np.nan)
    last, norm = 0.0, 0.0
    for i, value in enumerate(values):
        if math.isnan(value):
            continue
        last = weight * last + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out[i] = last / norm
    return out


PANELS = ("train loss", "validation loss", "train accuracy (%)", "validation accuracy (%)")
_PANEL_COLUMNS = dict(zip(PANELS, ("train_loss", "val_loss", "train_acc", "val_acc")))


def curves(runs: Iterable[Run], *, x: str = "epoch", smoothing: float = 0.0) -> pd.DataFrame:
    """Long table of every run's curves for the 2x2 grid: run_id, name, panel, metric, split,
    epoch, time (s since the run's start, from per-epoch seconds), x, value, raw."""
    if x not in ("epoch", "time"):
        raise ValueError(f"x must be 'epoch' or 'time', got {x!r}")
    frames = []
    for run in runs:
        history = run.history.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
        if history.empty:
            continue
        time = history["seconds"].fillna(0).cumsum()
        for panel, column in _PANEL_COLUMNS.items():
            raw = history[column].to_numpy(dtype=np.float64)
            frames.append(pd.DataFrame({
                "run_id": run.run_id, "name": run.name, "panel": panel,
                "metric": "loss" if "loss" in column else "accuracy",
                "split": "train" if column.startswith("train") else "validation",
                "epoch": history["epoch"].to_numpy(), "time": time.to_numpy(),
                "value": smooth(raw, smoothing), "raw": raw}))
    columns = ["run_id", "name", "panel", "metric", "split", "epoch", "time", "x", "value", "raw"]
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True)
    frame["x"] = frame[x]
    return frame[columns]


def live_curves(history: pd.DataFrame, progress: dict | None = None) -> pd.DataFrame:
    """One run's loss and accuracy, train and validation, by (fractional) epoch: finished
    epochs from history plus, while it trains, the running train figures of this epoch."""
    rows = []
    history = history.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
    for record in history.to_dict("records"):
        for split, prefix in (("train", "train"), ("validation", "val")):
            rows.append({"epoch": record["epoch"], "split": split,
                         "loss": record[f"{prefix}_loss"], "accuracy": record[f"{prefix}_acc"]})
    progress = progress or {}
    epoch, done = progress.get("epoch"), epoch_fraction(progress)
    finished = int(history["epoch"].max()) if len(history) else 0
    if isinstance(epoch, int) and epoch > finished and done > 0 \
            and isinstance(progress.get("train_loss"), (int, float)):
        rows.append({"epoch": epoch - 1 + done, "split": "train",
                     "loss": progress["train_loss"], "accuracy": progress.get("train_acc")})
    frame = pd.DataFrame(rows, columns=["epoch", "split", "loss", "accuracy"])
    return frame.melt(id_vars=["epoch", "split"], value_vars=["loss", "accuracy"],
                      var_name="metric", value_name="value")


# --- saved predictions ----------------------------------------------------------------------

def confidence(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """Probability the model gave its own prediction, per test image."""
    probs = predictions["probabilities"]
    return probs[np.arange(len(probs)), predictions["predicted"]]


def confusion_table(cm: np.ndarray) -> pd.DataFrame:
    """Long table for a heatmap: true, predicted, count, share (of the true class's row)."""
    cm = np.asarray(cm)
    shares = row_normalised(cm)
    true, predicted = np.meshgrid(np.arange(cm.shape[0]), np.arange(cm.shape[1]), indexing="ij")
    return pd.DataFrame({"true": true.ravel(), "predicted": predicted.ravel(),
                         "count": cm.ravel().astype(int), "share": shares.ravel()})


def per_class_table(cm: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 (0..1) and support per digit."""
    table = pd.DataFrame(per_class(cm))
    table.insert(0, "digit", range(len(table)))
    return table


def top_confusion(cm: np.ndarray) -> tuple[int, int]:
    """(true, predicted) of the most frequent mistake; (0, 0) if there is none."""
    off = np.array(cm, dtype=np.int64)
    np.fill_diagonal(off, -1)
    if off.max() <= 0:
        return 0, 0
    true, predicted = np.unravel_index(int(off.argmax()), off.shape)
    return int(true), int(predicted)


ORDERS = ("confident", "unsure", "index")


def _ordered(frame: pd.DataFrame, order: str) -> pd.DataFrame:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == "index":
        return frame.sort_values("index", kind="stable")
    return frame.sort_values(["confidence", "index"], ascending=[order == "unsure", True], kind="stable")


def _prediction_frame(predictions: dict[str, np.ndarray], positions: np.ndarray) -> pd.DataFrame:
    probs = predictions["probabilities"]
    labels, predicted = predictions["labels"], predictions["predicted"]
    return pd.DataFrame({"index": positions, "label": labels[positions].astype(int),
                         "predicted": predicted[positions].astype(int),
                         "confidence": probs[positions, predicted[positions]].astype(float),
                         "p_true": probs[positions, labels[positions]].astype(float)})


def cell_examples(predictions: dict[str, np.ndarray], true: int, predicted: int,
                  order: str = "confident") -> pd.DataFrame:
    """The test images of one confusion-matrix cell (index, label, predicted, confidence, p_true)."""
    mask = (predictions["labels"] == true) & (predictions["predicted"] == predicted)
    return _ordered(_prediction_frame(predictions, np.flatnonzero(mask)), order).reset_index(drop=True)


def mistakes(predictions: dict[str, np.ndarray], *, true: int | None = None,
             predicted: int | None = None, order: str = "confident") -> pd.DataFrame:
    """Wrong test predictions, optionally of one true and/or predicted class; most confident
    first by default ('unsure' reverses it, 'index' keeps test-set order)."""
    mask = predictions["labels"] != predictions["predicted"]
    if true is not None:
        mask &= predictions["labels"] == true
    if predicted is not None:
        mask &= predictions["predicted"] == predicted
    return _ordered(_prediction_frame(predictions, np.flatnonzero(mask)), order).reset_index(drop=True)


def disagreements(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indices run A gets wrong and B right, indices B gets wrong and A right)."""
    if len(a["labels"]) != len(b["labels"]) or not np.array_equal(a["labels"], b["labels"]):
        raise ValueError("the two runs were not evaluated on the same test images")
    a_right = a["predicted"] == a["labels"]
    b_right = b["predicted"] == b["labels"]
    return np.flatnonzero(~a_right & b_right), np.flatnonzero(a_right & ~b_right)


def page_slice(n_items: int, page: int, per_page: int) -> tuple[slice, int]:
    """(slice of the items on 1-based `page`, number of pages); `page` is clamped."""
    pages = max(1, math.ceil(n_items / per_page))
    page = min(max(1, int(page)), pages)
    return slice((page - 1) * per_page, min(n_items, page * per_page)), pages


def check_predictions(predictions: dict[str, np.ndarray]) -> str | None:
    """Why saved predictions cannot be shown, or None if they are consistent."""
    labels, predicted, probs = (predictions.get(k) for k in ("labels", "predicted", "probabilities"))
    if labels is None or predicted is None or probs is None:
        return "the predictions file lacks labels, predicted or probabilities"
    if probs.ndim != 2 or probs.shape[1] != CLASSES or not (len(labels) == len(predicted) == len(probs)):
        return f"the predictions have inconsistent shapes {labels.shape}, {predicted.shape}, {probs.shape}"
    if len(labels) and (labels.min() < 0 or labels.max() >= CLASSES or predicted.min() < 0
                        or predicted.max() >= CLASSES):
        return "the predictions hold class numbers outside 0..9"
    return None


def prediction_confusion(predictions: dict[str, np.ndarray]) -> np.ndarray:
    return confusion_matrix(predictions["labels"], predictions["predicted"])


# --- sweeps ---------------------------------------------------------------------------------

SWEEP_COLUMNS = ["run_id", "name", "lr", "batch_size", "status", "val_acc", "test_acc"]


def sweep_ids(runs: Iterable[Run]) -> list[str]:
    """Sweep ids present among `runs`, newest first (as core.sweep.list_sweeps)."""
    return sorted({r.config["sweep"] for r in runs if isinstance(r.config.get("sweep"), str)}, reverse=True)


def sweep_table(runs: Iterable[Run], sweep_id: str) -> pd.DataFrame:
    """One row per run of `sweep_id` (as core.sweep.sweep_runs, plus the run's name)."""
    rows = [{"run_id": r.run_id, "name": r.name, "lr": r.config.get("lr"),
             "batch_size": r.config.get("batch_size"), "status": r.status,
             "val_acc": r.val_acc, "test_acc": r.test_acc}
            for r in runs if r.config.get("sweep") == sweep_id]
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    return frame.sort_values(["lr", "batch_size"], kind="stable").reset_index(drop=True)


def sweep_cells(table: pd.DataFrame) -> pd.DataFrame:
    """`sweep_table` with a text label per cell: the accuracy, else the status."""
    cells = table.copy()
    cells["label"] = [f"{acc:.2f}" if acc is not None and not pd.isna(acc) else status
                      for acc, status in zip(cells["val_acc"], cells["status"])]
    cells["lr_text"] = [f"{lr:g}" if isinstance(lr, (int, float)) and not pd.isna(lr) else "?"
                        for lr in cells["lr"]]
    return cells


def active(runs: Iterable[Run]) -> list[Run]:
    """Running then queued runs, oldest first (as core.jobs.queue, from runs already read)."""
    return sorted((r for r in runs if r.status in ACTIVE),
                  key=lambda r: (r.status != "running", r.status_info.get("created", "")))


def newest(runs: Sequence[Run]) -> Run | None:
    """The most recently created run (by status.json's 'created', then run id: a folder with
    an unreadable status never hides the real newest run)."""
    if not runs:
        return None
    return max(runs, key=lambda r: (str(r.status_info.get("created") or ""), r.run_id))
