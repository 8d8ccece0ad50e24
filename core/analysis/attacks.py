"""Adversarial attacks in pixel space: images on [0, 1] (MNIST's pixels divided by 255), passed
through the lab's normalisation to the model, perturbed within an L-inf ball of radius eps and
kept inside [0, 1], with an explicit loss on logits: cross-entropy, or the margin (Carlini &
Wagner's): the largest other logit less the true one, which a second check uses to confirm what
cross-entropy finds.

FGSM is Captum's (captum.robust). PGD is the lab's own loop (core.perturbation, shared with
adversarial training), because Captum's runs every step on every image and judges only the last
point: here an image leaves the attack at the first point that fools it, which is at least as
strong and makes the robustness report of a model that falls at once several times cheaper. The
tests check it against Captum's PGD and against a linear model's closed-form worst case.

PGD is run with random starts (`restarts` of them): an image counts as robust only if no restart
finds an adversarial example; a restart only attacks the images still standing.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.data.images import standardise
from core.perturbation import pgd_steps

EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
BATCH = 500


class PixelModel(nn.Module):
    """The model seen from pixel space: [0, 1] images (N, 1, 28, 28) in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(standardise(pixels))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The largest wrong logit less the true one: above 0, the image is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - true


LOSSES: dict[str, Callable] = {"ce": cross_entropy, "margin": margin}


def fgsm(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, eps: float, loss: str = "ce") -> torch.Tensor:
    """One signed-gradient step of size eps (Goodfellow et al. 2015), clipped to [0, 1]."""
    from captum.robust import FGSM  # heavy: Captum loads only for an attack
    attack = FGSM(PixelModel(model), loss_func=LOSSES[loss], lower_bound=0.0, upper_bound=1.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
        return attack.perturb(pixels.detach().clone().requires_grad_(True), epsilon=eps, target=labels).detach()


def pgd(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, eps: float, steps: int, step_size: float,
        restarts: int = 1, random_start: bool = True, loss: str = "ce", seed: int = 0,
        stop_at_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(perturbed images, robust?) after L-inf PGD (Madry et al. 2018) with `restarts` random
    starts of `steps` steps of `step_size`: an image is robust if no point of any restart
    misclassifies it. A fooled image keeps the point that fooled it, a robust one its last
    restart's. An image leaves the attack at the first point that fools it (`stop_at_first`; off,
    only each restart's last point counts, as Captum's PGD counts), so a model that falls at once
    costs one step, and a restart attacks only the images still standing."""
    forward = PixelModel(model)
    adversarial = pixels.clone()
    with torch.no_grad():
        robust = forward(pixels).argmax(1) == labels
    generator = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        alive = torch.nonzero(robust).flatten()
        if not len(alive):
            break
        found, fooled = pgd_steps(forward, pixels[alive], labels[alive], eps, step_size, steps, 0.0, 1.0, LOSSES[loss],
                                  generator if random_start else None, check=True, stop_at_first=stop_at_first)
        adversarial[alive] = found
        robust[alive[fooled]] = False
    return adversarial, robust


def robust_accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, eps: float, attack: str = "pgd",
                    steps: int = 50, restarts: int = 10, step_size: float | None = None, loss: str = "ce",
                    seed: int = 0) -> float:
    """Accuracy in % under the attack, in batches. PGD's step size defaults to 2.5 eps / steps
    (Madry et al.); FGSM is one step of eps."""
    right = 0
    for start in range(0, len(pixels), BATCH):
        x, y = pixels[start:start + BATCH], labels[start:start + BATCH]
        if attack == "fgsm":
            with torch.no_grad():
                right += int((PixelModel(model)(fgsm(model, x, y, eps, loss)).argmax(1) == y).sum())
        elif attack == "pgd":
            size = step_size if step_size is not None else 2.5 * eps / steps
            right += int(pgd(model, x, y, eps, steps, size, restarts, loss=loss, seed=seed + start)[1].sum())
        else:
            raise ValueError(f"unknown attack {attack!r}: fgsm or pgd")
    return 100.0 * right / max(1, len(pixels))


def smallest_flip(model: nn.Module, pixels: torch.Tensor, hi: float = 0.5, tolerance: float = 0.005,
                  steps: int = 20, seed: int = 0) -> tuple[float, torch.Tensor, int] | None:
    """For one image (1, 1, 28, 28) on [0, 1]: the smallest eps (within `tolerance`, up to `hi`) at
    which PGD (`steps` steps of 2.5 eps / steps, one seeded random start) changes the model's
    answer, the changed image and the new digit; None if even `hi` does not change it. Bisection:
    PGD at an eps finds a change or not, and a larger ball holds every smaller one."""
    with torch.no_grad():
        answer = PixelModel(model)(pixels).argmax(1)

    def attempt(eps: float):
        found, robust = pgd(model, pixels, answer, eps, steps, 2.5 * eps / steps, restarts=1, seed=seed)
        return None if bool(robust[0]) else found
    best = attempt(hi)
    if best is None:
        return None
    low, high = 0.0, hi
    while high - low > tolerance:
        middle = (low + high) / 2
        found = attempt(middle)
        if found is None:
            low = middle
        else:
            high, best = middle, found
    with torch.no_grad():
        digit = int(PixelModel(model)(best).argmax(1)[0])
    return high, best, digit
