"""One frozen dataclass for a training configuration, validated on creation.

The CLI's `train` options are generated from its fields, the dashboard fills the same
fields, and every run folder stores it as `config.json`, so all three speak the same words.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field, fields

from core.errors import BadInput
from core.models import get_spec
from core.recipe import Recipe

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
AUGMENTS = ("none", "rotate", "affine")
DEVICES = ("auto", "cpu", "cuda")
MAX_EPOCHS = 1000
MAX_BATCH = 60_000
# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed: 2**32 would train exactly
# as seed 0 does. Larger seeds are refused rather than folded, so two seeds never collide.
MAX_SEED = 2**32 - 1


class ConfigError(BadInput, ValueError):
    """A hyperparameter is out of range; the message is one line naming it."""


# Fields whose default comes from the architecture's recipe (None means "use the recipe"):
# exactly the fields of `Recipe`, the one list of them.
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
SWEPT_FIELDS = ("lr", "batch_size", "sweep", "name", "group")  # a sweep sets these for each of its runs


def seed_problem(seed: object) -> str:
    """The message for a seed out of range (TrainConfig and `--seeds` say the same)."""
    return (f"seed must be a whole number 0..{MAX_SEED:,} (torch keeps 32 bits of a seed, so a larger one "
            f"would repeat a smaller one), got {seed!r}")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a run's display name, or None if it can."""
    if not isinstance(name, str) or not 0 < len(name) <= 80 or not name.isprintable():
        return f"a run name must be 1..80 printable characters, got {name!r}"
    return None


def _recipe(help_text: str, **extra):
    return field(default=None, metadata={"help": help_text, "recipe": True, **extra})


@dataclass(frozen=True)
class TrainConfig:
    arch: str = field(metadata={"help": "architecture (see `python -m core models`)"})
    # --- the recipe: None takes the architecture's value (core.models.Recipe) ---
    epochs: int = _recipe("passes over the training set")
    batch_size: int = _recipe("images per step")
    lr: float = _recipe("(peak) learning rate")
    optimizer: str = _recipe("|".join(OPTIMIZERS), choices=OPTIMIZERS)
    momentum: float = _recipe("SGD momentum, 0..<1")
    beta1: float = _recipe("Adam/AdamW beta1 (running mean of the gradient), 0..<1", advanced=True)
    beta2: float = _recipe("Adam/AdamW beta2 (running mean of its square), 0..<1", advanced=True)
    nesterov: bool = _recipe("SGD with momentum > 0: Nesterov momentum instead of plain momentum", advanced=True)
    weight_decay: float = _recipe("L2 weight decay, >= 0")
    schedule: str = _recipe("learning-rate schedule: " + "|".join(SCHEDULES), choices=SCHEDULES)
    step_size: int = _recipe("epochs between LR drops (schedule=step)")
    gamma: float = _recipe("LR factor at each drop (schedule=step)")
    warmup: float = _recipe("onecycle: share of the steps spent warming up, 0..<1", advanced=True)
    start_factor: float = _recipe("onecycle: LR at the first step, as a share of the peak", advanced=True)
    final_factor: float = _recipe("onecycle: LR at the last step, as a share of the peak", advanced=True)
    label_smoothing: float = _recipe("label smoothing, 0..<1")
    augment: str = _recipe("on-device augmentation: " + "|".join(AUGMENTS), choices=AUGMENTS)
    aug_degrees: float = _recipe("rotate/affine: rotations within +- this many degrees", advanced=True)
    aug_shift: float = _recipe("affine: shifts within +- this many pixels", advanced=True)
    aug_zoom: float = _recipe("affine: zoom within 1 +- this", advanced=True)
    ema: bool = _recipe("keep and evaluate an exponential moving average of the weights")
    ema_decay: float = _recipe("EMA decay per step, 0..<1", advanced=True)
    adv_eps: float = _recipe("adversarial training: train on L-inf attacks of this radius, in pixels on [0, 1] "
                             "(0: off; 0..1)")
    adv_steps: int = _recipe("adversarial training: attack steps per batch (1: FGSM with a random start, "
                             "more: PGD)", advanced=True)
    adv_step: float = _recipe("adversarial training: each attack step's size, as a multiple of adv_eps",
                              advanced=True)
    adv_warmup: float = _recipe("adversarial training: share of the steps over which the radius grows from 0 "
                                "to adv_eps, 0..<1", advanced=True)
    oe_weight: float = _recipe("outlier exposure: weight of a loss that teaches the model to be unsure on the lab's "
                               "non-digit exposure images, seen beside each batch (0: off; 0..10)")
    # --- the run ---
    seed: int = field(default=0, metadata={"help": "one seed for weights, shuffling and the split"})
    device: str = field(default="auto", metadata={"help": "|".join(DEVICES), "choices": DEVICES})
    val_size: int = field(default=5000, metadata={"help": "validation images held out of training"})
    train_limit: int | None = field(default=None, metadata={"help": "use only this many training images (quick runs; default: all)"})
    csv: str | None = field(default=None, metadata={"help": "train on a Kaggle-format CSV instead of MNIST's training set"})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 autocast (default: on CUDA, off on the CPU)", "advanced": True})
    channels_last: bool | None = field(default=None, metadata={
        "help": "channels_last memory format for convolutional models (default: on CUDA, and on the CPU "
                "for the architectures it was measured faster for)",
        "advanced": True})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (CUDA)", "advanced": True})
    name: str | None = field(default=None, metadata={"help": "a readable run name"})
    sweep: str | None = field(default=None, metadata={"help": "sweep id this run belongs to"})
    group: str | None = field(default=None, metadata={
        "help": "seed group this run belongs to (`--seeds` makes one: the same recipe over several seeds)"})

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

        def flag(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            need(isinstance(value, bool) or (optional and value is None),
                 f"{name} must be true or false, got {value!r}")

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            need(getattr(self, name) in allowed,
                 f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

        need(1 <= number("epochs", int) <= MAX_EPOCHS, f"epochs must be 1..{MAX_EPOCHS}, got {self.epochs}")
        need(1 <= number("batch_size", int) <= MAX_BATCH, f"batch_size must be 1..{MAX_BATCH}, got {self.batch_size}")
        need(0 < number("lr", float) <= 10, f"lr must be > 0 and <= 10, got {self.lr}")
        choice("optimizer", OPTIMIZERS)
        need(0 <= number("momentum", float) < 1, f"momentum must be in [0, 1), got {self.momentum}")
        flag("nesterov")
        need(0 <= number("beta1", float) < 1, f"beta1 must be in [0, 1), got {self.beta1}")
        need(0 <= number("beta2", float) < 1, f"beta2 must be in [0, 1), got {self.beta2}")
        need(0 <= number("weight_decay", float) <= 1, f"weight_decay must be in [0, 1], got {self.weight_decay}")
        choice("schedule", SCHEDULES)
        need(number("step_size", int) >= 1, f"step_size must be >= 1, got {self.step_size}")
        need(0 < number("gamma", float) <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(0 <= number("warmup", float) < 1, f"warmup must be in [0, 1), got {self.warmup}")
        need(0 < number("start_factor", float) <= 1, f"start_factor must be in (0, 1], got {self.start_factor}")
        need(0 < number("final_factor", float) <= 1, f"final_factor must be in (0, 1], got {self.final_factor}")
        need(0 <= number("label_smoothing", float) < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        choice("augment", AUGMENTS)
        need(0 <= number("aug_degrees", float) <= 180, f"aug_degrees must be in [0, 180], got {self.aug_degrees}")
        need(0 <= number("aug_shift", float) <= 14, f"aug_shift must be in [0, 14] pixels, got {self.aug_shift}")
        need(0 <= number("aug_zoom", float) < 1, f"aug_zoom must be in [0, 1), got {self.aug_zoom}")
        flag("ema")
        need(0 < number("ema_decay", float) < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}")
        need(0 <= number("adv_eps", float) <= 1, f"adv_eps must be in [0, 1] (pixels on [0, 1]), got {self.adv_eps}")
        need(1 <= number("adv_steps", int) <= 100, f"adv_steps must be 1..100, got {self.adv_steps}")
        need(0 < number("adv_step", float) <= 10, f"adv_step must be > 0 and <= 10 (times adv_eps), got {self.adv_step}")
        need(0 <= number("adv_warmup", float) < 1, f"adv_warmup must be in [0, 1), got {self.adv_warmup}")
        need(0 <= number("oe_weight", float) <= 10, f"oe_weight must be in [0, 10], got {self.oe_weight}")
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
             seed_problem(self.seed))
        choice("device", DEVICES)
        need(1 <= number("val_size", int) < 60_000, f"val_size must be 1..59999, got {self.val_size}")
        if self.train_limit is not None:
            need(1 <= number("train_limit", int), f"train_limit must be >= 1, got {self.train_limit}")
        flag("bf16", optional=True)
        flag("channels_last", optional=True)
        flag("compile")
        if self.name is not None:
            need(name_problem(self.name) is None, name_problem(self.name) or "")
        for name in ("csv", "sweep"):  # text when given (a path, a sweep id)
            need(getattr(self, name) is None or isinstance(getattr(self, name), str),
                 f"{name} must be text, got {getattr(self, name)!r}")
        if self.group is not None:
            need(isinstance(self.group, str) and 0 < len(self.group) <= 80 and self.group.isprintable(),
                 f"a group id must be 1..80 printable characters, got {self.group!r}")

    # --- conversions ---
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Rebuild from a saved config; unknown keys (a newer format) are ignored. A config of
        format 1 or 2 predates some explicit knobs: it gets the values its format used without
        saying (not today's recipe, which may differ); one without adv_eps predates adversarial
        training and trained without it, one without oe_weight without outlier exposure."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        version = data.get("format", 1)
        if version == 1:
            given.setdefault("nesterov", given.get("optimizer") == "sgd" and (given.get("momentum") or 0) > 0)
            given.setdefault("aug_degrees", 7.0 if given.get("augment") == "rotate" else 10.0)
        if isinstance(version, int) and version <= 2:  # Adam's betas were torch's defaults
            given.setdefault("beta1", 0.9)
            given.setdefault("beta2", 0.999)
        if "adv_eps" not in data:  # written before adversarial training existed: trained without it
            given["adv_eps"] = 0.0
        if "oe_weight" not in data:  # written before outlier exposure existed: trained without it
            given["oe_weight"] = 0.0
        if not isinstance(given.get("arch"), str):
            raise ConfigError(f"the saved config names no architecture (arch = {given.get('arch')!r})")
        return cls(**given)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# --- the fields, as every reader of a config sees them ----------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    """One TrainConfig field as the CLI's option, the Train form's widget, the Ray driver's
    arguments and the check of a saved config.json all read it: one reading of the dataclass."""
    name: str
    kind: type              # int, float, str or bool
    optional: bool          # `X | None`: None is a value of its own (a recipe field's None is the recipe's)
    default: object         # for the fields the recipe does not fill
    help: str
    choices: tuple | None
    recipe: bool            # filled from the architecture's recipe
    advanced: bool          # an expert's knob (under "Advanced" in the form)

    @property
    def flag(self) -> str:
        """The command line's option: --batch-size for batch_size."""
        return "--" + self.name.replace("_", "-")

    @property
    def json_types(self) -> tuple[type, ...]:
        """The JSON types its value may have in config.json (a whole number is a float too)."""
        return (int, float) if self.kind is float else (self.kind,)


@functools.cache
def field_specs() -> tuple[FieldSpec, ...]:
    """Every TrainConfig field, in the dataclass's order."""
    hints = typing.get_type_hints(TrainConfig)
    specs = []
    for f in fields(TrainConfig):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        specs.append(FieldSpec(f.name, args[0] if args else hints[f.name], bool(args), f.default,
                               f.metadata.get("help", ""), f.metadata.get("choices"),
                               bool(f.metadata.get("recipe")), bool(f.metadata.get("advanced"))))
    return tuple(specs)

