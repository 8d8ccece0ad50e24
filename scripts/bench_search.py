"""Compute-matched search benchmark: a grid, random search and TPE with pruning, at the same training
budget (epochs summed over trials), over several study seeds.

    python -m scripts.bench_search --problem mlp [--seeds 0,1,2] [--out FILE.json]
    python -m scripts.bench_search --problem lenet [--seeds 0,1,2] [--out FILE.json]

Problems:
- mlp: seed 003's question. The grid is its learning rates x batch sizes (0.01, 0.1, 0.5 x 32, 128,
  512; 5 epochs each, 45 epochs); the searches get the same ranges widened to continuous ones
  (lr 0.01..1 on a log scale, batch size 32..512 on a log scale) and the grid's 45 epochs.
- lenet: a convolutional recipe with four knobs (Adam's learning rate, batch size, weight decay,
  label smoothing), 15,000 training images, 3 epochs a trial; the grid is two values of each
  (16 cells, 48 epochs), the searches get continuous ranges around them and 48 epochs.
- lenet5: the same with 5 epochs a trial (80 epochs).

Each study seed is both the sampler's seed and every trial's training seed (the grid's too). All
on the validation split: the figure is the validation accuracy of a trial's kept weights (its
last epoch), never the test set. For each method and seed: the best validation accuracy within
the budget, and the epochs spent (cumulative, in trial order, counting every epoch a pruned trial
trained) when a finished trial first reached the same seed's grid best. Prints a table; --out
writes every figure as JSON.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from core.config import TrainConfig
from core.store.runs import load_run
from core.training import search
from core.training.loop import prepare_run, train
from core.training.search import Param, Settings

PROBLEMS = {
    "mlp": {
        "base": {"arch": "mlp", "epochs": 5, "device": "cpu"},
        "grid": {"lr": [0.01, 0.1, 0.5], "batch_size": [32, 128, 512]},
        "space": [Param("lr", 0.01, 1.0, log=True), Param("batch_size", 32, 512, log=True)],
    },
    "lenet": {
        "base": {"arch": "lenet", "epochs": 3, "train_limit": 15000, "device": "cpu"},
        "grid": {"lr": [3e-4, 3e-3], "batch_size": [64, 256], "weight_decay": [0.0, 5e-4],
                 "label_smoothing": [0.0, 0.1]},
        "space": [Param("lr", 1e-4, 1e-2, log=True), Param("batch_size", 32, 512, log=True),
                  Param("weight_decay", 0.0, 1e-3), Param("label_smoothing", 0.0, 0.2)],
    },
    "lenet5": {  # the same question with trials of 5 epochs (16 cells, 80 epochs): more for a pruner to judge by
        "base": {"arch": "lenet", "epochs": 5, "train_limit": 15000, "device": "cpu"},
        "grid": {"lr": [3e-4, 3e-3], "batch_size": [64, 256], "weight_decay": [0.0, 5e-4],
                 "label_smoothing": [0.0, 0.1]},
        "space": [Param("lr", 1e-4, 1e-2, log=True), Param("batch_size", 32, 512, log=True),
                  Param("weight_decay", 0.0, 1e-3), Param("label_smoothing", 0.0, 0.2)],
    },
}
METHODS = ("grid", "random", "tpe+asha", "tpe+median", "tpe+hyperband")
DEFAULT_METHODS = ("grid", "random", "tpe+asha")


def final_val(run) -> float | None:
    return run.val_acc if run.status == "finished" else None


def run_grid(problem: dict, seed: int, store: Path) -> list[tuple[int, float | None]]:
    """Train every cell in order; [(epochs trained, final validation accuracy)] per cell."""
    base = TrainConfig(**problem["base"], seed=seed)
    names = list(problem["grid"])
    out = []
    for values in itertools.product(*problem["grid"].values()):
        cfg = base.replace(**dict(zip(names, values)), name=" ".join(f"{n}={v:g}" for n, v in zip(names, values)))
        writer = prepare_run(cfg, root=store)
        train(writer.run_id, root=store, writer=writer)
        run = load_run(writer.run_id, store)
        out.append((run.epochs_done, final_val(run)))
    return out


def run_search(problem: dict, seed: int, store: Path, sampler: str, pruner: str, budget: int) -> list[tuple[int, float | None]]:
    base = TrainConfig(**problem["base"], seed=seed)
    settings = Settings(study=f"{sampler}-{pruner}-{seed}", base=base.to_dict(), params=tuple(problem["space"]),
                        budget_epochs=budget, sampler=sampler, pruner=pruner, seed=seed)
    search.new_study(settings, store)
    search.run_study(settings.study, root=store, report=lambda line: print("   ", line, file=sys.stderr, flush=True))
    rows = search.summary(settings.study, store)["trials"]
    return [(r["epochs"], r["val_acc"] if r["state"] == "finished" else None) for r in rows]


def reached(trials: list[tuple[int, float | None]], target: float) -> int | None:
    """Epochs spent when a finished trial first reached `target` (None: never)."""
    spent = 0
    for epochs, value in trials:
        spent += epochs
        if value is not None and value >= target - 1e-9:
            return spent
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=list(PROBLEMS), required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (the grid always runs: it is the yardstick)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    problem = PROBLEMS[args.problem]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = ["grid", *(m for m in args.methods.split(",") if m != "grid")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s): {', '.join(unknown)}")
    cells = len(list(itertools.product(*problem["grid"].values())))
    budget = cells * problem["base"]["epochs"]
    results = {"problem": args.problem, "budget_epochs": budget, "seeds": seeds, "machine": platform.processor()
               or platform.machine(), "date": time.strftime("%Y-%m-%d"), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for seed in seeds:
            for method in methods:
                store = Path(tmp) / f"{method}-{seed}"
                started = time.perf_counter()
                print(f"{args.problem} seed {seed}: {method}", file=sys.stderr, flush=True)
                if method == "grid":
                    trials = run_grid(problem, seed, store)
                else:
                    sampler, pruner = ("random", "none") if method == "random" else method.split("+")
                    trials = run_search(problem, seed, store, sampler, pruner, budget)
                results["runs"][f"{method}/{seed}"] = {"trials": trials, "seconds": round(time.perf_counter() - started, 1)}
    table = []
    for method in methods:
        bests, to_grid, spent = [], [], []
        for seed in seeds:
            trials = results["runs"][f"{method}/{seed}"]["trials"]
            grid_best = max(v for _, v in results["runs"][f"grid/{seed}"]["trials"] if v is not None)
            finals = [v for _, v in trials if v is not None]
            bests.append(max(finals) if finals else None)
            # a grid knows its best only once every cell is trained: it pays its whole budget for it
            to_grid.append(sum(e for e, _ in trials) if method == "grid" else reached(trials, grid_best))
            spent.append(sum(e for e, _ in trials))
        table.append({"method": method, "best_val": bests, "epochs_to_grid_best": to_grid, "epochs_spent": spent,
                      "median_best_val": statistics.median([b for b in bests if b is not None]),
                      "reached_grid_best": sum(t is not None for t in to_grid),
                      "median_epochs_to_grid_best": (statistics.median([t if t is not None else float("inf")
                                                                        for t in to_grid]))})
    results["table"] = table
    print(f"{args.problem}: budget {budget} epochs per study, seeds {seeds}")
    print(f"{'method':<10} {'best val (per seed)':<28} {'median':>7}  {'epochs to the grid best (per seed)':<36} median")
    for row in table:
        bests = ", ".join("–" if b is None else f"{b:.2f}" for b in row["best_val"])
        tos = ", ".join("never" if t is None else str(t) for t in row["epochs_to_grid_best"])
        print(f"{row['method']:<10} {bests:<28} {row['median_best_val']:>7.2f}  {tos:<36} {row['median_epochs_to_grid_best']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
