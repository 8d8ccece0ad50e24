"""Learning-rate x batch-size grids (seed 003's exploration) as ordinary tagged runs."""
from __future__ import annotations

import datetime as dt
import itertools
import math
import secrets
from typing import Iterable

import pandas as pd

from core.config import MAX_SEED, ConfigError, TrainConfig, seed_problem
from core.errors import LabError
from core.store.runs import Run, list_runs
from core.store.writer import RunWriter
from core.training.loop import prepare_run, train

MAX_VALUES = 12  # per list (learning rates, batch sizes)
MAX_CELLS = MAX_VALUES * MAX_VALUES  # runs per sweep; checked again for callers that skip parse_values


def parse_values(text: str, kind: type = float, what: str = "values", limit: int = MAX_VALUES) -> list:
    """'0.01, 0.03 0.1' -> [0.01, 0.03, 0.1]; ConfigError with a one-line message if bad.
    Duplicates are dropped, order kept. The one list grammar of the CLI and the Sweep page."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"give at least one of the {what}, separated by commas")
    values = []
    for part in parts:
        try:
            value = kind(part.strip()) if kind is float else int(part.strip())
        except ValueError:
            raise ConfigError(f"{part.strip()!r} in the {what} is not a "
                             f"{'number' if kind is float else 'whole number'}") from None
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{part.strip()!r} in the {what} is not a finite number")
        if value not in values:
            values.append(value)
    if len(values) > limit:
        raise ConfigError(f"at most {limit} {what}, got {len(values)}")
    return values


def prepare_sweep(base: TrainConfig, lrs: list[float], batch_sizes: list[int],
                  root=None) -> tuple[str, list[RunWriter]]:
    """Validate every cell, then create one queued run per (lr, batch size). Each writer holds
    its run's lock: train them here (`run_sweep`) or hand each to a job (core.training.jobs)."""
    if len(lrs) * len(batch_sizes) > MAX_CELLS:
        raise ConfigError(f"a sweep has at most {MAX_CELLS} runs, got {len(lrs)} x {len(batch_sizes)} = "
                          f"{len(lrs) * len(batch_sizes)}")
    sweep_id = "sweep-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    configs = [base.replace(lr=lr, batch_size=bs, sweep=sweep_id, name=f"lr={lr:g} bs={bs}")
               for lr, bs in itertools.product(lrs, batch_sizes)]  # replace() validates each
    return sweep_id, [prepare_run(c, root=root) for c in configs]


def run_sweep(writers: list[RunWriter], root=None, data_root=None, stop=None, callback_factory=None) -> None:
    """Train the sweep's runs one after another in this process; runs not started when `stop`
    is set are marked cancelled. A run that fails with a LabError (a full disk, a file gone)
    ends the sweep: the runs not started are marked cancelled with the reason, each run
    has its final status, and the error is raised afterwards for the caller to report."""
    failure: LabError | None = None
    failure_id = ""  # the run that failed
    for writer in writers:
        if failure is not None or (stop is not None and stop.is_set()):
            why = (f"not started: run {failure_id} failed ({failure})" if failure is not None
                   else "the sweep was stopped before this run started")
            try:
                writer.cancel(why)
            except OSError:  # the disk that failed the run may refuse this too: shown as interrupted
                pass
            writer.release()
            continue
        try:
            train(writer.run_id, root=root, data_root=data_root, stop=stop, writer=writer,
                  callback=callback_factory() if callback_factory else None)
        except LabError as exc:
            failure, failure_id = exc, writer.run_id
    if failure is not None:
        raise failure


def sweep_runs(sweep_id: str, root=None) -> pd.DataFrame:
    """One row per run of the sweep: run_id, name, lr, batch_size, status, val_acc, test_acc."""
    return sweep_table(list_runs(root), sweep_id)


def grid_table(sweep_id: str, root=None) -> pd.DataFrame:
    """Validation accuracy (%) of the kept weights, with learning rates as rows and batch sizes as columns."""
    runs = sweep_runs(sweep_id, root)
    return runs.pivot_table(index="lr", columns="batch_size", values="val_acc", aggfunc="max")


# --- the Sweep page's views of runs already read ----------------------------------------------

SWEEP_COLUMNS = ["run_id", "name", "lr", "batch_size", "status", "val_acc", "test_acc"]


def sweep_ids(runs: Iterable[Run]) -> list[str]:
    """Sweep ids present among `runs`, newest first (ids hold their UTC start time)."""
    return sorted({r.config["sweep"] for r in runs if isinstance(r.config.get("sweep"), str)}, reverse=True)


def sweep_table(runs: Iterable[Run], sweep_id: str) -> pd.DataFrame:
    """One row per run of `sweep_id` (SWEEP_COLUMNS), by learning rate then batch size."""
    rows = [{"run_id": r.run_id, "name": r.name, "lr": r.config.get("lr"),
             "batch_size": r.config.get("batch_size"), "status": r.status,
             "val_acc": r.val_acc, "test_acc": r.test_acc}
            for r in runs if r.config.get("sweep") == sweep_id]
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    return frame.sort_values(["lr", "batch_size"], kind="stable").reset_index(drop=True)


def sweep_cells(table: pd.DataFrame) -> pd.DataFrame:
    """`sweep_table` with a text label per cell: the accuracy, else the status."""
    cells = table.copy()
    cells["label"] = [f"{acc:.2f}" if acc is not None and not pd.isna(acc) else status
                      for acc, status in zip(cells["val_acc"], cells["status"])]
    cells["lr_text"] = [f"{lr:g}" if isinstance(lr, (int, float)) and not pd.isna(lr) else "?"
                        for lr in cells["lr"]]
    return cells


# --- seed groups: one recipe over several seeds (`train --seeds`, the Train page) -------------

MAX_SEEDS = 20  # runs per seed group


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; ConfigError with a one-line message if bad (a negative seed, more
    than MAX_SEEDS, ...). The one seed-list grammar of the CLI and the Train page."""
    seeds = parse_values(text, int, "seeds", limit=MAX_SEEDS)
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(seed_problem(seed))
    return seeds


def prepare_seeds(base: TrainConfig, seeds: list[int], root=None,
                  group: str | None = None) -> tuple[str, list[RunWriter]]:
    """Validate every seed's config, then create one queued run per seed, all with the same
    `group` id (default: 'seeds-<UTC time>'). Train them with `run_sweep` or core.training.jobs, like a sweep."""
    if not seeds:
        raise ConfigError("give at least one seed")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"a seed group has at most {MAX_SEEDS} runs, got {len(seeds)}")
    group = group or ("seeds-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
                      + "-" + secrets.token_hex(2))  # two groups started in one second stay apart
    label = base.name or base.arch
    configs = [base.replace(seed=seed, group=group, name=f"{label[:74 - len(str(seed))]} seed={seed}")
               for seed in seeds]  # replace() validates each
    return group, [prepare_run(c, root=root) for c in configs]
