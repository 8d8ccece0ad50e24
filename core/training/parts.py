"""The parts a recipe names, each on its own: the device, the optimizer, the learning-rate schedule
(a factor of the peak per step), the EMA of the weights, the loss (label smoothing; an ensemble's
members each on their own loss) and the on-device augmentation. core.training.loop puts them together."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ConfigError, TrainConfig
from core.data import mnist as data_mod
from core.layers import combine_members

def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available here")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: TrainConfig, **impl) -> torch.optim.Optimizer:
    """The recipe's optimizer; `impl` picks torch's implementation (foreach=... or fused=...)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **impl)
    adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, **impl)


def constant(s: int, total: int, cfg: TrainConfig) -> float:
    return 1.0


def step_decay(s: int, total: int, cfg: TrainConfig) -> float:
    """x gamma every step_size epochs."""
    return cfg.gamma ** (s // (cfg.step_size * (total // cfg.epochs)))


def cosine(s: int, total: int, cfg: TrainConfig) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(s, total) / total))


def onecycle(s: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up from start_factor over the first `warmup` of the steps, then a cosine
    down to final_factor."""
    warm = max(1, int(cfg.warmup * total))
    if s < warm:
        return cfg.start_factor + (1 - cfg.start_factor) * s / warm
    done = min(s - warm, total - warm) / max(1, total - warm)
    return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * done))


SCHEDULES = {"none": constant, "step": step_decay, "cosine": cosine, "onecycle": onecycle}
def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The config's schedule as a function of the global step (for LambdaLR)."""
    schedule, total = SCHEDULES[cfg.schedule], cfg.epochs * steps_per_epoch
    return lambda s: schedule(s, total, cfg)


class EMA:
    """Exponential moving average of a model's weights and buffers, with warm-up: the decay
    is min(decay, (1 + n) / (10 + n)) after n updates, so early averages are not dominated
    by the random initial weights (a fixed 0.999 keeps 80% of them after 215 steps)."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0
        # The tensors to average, paired once (state_dict() per step costs more than the lerp
        # for small models); load_state_dict copies into these same tensors.
        mine, theirs = self.module.state_dict(), model.state_dict()
        self._floats = ([v for v in mine.values() if v.is_floating_point()],
                        [theirs[k] for k, v in mine.items() if v.is_floating_point()])
        self._others = [(v, theirs[k]) for k, v in mine.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in `model`, the one this EMA was made from."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(*self._floats, 1 - d)
        for mine, theirs in self._others:  # e.g. BatchNorm's num_batches_tracked
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def training_loss(out: torch.Tensor, y: torch.Tensor,
                  label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, loss to report, logits to score) for one batch.

    A model's (N, 10) logits give plain cross-entropy. An ensemble's (N, K, 10) member logits
    give the sum of the members' own losses, so each member gets the gradient it would get
    alone; the reported loss is the members' mean and the scored logits are the ensemble's.
    """
    if out.dim() == 2:
        loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
        return loss, loss.detach(), out
    k = out.shape[1]
    mean = F.cross_entropy(out.flatten(0, 1), y.repeat_interleave(k), label_smoothing=label_smoothing)
    return mean * k, mean.detach(), combine_members(out.detach())


def augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    if cfg.augment == "rotate":
        return data_mod.random_affine(x, generator, degrees=cfg.aug_degrees)
    if cfg.augment == "affine":
        return data_mod.random_affine(x, generator, degrees=cfg.aug_degrees,
                                      translate=cfg.aug_shift / 28, scale=cfg.aug_zoom)
    return x
