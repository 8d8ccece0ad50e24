"""Projected gradient steps in an L-inf ball (Madry et al. 2018), the one loop that adversarial
training (core.training.adversarial), outlier exposure's attacked images
(core.notadigit.outlier_exposure) and the attacks that measure robustness (core.analysis.attacks)
share. Units are the caller's: pixels on [0, 1], or normalised images with the bounds normalised too.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from core.data.images import MNIST_MEAN, MNIST_STD

_LOW, _HIGH = -MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD   # pixel 0 and 1, normalised


def pgd_steps(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, radius: float,
              size: float, steps: int, low: float, high: float, loss: Callable, generator: torch.Generator | None = None,
              check: bool = False, stop_at_first: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x moved by `steps` signed-gradient steps of `size` that raise `loss(forward(x), y)` (per image
    or its mean), kept within `radius` of x and within [low, high]; which images are misclassified).

    The start is drawn uniformly in the ball from `generator` (None: x itself). With `check`, an image
    counts as misclassified if the last point does it; with `stop_at_first` too, an image leaves the
    attack at the first point that misclassifies it and keeps that point (the attack is then at least
    as strong, and an image that falls at once costs one step). Without `check` the second value is None."""
    delta = torch.zeros_like(x)
    if generator is not None:
        delta = (torch.rand(x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1) * radius
        delta = (x + delta).clamp(low, high) - x
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device) if check else None
    alive = torch.arange(len(x), device=x.device)
    for k in range(steps + 1):
        last = k == steps
        if last and not check:
            break
        point = (x[alive] + delta[alive]).requires_grad_(not last)
        with torch.enable_grad() if not last else torch.no_grad():
            out = forward(point)
        if check and (stop_at_first or last):
            wrong = out.argmax(-1) != y[alive]
            fooled[alive[wrong]] = True
        if last:
            break
        grad, = torch.autograd.grad(loss(out, y[alive]).sum(), point)
        if check and stop_at_first:
            alive, grad = alive[~wrong], grad[~wrong]
            if not len(alive):
                break
        moved = (delta[alive] + size * grad.sign()).clamp(-radius, radius)
        delta[alive] = (x[alive] + moved).clamp(low, high) - x[alive]
    return (x + delta).detach(), fooled


def perturb(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, eps: float,
            steps: int, step: float, generator: torch.Generator | None, loss: Callable | None = None) -> torch.Tensor:
    """Normalised images `x` moved by an L-inf attack of radius `eps` (pixels), `steps` signed-gradient
    steps of `step` (pixels) that increase `loss(forward(x), y)` (default: cross-entropy), kept in
    the ball and in [0, 1]. The start is drawn uniformly in the ball from `generator`; None starts at x."""
    found, _ = pgd_steps(forward, x, y, eps / MNIST_STD, step / MNIST_STD, steps, _LOW, _HIGH,
                         loss or F.cross_entropy, generator)
    return found
