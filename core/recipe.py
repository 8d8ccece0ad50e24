"""The recipe's knobs, in one table (`KNOBS`): every hyperparameter that changes training, each
once, with its type, the generic recipe's default, its range (or choices), its unit, its help and
whether it is an expert's knob. Everything else reads it:

- `Recipe`, the default hyperparameters an architecture trains with (core.models registers each
  architecture with one, overriding some of the generic defaults), is generated from it;
- core.config.TrainConfig has a field for each knob (generated from it too), filled from the
  architecture's recipe when not given, and validated by `Knob.problem`;
- `python -m core train --help`, the Train form's widgets and bounds and the Ray driver read the
  knobs through core.config.field_specs.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, make_dataclass

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
AUGMENTS = ("none", "rotate", "affine")
MAX_EPOCHS = 1000
MAX_BATCH = 60_000


@dataclass(frozen=True)
class Knob:
    """One row of the table. A number's range is `low`..`high` (None: unbounded), each end
    included or not as `ends` says ("[)": low included, high not)."""
    name: str
    kind: type                      # int, float, str or bool
    default: object                 # the generic recipe's value (an architecture's recipe overrides some)
    help: str                       # {choices} and {range} are filled in (range: "0..<1" for [0, 1))
    low: float | None = None
    high: float | None = None
    ends: str = "[]"
    choices: tuple[str, ...] | None = None
    unit: str = ""
    advanced: bool = False          # under "Advanced" in the Train form
    # The words of the range in the error message where the generic ones ("in [0, 1)", "1..100",
    # ">= 1") do not fit; {low}, {high}, {interval} and {unit} are filled in. Users and tests rely
    # on the messages word for word.
    words: str = ""
    # The knob that must be on (not 0) for this one to act: set away from the recipe while that
    # one is off, it would change nothing, and the config is refused (core.config.TrainConfig).
    needs: str = ""

    @property
    def interval(self) -> str:
        """The range in interval notation: "[0, 1)"."""
        return f"{self.ends[0]}{self.low:g}, {self.high:g}{self.ends[1]}"

    @property
    def text(self) -> str:
        """The help, its placeholders filled in."""
        span = None
        if self.low is not None and self.high is not None and self.ends[0] == "[":
            span = f"{self.low:g}..{'<' if self.ends[1] == ')' else ''}{self.high:g}"
        return self.help.format(choices="|".join(self.choices or ()), range=span)

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The smallest and largest value a widget may offer (an open end's value included: the
        check of the whole config names it), in the knob's kind."""
        return tuple(None if end is None else self.kind(end) for end in (self.low, self.high))

    def contains(self, value: float) -> bool:
        above = self.low is None or (value >= self.low if self.ends[0] == "[" else value > self.low)
        below = self.high is None or (value <= self.high if self.ends[1] == "]" else value < self.high)
        return above and below

    def range_words(self) -> str:
        if self.words:
            return self.words.format(low=f"{self.low:g}", high=f"{self.high:g}", interval=self.interval,
                                     unit=self.unit)
        if self.kind is int:
            return f">= {self.low:g}" if self.high is None else f"{self.low:g}..{self.high:g}"
        return f"in {self.interval}"

    def problem(self, value: object) -> str | None:
        """Why `value` cannot be this knob's, in one line naming it; None if it can."""
        name = self.name
        if self.choices:
            return None if value in self.choices else \
                f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return f"{name} must be a whole number, got {value!r}" if self.kind is int else \
                f"{name} must be a finite number, got {value!r}"
        if self.kind is float and not math.isfinite(value):
            return f"{name} must be a finite number, got {value!r}"
        return None if self.contains(value) else f"{name} must be {self.range_words()}, got {value}"


KNOBS: tuple[Knob, ...] = (  # in config.json's order
    Knob("epochs", int, 10, "passes over the training set", 1, MAX_EPOCHS),
    Knob("batch_size", int, 64, "images per step", 1, MAX_BATCH, unit="images"),
    Knob("lr", float, 0.01, "(peak) learning rate", 0, 10, "(]", words="> {low} and <= {high}"),
    Knob("optimizer", str, "sgd", "{choices}", choices=OPTIMIZERS),
    Knob("momentum", float, 0.0, "SGD momentum, {range}", 0, 1, "[)"),
    Knob("beta1", float, 0.9, "Adam/AdamW beta1 (running mean of the gradient), {range}", 0, 1, "[)",
         advanced=True),
    Knob("beta2", float, 0.999, "Adam/AdamW beta2 (running mean of its square), {range}", 0, 1, "[)",
         advanced=True),
    Knob("nesterov", bool, False, "SGD with momentum > 0: Nesterov momentum instead of plain momentum",
         advanced=True),
    Knob("weight_decay", float, 0.0, "L2 weight decay, >= 0", 0, 1),
    Knob("schedule", str, "none", "learning-rate schedule: {choices}", choices=SCHEDULES),
    Knob("step_size", int, 5, "epochs between LR drops (schedule=step)", 1, unit="epochs"),
    Knob("gamma", float, 0.1, "LR factor at each drop (schedule=step)", 0, 1, "(]"),
    Knob("warmup", float, 0.25, "onecycle: share of the steps spent warming up, {range}", 0, 1, "[)",
         advanced=True),
    # onecycle starts at 1/25 of the peak by default
    Knob("start_factor", float, 0.04, "onecycle: LR at the first step, as a share of the peak", 0, 1, "(]",
         advanced=True),
    Knob("final_factor", float, 1e-4, "onecycle: LR at the last step, as a share of the peak", 0, 1, "(]",
         advanced=True),
    Knob("label_smoothing", float, 0.0, "label smoothing, {range}", 0, 1, "[)"),
    # done on the device, in batches (core.training.parts.augment)
    Knob("augment", str, "none", "on-device augmentation: {choices}", choices=AUGMENTS),
    Knob("aug_degrees", float, 10.0, "rotate/affine: rotations within +- this many degrees", 0, 180,
         unit="degrees", advanced=True),
    Knob("aug_shift", float, 2.0, "affine: shifts within +- this many pixels", 0, 14, unit="pixels",
         advanced=True, words="in {interval} {unit}"),
    Knob("aug_zoom", float, 0.1, "affine: zoom within 1 +- this", 0, 1, "[)", advanced=True),
    Knob("ema", bool, False, "keep and evaluate an exponential moving average of the weights"),
    # after a warm-up, see core.training.parts.EMA
    Knob("ema_decay", float, 0.999, "EMA decay per step, 0..<1", 0, 1, "()", advanced=True),
    Knob("adv_eps", float, 0.0, "adversarial training: train on L-inf attacks of this radius, in pixels on "
         "[0, 1] (0: off; {range})", 0, 1, unit="pixels on [0, 1]", words="in {interval} ({unit})"),
    Knob("adv_steps", int, 1, "adversarial training: attack steps per batch (1: FGSM with a random start, "
         "more: PGD)", 1, 100, advanced=True, needs="adv_eps"),
    Knob("adv_step", float, 1.25, "adversarial training: each attack step's size, as a multiple of adv_eps",
         0, 10, "(]", unit="times adv_eps", advanced=True, words="> {low} and <= {high} ({unit})", needs="adv_eps"),
    Knob("adv_warmup", float, 0.0, "adversarial training: share of the steps over which the radius grows "
         "from 0 to adv_eps, {range}", 0, 1, "[)", advanced=True, needs="adv_eps"),
    Knob("oe_weight", float, 0.0, "outlier exposure: weight of a loss that teaches the model to be unsure on "
         "the lab's non-digit exposure images, seen beside each batch (0: off; {range})", 0, 10),
)
KNOB = {k.name: k for k in KNOBS}


def knob_problems(values: object) -> Iterator[str]:
    """Why the knobs of `values` (an object with one attribute per knob) cannot be, in the table's order."""
    return (p for k in KNOBS if (p := k.problem(getattr(values, k.name))) is not None)


def idle_knob_problems(values: object, recipe: object) -> Iterator[str]:
    """The knobs of `values` set away from `recipe` (the architecture's) that act only while another
    knob is on, while it is off: asked for, they would change nothing (`--adv-steps 5` without
    `--adv-eps` would train with no attack)."""
    for k in KNOBS:
        value = getattr(values, k.name)
        if k.needs and not getattr(values, k.needs) and value != getattr(recipe, k.name):
            yield (f"{k.name} is {value:g} but {k.needs} is 0 (off), so it would change nothing: "
                   f"give {k.needs} too, or leave {k.name} out")


def knobs_dataclass(name: str, from_recipe: bool = False, bases: tuple[type, ...] = ()) -> type:
    """A frozen dataclass with one field per knob, in the table's order, after the fields of
    `bases`: each defaults to the generic recipe's value, or (`from_recipe`) to None, "the
    architecture's recipe". The metadata gives core.config.field_specs the rest of the row."""
    cls = make_dataclass(name, [
        (k.name, k.kind, field(default=None if from_recipe else k.default, metadata={
            "help": k.text, "choices": k.choices, "advanced": k.advanced, "recipe": True, "knob": k}))
        for k in KNOBS], bases=bases, frozen=True)
    cls.__module__ = __name__
    return cls


@dataclass(frozen=True)
class Recipe(knobs_dataclass("RecipeKnobs")):
    """Default hyperparameters of an architecture (the recipe of the project it comes from).

    Every knob that changes training is here, so a run's config.json is its whole recipe;
    `TrainConfig` has one field for each, filled from here when not given.
    """

    def __post_init__(self) -> None:
        problem = next(knob_problems(self), None)
        if problem is not None:  # a recipe in core.models out of the table's ranges
            raise ValueError(f"a recipe's {problem}")

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, sep: str = ", ") -> str:
        """One line, e.g. 'sgd lr 0.01, batch 128, 15 epochs, momentum 0.9, step (x0.1 every 6)'."""
        epochs = f"{self.epochs} epoch" + ("" if self.epochs == 1 else "s")
        parts = [f"{self.optimizer} lr {self.lr:g}", f"batch {self.batch_size}", epochs]
        if self.momentum:
            parts.append(("nesterov " if self.nesterov else "") + f"momentum {self.momentum:g}")
        if self.optimizer != "sgd" and (self.beta1, self.beta2) != (0.9, 0.999):
            parts.append(f"betas ({self.beta1:g}, {self.beta2:g})")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        if self.schedule != "none":
            parts.append(self.schedule + (f" (x{self.gamma:g} every {self.step_size})" if self.schedule == "step" else ""))
        if self.augment != "none":
            parts.append(f"{self.augment} augmentation (+-{self.aug_degrees:g} deg"
                         + (f", +-{self.aug_shift:g} px, zoom +-{self.aug_zoom:g})" if self.augment == "affine" else ")"))
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        if self.ema:
            parts.append("EMA weights")
        if self.adv_eps:
            attack = "FGSM with a random start" if self.adv_steps == 1 else f"PGD-{self.adv_steps}"
            parts.append(f"adversarial training ({attack}, eps {self.adv_eps:g}, step {self.adv_step:g} eps"
                         + (f", eps warm-up over {self.adv_warmup:.0%} of the steps)" if self.adv_warmup else ")"))
        if self.oe_weight:
            parts.append(f"outlier exposure (weight {self.oe_weight:g})")
        return sep.join(parts)
