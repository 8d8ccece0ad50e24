"""One frozen dataclass for a training configuration, validated on creation.

The CLI's `train` options are generated from its fields, the dashboard fills the same
fields, and every run folder stores it as `config.json`, so all three speak the same words.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields

from core.models import get_spec

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
AUGMENTS = ("none", "rotate", "affine")
DEVICES = ("auto", "cpu", "cuda")
MAX_EPOCHS = 1000
MAX_BATCH = 60_000


class ConfigError(ValueError):
    """A hyperparameter is out of range; the message is one line naming it."""


# Fields whose default comes from the architecture's recipe (None means "use the recipe").
RECIPE_FIELDS = ("optimizer", "lr", "batch_size", "epochs", "momentum", "weight_decay",
                 "schedule", "step_size", "gamma", "label_smoothing", "augment", "ema")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = field(metadata={"help": "architecture (see `python -m core models`)"})
    epochs: int = field(default=None, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=None, metadata={"help": "images per step"})
    lr: float = field(default=None, metadata={"help": "(peak) learning rate"})
    optimizer: str = field(default=None, metadata={"help": "|".join(OPTIMIZERS), "choices": OPTIMIZERS})
    momentum: float = field(default=None, metadata={"help": "SGD momentum, 0..<1"})
    weight_decay: float = field(default=None, metadata={"help": "L2 weight decay, >= 0"})
    schedule: str = field(default=None, metadata={"help": "learning-rate schedule: " + "|".join(SCHEDULES),
                                                  "choices": SCHEDULES})
    step_size: int = field(default=None, metadata={"help": "epochs between LR drops (schedule=step)"})
    gamma: float = field(default=None, metadata={"help": "LR factor at each drop (schedule=step)"})
    label_smoothing: float = field(default=None, metadata={"help": "label smoothing, 0..<1"})
    augment: str = field(default=None, metadata={"help": "on-device augmentation: " + "|".join(AUGMENTS),
                                                 "choices": AUGMENTS})
    ema: bool = field(default=None, metadata={"help": "evaluate an EMA of the weights"})
    seed: int = field(default=0, metadata={"help": "one seed for weights, shuffling and the split"})
    device: str = field(default="auto", metadata={"help": "|".join(DEVICES), "choices": DEVICES})
    val_size: int = field(default=5000, metadata={"help": "validation images held out of training"})
    train_limit: int | None = field(default=None, metadata={"help": "use only this many training images (quick runs)"})
    csv: str | None = field(default=None, metadata={"help": "train on a Kaggle-format CSV instead of MNIST's training set"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (CUDA)"})
    name: str | None = field(default=None, metadata={"help": "a readable run name"})
    sweep: str | None = field(default=None, metadata={"help": "sweep id this run belongs to"})

    def __post_init__(self) -> None:
        try:
            spec = get_spec(self.arch)
        except KeyError as exc:
            raise ConfigError(str(exc)) from None
        recipe = spec.recipe.as_dict()
        for name in RECIPE_FIELDS:  # fill what was not given from the architecture's recipe
            if getattr(self, name) is None:
                object.__setattr__(self, name, recipe[name])
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        def number(name: str, kind: type) -> float:
            value = getattr(self, name)
            if kind is int:
                need(isinstance(value, int) and not isinstance(value, bool),
                     f"{name} must be a whole number, got {value!r}")
            else:
                need(isinstance(value, (int, float)) and not isinstance(value, bool)
                     and math.isfinite(value), f"{name} must be a finite number, got {value!r}")
            return value

        need(1 <= number("epochs", int) <= MAX_EPOCHS, f"epochs must be 1..{MAX_EPOCHS}, got {self.epochs}")
        need(1 <= number("batch_size", int) <= MAX_BATCH, f"batch_size must be 1..{MAX_BATCH}, got {self.batch_size}")
        need(0 < number("lr", float) <= 10, f"lr must be > 0 and <= 10, got {self.lr}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        need(0 <= number("momentum", float) < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(0 <= number("weight_decay", float) <= 1, f"weight_decay must be in [0, 1], got {self.weight_decay}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(number("step_size", int) >= 1, f"step_size must be >= 1, got {self.step_size}")
        need(0 < number("gamma", float) <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(0 <= number("label_smoothing", float) < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.augment in AUGMENTS, f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        need(isinstance(self.ema, bool), f"ema must be true or false, got {self.ema!r}")
        need(isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}")
        need(isinstance(self.seed, int) and 0 <= self.seed < 2**63, f"seed must be a whole number >= 0, got {self.seed!r}")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(1 <= number("val_size", int) < 60_000, f"val_size must be 1..59999, got {self.val_size}")
        if self.train_limit is not None:
            need(1 <= number("train_limit", int), f"train_limit must be >= 1, got {self.train_limit}")
        if self.name is not None:
            need(isinstance(self.name, str) and 0 < len(self.name) <= 80 and self.name.isprintable(),
                 f"name must be 1..80 printable characters, got {self.name!r}")

    # --- conversions ---
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Rebuild from a saved config; unknown keys (a newer format) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

