"""How far to trust a run's confidence: the expected calibration error (ECE, 15 equal-width bins
of top-label confidence, through torchmetrics) and reliability diagram of its saved test
probabilities, and temperature scaling (Guo et al. 2017) fitted on the run's own validation split.

The temperature T divides the logits: softmax(z / T). It is fitted by minimising the negative
log-likelihood of the validation images the run held out of training (the same deterministic
split, rebuilt from its config by core.data.source), never the test set. Applied to saved
probabilities p, softmax(log(p) / T) is exactly softmax(z / T): log p is z less a constant per image.

The fit is kept in the run folder (calibration.json) beside the SHA-256 of the weights it was
fitted for: new weights, a new fit. Written atomically, after every check: a failure leaves the
folder as it was.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.analysis.runsplit import SplitError, finished_run, run_split
from core.errors import BadInput
from core.fsio import atomic_write_json
from core.models import inference_layout
from core.store.folder import CALIBRATION, RunError, now_iso, run_dir
from core.store.kept import (COUNT, FRACTION, POSITIVE_COUNT, SECONDS, SHA256, TEXT, conforms, json_file,
                              read_current, record, usable)
from core.store.runs import Run, load_model, load_predictions, weights_sha256

BINS = 15
BATCH = 1000
T_RANGE = (0.05, 20.0)  # temperatures searched; a fit at either end says the model is degenerate
FORMAT = 1


class CalibrationError(BadInput):
    """A run whose calibration cannot be measured or fitted; the message says why."""


# --- numbers ---------------------------------------------------------------------------------

def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the bin-weighted gap between mean top-label confidence and
    accuracy, over `bins` equal-width bins of confidence (torchmetrics' L1 definition)."""
    # heavy: torchmetrics takes about 2 s to import, so only a calibration pays it
    from torchmetrics.functional.classification import multiclass_calibration_error
    p = torch.as_tensor(np.asarray(probabilities, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return float(multiclass_calibration_error(p, y, num_classes=p.shape[1], n_bins=bins, norm="l1"))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """One row per non-empty bin of top-label confidence: its edges, how many images fall in it,
    their mean confidence and their accuracy (fractions). The diagram draws accuracy against
    confidence; a calibrated model lies on the diagonal."""
    p = np.asarray(probabilities, dtype=np.float64)
    confidence, predicted = p.max(1), p.argmax(1)
    right = predicted == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    # Bins are (lower, upper], as torchmetrics counts them; a confidence of 0 joins the first.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"lower": edges[b], "upper": edges[b + 1], "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(right[inside].mean())})
    return pd.DataFrame(rows, columns=["lower", "upper", "count", "confidence", "accuracy"])


def tempered(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities of logits (N, 10) after temperature scaling: softmax(z / T) (T = 1: the
    model's own confidences). What every calibrated probability is computed by."""
    return (logits / temperature).softmax(-1)


def scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after temperature scaling: softmax(log(p) / T), float64."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-30, None))
    return tempered(torch.from_numpy(logp), temperature).numpy()


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the negative log-likelihood of `labels` under softmax(logits / T),
    searched on log T over T_RANGE (the NLL is convex in 1/T, so the minimum is the one)."""
    if not len(labels):
        raise CalibrationError("there are no validation images to fit a temperature on")
    from scipy.optimize import minimize_scalar  # heavy: scipy.optimize, only for a fit
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


# --- a run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    run_id: str
    temperature: float
    ece: float                 # of the saved test probabilities
    ece_calibrated: float      # of the same after temperature scaling
    fitted_on: dict            # {"split": "validation", "images": N, "seed": ..., "val_size": ...}
    nll_before: float          # validation NLL at T = 1
    nll_after: float           # at the fitted T
    bins: int
    test_images: int
    seconds: float
    weights_sha256: str
    created: str

    def to_json(self) -> dict:
        return {"format": FORMAT, "run_id": self.run_id, "temperature": self.temperature, "ece": self.ece,
                "ece_calibrated": self.ece_calibrated, "fitted_on": self.fitted_on, "nll_before": self.nll_before,
                "nll_after": self.nll_after, "bins": self.bins, "test_images": self.test_images,
                "seconds": self.seconds, "weights_sha256": self.weights_sha256, "created": self.created}


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model, x = inference_layout(model.eval(), x)
    with torch.inference_mode():
        return torch.cat([model(x[i:i + BATCH]).float() for i in range(0, len(x), BATCH)])


def _finished(run_id: str, root) -> Run:
    run = finished_run(run_id, root, CalibrationError, "calibrate it")
    if not run.has_predictions:
        raise CalibrationError(f"run {run.name!r} has no saved test predictions: there is nothing to calibrate")
    return run


def cached(run_id: str, root: str | os.PathLike | None = None) -> Calibration | None:
    """The fit kept in the run folder, if it is there, whole and of the run's current weights."""
    return kept(run_id, root)[0]


def kept(run_id: str, root: str | os.PathLike | None = None) -> tuple[Calibration | None, str | None]:
    """(the kept fit, None) if it is whole and of the current weights; (None, why) if the file is
    damaged; (None, None) if there is none or it is of other weights."""
    return read_current(run_dir(run_id, root) / CALIBRATION, run_id, root, json_file, _kept_fit, fmt=FORMAT)


LOSS = {"type": "number", "minimum": 0, "maximum": 1e4}
SCHEMA = record({
    "format": {"const": FORMAT}, "run_id": TEXT,
    # a fit never leaves T_RANGE (its search is bounded to it): any other temperature was not fitted here
    "temperature": {"type": "number", "minimum": round(T_RANGE[0] * 0.999, 6), "maximum": round(T_RANGE[1] * 1.001, 6)},
    "ece": FRACTION, "ece_calibrated": FRACTION,
    "fitted_on": record({"split": {"const": "validation"}, "images": POSITIVE_COUNT, "seed": {"type": "integer"},
                         "val_size": COUNT}, required=["split", "images"]),
    "nll_before": LOSS, "nll_after": LOSS, "bins": POSITIVE_COUNT, "test_images": POSITIVE_COUNT,
    "seconds": SECONDS, "weights_sha256": SHA256, "created": TEXT})


def _kept_fit(data: dict, _) -> tuple[Calibration | None, str | None]:
    problem = conforms(data, SCHEMA)
    if problem:
        return None, f"{CALIBRATION} is damaged ({problem})"
    return Calibration(**{k: data[k] for k in Calibration.__dataclass_fields__}), None


def test_figures(run_id: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the run's saved test predictions, or a CalibrationError."""
    try:
        saved = load_predictions(run_id, root)
    except RunError as exc:
        raise CalibrationError(str(exc)) from None
    return saved["labels"], saved["probabilities"].astype(np.float64)


def calibrate(run_id: str, root: str | os.PathLike | None = None, data_root=None, *,
              refit: bool = False, report=lambda line: None) -> Calibration:
    """The run's calibration: kept, or fitted now on its validation split and kept."""
    run = _finished(run_id, root)
    if not refit and (found := usable(kept(run_id, root), report, f"calibration of run {run.name!r}",
                                      "fitting it again")) is not None:
        return found
    labels, probs = test_figures(run_id, root)
    start = time.perf_counter()
    try:
        split, fields = run_split(run, root, data_root)
    except SplitError as exc:
        raise CalibrationError(str(exc)) from None
    try:
        model = load_model(run_id, root)
    except RunError as exc:
        raise CalibrationError(str(exc)) from None
    report(f"logits of {len(split.x_val):,} validation images…")
    logits = _logits(model, split.x_val)
    temperature = fit_temperature(logits, split.y_val)
    result = Calibration(
        run_id=run_id, temperature=temperature, ece=ece(probs, labels), ece_calibrated=ece(scaled(probs, temperature), labels),
        fitted_on={"split": "validation", "images": len(split.x_val), **fields},
        nll_before=nll(logits, split.y_val, 1.0), nll_after=nll(logits, split.y_val, temperature), bins=BINS,
        test_images=len(labels), seconds=round(time.perf_counter() - start, 2),
        weights_sha256=weights_sha256(run_id, root), created=now_iso())
    try:
        atomic_write_json(run_dir(run_id, root) / CALIBRATION, result.to_json())
    except OSError as exc:
        raise CalibrationError(f"cannot keep the calibration of run {run.name!r}: {exc.strerror or exc}") from None
    return result


def temperature_of(run_id: str, root: str | os.PathLike | None = None) -> float | None:
    """The run's kept temperature (for calibrated predictions), None if it has no current fit."""
    found = cached(run_id, root)
    return found.temperature if found else None
