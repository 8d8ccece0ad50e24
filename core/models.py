"""The model registry: every architecture by name, each with its seed's recipe as default.

`create_model(name)` builds one, `list_models()` names them, `get_spec(name)` gives the
recipe. Every model takes normalised (N, 1, 28, 28) input and returns logits (N, 10).

An architecture is its model and its `register` entry, nothing else: its `Recipe` overrides some
of the generic defaults of core.recipe.KNOBS (within their ranges, or it is refused here), and
the config, the CLI, the pages, the scripts and the tests read the registry (tests/test_registry.py
registers one; a missing reference run is named in a warning until it ships).

Every model also has `embed(x)`: its penultimate features (N, D), the input of its last affine
map. `last_affine()` gives that map as (weight (10, D), bias (10,)), so in eval mode
`embed(x) @ weight.T + bias` is the logits (an ensemble, which averages its members'
probabilities, has no last affine map; its features are its members' side by side). The
embedding map (core.analysis.embedding) projects these features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F
from core.errors import BadInput
from core.layers import Ensemble, FeaturesThenHead, Residual, affine, conv_bn
from core.recipe import Recipe


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], nn.Module]
    recipe: Recipe
    source: str
    summary: str
    target: float = field(default=0.0)  # test accuracy (%) the recipe must reach
    cpu_channels_last: bool = False      # train in channels_last on the CPU (measured faster: `core bench --steps`)


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(BadInput, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str, recipe: Recipe, source: str, summary: str, target: float,
             cpu_channels_last: bool = False):
    def decorator(build: Callable[[], nn.Module]):
        _REGISTRY[name] = ModelSpec(name, build, recipe, source, summary, target, cpu_channels_last)
        return build
    return decorator


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None


def create_model(name: str) -> nn.Module:
    return get_spec(name).build()


# --- memory layout: the one place that decides channels_last ---------------------------------

def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def trains_channels_last(arch: str, model: nn.Module, device: torch.device, setting: bool | None) -> bool:
    """Whether `arch` trains in channels_last: never for a model without convolutions; else the
    config's setting where it gives one, otherwise always on CUDA and, on the CPU, for the
    architectures measured faster in it (ModelSpec.cpu_channels_last, `core bench --steps`)."""
    if not is_convolutional(model):
        return False
    if setting is not None:
        return setting
    return device.type == "cuda" or get_spec(arch).cpu_channels_last


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the layout its model was converted to."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def channels_last(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The model (converted in place) and a batch in the channels_last memory format."""
    return model.to(memory_format=torch.channels_last), in_layout(x, True)


def inference_layout(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The fastest layout for a pass over many images on the CPU: channels_last for any
    convolutional model (2-3x faster here for features and predictions, whatever the
    architecture trained in; the results agree to float rounding). The model is converted in place."""
    return channels_last(model, x) if is_convolutional(model) else (model, x)


def folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with each BatchNorm folded into the convolution before it (torch.fx):
    the same logits to float rounding, and 1.5x faster forward and backward passes for `labnet` here,
    for work that makes many of them (the robustness report's attacks). The model as it is where
    tracing fails."""
    from torch.fx.experimental.optimization import fuse  # the fx tracer loads only for this
    try:
        return fuse(model.eval())
    except Exception:  # noqa: BLE001 -- an architecture fx cannot trace keeps its own layers
        return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- seed 004: a plain MLP ---------------------------------------------------------------

@register("mlp", Recipe(optimizer="sgd", lr=0.1, batch_size=64, epochs=20),
          source="seed 004", target=97.0,
          summary="MLP 784-64-32-10, ReLU (the seed trained 100 epochs; 20 suffice here)")
def mlp() -> nn.Module:
    return MLP(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class MLP(nn.Sequential):
    """A plain stack whose last layer is the classifier (the weights' names are nn.Sequential's)."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self[:-1](x)

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return affine(self[-1])


# --- seed 003: MLP with LayerNorm, dropout and He initialisation ----------------------------

class MLPLayerNorm(nn.Module):
    def __init__(self, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # He initialisation, as in the seed, for the ReLU layers
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:-1](x)

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return affine(self.net[-1])


@register("mlp_ln", Recipe(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, batch_size=64, epochs=15,
                           schedule="cosine"),
          source="seed 003", target=98.0,
          summary="MLP 784-512-256-10 with LayerNorm, dropout 0.2, He initialisation")
def mlp_ln() -> nn.Module:
    return MLPLayerNorm()


# --- seed 001: the PyTorch-example LeNet ------------------------------------------------

class LeNet(nn.Module):
    """conv 1->10 5x5, conv 10->20 5x5 with dropout, fc 320->50->10 (seed 001)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(20 * 4 * 4, 50)  # 28 -> 24 -> 12 -> 8 -> 4 after two conv+pool
        self.fc2 = nn.Linear(50, 10)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(self.embed(x), 0.5, training=self.training))

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return affine(self.fc2)


@register("lenet", Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=10),
          source="seed 001", target=98.5, cpu_channels_last=True,
          summary="LeNet-style CNN: conv 10 and 20 5x5, dropout, fc 320-50-10")
def lenet() -> nn.Module:
    return LeNet()


# --- seed 002: the 16.5k-parameter Net, exactly as printed --------------------------------

class Net16k(nn.Module):
    """Seed 002's `Net`, layer for layer; it returns logits instead of log_softmax and
    flattens with `flatten(1)` instead of `squeeze()` so a batch of one keeps its shape."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 128, kernel_size=3), nn.ReLU(), nn.BatchNorm2d(128))
        self.onecross1 = nn.Sequential(nn.Conv2d(128, 4, kernel_size=3))
        self.conv2 = nn.Sequential(nn.Conv2d(4, 16, kernel_size=3), nn.ReLU(), nn.BatchNorm2d(16),
                                   nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(16, 16, kernel_size=3), nn.ReLU(), nn.BatchNorm2d(16),
                                   nn.Dropout2d(0.1))
        self.onecross1_2 = nn.Sequential(nn.Conv2d(16, 16, kernel_size=3))
        self.conv4 = nn.Sequential(nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(), nn.BatchNorm2d(32),
                                   nn.MaxPool2d(2))
        self.conv5 = nn.Sequential(nn.Conv2d(32, 10, kernel_size=1))
        self.gap1 = nn.Sequential(nn.AvgPool2d(2))

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.onecross1(x)
        x = F.relu(self.conv2(x))
        x = self.conv3(x)
        x = self.onecross1_2(x)
        return self.conv4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gap1(self.conv5(self._trunk(x))).flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 32 channels averaged over the 2x2 map: the 1x1 conv and the average pool are both
        linear, so classifying the average is the same as averaging the classified pixels."""
        return self.gap1(self._trunk(x)).flatten(1)

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv5[0].weight.flatten(1), self.conv5[0].bias


@register("cnn16k", Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=20,
                           schedule="step", step_size=13, gamma=0.1, augment="rotate", aug_degrees=7.0,
                           ema=True),
          source="seed 002", target=99.4, cpu_channels_last=True,
          summary="seed 002's Net: 7 convs, 2 max-pools, 1x1 convs, GAP (16,478 parameters)")
def cnn16k() -> nn.Module:
    return Net16k()


# --- seed 000: a residual CNN -------------------------------------------------------------


class ResidualClassifier(FeaturesThenHead):
    """Seed 000's shape: conv blocks with skip connections and max pooling, adaptive
    average pooling and a linear head. Widths are a parameter; sizes are computed."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(1, w1), Residual(w1), nn.MaxPool2d(2),      # 28 -> 14
            conv_bn(w1, w2), Residual(w2), nn.MaxPool2d(2),     # 14 -> 7
            conv_bn(w2, w3), Residual(w3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(w3, 10)


@register("resnet", Recipe(optimizer="adamw", lr=4e-3, weight_decay=5e-4, batch_size=128,
                           epochs=8, schedule="onecycle", augment="affine"),
          source="seed 000", target=99.5, cpu_channels_last=True,
          summary="residual CNN 16-32-64: conv blocks + skips, max-pool, adaptive avg-pool, linear")
def resnet() -> nn.Module:
    return ResidualClassifier()


# --- ours: the strongest model we can train in minutes on one GPU ----------------------------

class LabNet(FeaturesThenHead):
    """One member: VGG-ish (conv-BN-ReLU x2, max-pool) x2, conv-BN-ReLU, global max pooling,
    linear."""

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(1, w1), conv_bn(w1, w1), nn.MaxPool2d(2),    # 28 -> 14
            conv_bn(w1, w2), conv_bn(w2, w2), nn.MaxPool2d(2),   # 14 -> 7
            conv_bn(w2, w3), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(w3, 10)


@register("labnet", Recipe(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                           batch_size=256, epochs=10, schedule="onecycle", augment="affine",
                           label_smoothing=0.1, ema=True),
          source="MNIST Lab", target=99.7, cpu_channels_last=True,
          summary="our design: an ensemble of 3 VGG-style BN CNNs (24-48-96) trained side by side; "
                  "device augmentation, OneCycle, label smoothing, EMA weights")
def labnet() -> nn.Module:
    return Ensemble([LabNet() for _ in range(3)])


# --- time to accuracy: the fastest way to 99% -------------------------------------------------

class SpeedNet(nn.Module):
    """The time-to-99% net: tuomaso/train_mnist_fast's two conv stages made cheaper and
    steadier. Each stage pools before its BatchNorm and ReLU, so both act on a quarter of
    the pixels; 16 and 32 channels (theirs: 24 and 32, no BatchNorm); a 128-unit head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),   # 28->24->12
            nn.Conv2d(16, 32, 3, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(32), nn.ReLU(inplace=True),  # 12->10->5
            nn.Flatten())
        self.head = nn.Sequential(nn.Linear(32 * 5 * 5, 128), nn.ReLU(inplace=True), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[:-1](self.features(x))

    def last_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return affine(self.head[-1])


@register("speedrun", Recipe(optimizer="adam", lr=1e-2, beta1=0.7, beta2=0.9, batch_size=256, epochs=1,
                             schedule="onecycle", label_smoothing=0.1),
          source="MNIST Lab", target=99.0, cpu_channels_last=True,
          summary="time to 99%: a small BN CNN, one epoch at batch 256, Adam with OneCycle (data on the device)")
def speedrun() -> nn.Module:
    return SpeedNet()


@register("speedrun995", Recipe(optimizer="adam", lr=1e-2, beta1=0.7, beta2=0.9, batch_size=256, epochs=10,
                                schedule="onecycle", label_smoothing=0.1, augment="affine", aug_degrees=8.0,
                                aug_shift=1.5, aug_zoom=0.08),
          source="MNIST Lab", target=99.5, cpu_channels_last=True,
          summary="time to 99.5%: speedrun's net for 10 epochs, each image rotated, shifted and zoomed a little "
                  "on the device (about 25 s on a 2-core CPU)")
def speedrun995() -> nn.Module:
    return SpeedNet()


# --- robust to attack: adversarial training (Wong, Rice & Kolter 2020) ---------------------

class RobustNet(FeaturesThenHead):
    """Wong et al.'s MNIST net: conv 1->16 and 16->32, 4x4 stride 2, fc 1568->100->10 (166k parameters)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),    # 28 -> 14
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),   # 14 -> 7
            nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU())
        self.head = nn.Linear(100, 10)


@register("robust", Recipe(optimizer="adam", lr=5e-3, batch_size=100, epochs=20, schedule="onecycle", warmup=0.4,
                           adv_eps=0.3, adv_steps=5, adv_step=0.5, adv_warmup=0.2),
          source="Madry et al. 2018; Wong et al. 2020", target=98.5, cpu_channels_last=True,
          summary="robust to L-inf attacks of 0.3: Wong et al.'s small CNN (conv 16-32 4x4 stride 2, fc 100) trained "
                  "on 5-step PGD, the radius grown over the first 4 epochs")
def robust() -> nn.Module:
    return RobustNet()
