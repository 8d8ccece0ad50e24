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
