"""Runs as the dashboard shows them: one table row per run, training curves, seconds per
epoch and ETA, the best run of each architecture, the queue. Everything takes `Run`s already
read (core.store.runs) or plain DataFrames and returns the same; nothing here reads files or
imports streamlit."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.models import list_models
from core.store.folder import ACTIVE
from core.store.runs import Run



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


RUN_TABLE_COLUMNS = ["run_id", "name", "reference", "arch", "status", "parameters", "epochs", "epochs_planned",
                     "val_acc", "test_acc", "test_low", "test_high", "sec_per_epoch", "device", "created", "warnings", "group"]


def run_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run, for Compare (numbers stay numbers so the table sorts)."""
    rows = []
    for run in runs:
        params = run.metrics.get("parameters")
        low, high = run.test_ci or (None, None)
        rows.append({
            "run_id": run.run_id, "name": run.name, "reference": run.reference, "arch": run.arch,
            "status": run.status,
            "parameters": params if isinstance(params, int) else None,
            "epochs": run.epochs_done, "epochs_planned": planned_epochs(run),
            "val_acc": run.val_acc, "test_acc": run.test_acc, "test_low": low, "test_high": high,
            "sec_per_epoch": seconds_per_epoch(run),
            "device": run.metrics.get("device") or run.config.get("device"),
            "created": run.status_info.get("created"), "warnings": "; ".join(run.warnings),
            "group": run_group(run)})
    frame = pd.DataFrame(rows, columns=RUN_TABLE_COLUMNS)
    for column in ("parameters", "epochs_planned"):
        frame[column] = frame[column].astype("Int64")
    for column in ("val_acc", "test_acc", "test_low", "test_high", "sec_per_epoch"):
        frame[column] = frame[column].astype("float64")
    return frame


# --- seed groups: one recipe over several seeds (config "group") ------------------------------

GROUP_COLUMNS = ["group", "arch", "runs", "n", "test_mean", "test_std", "val_mean", "val_std", "test_text",
                 "count_text"]


def run_group(run: Run) -> str | None:
    group = run.config.get("group")
    return group if isinstance(group, str) and group else None


def format_pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}%"


def mean_std_text(mean, std) -> str:
    """'99.01 ± 0.05%'; '99.01 ± –%' when std is undefined (one run); '–' without a mean."""
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.2f} ± {'–' if std is None or pd.isna(std) else f'{std:.2f}'}%"


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for fewer than two values); NaN, NaN for none."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def group_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per seed group among `runs` (GROUP_COLUMNS), newest group first: `runs` counts
    its runs, `n` its finished runs with a test accuracy, the only ones averaged: mean and
    sample std (ddof=1, NaN with one run) of their test and of their validation accuracy (a run
    cancelled after an epoch has a validation figure but is no member of the result), the test
    figure as text ('99.01 ± 0.05%') and the count as text ('2 of 3 runs; left out: 1 cancelled')."""
    members: dict[str, list[Run]] = {}
    for run in runs:
        if run_group(run):
            members.setdefault(run_group(run), []).append(run)
    rows = []
    for group, group_runs in members.items():
        counted = [r for r in group_runs if r.finished_with("test figure")]
        test_mean, test_std = _mean_std([r.test_acc for r in counted])
        val_mean, val_std = _mean_std([r.val_acc for r in counted if r.val_acc is not None])
        arches = sorted({r.arch for r in group_runs})
        rows.append({"group": group, "arch": ", ".join(arches), "runs": len(group_runs), "n": len(counted),
                     "test_mean": test_mean, "test_std": test_std, "val_mean": val_mean, "val_std": val_std,
                     "test_text": mean_std_text(test_mean, test_std),
                     "count_text": count_text(counted, group_runs)})
    frame = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    for column in ("test_mean", "test_std", "val_mean", "val_std"):
        frame[column] = frame[column].astype("float64")
    return frame.sort_values("group", ascending=False, kind="stable").reset_index(drop=True)


def count_text(counted: list[Run], group_runs: list[Run]) -> str:
    """'3 runs', or '2 of 3 runs; left out: 1 cancelled' when some did not finish."""
    total = len(group_runs)
    if len(counted) == total:
        return f"{total} run{'s' * (total != 1)}"
    ids = {r.run_id for r in counted}
    left: dict[str, int] = {}
    for run in group_runs:
        if run.run_id not in ids:
            reason = run.status if run.status != "finished" else "without a test figure"
            left[reason] = left.get(reason, 0) + 1
    return (f"{len(counted)} of {total} runs; left out: "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(left.items())))


def group_curves(runs: Iterable[Run], *, x: str = "epoch", smoothing: float = 0.0) -> pd.DataFrame:
    """Each seed group's curves as mean ± std per epoch, for bands: group, panel, epoch, x (mean
    over the runs), n, value (mean), std (sample, NaN with one run), lower, upper (mean ∓ std).
    Runs without a group are left out; `smoothing` applies to each run before averaging."""
    runs = [r for r in runs if run_group(r)]
    frame = curves(runs, x=x, smoothing=smoothing)
    columns = ["group", "panel", "epoch", "x", "n", "value", "std", "lower", "upper"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["group"] = frame["run_id"].map({r.run_id: run_group(r) for r in runs})
    stats = frame.groupby(["group", "panel", "epoch"], sort=True).agg(
        x=("x", "mean"), n=("value", "count"), value=("value", "mean"),
        std=("value", lambda v: v.std(ddof=1) if v.count() > 1 else math.nan)).reset_index()
    stats["lower"] = stats["value"] - stats["std"]
    stats["upper"] = stats["value"] + stats["std"]
    return stats[columns]


def best_run_per_arch(runs: Iterable[Run]) -> list[Run]:
    """The finished run with weights of each architecture whose `val_acc` is highest: the
    validation accuracy of the weights it keeps (its last epoch's, the EMA's with ema), so the
    chosen figure describes the model that is loaded. In registry order (unknown architectures
    last). Chosen on validation, never on the test set."""
    best: dict[str, Run] = {}
    for run in runs:
        if not run.finished_with("weights") or run.val_acc is None \
                or not isinstance(run.config.get("arch"), str):  # no model to rebuild (core.store.runs warned)
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


def active(runs: Iterable[Run]) -> list[Run]:
    """The queue: running then queued runs, oldest first."""
    return sorted((r for r in runs if r.status in ACTIVE),
                  key=lambda r: (r.status != "running", r.status_info.get("created", "")))


def newest(runs: Sequence[Run]) -> Run | None:
    """The most recently created run (by status.json's 'created', then run id: a folder with
    an unreadable status never hides the real newest run)."""
    if not runs:
        return None
    return max(runs, key=lambda r: (str(r.status_info.get("created") or ""), r.run_id))
