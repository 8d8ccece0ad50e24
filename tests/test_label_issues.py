"""Label issues (issue 13, part 1): cleanlab's ranking over saved test probabilities."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

from core.analysis import label_issues
from core.config import TrainConfig
from core.errors import LabError
from core.store.runs import load_predictions, load_run
from core.store.writer import RunWriter
from tests.helpers import REPO, reference_runs


def fake_run(root, labels: np.ndarray, probs: np.ndarray, name: str) -> str:
    """A finished run folder holding only these saved test predictions."""
    writer = RunWriter.create(TrainConfig(arch="mlp", name=name).to_dict(), None, root)
    try:
        writer.save_predictions(torch.from_numpy(labels), torch.from_numpy(probs.astype(np.float32)))
        writer.finish()
    finally:
        writer.release()
    return writer.run_id


def confident(labels: np.ndarray, rng, sure: float = 0.9) -> np.ndarray:
    probs = rng.random((len(labels), 10)) * (1 - sure) / 5
    probs[np.arange(len(labels)), labels] = sure
    return probs / probs.sum(1, keepdims=True)


def test_labels_planted_as_flipped_come_first(tmp_path):
    """Oracle: models that are right about the true digits; 20 given labels flipped at random.
    The 20 flipped images must be exactly the top 20, each suggesting its true digit."""
    rng = np.random.default_rng(1)
    true = rng.integers(0, 10, 2000)
    flipped = rng.choice(2000, 20, replace=False)
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, 10, 20)) % 10
    runs = [fake_run(tmp_path, given, confident(true, rng), f"m{i}") for i in range(3)]
    ranking = label_issues.rank(runs, tmp_path)
    top = ranking.top(20)
    assert set(top["index"]) == set(flipped)
    assert (top["suggested"].to_numpy() == true[top["index"].to_numpy()]).all()
    assert (top["label"].to_numpy() == given[top["index"].to_numpy()]).all()
    assert all(set(a) == set(runs) for a in top["agree"])      # every run predicts the true digit
    assert len(ranking.table) == 2000 and ranking.table["score"].is_monotonic_increasing


def test_the_score_is_cleanlabs_self_confidence_of_the_mean_probabilities(tmp_path):
    """Oracle: the probability the averaged models give the given label, computed by hand."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 300)
    pa, pb = rng.dirichlet(np.ones(10), 300), rng.dirichlet(np.ones(10), 300)
    runs = [fake_run(tmp_path, labels, p, n) for p, n in ((pa, "a"), (pb, "b"))]
    table = label_issues.rank(runs, tmp_path).table.set_index("index").sort_index()
    mean = (pa.astype(np.float32) + pb.astype(np.float32)) / 2
    np.testing.assert_allclose(table["score"], mean[np.arange(300), labels] / mean.sum(1), rtol=1e-5)
    assert (table["suggested"].to_numpy() == mean.argmax(1)).all()


def test_runs_tested_on_other_images_or_without_predictions_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 100)
    a = fake_run(tmp_path, labels, confident(labels, rng), "a")
    b = fake_run(tmp_path, np.roll(labels, 1), confident(labels, rng), "b")
    with pytest.raises(LabError, match="tested on other images"):
        label_issues.rank([a, b], tmp_path)
    empty = RunWriter.create(TrainConfig(arch="mlp").to_dict(), None, tmp_path)
    empty.release()
    with pytest.raises(LabError, match="no saved test predictions"):
        label_issues.rank([a, empty.run_id], tmp_path)
    with pytest.raises(LabError, match="at least one"):
        label_issues.rank([], tmp_path)


def test_accuracy_without_the_confirmed_errors_counts_the_other_9985_images():
    run_id = next(i for i in label_issues.default_runs(REPO / "checkpoints") if "lenet" in i)
    preds = load_predictions(run_id, REPO / "checkpoints")
    measured, cleaned = label_issues.accuracy_without_confirmed(run_id, REPO / "checkpoints")
    confirmed = set(label_issues.confirmed_indices().tolist())
    right = sum(int(preds["labels"][i] == preds["predicted"][i]) for i in range(10_000) if i not in confirmed)
    assert measured == pytest.approx(load_run(run_id, REPO / "checkpoints").test_acc)  # as the run measured it
    assert cleaned == pytest.approx(right * 100 / 9_985)
    assert len(confirmed) == 15


def test_the_reference_runs_find_the_confirmed_errors():
    """Issue 13's target: at least 13 of the 15 human-confirmed label errors in the top 100."""
    runs = label_issues.default_runs(REPO / "checkpoints")
    assert sorted(runs) == sorted(reference_runs().values())   # one reference run per default recipe
    ranking = label_issues.rank(runs, REPO / "checkpoints")
    assert ranking.confirmed_in_top(100) >= 13


def test_cli_prints_the_ranked_indices_with_their_scores():
    from core.cli import main
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert main(["--checkpoints", str(REPO / "checkpoints"), "label-issues", "--top", "30", "--json"]) == 0
    rows = json.loads(out.getvalue())
    assert len(rows) == 30 and [r["rank"] for r in rows] == list(range(1, 31))
    ranking = label_issues.rank(label_issues.default_runs(REPO / "checkpoints"), REPO / "checkpoints")
    assert [r["index"] for r in rows] == ranking.top(30)["index"].tolist()
    assert all(a["score"] <= b["score"] for a, b in zip(rows, rows[1:]))
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["--checkpoints", str(REPO / "checkpoints"), "label-issues", "--top", "0"]) == 2
    assert "--top" in err.getvalue()
