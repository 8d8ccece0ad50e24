"""Print the README's recipe table from the runs on disk (one finished run per architecture).

    python scripts/recipe_table.py [--checkpoints ./checkpoints] [--name recipe]

For each registered architecture it takes the finished run named --name (the full recipe, as
`python -m core train --arch NAME --name recipe` makes it) with the best validation accuracy,
and prints its measured test accuracy, epochs, median seconds per epoch, device and date.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.models import count_parameters, create_model, get_spec, list_models  # noqa: E402
from core.runs import list_runs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="runs folder (default: ./checkpoints)")
    parser.add_argument("--name", default="recipe", help="run name of the full-recipe runs (default: recipe)")
    args = parser.parse_args(argv)
    runs = [r for r in list_runs(args.checkpoints) if r.status == "finished" and r.name == args.name]
    print("| model | from | parameters | default recipe | target | test accuracy | best val | epochs | s/epoch (median) | device | date |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    for arch in list_models():
        spec, r = get_spec(arch), spec_recipe(get_spec(arch))
        mine = sorted((x for x in runs if x.arch == arch), key=lambda x: x.best_val_acc or 0, reverse=True)
        if not mine:
            print(f"| `{arch}` | {spec.source} | {count_parameters(create_model(arch)):,} | {r} | ≥ {spec.target}% "
                  "| not measured | | | | | |")
            continue
        run = mine[0]
        seconds = run.history["seconds"].median()
        met = "✓" if run.test_acc >= spec.target else "✗ below target"
        print(f"| `{arch}` | {spec.source} | {run.metrics.get('parameters', 0):,} | {r} | ≥ {spec.target}% | "
              f"**{run.test_acc:.2f}%** {met} | {run.best_val_acc:.2f}% | {run.epochs_done} | {seconds:.1f} | "
              f"{run.metrics.get('device', '?')} | {str(run.metrics.get('finished', ''))[:10]} |")
    return 0


def spec_recipe(spec) -> str:
    r = spec.recipe
    parts = [f"{r.optimizer} lr {r.lr:g}", f"batch {r.batch_size}", f"{r.epochs} epochs"]
    if r.momentum:
        parts.append(f"momentum {r.momentum:g}")
    if r.weight_decay:
        parts.append(f"wd {r.weight_decay:g}")
    if r.schedule != "none":
        parts.append(r.schedule + (f" (x{r.gamma:g} every {r.step_size})" if r.schedule == "step" else ""))
    if r.augment != "none":
        parts.append(f"{r.augment} augmentation")
    if r.label_smoothing:
        parts.append(f"label smoothing {r.label_smoothing:g}")
    if r.ema:
        parts.append("EMA")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
