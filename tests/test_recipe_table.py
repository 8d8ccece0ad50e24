"""The accuracy table (docs/tables/recipes.md) counts only runs of today's recipe and architecture,
and the file is what `python -m scripts.recipe_table` prints from the shipped reference runs."""
from __future__ import annotations

import dataclasses

from core.models import count_parameters, create_model, get_spec
from core.store.runs import load_run
from scripts import recipe_table
from tests.helpers import REPO


def test_only_full_runs_of_the_current_recipe_and_architecture_count(trained_runs):
    run = load_run(trained_runs.ids["mlp"], trained_runs.root)
    spec = get_spec("mlp")
    parameters = count_parameters(create_model("mlp"))  # today's mlp, as the script counts it
    # The tiny fixture run: 2 epochs on 2,000 images, not the recipe.
    assert not recipe_table.is_current_recipe(run, spec, parameters)

    as_recipe = dataclasses.replace(run, config={**run.config, **spec.recipe.as_dict(), "train_limit": None})
    assert recipe_table.is_current_recipe(as_recipe, spec, parameters)

    older_recipe = dataclasses.replace(as_recipe, config={**as_recipe.config, "lr": spec.recipe.lr * 2})
    assert not recipe_table.is_current_recipe(older_recipe, spec, parameters)

    on_a_subset = dataclasses.replace(as_recipe, config={**as_recipe.config, "train_limit": 5000})
    assert not recipe_table.is_current_recipe(on_a_subset, spec, parameters)

    older_model = dataclasses.replace(as_recipe, metrics={**run.metrics, "parameters": run.metrics["parameters"] + 1})
    assert not recipe_table.is_current_recipe(older_model, spec, parameters)


def test_table_lists_every_architecture_and_marks_missing_runs(tmp_path, capsys):
    """Your runs of a name: a row per architecture, "not measured" where none qualifies. The
    reference runs: a row per architecture that has one; one without (just registered) is named
    on stderr, so that its table, and docs/tables/recipes.md, stay as they are until its run ships."""
    assert recipe_table.main(["--checkpoints", str(tmp_path), "--name", "mine"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(rows) == len(recipe_table.list_models())
    assert all("not measured" in row for row in rows)
    assert recipe_table.main(["--checkpoints", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert not [line for line in out.splitlines() if line.startswith("| `")]
    assert err == f"no reference run for: {', '.join(recipe_table.list_models())}\n"


def test_the_table_file_is_what_the_script_prints_from_the_shipped_runs(capsys):
    """What docs/reference-runs.md says to run, `python -m scripts.recipe_table > docs/tables/recipes.md`,
    gives the file as it is: the command, not only the function, is checked."""
    assert recipe_table.main(["--checkpoints", str(REPO / "checkpoints")]) == 0
    assert capsys.readouterr().out == (REPO / "docs" / "tables" / "recipes.md").read_text(), \
        "docs/tables/recipes.md differs: regenerate it with `python -m scripts.recipe_table > docs/tables/recipes.md`"
