"""Label issues: which MNIST test images most likely carry a wrong label.

The ranking is cleanlab's (`cleanlab.rank.get_label_quality_scores`, self-confidence: the
probability the models give the given label; lower is more suspicious), computed from the
saved test probabilities of the chosen runs, averaged (an ensemble of them, no model runs).
The 15 test labels that human reviewers confirmed wrong (Northcutt et al., 2021) ship as data in
core/resources/, so a user can see how many of them a ranking finds, and accuracy can be read
with and without them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from core.analysis.predictions import same_images
from core.errors import BadInput, LabError
from core.metrics import mean_probabilities
from core.store.folder import RunError
from core.store.runs import given_twice, list_runs, load_predictions

CONFIRMED_FILE = Path(__file__).resolve().parents[1] / "resources" / "mnist_test_label_errors.json"


@lru_cache(maxsize=1)
def confirmed_errors() -> dict:
    """The shipped list: {"indices": [...15 test indices...], "source": ..., ...}."""
    return json.loads(CONFIRMED_FILE.read_text())


def confirmed_indices() -> np.ndarray:
    return np.asarray(confirmed_errors()["indices"], dtype=np.int64)


@dataclass(frozen=True)
class Ranking:
    """Every test image, most suspicious label first."""
    table: pd.DataFrame   # index, label, suggested, score, agree (run ids predicting `suggested`), confirmed
    runs: list[str]

    def top(self, n: int) -> pd.DataFrame:
        return self.table.head(n)

    def confirmed_in_top(self, n: int) -> int:
        return int(self.table.head(n)["confirmed"].sum())


def _probabilities(run_ids: list[str], root) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, mean probabilities, each run's predicted digits) of runs tested on the same images.
    A run that cannot take part is refused by name (core.store.runs.load_predictions checks its file)."""
    if not run_ids:
        raise LabError("choose at least one finished run with saved test predictions")
    repeated = sorted({r for r in run_ids if run_ids.count(r) > 1})
    if repeated:
        raise BadInput(f"run {', '.join(map(repr, repeated))} is listed more than once: each run's "
                       "probabilities are averaged once")
    if twice := given_twice(run_ids, root):
        raise BadInput(f"runs {twice[0]!r} and {twice[1]!r} are one run (a link in the store leads to its "
                       "folder): each run's probabilities are averaged once")
    first, loaded = None, []
    for run_id in run_ids:
        try:
            preds = load_predictions(run_id, root)
        except RunError as exc:
            raise LabError(f"{exc}: it cannot take part in the label-issue ranking") from None
        if first is None:
            first = preds
        elif not same_images(preds, first):
            raise LabError(f"run {run_id!r} was tested on other images than {run_ids[0]!r}: "
                           "their probabilities cannot be combined")
        loaded.append(preds)
    return first["labels"], mean_probabilities(loaded), np.stack([p["predicted"] for p in loaded])


def rank(run_ids: list[str], root: str | os.PathLike | None = None) -> Ranking:
    """Rank MNIST's test images by how likely their given label is wrong."""
    from cleanlab.rank import get_label_quality_scores  # heavy: loads only for a ranking
    labels, probs, predicted = _probabilities(list(run_ids), root)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float16-stored runs sum to 1 only roughly
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    order = np.argsort(scores, kind="stable")
    suggested = probs.argmax(1)
    confirmed = np.zeros(len(labels), dtype=bool)
    if len(labels) == 10_000:  # the confirmed list is about MNIST's test set
        confirmed[confirmed_indices()] = True
    agree = [[run_ids[k] for k in np.flatnonzero(predicted[:, i] == suggested[i])] for i in order]
    table = pd.DataFrame({"index": order, "label": labels[order], "suggested": suggested[order],
                          "score": scores[order], "agree": agree, "confirmed": confirmed[order]})
    return Ranking(table, list(run_ids))


def default_runs(root: str | os.PathLike | None = None) -> list[str]:
    """The reference runs of the default recipes (one per architecture), else every finished
    run with saved predictions: the candidates `usable_default_runs` checks."""
    finished = [r for r in list_runs(root) if r.finished_with("predictions")]
    reference = [r.run_id for r in finished if r.reference and not r.config.get("sweep")]  # not the grid's
    return reference or [r.run_id for r in finished]


def usable_default_runs(root: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """(the default runs whose saved predictions can be ranked together, a warning naming each
    run left out and why). A run picked by default is skipped, not fatal: one damaged run in a
    store must not break the ranking of the others; asked for by name, `rank` refuses it. Runs
    tested on different images cannot be averaged: those of the test set most runs share stay."""
    readable, skipped = [], []
    for run_id in default_runs(root):
        try:
            readable.append((run_id, load_predictions(run_id, root)["labels"]))
        except RunError as exc:
            skipped.append(f"left out run {run_id!r}: {exc}")
    sets: list[list[tuple[str, np.ndarray]]] = []  # runs grouped by the test labels they hold
    for run_id, labels in readable:
        same = next((s for s in sets if np.array_equal(s[0][1], labels)), None)
        if same is None:
            sets.append([(run_id, labels)])
        else:
            same.append((run_id, labels))
    kept = max(sets, key=len) if sets else []  # the first of the largest on a tie
    for group in sets:
        if group is not kept:
            skipped += [f"left out run {run_id!r}: it was tested on other images than {kept[0][0]!r}"
                        for run_id, _ in group]
    return [run_id for run_id, _ in kept], skipped


def accuracy_without_confirmed(run_id: str, root: str | os.PathLike | None = None) -> tuple[float, float]:
    """(test accuracy as measured, test accuracy on the 9,985 images whose label was not found
    wrong by human review), in %."""
    return accuracies(load_predictions(run_id, root))


def accuracies(preds: dict[str, np.ndarray]) -> tuple[float, float]:
    """`accuracy_without_confirmed` of saved predictions already read (labels, predicted)."""
    right = preds["labels"] == preds["predicted"]
    keep = np.ones(len(right), dtype=bool)
    if len(right) == 10_000:
        keep[confirmed_indices()] = False
    return float(right.mean() * 100), float(right[keep].mean() * 100)
