"""Classify user images with a saved run: the CLI's `predict` and the Sketch page share this."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from core.analysis.calibration import CalibrationError, tempered, temperature_of
from core.analysis.calibration import kept as kept_calibration
from core.data.images import normalize, preprocess
from core.store.folder import ACTIVE
from core.store.runs import RESUMABLE, Run, is_resumable, load_model, load_run

if TYPE_CHECKING:  # a type only: the detector's module reads runs through core.analysis
    from core.notadigit.detector import Detector


@dataclass
class Predictor:
    run_id: str
    arch: str
    model: nn.Module
    temperature: float = 1.0  # 1: the model's own confidences; else its fitted calibration
    detector: Detector | None = None  # the run's not-a-digit detector (core.notadigit.detector), if asked for

    @property
    def calibrated(self) -> bool:
        return self.temperature != 1.0

    @classmethod
    def from_run(cls, run_id: str, root=None, *, calibrated: bool = False) -> "Predictor":
        """The run's model; with `calibrated`, its confidences scaled by the temperature fitted on
        its validation split (core.analysis.calibration), which must have been fitted."""
        run = load_run(run_id, root)
        temperature = 1.0
        if calibrated:
            temperature = temperature_of(run_id, root)
            if temperature is None:
                raise _no_temperature(run, root)
        return cls(run_id, run.arch, load_model(run_id, root), temperature)

    @torch.inference_mode()
    def probabilities(self, mnist_images: np.ndarray) -> np.ndarray:
        """(28, 28) or (N, 28, 28) arrays in [0, 1] -> class probabilities (N, 10)."""
        return tempered(self.model(normalize(mnist_images)), self.temperature).numpy()

    def not_a_digit(self, mnist_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outlier scores, not a digit?) of (28, 28) or (N, 28, 28) images in [0, 1], by the
        run's detector (which must be set)."""
        return self.detector.judge(self.model, normalize(mnist_images))

    def predict_file(self, path) -> np.ndarray:
        """Probabilities (10,) for one image file, after MNIST's preprocessing."""
        mnist_image, _ = preprocess(path)
        return self.probabilities(mnist_image)[0]


def _no_temperature(run: Run, root=None) -> CalibrationError:
    """Why the run has no temperature to use, and what would give it one that works."""
    if run.status in ACTIVE:
        return CalibrationError(f"run {run.name!r} is still {run.status}, so it has no calibration to use: predict "
                                "without --calibrated, or calibrate it once it has finished")
    if run.status in RESUMABLE:  # `calibration` fits finished runs alone
        then = (f", or resume it (`python -m core train --resume {run.run_id}`) and then fit one with "
                f"`python -m core calibration {run.run_id}`" if is_resumable(run) else "")
        return CalibrationError(f"run {run.name!r} did not finish ({run.status}), so it has no calibration to use: "
                                f"predict without --calibrated{then}")
    _, problem = kept_calibration(run.run_id, root)
    if problem:  # temperature_of found no fit in it: it is damaged, not missing
        return CalibrationError(f"the calibration of run {run.name!r} cannot be used: {problem}; fit it again with "
                                f"`python -m core calibration {run.run_id} --refit`")
    return CalibrationError(f"run {run.name!r} has no calibration fitted for its current weights: "
                            f"run `python -m core calibration {run.run_id}` first")
