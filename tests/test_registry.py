"""Adding an architecture takes its model and its registry entry, nothing else: the config, the
CLI, the Train form and the reference check take one registered here (through core.models' own
`register`, in a copy of the registry that the test puts back), and the reference check names
its missing reference run instead of failing."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from torch import nn

from core import models
from core.config import RECIPE_FIELDS, TrainConfig
from core.recipe import Recipe
from core.store.runs import list_runs
from scripts import recipe_table
from tests.helpers import REPO, MissingReferenceRun, reference_runs, run_cli

APP = REPO / "dashboard" / "app.py"
TOY = "toy"


@pytest.fixture
def toy(monkeypatch) -> Recipe:
    """A new architecture, one linear layer, with a recipe of its own; its recipe."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    recipe = Recipe(epochs=2, lr=0.05, momentum=0.9, schedule="cosine", augment="rotate", aug_degrees=180.0)
    models.register(TOY, recipe, source="a test", target=90.0, summary="one linear layer")(
        lambda: models.MLP(nn.Flatten(), nn.Linear(28 * 28, 10)))
    return recipe


def test_the_config_and_the_cli_take_a_new_architecture_with_its_recipe(toy):
    from core.cli import build_parser
    from core.commands import config_from_args
    config = TrainConfig(arch=TOY)
    assert {name: getattr(config, name) for name in RECIPE_FIELDS} == toy.as_dict()
    assert TrainConfig.from_dict(config.to_dict()) == config
    args = build_parser().parse_args(["train", "--arch", TOY, "--epochs", "3"])
    assert config_from_args(args) == TrainConfig(arch=TOY, epochs=3)
    code, out, _ = run_cli("models")
    assert code == 0 and "one linear layer" in out and toy.describe() in out


def test_the_train_form_offers_a_new_architecture_within_its_bounds(toy, lab_env, monkeypatch):
    from core.training import jobs
    from dashboard.views.train import FIELDS
    launched = []
    monkeypatch.setattr(jobs, "launch", lambda config: launched.append(config) or "20260101-000000-toy")
    at = AppTest.from_file(str(APP), default_timeout=60).run()   # "/" is the first page
    at.switch_page("views/train.py").run()
    assert TOY in at.selectbox(key="train_arch").options
    at.selectbox(key="train_arch").set_value(TOY).run()
    assert not at.exception, [e.value for e in at.exception]
    for f in FIELDS:
        if f.recipe:
            assert at.session_state[f.key] == getattr(toy, f.name), f.name
        if f.recipe and f.kind in (int, float):   # the recipe lies within the input's bounds
            low, high = f.bounds
            assert (low is None or low <= getattr(toy, f.name)) and (high is None or getattr(toy, f.name) <= high)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    assert launched == [TrainConfig(arch=TOY)]


def test_the_reference_check_names_a_new_architecture_without_a_reference_run(toy, capsys):
    from tests import test_reference
    with pytest.warns(MissingReferenceRun, match=f"^no reference run for: {TOY}$"):
        shipped = reference_runs()
    assert TOY not in shipped and set(shipped) == set(models.list_models()) - {TOY}
    with pytest.warns(MissingReferenceRun, match=TOY):
        test_reference.test_every_default_recipe_has_a_reference_run_and_the_set_is_small()
    # the shipped table stays as it is (no row for it, docs/tables/recipes.md unchanged); it is named
    runs = list_runs(REPO / "checkpoints")
    with pytest.MonkeyPatch.context() as before_it:
        before_it.delitem(models._REGISTRY, TOY)
        before = recipe_table.table(runs)
    assert recipe_table.table(runs) == before and "not measured" not in before
    assert recipe_table.main(["--checkpoints", str(REPO / "checkpoints")]) == 0
    assert capsys.readouterr().err == f"no reference run for: {TOY}\n"
