"""Classify user images with a saved run: the CLI's `predict` and the Sketch page share this."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from core.analysis.calibration import CalibrationError, temperature_of, tempered
from core.data.images import normalize, preprocess
from core.store.runs import load_model, load_run

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
            found = temperature_of(run_id, root)
            if found is None:
                raise CalibrationError(f"run {run.name!r} has no calibration fitted for its current weights: "
                                       f"run `python -m core calibration {run_id}` first")
            temperature = found
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
