"""Is the difference real? Runs compared on the test images they were all tested on, from their
saved predictions (core.stats does the arithmetic):

- two runs: the 2x2 table of per-image right/wrong, McNemar's exact test, the accuracy
  difference with its paired 95% interval, each accuracy with its Wilson interval, and a
  sentence a person reads;
- more than two: every pair's McNemar p-value, Holm-adjusted for the number of pairs;
- two seed groups: Welch's t-test of their per-seed test accuracies.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.analysis.predictions import same_images
from core.errors import BadInput
from core.stats import ALPHA, GroupTest, Paired, holm, paired, welch, wilson_percent
from core.store.folder import RunError, run_dir
from core.store.runs import Run, given_twice, load_predictions, load_run


class CompareError(BadInput):
    """Runs that cannot be compared; the message says why."""


@dataclass(frozen=True)
class Figures:
    """One run's test accuracy and its 95% Wilson interval, in %."""
    run_id: str
    name: str
    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return 100 * self.correct / self.n

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_percent(self.correct, self.n)

    def to_json(self) -> dict:
        low, high = self.ci95
        return {"run_id": self.run_id, "name": self.name, "correct": self.correct, "n": self.n,
                "accuracy": self.accuracy, "ci95": [low, high]}


def p_text(p: float) -> str:
    """p = 0.16, p = 0.004, p < 0.001."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def images(count: int) -> str:
    return f"{count:,} image" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Comparison:
    a: Figures
    b: Figures
    table: Paired

    @property
    def a_only(self) -> int:
        return self.table.a_only

    @property
    def b_only(self) -> int:
        return self.table.b_only

    @property
    def p_value(self) -> float:
        return self.table.p_value

    def sentence(self) -> str:
        """What the comparison says, in words."""
        a, b, t = self.a.name, self.b.name, self.table
        if t.a_only + t.b_only == 0:
            return (f"{a} and {b} are right and wrong on exactly the same images: "
                    "there is no difference to test.")
        counts = (f"{a} is right on {images(t.a_only)} {b} gets wrong, "
                  f"{b} on {t.b_only:,} that {a} gets wrong")
        if not t.significant:
            return f"{counts}: {p_text(t.p_value)}, no evidence of a difference at the 5% level."
        better, worse = (a, b) if t.difference > 0 else (b, a)
        sign = 1 if t.difference > 0 else -1  # the interval of better minus worse
        low, high = sorted(sign * 100 * x for x in t.difference_ci)
        return (f"{counts}: {p_text(t.p_value)}, a real difference at the 5% level: {better} is "
                f"{abs(100 * t.difference):.2f} points more accurate than {worse} "
                f"(95% interval {low:.2f} to {high:.2f}).")

    def to_json(self) -> dict:
        t = self.table
        return {"a": self.a.to_json(), "b": self.b.to_json(), "n": t.n,
                "both_right": t.both, "a_only": t.a_only, "b_only": t.b_only, "both_wrong": t.neither,
                "p_value": t.p_value, "test": "McNemar, exact (two-sided)",
                "difference": 100 * t.difference,
                "difference_ci95": [100 * t.difference_ci[0], 100 * t.difference_ci[1]],
                "significant": t.significant, "alpha": ALPHA, "sentence": self.sentence()}


def _hits(run: Run, root) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    try:
        saved = load_predictions(run.run_id, root)
    except RunError as exc:
        raise CompareError(str(exc)) from None
    return saved["predicted"] == saved["labels"], saved


def _runs(run_ids: list[str], root) -> list[Run]:
    if len(set(run_ids)) < len(run_ids):
        twice = next(i for i in run_ids if run_ids.count(i) > 1)
        raise CompareError(f"run {twice!r} was given twice: compare it with another run")
    try:
        runs = [load_run(run_id, root) for run_id in run_ids]
    except RunError as exc:
        raise CompareError(str(exc)) from None
    if twice := given_twice(run_ids, root):
        raise CompareError(f"runs {twice[0]!r} and {twice[1]!r} are one run (the folder "
                           f"{run_dir(twice[0], root).name!r}) given twice: compare it with another run")
    return runs


def _figures(run: Run, hits: np.ndarray) -> Figures:
    return Figures(run.run_id, run.name, int(hits.sum()), len(hits))


def _paired_hits(runs: list[Run], root) -> list[np.ndarray]:
    """Each run's per-image hits, after checking that all were tested on the same images."""
    loaded = [_hits(run, root) for run in runs]
    first_run, (_, first) = runs[0], loaded[0]
    for run, (_, saved) in zip(runs[1:], loaded[1:]):
        if not same_images(first, saved):
            raise CompareError(f"runs {first_run.name!r} and {run.name!r} were tested on different images "
                               f"({len(first['labels']):,} and {len(saved['labels']):,} test labels that differ): "
                               "they cannot be compared image by image")
    return [hits for hits, _ in loaded]


def compare(run_a: str, run_b: str, root: str | os.PathLike | None = None) -> Comparison:
    """Run A against run B on the images both were tested on."""
    a, b = _runs([run_a, run_b], root)
    hits_a, hits_b = _paired_hits([a, b], root)
    return Comparison(_figures(a, hits_a), _figures(b, hits_b), paired(hits_a, hits_b))


@dataclass(frozen=True)
class Pairwise:
    """Every pair of several runs: the runs' figures, and square frames indexed by run id of the
    raw and Holm-adjusted McNemar p-values (NaN on the diagonal)."""
    figures: list[Figures]
    p_values: pd.DataFrame
    adjusted: pd.DataFrame
    comparisons: dict[tuple[str, str], Comparison]


def pairwise(run_ids: list[str], root: str | os.PathLike | None = None) -> Pairwise:
    """McNemar's test for every pair of the runs, Holm-corrected for the number of pairs."""
    if len(run_ids) < 2:
        raise CompareError("pick at least two runs to compare")
    runs = _runs(list(run_ids), root)
    hits = _paired_hits(runs, root)
    figures = [_figures(run, h) for run, h in zip(runs, hits)]
    ids = [run.run_id for run in runs]
    pairs = list(itertools.combinations(range(len(runs)), 2))
    comparisons = {(ids[i], ids[j]): Comparison(figures[i], figures[j], paired(hits[i], hits[j])) for i, j in pairs}
    raw = np.full((len(ids), len(ids)), np.nan)
    adjusted = raw.copy()
    corrected = holm([comparisons[(ids[i], ids[j])].p_value for i, j in pairs])
    for (i, j), p_adj in zip(pairs, corrected):
        raw[i, j] = raw[j, i] = comparisons[(ids[i], ids[j])].p_value
        adjusted[i, j] = adjusted[j, i] = p_adj
    return Pairwise(figures, pd.DataFrame(raw, index=ids, columns=ids),
                    pd.DataFrame(adjusted, index=ids, columns=ids), comparisons)


def compare_groups(a: list[Run], b: list[Run]) -> GroupTest:
    """Welch's t-test of two seed groups' test accuracies (finished runs with a test figure)."""
    scores = [[r.test_acc for r in group if r.finished_with("test figure")] for group in (a, b)]
    return welch(*scores)


def group_sentence(name_a: str, name_b: str, test: GroupTest) -> str:
    if not test.tested:
        return f"{name_a} against {name_b}: {test.reason}."
    verdict = ("a real difference at the 5% level" if test.p_value < ALPHA
               else "no evidence of a difference at the 5% level")
    return (f"{name_a} averages {test.a_mean:.2f}% over {test.a_seeds} seeds, {name_b} {test.b_mean:.2f}% over "
            f"{test.b_seeds}: Welch's t-test {p_text(test.p_value)}, {verdict}.")
