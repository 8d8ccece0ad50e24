"""Print the README's recipe table from the runs on disk (one finished run per architecture).

    python scripts/recipe_table.py [--checkpoints ./checkpoints] [--name recipe]

For each registered architecture it takes the finished run named --name (the full recipe, as
`python -m core train --arch NAME --name recipe` makes it) with the best validation accuracy,
and prints its measured test accuracy, epochs, median seconds per epoch, device and date.
Only runs of the current recipe count: a run whose hyperparameters or parameter count differ
from today's registry (a recipe or architecture changed since) is left out.
"""
from __future__ import annotations

import argparse
import sys

from core.config import ConfigError, TrainConfig
from core.models import count_parameters, get_spec, list_models
from core.runs import list_runs


def is_current_recipe(run, spec, parameters: int) -> bool:
    """The run trained today's architecture (`parameters` of them) with its default recipe on
    the full MNIST split."""
    try:  # a format-1 config is read with the values it used without saying (core.config)
        config = TrainConfig.from_dict(run.config).to_dict()
    except ConfigError:
        return False
    same_recipe = all(config[k] == v for k, v in spec.recipe.as_dict().items())
    full_data = run.config.get("train_limit") is None and run.config.get("csv") is None
    return same_recipe and full_data and run.metrics.get("parameters") == parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    parser.add_argument("--name", default="recipe", help="run name of the full-recipe runs (default: recipe)")
    args = parser.parse_args(argv)
    runs = [r for r in list_runs(args.checkpoints) if r.status == "finished" and r.name == args.name]
    print("| model | from | parameters | default recipe | target | test accuracy | val (kept weights) | epochs | s/epoch (median) | device | date |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    for arch in list_models():
        spec = get_spec(arch)
        r = spec.recipe.describe()
        parameters = count_parameters(spec.build())
        mine = sorted((x for x in runs if x.arch == arch and is_current_recipe(x, spec, parameters)),
                      key=lambda x: x.val_acc or 0, reverse=True)
        if not mine:
            print(f"| `{arch}` | {spec.source} | {parameters:,} | {r} | ≥ {spec.target}% "
                  "| not measured | | | | | |")
            continue
        run = mine[0]
        seconds = run.history["seconds"].median()
        met = "✓" if run.test_acc >= spec.target else "✗ below target"
        print(f"| `{arch}` | {spec.source} | {parameters:,} | {r} | ≥ {spec.target}% | "
              f"**{run.test_acc:.2f}%** {met} | {run.val_acc:.2f}% | {run.epochs_done} | {seconds:.1f} | "
              f"{run.metrics.get('device', '?')} | {str(run.metrics.get('finished', ''))[:10]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
