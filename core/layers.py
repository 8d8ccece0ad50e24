"""Building blocks the architectures share (core.models): a conv-BN-ReLU stage, a residual block,
features-then-head models, and the Ensemble of members whose probabilities are averaged."""
from __future__ import annotations

import math

import torch
from torch import nn


def affine(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.weight, layer.bias

def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + f(x), with f two 3x3 conv-BN-ReLU layers."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FeaturesThenHead(nn.Module):
    """`self.features` (a trunk ending in flat features), then `self.head`, one linear layer."""
    features: nn.Module
    head: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return affine(self.head)


def combine_members(member_logits: torch.Tensor) -> torch.Tensor:
    """(N, K, 10) member logits -> (N, 10) logits whose softmax is the members' mean probability."""
    log_p = member_logits.float().log_softmax(-1)
    return torch.logsumexp(log_p, dim=1) - math.log(member_logits.shape[1])


class Ensemble(nn.Module):
    """K independently initialised members trained side by side on the same batches, each on
    its own loss (the training loop calls `member_logits`, see core.training.parts.training_loss).
    `forward` averages the members' probabilities, so it returns logits like any model."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members], 1)    # (N, K, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine_members(self.member_logits(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The members' features side by side (N, sum of their widths)."""
        return torch.cat([m.embed(x) for m in self.members], 1)

    def last_affine(self) -> None:
        return None  # the members' probabilities are averaged: no single affine map


def logits_from_features(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The logits `model` gives for the images whose `model.embed` features are `feats` (N, D),
    without a second pass through the trunk: its last affine map, or, for an ensemble, each
    member's own on its slice of the features, combined as its forward combines them."""
    affine = model.last_affine()
    if affine is not None:
        weight, bias = affine
        return feats @ weight.T.to(feats.dtype) + bias.to(feats.dtype)
    members = [m.last_affine() for m in model.members]
    parts = feats.split([weight.shape[1] for weight, _ in members], 1)
    return combine_members(torch.stack([part @ weight.T.to(part.dtype) + bias.to(part.dtype)
                                        for part, (weight, bias) in zip(parts, members)], 1))
