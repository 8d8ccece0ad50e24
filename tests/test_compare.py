"""Is the difference real? core.analysis.compare on runs whose saved predictions are built here,
so every count has an oracle: the same count taken from the arrays the test wrote, and the
p-values from the binomial distribution."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from core.analysis.compare import CompareError, compare, compare_groups, pairwise
from core.config import TrainConfig
from core.store.runs import load_run
from core.store.writer import RunWriter
from tests.helpers import make_run, run_cli

N = 2000


def saved_run(root, name: str, labels: np.ndarray, predicted: np.ndarray) -> str:
    """A finished run whose saved predictions say `predicted` for images labelled `labels`."""
    probs = np.full((len(labels), 10), 0.02, dtype=np.float32)
    probs[np.arange(len(labels)), predicted] = 0.82
    writer = RunWriter.create(TrainConfig(arch="mlp", name=name).to_dict(), root=root)
    try:
        import torch
        writer.save_predictions(torch.from_numpy(labels), torch.from_numpy(probs))
        writer.write_metrics({"test_accuracy": float((predicted == labels).mean() * 100)})
        writer.finish()
    finally:
        writer.release()
    return writer.run_id


def with_errors(labels: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    predicted = labels.copy()
    predicted[wrong] = (labels[wrong] + 1) % 10
    return predicted


@pytest.fixture
def three(tmp_path):
    """Three runs on the same 2,000 images: A wrong on 0..29, B wrong on 20..79, C wrong on 0..31."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N)
    wrong = {"A": np.arange(0, 30), "B": np.arange(20, 80), "C": np.arange(0, 32)}
    ids = {k: saved_run(tmp_path, f"run {k}", labels, with_errors(labels, w)) for k, w in wrong.items()}
    return tmp_path, labels, wrong, ids


def counts(wrong_a, wrong_b):
    a_right = np.ones(N, bool)
    a_right[wrong_a] = False
    b_right = np.ones(N, bool)
    b_right[wrong_b] = False
    return int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())


def test_two_runs_the_table_the_test_and_the_intervals(three):
    root, _, wrong, ids = three
    result = compare(ids["A"], ids["B"], root)
    a_only, b_only = counts(wrong["A"], wrong["B"])
    assert (result.a_only, result.b_only) == (a_only, b_only) == (50, 20)
    assert result.table.both + result.table.neither == N - 70
    assert result.p_value == pytest.approx(min(1, 2 * binom.cdf(20, 70, 0.5)))
    assert result.a.accuracy == pytest.approx(100 * (N - 30) / N)
    low, high = result.a.ci95
    assert low < result.a.accuracy < high
    assert result.table.significant and "run A is 1.50 points more accurate than run B" in result.sentence()


def test_no_evidence_is_said_plainly(three):
    root, _, wrong, ids = three
    result = compare(ids["A"], ids["C"], root)
    assert (result.a_only, result.b_only) == counts(wrong["A"], wrong["C"]) == (2, 0)
    assert result.sentence() == ("run A is right on 2 images run C gets wrong, run C on 0 that run A gets wrong: "
                                 "p = 0.50, no evidence of a difference at the 5% level.")


def test_the_json_of_the_cli_holds_what_the_issue_asks(three):
    root, _, _, ids = three
    code, out, err = run_cli("--checkpoints", str(root), "compare", ids["B"], ids["A"], "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["a_only"], data["b_only"]) == (20, 50)
    assert data["p_value"] == pytest.approx(min(1, 2 * binom.cdf(20, 70, 0.5)))
    for side, wrong in (("a", 60), ("b", 30)):
        assert data[side]["accuracy"] == pytest.approx(100 * (N - wrong) / N)
        low, high = data[side]["ci95"]
        assert low < data[side]["accuracy"] < high


def test_pairwise_p_values_are_holm_corrected_over_the_pairs(three):
    root, _, wrong, ids = three
    result = pairwise([ids["A"], ids["B"], ids["C"]], root)
    raw = {}
    for x, y in (("A", "B"), ("A", "C"), ("B", "C")):
        a_only, b_only = counts(wrong[x], wrong[y])
        raw[(x, y)] = min(1.0, 2 * binom.cdf(min(a_only, b_only), a_only + b_only, 0.5))
        assert result.p_values.loc[ids[x], ids[y]] == pytest.approx(raw[(x, y)])
        assert result.p_values.loc[ids[y], ids[x]] == pytest.approx(raw[(x, y)])
    # Holm by hand: sort ascending, multiply by (m - rank), keep it monotone, cap at 1
    order = sorted(raw, key=raw.get)
    running, expected = 0.0, {}
    for rank, pair in enumerate(order):
        running = max(running, min(1.0, raw[pair] * (3 - rank)))
        expected[pair] = running
    for (x, y), value in expected.items():
        assert result.adjusted.loc[ids[x], ids[y]] == pytest.approx(value)
    assert np.isnan(result.adjusted.loc[ids["A"], ids["A"]])


def test_bad_input_is_one_line(three, tmp_path):
    root, labels, _, ids = three
    other = saved_run(root, "other images", labels[::-1].copy(), labels[::-1].copy())
    with pytest.raises(CompareError, match="tested on different images"):
        compare(ids["A"], other, root)
    with pytest.raises(CompareError, match="given twice"):
        compare(ids["A"], ids["A"], root)
    bare = RunWriter.create(TrainConfig(arch="mlp", name="no predictions").to_dict(), root=root)
    bare.finish()
    bare.release()
    with pytest.raises(CompareError, match="no saved test predictions"):
        compare(ids["A"], bare.run_id, root)
    code, out, err = run_cli("--checkpoints", str(root), "compare", ids["A"], other)
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert load_run(ids["A"], root).status == "finished"


def test_seed_groups_are_compared_by_welch_or_said_to_be_too_few():
    group = lambda accs: [make_run(f"r{i}", metrics={"test_accuracy": a}) for i, a in enumerate(accs)]  # noqa: E731
    tested = compare_groups(group([99.1, 99.3, 99.2]), group([98.6, 98.8, 98.7]))
    assert tested.tested and tested.p_value < 0.05
    few = compare_groups(group([99.1]), group([98.6, 98.8]))
    assert not few.tested and "too few seeds" in few.reason
