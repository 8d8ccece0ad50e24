"""Outlier exposure in training (a recipe's oe_weight > 0; Hendrycks, Mazeika & Dietterich 2019):
beside each batch of digits the model sees as many of the lab's exposure images
(core.notadigit.exposure: glyphs, curves, compositions, noise, and inverted digits and faint specks
made from the run's own training digits) and is taught to be unsure on them, by the cross-entropy
from its softmax to the uniform distribution, weighted by oe_weight.

A model so trained says less certainly what a non-digit is, and its not-a-digit check
(core.notadigit.detector) has more to read. The exposure images are never those that measure the
check (core.notadigit.nondigits).
"""
from __future__ import annotations

import numpy as np
import torch

from core.data.images import normalize, unstandardise
from core.notadigit.exposure import from_digits, kept
from core.perturbation import perturb

FROM_DIGITS = 2000   # training digits made into inverted digits and faint specks (two images each)


def exposure_images(train_images: torch.Tensor, data_root=None) -> torch.Tensor:
    """The exposure images as normalised (N, 1, 28, 28) float32 on the training images' device;
    `train_images` is the run's normalised training split, whose first FROM_DIGITS digits give
    the inverted digits and the specks. Drawn once per machine (kept in the data folder)."""
    drawn = kept(data_root)
    return normalize(np.concatenate([drawn, from_digits(unstandardise(train_images[:FROM_DIGITS]))])).to(train_images.device)


def draw(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` exposure images drawn at random (with replacement) from `generator`, a CPU generator
    whose state a resumed run restores."""
    index = torch.randint(len(images), (count,), generator=generator)
    return images[index.to(images.device)]


def attack(forward, images: torch.Tensor, eps: float, steps: int, step: float,
           generator: torch.Generator) -> torch.Tensor:
    """Adversarial training's counterpart for exposure images (ALOE, Chen et al. 2021): each moved
    within the L-inf ball of radius `eps` (pixels) by `steps` signed-gradient steps of `step` that raise
    `uniform_loss` (make the model surer of some digit), from a random start drawn from `generator`;
    so the model learns to be unsure near them too, as it learns to read digits near the digits."""
    return perturb(forward, images, torch.zeros(len(images), dtype=torch.long, device=images.device), eps, steps, step,
                   generator, loss=lambda out, _: uniform_loss(out))


def uniform_loss(out: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from the softmax of logits (N, 10) to the uniform distribution, averaged over
    the batch: log 10 at its least, when every class is equally likely. An ensemble's member logits
    (N, K, 10) give the sum of the members' own, as core.training.parts.training_loss does."""
    members = out.shape[1] if out.dim() == 3 else 1
    flat = out.reshape(-1, out.shape[-1])
    return (torch.logsumexp(flat, 1) - flat.mean(1)).mean() * members
