"""Classify user images with a saved run: the CLI's `predict` and the Sketch page share this."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.data.images import normalize, preprocess
from core.store.runs import load_model, load_run


@dataclass
class Predictor:
    run_id: str
    arch: str
    model: nn.Module

    @classmethod
    def from_run(cls, run_id: str, root=None) -> "Predictor":
        run = load_run(run_id, root)
        return cls(run_id, run.arch, load_model(run_id, root))

    @torch.inference_mode()
    def probabilities(self, mnist_images: np.ndarray) -> np.ndarray:
        """(28, 28) or (N, 28, 28) arrays in [0, 1] -> class probabilities (N, 10)."""
        return self.model(normalize(mnist_images)).softmax(1).numpy()

    def predict_file(self, path) -> np.ndarray:
        """Probabilities (10,) for one image file, after MNIST's preprocessing."""
        mnist_image, _ = preprocess(path)
        return self.probabilities(mnist_image)[0]
