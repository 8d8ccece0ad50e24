"""core.config.field_specs: the one reading of TrainConfig's fields that the CLI, the Train form,
the Ray driver and the check of a saved config.json share."""
from __future__ import annotations

import dataclasses

import pytest

from core.cli import build_parser
from core.config import ConfigError, TrainConfig, field_specs
from core.store.runs import _check_config

WRONG = {int: "three", float: "fast", str: 7, bool: "yes"}  # a JSON value of another kind


def test_every_field_has_one_spec_in_the_dataclass_order():
    assert [s.name for s in field_specs()] == [f.name for f in dataclasses.fields(TrainConfig)]
    for spec in field_specs():
        assert spec.kind in (int, float, str, bool), spec
        assert spec.flag == "--" + spec.name.replace("_", "-")


def test_train_takes_every_field_as_an_option_of_its_kind():
    """Oracle: argparse itself, asked for each field's option with a value of its kind."""
    parser = build_parser()
    for spec in field_specs():
        if spec.kind is bool:
            args = parser.parse_args(["train", spec.flag])
            assert getattr(args, spec.name) is True
            assert getattr(parser.parse_args(["train", "--no-" + spec.flag[2:]]), spec.name) is False
        else:
            value = {int: "3", float: "0.5", str: (spec.choices or ("x",))[0]}[spec.kind]
            assert getattr(parser.parse_args(["train", spec.flag, value]), spec.name) == spec.kind(value)


@pytest.mark.parametrize("spec", field_specs(), ids=lambda s: s.name)
def test_a_saved_value_of_the_wrong_kind_is_dropped_with_a_warning(spec):
    """The value TrainConfig refuses is the one the reader of config.json drops and names."""
    good = TrainConfig(arch="mlp").to_dict()
    bad = {**good, spec.name: WRONG[spec.kind]}
    with pytest.raises((ConfigError, TypeError, KeyError)):
        TrainConfig(**{k: v for k, v in bad.items()})
    clean, problems = _check_config({"format": 3, **bad})
    assert spec.name not in clean and any(f"config.json's {spec.name} is " in p for p in problems), problems
    assert _check_config({"format": 3, **good}) == ({"format": 3, **good}, [])


# --- the knob table (core.recipe.KNOBS): each knob once, read by the config, the CLI and the form ---

def test_the_knob_table_is_the_recipe_and_the_config_s_recipe_fields():
    from core.config import RECIPE_FIELDS
    from core.recipe import KNOB, KNOBS, Recipe
    from core.training import parts
    names = tuple(k.name for k in KNOBS)
    assert RECIPE_FIELDS == names == tuple(f.name for f in dataclasses.fields(Recipe))
    # config.json's order: the architecture, the knobs, then the run's own fields
    assert tuple(f.name for f in dataclasses.fields(TrainConfig))[:len(names) + 1] == ("arch", *names)
    assert Recipe().as_dict() == {k.name: k.default for k in KNOBS}   # the generic recipe
    specs = {spec.name: spec for spec in field_specs()}
    for knob in KNOBS:
        spec = specs[knob.name]
        assert (spec.kind, spec.help, spec.choices, spec.advanced, spec.recipe, spec.knob) == \
            (knob.kind, knob.text, knob.choices, knob.advanced, True, knob)
        assert "{" not in spec.help and "None" not in spec.help and spec.default is None and not spec.optional
        assert knob.problem(knob.default) is None, knob.name
        assert (knob.choices is None) == (knob.kind is not str), knob.name
    assert set(parts.SCHEDULES) == set(KNOB["schedule"].choices)   # a function for each schedule


# The messages as they were written by hand before the table: users and tests rely on them.
MESSAGES = [
    ({"epochs": 0}, "epochs must be 1..1000, got 0"),
    ({"epochs": 1001}, "epochs must be 1..1000, got 1001"),
    ({"epochs": 2.0}, "epochs must be a whole number, got 2.0"),
    ({"batch_size": 60_001}, "batch_size must be 1..60000, got 60001"),
    ({"lr": 0.0}, "lr must be > 0 and <= 10, got 0.0"),
    ({"lr": 11}, "lr must be > 0 and <= 10, got 11"),
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"lr": "fast"}, "lr must be a finite number, got 'fast'"),
    ({"optimizer": "sgdd"}, "optimizer must be one of sgd, adam, adamw, got 'sgdd'"),
    ({"momentum": 1.5}, "momentum must be in [0, 1), got 1.5"),
    ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ({"beta1": 1.0}, "beta1 must be in [0, 1), got 1.0"),
    ({"beta2": -0.1}, "beta2 must be in [0, 1), got -0.1"),
    ({"nesterov": "yes"}, "nesterov must be true or false, got 'yes'"),
    ({"weight_decay": 1.5}, "weight_decay must be in [0, 1], got 1.5"),
    ({"schedule": "linear"}, "schedule must be one of none, step, cosine, onecycle, got 'linear'"),
    ({"step_size": 0}, "step_size must be >= 1, got 0"),
    ({"gamma": 0.0}, "gamma must be in (0, 1], got 0.0"),
    ({"warmup": 1.0}, "warmup must be in [0, 1), got 1.0"),
    ({"start_factor": 0}, "start_factor must be in (0, 1], got 0"),
    ({"final_factor": 2.0}, "final_factor must be in (0, 1], got 2.0"),
    ({"label_smoothing": 1}, "label_smoothing must be in [0, 1), got 1"),
    ({"augment": "flip"}, "augment must be one of none, rotate, affine, got 'flip'"),
    ({"aug_degrees": 181.0}, "aug_degrees must be in [0, 180], got 181.0"),
    ({"aug_shift": 15.0}, "aug_shift must be in [0, 14] pixels, got 15.0"),
    ({"aug_zoom": 1.0}, "aug_zoom must be in [0, 1), got 1.0"),
    ({"ema": 1}, "ema must be true or false, got 1"),
    ({"ema_decay": 2.0}, "ema_decay must be in (0, 1), got 2.0"),
    ({"ema_decay": 0.0}, "ema_decay must be in (0, 1), got 0.0"),
    ({"adv_eps": 1.5}, "adv_eps must be in [0, 1] (pixels on [0, 1]), got 1.5"),
    ({"adv_steps": 101}, "adv_steps must be 1..100, got 101"),
    ({"adv_step": 0.0}, "adv_step must be > 0 and <= 10 (times adv_eps), got 0.0"),
    ({"adv_warmup": 1.0}, "adv_warmup must be in [0, 1), got 1.0"),
    ({"oe_weight": 10.5}, "oe_weight must be in [0, 10], got 10.5"),
    ({"val_size": 60_000}, "val_size must be 1..59999, got 60000"),
    ({"train_limit": 0}, "train_limit must be >= 1, got 0"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda, got 'tpu'"),
    ({"bf16": "on"}, "bf16 must be true or false, got 'on'"),
    ({"compile": None}, "compile must be true or false, got None"),
    ({"csv": 3}, "csv must be text, got 3"),
    ({"epochs": 0, "lr": 0.0, "device": "tpu"}, "epochs must be 1..1000, got 0"),   # the first, in config.json's order
]


@pytest.mark.parametrize("changes, message", MESSAGES, ids=lambda x: "-".join(x) if isinstance(x, dict) else None)
def test_a_value_out_of_range_gets_its_message_word_for_word(changes, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(arch="mlp", **changes)
    assert str(err.value) == message


def test_every_knob_s_range_has_a_message_above_and_every_end_is_where_the_table_says():
    from core.config import RECIPE_FIELDS
    from core.recipe import KNOBS
    assert set(RECIPE_FIELDS) <= {name for changes, _ in MESSAGES for name in changes}
    for knob in (k for k in KNOBS if k.kind in (int, float)):
        low, high = knob.bounds
        for end, value, included in ((low, low, knob.ends[0] == "["), (high, high, knob.ends[1] == "]")):
            if end is not None:
                assert (knob.problem(value) is None) == included, (knob.name, value)


def test_a_recipe_out_of_the_table_s_ranges_is_refused_when_registered():
    from core.recipe import Recipe
    with pytest.raises(ValueError, match=r"^a recipe's momentum must be in \[0, 1\), got 1.0$"):
        Recipe(momentum=1.0)
