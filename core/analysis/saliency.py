"""Saliency: which pixels pushed a model towards a digit, by Captum's Integrated Gradients.

`attribute(model, images, targets)` gives one (28, 28) map per image: positive where ink (or
its absence) raised the target digit's logit, negative where it lowered it, measured from a
blank page (the normalised background) to the image along `steps` points. For a linear model
the map is exactly (image - blank) * the target's weights, which is how it is tested.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.data.images import BACKGROUND, normalize

BLANK = BACKGROUND
STEPS = 32                       # points on the path from the blank page to the image


def attribute(model: nn.Module, images: torch.Tensor, targets, steps: int = STEPS) -> np.ndarray:
    """Integrated Gradients of `targets` (one digit, or one per image) for normalised images
    (N, 1, 28, 28); returns (N, 28, 28) float32. The model is put in eval mode."""
    from captum.attr import IntegratedGradients  # heavy: Captum loads only for a map
    model.eval()
    images = images.detach().float()
    if isinstance(targets, int):
        targets = [targets] * len(images)
    targets = torch.as_tensor(list(targets), dtype=torch.long)
    if len(targets) != len(images) or not ((targets >= 0) & (targets <= 9)).all():
        raise ValueError("one target digit 0..9 per image is needed")
    ig = IntegratedGradients(model)
    baseline = torch.full_like(images, BLANK)
    with torch.enable_grad():
        maps = ig.attribute(images, baselines=baseline, target=targets, n_steps=steps,
                            internal_batch_size=steps * len(images))
    return maps.detach().squeeze(1).numpy().astype(np.float32)


def explain(model: nn.Module, image: np.ndarray, digits, steps: int = STEPS) -> np.ndarray:
    """Maps (len(digits), 28, 28) for one 28x28 image on [0, 1] (as the Sketch page and the test
    set's pictures hold them), one per digit asked about."""
    digits = [int(d) for d in digits]
    batch = normalize(np.asarray(image, dtype=np.float32)).expand(len(digits), -1, -1, -1)
    return attribute(model, batch, digits, steps)


def _scale(amap: np.ndarray, outliers: float = 0.02) -> float:
    """The smallest |value| at which the sorted absolute values' running total reaches
    (1 - outliers) of their sum: values above it count as outliers and show at full colour."""
    ordered = np.sort(np.abs(amap).ravel())
    total = ordered.cumsum()
    if total[-1] <= 0:
        return 0.0
    return float(ordered[np.searchsorted(total, total[-1] * (1 - outliers))])


def heatmap(amap: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """An attribution map as an RGB picture (28, 28, 3) uint8: red where the pixel pushed the
    model towards the digit, blue where it pushed away, white where it did neither. Full colour
    is the largest absolute value once the few largest values that make up 2% of the total are
    set aside (as Captum's own visualisation scales), so one extreme pixel does not wash out the
    rest. With `image` (on [0, 1]) its ink is shaded in grey, so the map can be read against
    the strokes."""
    amap = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    peak = _scale(amap)
    v = amap / peak if peak > 0 else np.zeros_like(amap)
    towards, away = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - away, 1 - towards - away, 1 - towards], -1)
    if image is not None:
        rgb = rgb * (1 - 0.35 * np.clip(np.asarray(image, dtype=np.float32), 0, 1))[..., None]
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
