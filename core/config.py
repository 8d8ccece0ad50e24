"""One frozen dataclass for a training configuration, validated on creation.

The CLI's `train` options are generated from its fields, the dashboard fills the same
fields, and every run folder stores it as `config.json`, so all three speak the same words.
Its recipe fields are the knobs of core.recipe.KNOBS (generated from that table, which also
gives their help, choices, ranges and messages); the run's own fields are written here.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from core.errors import BadInput
from core.models import get_spec
from core.recipe import KNOBS, Knob, idle_knob_problems, knob_problems, knobs_dataclass

DEVICES = ("auto", "cpu", "cuda")
# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed: 2**32 would train exactly
# as seed 0 does. Larger seeds are refused rather than folded, so two seeds never collide.
MAX_SEED = 2**32 - 1


class ConfigError(BadInput, ValueError):
    """A hyperparameter is out of range; the message is one line naming it."""


# Fields whose default comes from the architecture's recipe (None means "use the recipe"):
# exactly the knobs of core.recipe.KNOBS, the one list of them.
RECIPE_FIELDS = tuple(k.name for k in KNOBS)
SWEPT_FIELDS = ("lr", "batch_size", "sweep", "name", "group", "study")  # a sweep sets these for each of its runs


def seed_problem(seed: object) -> str:
    """The message for a seed out of range (TrainConfig and `--seeds` say the same)."""
    return (f"seed must be a whole number 0..{MAX_SEED:,} (torch keeps 32 bits of a seed, so a larger one "
            f"would repeat a smaller one), got {seed!r}")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a run's display name, or None if it can."""
    if not isinstance(name, str) or not 0 < len(name) <= 80 or not name.isprintable():
        return f"a run name must be 1..80 printable characters, got {name!r}"
    return None


# The run's own fields with a range or choices, checked as a knob is (None passes where the
# field is optional); their defaults and help are the dataclass's, below.
_RUN_RULES = tuple(Knob(name, kind, None, "", *span, choices=choices) for name, kind, span, choices in (
    ("device", str, (), DEVICES), ("val_size", int, (1, 59_999), None), ("train_limit", int, (1,), None),
    ("bf16", bool, (), None), ("channels_last", bool, (), None), ("compile", bool, (), None)))


@dataclass(frozen=True)
class _Arch:
    arch: str = field(metadata={"help": "architecture (see `python -m core models`)"})


# The recipe: one field per knob of core.recipe.KNOBS, after `arch`; None takes the
# architecture's value (core.models.ModelSpec.recipe).
_ArchAndKnobs = knobs_dataclass("TrainConfigKnobs", from_recipe=True, bases=(_Arch,))


@dataclass(frozen=True)
class TrainConfig(_ArchAndKnobs):
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
    study: str | None = field(default=None, metadata={
        "help": "search study this run is a trial of (`python -m core search` makes one)"})

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
        problem = next(self._problems(), None)
        if problem is not None:
            raise ConfigError(problem)

    def _problems(self) -> Iterator[str]:
        """What is wrong, in one line per field, in the order of the check: the knobs (their ranges
        from core.recipe.KNOBS), a knob asked for that another knob left off makes idle, then the
        run's own fields."""
        yield from knob_problems(self)
        yield from idle_knob_problems(self, get_spec(self.arch).recipe)
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED):
            yield seed_problem(self.seed)
        optional = {spec.name for spec in field_specs() if spec.optional}
        for rule in _RUN_RULES:
            value = getattr(self, rule.name)
            if (value is not None or rule.name not in optional) and (problem := rule.problem(value)):
                yield problem
        if self.name is not None and (problem := name_problem(self.name)):
            yield problem
        for name in ("csv", "sweep"):  # text when given (a path, a sweep id)
            if not (getattr(self, name) is None or isinstance(getattr(self, name), str)):
                yield f"{name} must be text, got {getattr(self, name)!r}"
        for name, what in (("group", "a group id"), ("study", "a study name")):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= 80 and value.isprintable()):
                yield f"{what} must be 1..80 printable characters, got {value!r}"

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
    knob: Knob | None = None  # a recipe field's row of core.recipe.KNOBS: its range, unit, ...

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
                               bool(f.metadata.get("recipe")), bool(f.metadata.get("advanced")),
                               f.metadata.get("knob")))
    return tuple(specs)

