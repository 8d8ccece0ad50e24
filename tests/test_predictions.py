"""core.analysis.predictions on synthetic predictions, checked against the same computation done another way."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis import predictions
from core.errors import LabError
from core.metrics import check_predictions, confusion_matrix


def fake_predictions(n=500, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, n)
    predicted = probs.argmax(1)
    predicted[: n // 2] = labels[: n // 2]  # half right: their largest probability moved to the label
    rows = np.arange(n // 2)
    top = probs[rows].argmax(1)
    probs[rows, top], probs[rows, labels[rows]] = probs[rows, labels[rows]], probs[rows, top]
    return {"labels": labels, "predicted": predicted, "probabilities": probs.astype(np.float32)}


def test_confusion_tables():
    preds = fake_predictions()
    cm = predictions.prediction_confusion(preds)
    from sklearn.metrics import confusion_matrix as sklearn_confusion  # the oracle: scikit-learn's count
    assert np.array_equal(cm, sklearn_confusion(preds["labels"], preds["predicted"], labels=range(10)))
    table = predictions.confusion_table(cm)
    assert table["count"].sum() == 500 and len(table) == 100
    row = table[table["true"] == 3]
    assert row["share"].sum() == pytest.approx(1.0)
    scores = predictions.per_class_table(cm)
    assert scores["support"].tolist() == np.bincount(preds["labels"], minlength=10).tolist()
    true, predicted = predictions.top_confusion(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    assert true != predicted and cm[true, predicted] == off.max()
    assert predictions.top_confusion(np.eye(10, dtype=int)) == (0, 0)


def test_mistakes_filter_and_order():
    preds = fake_predictions()
    wrong = preds["labels"] != preds["predicted"]
    frame = predictions.mistakes(preds)
    assert len(frame) == wrong.sum() and set(frame["index"]) == set(np.flatnonzero(wrong))
    assert frame["confidence"].is_monotonic_decreasing
    assert predictions.mistakes(preds, order="unsure")["confidence"].is_monotonic_increasing
    assert predictions.mistakes(preds, order="index")["index"].is_monotonic_increasing
    only = predictions.mistakes(preds, true=2, predicted=5)
    assert len(only) == (wrong & (preds["labels"] == 2) & (preds["predicted"] == 5)).sum()
    assert (only["label"] == 2).all() and (only["predicted"] == 5).all()
    row = frame.iloc[0]
    assert row["confidence"] == pytest.approx(preds["probabilities"][int(row["index"]), int(row["predicted"])])
    cell = predictions.cell_examples(preds, 4, 4)
    assert len(cell) == ((preds["labels"] == 4) & (preds["predicted"] == 4)).sum()
    with pytest.raises(ValueError):
        predictions.mistakes(preds, order="random")


def test_disagreements_both_directions():
    a, b = fake_predictions(seed=1), fake_predictions(seed=1)
    b["predicted"] = np.where(np.arange(500) % 3 == 0, b["labels"], (b["labels"] + 1) % 10)
    a_only, b_only = predictions.disagreements(a, b)
    a_right, b_right = a["predicted"] == a["labels"], b["predicted"] == b["labels"]
    assert set(a_only) == {i for i in range(500) if not a_right[i] and b_right[i]}
    assert set(b_only) == {i for i in range(500) if a_right[i] and not b_right[i]}
    with pytest.raises(LabError, match="same test images"):  # a message for the page, not a traceback
        predictions.disagreements(a, fake_predictions(n=400))


def test_page_slice_and_check_predictions():
    assert predictions.page_slice(95, 1, 40) == (slice(0, 40), 3)
    assert predictions.page_slice(95, 9, 40) == (slice(80, 95), 3)
    assert predictions.page_slice(0, 1, 40) == (slice(0, 0), 1)
    assert check_predictions(fake_predictions()) is None
    bad = fake_predictions()
    bad["probabilities"] = bad["probabilities"][:, :9]
    assert "(500, 9); expected (N,), (N,) and (N, 10)" in check_predictions(bad)


def test_a_predicted_digit_that_is_not_the_most_probable_is_refused():
    """A predictions file is believed only where each predicted digit is its row's most probable
    one (the oracle: argmax of the probabilities); a tie may be saved as either digit."""
    preds = fake_predictions()
    most = preds["probabilities"].argmax(1)
    edited = {**preds, "predicted": preds["predicted"].copy()}
    edited["predicted"][7] = (most[7] + 1) % 10
    assert check_predictions(edited) == ("the predicted digit is not the most probable one for 1 test image "
                                         f"(test image 7: predicted {(most[7] + 1) % 10}, most probable {most[7]})")
    tied = {**preds, "probabilities": preds["probabilities"].copy(), "predicted": preds["predicted"].copy()}
    tied["probabilities"][7] = 0.0
    tied["probabilities"][7, [2, 5]] = 0.5
    tied["predicted"][7] = 5  # argmax would say 2: both are the most probable
    assert check_predictions(tied) is None


def test_two_runs_matrices_and_their_difference_against_a_count_by_hand():
    """Oracle: each matrix counted pair by pair in plain Python; the difference is B - A and
    'better' is positive where B has more hits (diagonal) or fewer of a mistake (off it)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    a = {"labels": labels, "predicted": np.where(rng.random(500) < 0.8, labels, rng.integers(0, 10, 500))}
    b = {"labels": labels, "predicted": np.where(rng.random(500) < 0.9, labels, rng.integers(0, 10, 500))}
    cm_a, cm_b, diff = predictions.compared_confusions(a, b)
    for cm, p in ((cm_a, a), (cm_b, b)):
        by_hand = np.zeros((10, 10), dtype=int)
        for t, q in zip(p["labels"], p["predicted"]):
            by_hand[t, q] += 1
        assert np.array_equal(cm, by_hand)
    assert np.array_equal(diff, cm_b - cm_a)
    frame = predictions.difference_table(diff).set_index(["true", "predicted"])
    for t in range(10):
        for q in range(10):
            change = int(cm_b[t, q]) - int(cm_a[t, q])
            assert frame.loc[(t, q), "change"] == change
            assert frame.loc[(t, q), "better"] == (change if t == q else -change)
    other = {"labels": np.roll(labels, 1), "predicted": labels}
    with pytest.raises(predictions.PredictionsError, match="not evaluated on the same test images"):
        predictions.compared_confusions(a, other)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_scores_are_scikit_learns(seed):
    """Oracle: scikit-learn's precision, recall, F1 and support (0 where a digit is never
    predicted or never present, as per_class does), on predictions with absent classes too."""
    from sklearn.metrics import precision_recall_fscore_support
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, 700)                       # digits 8 and 9 never present
    predicted = np.where(rng.random(700) < 0.7, labels, rng.integers(0, 10, 700))
    predicted[predicted == 7] = 6                           # 7 never predicted
    scores = predictions.per_class_table(confusion_matrix(labels, predicted))
    p, r, f, support = precision_recall_fscore_support(labels, predicted, labels=range(10), zero_division=0)
    assert np.allclose(scores["precision"], p) and np.allclose(scores["recall"], r)
    assert np.allclose(scores["f1"], f) and scores["support"].tolist() == support.tolist()
