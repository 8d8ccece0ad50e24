"""Print the accuracy table of the recipes from the runs on disk (one finished run per architecture).

    python -m scripts.recipe_table [--checkpoints ./checkpoints] [--name NAME]
    python -m scripts.recipe_table > docs/tables/recipes.md     # the table the docs show

By default it reads the reference runs shipped in ./checkpoints (core.store.reference), so
docs/tables/recipes.md (included in docs/training.md, linked from the README) and the shipped runs
are the same thing (tests/test_reference.py and tests/test_recipe_table.py check it).
With --name it reads your own finished runs of that name instead (the full recipe, as
`python -m core train --arch lenet --name NAME` makes it). For each registered architecture
it takes the qualifying run with the best validation accuracy and prints its measured test
accuracy with its 95% Wilson interval, whether the target (the seed's published figure, or the
lab's own for its recipes) lies inside that interval, below it or above it, epochs, training
time, device and date.
Only runs of the current recipe count: a run whose hyperparameters or parameter count differ
from today's registry (a recipe or architecture changed since) is left out ("not measured").
An architecture with no reference run at all (one just registered) has no row in the reference
table; its name goes to stderr.
"""
from __future__ import annotations

import argparse
import sys

from core.config import ConfigError, TrainConfig
from core.models import count_parameters, get_spec, list_models
from core.store.runs import list_runs


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
    parser.add_argument("--name", default=None, help="read your finished runs of this name, not the reference runs")
    args = parser.parse_args(argv)
    runs = list_runs(args.checkpoints)
    if not args.name and unshipped(runs):
        print(f"no reference run for: {', '.join(unshipped(runs))}", file=sys.stderr)
    print(table(runs, args.name))
    return 0


def unshipped(runs: list) -> list[str]:
    """The registered architectures without a reference run among `runs` (a new one, whose run has
    not shipped yet): the reference table leaves them out, `main` names them."""
    shipped = {r.arch for r in runs if r.reference}
    return [arch for arch in list_models() if arch not in shipped]


def table(runs: list, name: str | None = None) -> str:
    """The markdown table for the reference runs among `runs`, a row per architecture that has one
    (or for the runs named `name`, a row per architecture), in the registry's order."""
    archs = list_models() if name else [a for a in list_models() if a not in unshipped(runs)]
    runs = [r for r in runs if r.status == "finished" and (r.name == name if name else r.reference)]
    lines = ["| model | from | parameters | default recipe | target | test accuracy (95% CI) | the target lies "
             "| val (kept weights) | epochs | training time | device | date |",
             "|---|---|---:|---|---:|---:|---|---:|---:|---:|---|---|"]
    for arch in archs:
        spec = get_spec(arch)
        r = spec.recipe.describe()
        parameters = count_parameters(spec.build())
        mine = sorted((x for x in runs if x.arch == arch and is_current_recipe(x, spec, parameters)),
                      key=lambda x: x.val_acc or 0, reverse=True)
        if not mine:
            lines.append(f"| `{arch}` | {spec.source} | {parameters:,} | {r} | ≥ {spec.target}% "
                         "| not measured | | | | | | |")
            continue
        run = mine[0]
        low, high = run.test_ci
        lines.append(f"| `{arch}` | {spec.source} | {parameters:,} | {r} | ≥ {spec.target}% | "
                     f"**{run.test_acc:.2f}%** ({low:.2f}–{high:.2f}) | {verdict(spec.target, low, high)} | "
                     f"{run.val_acc:.2f}% | {run.epochs_done} | "
                     f"{_duration(run.history['seconds'].sum())} | {run.metrics.get('device', '?')} | "
                     f"{str(run.metrics.get('finished', ''))[:10]} |")
    return "\n".join(lines)


def verdict(target: float, low: float, high: float) -> str:
    """Where the target lies against the run's 95% interval, in words."""
    if target < low:
        return "below the interval (beaten)"
    if target > high:
        return "above the interval (missed)"
    return "inside the interval (consistent)"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
