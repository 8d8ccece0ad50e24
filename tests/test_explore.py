"""core.explore on small synthetic data, checked against the same computation done another way."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import explore
from core.data import split_indices
from core.metrics import confusion_matrix
from core.runs import HISTORY_COLUMNS, Run


def make_run(run_id="20260101-000000-mlp", *, arch="mlp", status="finished", epochs=3, history=None,
             metrics=None, progress=None, created="2026-01-01T00:00:00", **config) -> Run:
    history = pd.DataFrame(history or [], columns=HISTORY_COLUMNS)
    return Run(run_id, Path("/nowhere") / run_id, {"arch": arch, "epochs": epochs, **config}, status,
               {"status": status, "created": created}, history, metrics or {}, progress or {})


def history_rows(seconds=(2.0, 4.0), val_acc=(90.0, 95.0)):
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "train_acc": 80.0 + i, "val_loss": 0.5 / (i + 1),
             "val_acc": acc, "lr": 0.1, "seconds": s} for i, (s, acc) in enumerate(zip(seconds, val_acc))]


def fake_predictions(n=500, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, n)
    predicted = probs.argmax(1)
    predicted[: n // 2] = labels[: n // 2]  # half right, whatever the probabilities say
    return {"labels": labels, "predicted": predicted, "probabilities": probs.astype(np.float32)}


# --- dataset -----------------------------------------------------------------------------------

def test_split_positions_match_the_training_split():
    train, val = explore.split_positions("train"), explore.split_positions("validation")
    assert (len(train), len(val)) == (55_000, 5_000)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    train_idx, val_idx = split_indices(60_000, 5_000, 0)
    assert set(train) == set(train_idx.tolist()) and set(val) == set(val_idx.tolist())
    assert explore.split_positions("test") is None
    with pytest.raises(ValueError, match="split must be one of"):
        explore.split_positions("holdout")


def test_split_arrays_and_class_counts():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 100)
    test_images, test_labels = images[:20], labels[:20]
    split = {s: explore.split_arrays(images, labels, test_images, test_labels, s, val_size=10, seed=3)
             for s in explore.SPLITS}
    assert [len(split[s][1]) for s in explore.SPLITS] == [90, 10, 20]
    x, y, idx = split["validation"]
    assert np.array_equal(x, images[idx]) and np.array_equal(y, labels[idx])
    counts = explore.class_counts({s: split[s][1] for s in explore.SPLITS})
    assert len(counts) == 30
    table = explore.counts_table(counts)
    assert table.loc["total"].tolist() == [90, 10, 20]
    assert table["train"].iloc[:10].tolist() == np.bincount(split["train"][1], minlength=10).tolist()


def test_mean_images_against_a_loop():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)  # digits 6..9 absent
    means = explore.mean_images(images, labels)
    assert means.shape == (10, 28, 28)
    for digit in range(6):
        expected = np.mean([images[i] / 255.0 for i in range(60) if labels[i] == digit], axis=0)
        assert np.allclose(means[digit], expected, atol=1e-6)
    assert not means[6:].any()


def test_select_samples():
    labels = np.array([3, 1, 3, 0, 3, 3])
    assert explore.select_samples(labels, None, 0, 4).tolist() == [0, 1, 2, 3]
    assert explore.select_samples(labels, 3, 1, 2).tolist() == [2, 4]
    assert explore.select_samples(labels, 7).tolist() == []


# --- runs --------------------------------------------------------------------------------------

def test_seconds_per_epoch_and_eta():
    run = make_run(history=history_rows(seconds=(2.0, 4.0)))
    assert explore.seconds_per_epoch(run) == pytest.approx(3.0)
    assert explore.seconds_per_epoch(make_run(metrics={"seconds": 12.0, "epochs": 4})) == pytest.approx(3.0)
    assert explore.seconds_per_epoch(make_run()) is None
    progress = {"epoch": 3, "epochs": 5, "step": 25, "steps": 100, "epoch_seconds": 1.0}
    # a quarter of epoch 3 done at 3 s/epoch: 0.75 * 3 + 2 epochs * 3
    assert explore.eta_seconds(progress, run.history, 5) == pytest.approx(8.25)
    # no finished epoch yet: the current pace, 1 s for a quarter -> 4 s per epoch
    assert explore.eta_seconds(progress, make_run().history, 5) == pytest.approx(0.75 * 4 + 2 * 4)
    assert explore.eta_seconds({}, run.history) is None
    assert explore.epoch_fraction({"step": 5, "steps": 0}) == 0.0


def test_is_resumable():
    assert explore.is_resumable(make_run(status="interrupted", history=history_rows()))
    assert not explore.is_resumable(make_run(status="cancelled"))  # no saved epoch
    assert not explore.is_resumable(make_run(status="finished", history=history_rows()))


def test_run_table_keeps_numbers_sortable():
    runs = [make_run("b", history=history_rows(), metrics={"test_accuracy": 97.5, "parameters": 1234}),
            make_run("a", status="queued")]
    table = explore.run_table(runs)
    assert list(table.columns) == explore.RUN_TABLE_COLUMNS
    assert table["test_acc"].dtype == np.float64 and table["parameters"].dtype == "Int64"
    assert table.sort_values("val_acc")["run_id"].tolist() == ["b", "a"]
    assert table.loc[0, "val_acc"] == 95.0 and table.loc[0, "epochs"] == 2
    assert pd.isna(table.loc[1, "test_acc"])


def test_best_run_per_arch(monkeypatch):
    monkeypatch.setattr(Run, "has_weights", property(lambda self: True))
    # chosen on validation accuracy: run 1 has the better test score but the worse validation
    runs = [make_run("1", arch="lenet", history=history_rows(val_acc=(90.0, 98.0)), metrics={"test_accuracy": 99.0}),
            make_run("2", arch="lenet", history=history_rows(val_acc=(90.0, 98.5)), metrics={"test_accuracy": 98.9}),
            make_run("3", arch="mlp", history=history_rows(), metrics={"test_accuracy": 97.0}),
            make_run("4", arch="mlp", status="failed", history=history_rows(val_acc=(99, 99.9)))]
    assert [r.run_id for r in explore.best_run_per_arch(runs)] == ["3", "2"]  # registry order


def test_active_and_newest():
    runs = [make_run("q", status="queued", created="2026-01-03"),
            make_run("r", status="running", created="2026-01-04"),
            make_run("f", created="2026-01-05"), make_run("zzz-broken", created="")]
    assert [r.run_id for r in explore.active(runs)] == ["r", "q"]
    assert explore.newest(runs).run_id == "f"
    assert explore.newest([]) is None


def test_smooth_matches_pandas_ewm():
    values = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    for weight in (0.3, 0.6, 0.9):
        expected = pd.Series(values).ewm(alpha=1 - weight, adjust=True).mean().to_numpy()
        assert np.allclose(explore.smooth(values, weight), expected)
    assert np.array_equal(explore.smooth(values, 0.0), values)
    with_gap = explore.smooth([1.0, np.nan, 1.0], 0.5)
    assert np.isnan(with_gap[1]) and with_gap[2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        explore.smooth(values, 1.0)


def test_curves_long_table():
    runs = [make_run("a", history=history_rows(seconds=(2.0, 4.0))), make_run("b")]
    frame = explore.curves(runs, x="time")
    assert set(frame["panel"]) == set(explore.PANELS) and set(frame["run_id"]) == {"a"}
    val = frame[frame["panel"] == "validation accuracy (%)"]
    assert val["x"].tolist() == [2.0, 6.0] and val["value"].tolist() == [90.0, 95.0]
    assert explore.curves([], x="epoch").empty
    with pytest.raises(ValueError):
        explore.curves(runs, x="step")


def test_live_curves_adds_the_epoch_in_progress():
    history = pd.DataFrame(history_rows(), columns=HISTORY_COLUMNS)
    progress = {"epoch": 3, "epochs": 5, "step": 50, "steps": 100, "train_loss": 0.2, "train_acc": 93.0}
    frame = explore.live_curves(history, progress)
    train_loss = frame[(frame["split"] == "train") & (frame["metric"] == "loss")]
    assert train_loss["epoch"].tolist() == [1, 2, 2.5] and train_loss["value"].iloc[-1] == 0.2
    assert len(explore.live_curves(history, None)) == 8  # 2 epochs x 2 splits x 2 metrics


# --- predictions ---------------------------------------------------------------------------------

def test_confusion_tables():
    preds = fake_predictions()
    cm = confusion_matrix(preds["labels"], preds["predicted"])
    table = explore.confusion_table(cm)
    assert table["count"].sum() == 500 and len(table) == 100
    row = table[table["true"] == 3]
    assert row["share"].sum() == pytest.approx(1.0)
    scores = explore.per_class_table(cm)
    assert scores["support"].tolist() == np.bincount(preds["labels"], minlength=10).tolist()
    true, predicted = explore.top_confusion(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    assert true != predicted and cm[true, predicted] == off.max()
    assert explore.top_confusion(np.eye(10, dtype=int)) == (0, 0)


def test_mistakes_filter_and_order():
    preds = fake_predictions()
    wrong = preds["labels"] != preds["predicted"]
    frame = explore.mistakes(preds)
    assert len(frame) == wrong.sum() and set(frame["index"]) == set(np.flatnonzero(wrong))
    assert frame["confidence"].is_monotonic_decreasing
    assert explore.mistakes(preds, order="unsure")["confidence"].is_monotonic_increasing
    assert explore.mistakes(preds, order="index")["index"].is_monotonic_increasing
    only = explore.mistakes(preds, true=2, predicted=5)
    assert len(only) == (wrong & (preds["labels"] == 2) & (preds["predicted"] == 5)).sum()
    assert (only["label"] == 2).all() and (only["predicted"] == 5).all()
    row = frame.iloc[0]
    assert row["confidence"] == pytest.approx(preds["probabilities"][int(row["index"]), int(row["predicted"])])
    cell = explore.cell_examples(preds, 4, 4)
    assert len(cell) == ((preds["labels"] == 4) & (preds["predicted"] == 4)).sum()
    with pytest.raises(ValueError):
        explore.mistakes(preds, order="random")


def test_disagreements_both_directions():
    a, b = fake_predictions(seed=1), fake_predictions(seed=1)
    b["predicted"] = np.where(np.arange(500) % 3 == 0, b["labels"], (b["labels"] + 1) % 10)
    a_only, b_only = explore.disagreements(a, b)
    a_right, b_right = a["predicted"] == a["labels"], b["predicted"] == b["labels"]
    assert set(a_only) == {i for i in range(500) if not a_right[i] and b_right[i]}
    assert set(b_only) == {i for i in range(500) if a_right[i] and not b_right[i]}
    with pytest.raises(ValueError, match="same test images"):
        explore.disagreements(a, fake_predictions(n=400))


def test_page_slice_and_check_predictions():
    assert explore.page_slice(95, 1, 40) == (slice(0, 40), 3)
    assert explore.page_slice(95, 9, 40) == (slice(80, 95), 3)
    assert explore.page_slice(0, 1, 40) == (slice(0, 0), 1)
    assert explore.check_predictions(fake_predictions()) is None
    bad = fake_predictions()
    bad["probabilities"] = bad["probabilities"][:, :9]
    assert "inconsistent" in explore.check_predictions(bad)


# --- sweeps ------------------------------------------------------------------------------------

def test_parse_values():
    assert explore.parse_values("0.01, 0.1 0.01;1e-3") == [0.01, 0.1, 0.001]
    assert explore.parse_values("32,64", int, "batch sizes") == [32, 64]
    for text, message in (("", "at least one"), ("0.1, fast", "'fast'"), ("64, 12.5", "whole number"),
                          ("nan", "finite")):
        with pytest.raises(ValueError, match=message):
            explore.parse_values(text, int if "12.5" in text else float)


def test_sweep_table_and_cells():
    runs = [make_run("s1", sweep="sweep-1", lr=0.1, batch_size=64, history=history_rows()),
            make_run("s2", sweep="sweep-1", lr=0.01, batch_size=64, status="queued"),
            make_run("s3", sweep="sweep-0", lr=0.1, batch_size=32), make_run("x")]
    assert explore.sweep_ids(runs) == ["sweep-1", "sweep-0"]
    table = explore.sweep_table(runs, "sweep-1")
    assert table["run_id"].tolist() == ["s2", "s1"]  # sorted by learning rate
    cells = explore.sweep_cells(table)
    assert cells["label"].tolist() == ["queued", "95.00"] and cells["lr_text"].tolist() == ["0.01", "0.1"]
