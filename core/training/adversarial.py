"""Adversarial training (a recipe's adv_eps > 0): each batch is replaced by an L-inf attack on it.

One FGSM step from a random start in the eps-ball (Wong, Rice & Kolter 2020, "Fast is better than
free") or a few PGD steps (Madry et al. 2018), made here rather than by Captum because the loop needs
them in train mode, under its autocast and drawn from its own generator (so a resumed run draws what
an uninterrupted one would); tests check them against Captum's PGD.

Radii are in pixels on [0, 1], as every attack in the lab states them; the batches are normalised,
so the radius and the image's bounds are carried into normalised units here.

FGSM training's known failure is catastrophic overfitting: within an epoch the model learns to
defeat the one-step attack and its accuracy under PGD collapses. After each epoch the loop checks
the kept weights with PGD on held-out validation images (`robust_check`) and stops at a collapse,
keeping the epoch before it (`collapsed`).
"""
from __future__ import annotations

import torch
from torch import nn

from core.config import TrainConfig
from core.perturbation import perturb

CHECK_IMAGES = 1000   # validation images attacked after each epoch
CHECK_STEPS = 10      # PGD steps of the check, each of 2.5 eps / CHECK_STEPS (Madry et al.'s size)
COLLAPSE = 20.0       # points of PGD accuracy lost against the best epoch so far: catastrophic overfitting


def radius(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The attack's radius at global step `step`: adv_eps, grown linearly from 0 over the first
    adv_warmup of all steps (training at the full radius from the start can stall at chance)."""
    warm = cfg.adv_warmup * cfg.epochs * steps_per_epoch
    return cfg.adv_eps * min(1.0, (step + 1) / warm) if warm >= 1 else cfg.adv_eps


def robust_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                 batch: int = 500) -> float:
    """Accuracy in % of `model` (eval mode) on the first CHECK_IMAGES of (x, y) under PGD with
    CHECK_STEPS steps from one random start drawn from `seed`."""
    was_training = model.training
    model.eval()
    x, y = x[:CHECK_IMAGES], y[:CHECK_IMAGES]
    generator = torch.Generator().manual_seed(seed)
    right = 0
    try:
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            found = perturb(model, xb, yb, eps, CHECK_STEPS, 2.5 * eps / CHECK_STEPS, generator)
            with torch.no_grad():
                right += int((model(found).argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return 100.0 * right / max(1, len(x))


def collapsed(checks: list[float]) -> int | None:
    """Given each epoch's check so far, the index of the best earlier epoch if the last one fell more
    than COLLAPSE points below it (catastrophic overfitting), else None."""
    if len(checks) < 2:
        return None
    best = max(range(len(checks) - 1), key=checks.__getitem__)
    return best if checks[best] - checks[-1] > COLLAPSE else None
