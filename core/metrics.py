"""Classification metrics: a model over a labelled set (evaluate), the check every set of saved
predictions passes, and the figures computed from them (the dashboard reads the same)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.mnist import batches

CLASSES = 10
EVAL_BATCH = 1000  # images per forward pass when evaluating


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """cm[true, predicted] = count."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class(cm: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall and F1 per class; 0 where a class was never predicted / present."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": cm.sum(1).astype(int).tolist()}


def mean_probabilities(predictions: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The mean of several runs' saved probabilities (N, 10), in float64: an ensemble of them
    (core.analysis.ensemble) and the label-issue ranking (core.analysis.label_issues) both use it."""
    return np.mean([p["probabilities"].astype(np.float64) for p in predictions], axis=0)


def row_normalised(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH,
             amp: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy in %, probabilities (N, 10) on the CPU), in order, no batch dropped."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    probs = []
    for xb, yb in batches(x, y, batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        probs.append(logits.softmax(1))
    p = torch.cat(probs) if probs else torch.zeros(0, 10, device=x.device)
    # From the integer count: a float32 mean turns 9,970 of 10,000 into 99.6999979, below 99.7.
    acc = (p.argmax(1) == y).sum().item() * 100 / len(y) if len(y) else math.nan
    return loss_sum.item() / max(1, len(y)), acc, p.cpu()


ROW_SUM_TOLERANCE = 5e-3  # float16-stored reference runs sum to 1 within 4e-4; a real defect is far off


ARGMAX_TOLERANCE = 1e-6  # probabilities kept as float16 (reference runs) tie where float32 did not


def check_predictions(predictions: dict[str, np.ndarray]) -> str | None:
    """Why saved test predictions cannot be used, or None if they can: the one check of a
    predictions file, made by core.store.runs.load_predictions for every reader (label issues,
    ensembles, Evaluate, Mistakes, Compare). Labels, predicted digits and probabilities must
    all be there, of one length, classes 0..9, and each row of probabilities finite,
    non-negative and summing to 1."""
    missing = [k for k in ("labels", "predicted", "probabilities") if predictions.get(k) is None]
    if missing:
        return f"the predictions file lacks {' and '.join(missing)}"
    labels, predicted, probs = (np.asarray(predictions[k]) for k in ("labels", "predicted", "probabilities"))
    if labels.ndim != 1 or predicted.ndim != 1 or probs.ndim != 2 or probs.shape[1] != CLASSES:
        return (f"the predictions have shapes labels {labels.shape}, predicted {predicted.shape}, probabilities "
                f"{probs.shape}; expected (N,), (N,) and (N, {CLASSES})")
    if not len(labels) == len(predicted) == len(probs):
        return (f"the predictions have inconsistent shapes: {len(labels):,} labels, {len(predicted):,} predicted "
                f"digits and {len(probs):,} rows of probabilities")
    if not len(labels):
        return "the predictions file holds no test images"
    for name, values in (("labels", labels), ("predicted digits", predicted)):
        if not np.issubdtype(values.dtype, np.integer):
            return f"the {name} are stored as {values.dtype}, not as whole numbers"
        if values.min() < 0 or values.max() >= CLASSES:
            return f"the predictions hold {name} outside 0..{CLASSES - 1}"
    if not np.issubdtype(probs.dtype, np.floating):
        return f"the probabilities are {probs.dtype}, not numbers with a fraction"
    bad_rows = ~np.isfinite(probs).all(axis=1)
    if bad_rows.any():
        return (f"the probabilities are not all finite numbers (NaN or infinite in {int(bad_rows.sum()):,} rows, "
                f"the first at test image {int(np.flatnonzero(bad_rows)[0])})")
    negative = (probs < 0).any(axis=1)
    if negative.any():
        return (f"the probabilities hold negative values ({int(negative.sum()):,} rows, the first at test image "
                f"{int(np.flatnonzero(negative)[0])})")
    sums = probs.astype(np.float64).sum(axis=1)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        first = int(np.flatnonzero(off)[0])
        return (f"the probabilities of {int(off.sum()):,} test images do not sum to 1 (test image {first}: "
                f"{sums[first]:.4g})")
    # the predicted digit is the most probable one (of those tied for it): what every writer saves
    beaten = probs[np.arange(len(probs)), predicted] < probs.max(axis=1) - ARGMAX_TOLERANCE
    if beaten.any():
        first = int(np.flatnonzero(beaten)[0])
        count = int(beaten.sum())
        return (f"the predicted digit is not the most probable one for {count:,} test image{'s' * (count != 1)} "
                f"(test image {first}: predicted {int(predicted[first])}, most probable {int(probs[first].argmax())})")
    return None
