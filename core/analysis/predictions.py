"""A run's saved test predictions as the Evaluate and Mistakes pages show them: confusion
cells, per-class scores, mistakes ordered by confidence, disagreements between two runs.
Both pages read the same file (core.store.runs.load_predictions: labels, predicted, probabilities),
so the matrix and the gallery always agree. Nothing here imports streamlit."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.errors import LabError
from core.metrics import confusion_matrix, per_class, row_normalised
ORDERS = ("confident", "unsure", "index")


class PredictionsError(LabError, ValueError):
    """Saved predictions that cannot be compared; the message says why."""


def prediction_confusion(predictions: dict[str, np.ndarray]) -> np.ndarray:
    return confusion_matrix(predictions["labels"], predictions["predicted"])


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


def same_images(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether two runs' saved predictions are of the same test images (the same labels, in
    order): what comparing them image by image, or averaging them, needs."""
    return np.array_equal(a["labels"], b["labels"])


def _require_same_images(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    if not same_images(a, b):
        raise PredictionsError("the two runs were not evaluated on the same test images")


def disagreements(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indices run A gets wrong and B right, indices B gets wrong and A right)."""
    _require_same_images(a, b)
    a_right = a["predicted"] == a["labels"]
    b_right = b["predicted"] == b["labels"]
    return np.flatnonzero(~a_right & b_right), np.flatnonzero(a_right & ~b_right)


def compared_confusions(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two runs' confusion matrices on the same test images and their difference B - A: a
    positive off-diagonal cell is a mistake B makes more often than A, a positive diagonal
    cell a digit B gets right more often."""
    _require_same_images(a, b)
    cm_a, cm_b = prediction_confusion(a), prediction_confusion(b)
    return cm_a, cm_b, cm_b - cm_a


def difference_table(diff: np.ndarray) -> pd.DataFrame:
    """Long table of a matrix difference for a heatmap: true, predicted, change, and whether
    the change is for the better (fewer mistakes off the diagonal, more hits on it)."""
    true, predicted = np.indices(diff.shape)
    frame = pd.DataFrame({"true": true.ravel(), "predicted": predicted.ravel(), "change": diff.ravel()})
    on_diagonal = frame["true"] == frame["predicted"]
    frame["better"] = np.where(on_diagonal, frame["change"], -frame["change"])
    return frame


def page_slice(n_items: int, page: int, per_page: int) -> tuple[slice, int]:
    """(slice of the items on 1-based `page`, number of pages); `page` is clamped."""
    pages = max(1, math.ceil(n_items / per_page))
    page = min(max(1, int(page)), pages)
    return slice((page - 1) * per_page, min(n_items, page * per_page)), pages
