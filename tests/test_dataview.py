"""core.data.view on small synthetic data, checked against the same computation done another way."""
from __future__ import annotations

import numpy as np
import pytest

from core.data import view as dataview
from core.data.mnist import split_indices


def test_split_positions_match_the_training_split():
    train, val = dataview.split_positions("train"), dataview.split_positions("validation")
    assert (len(train), len(val)) == (55_000, 5_000)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    train_idx, val_idx = split_indices(60_000, 5_000, 0)
    assert set(train) == set(train_idx.tolist()) and set(val) == set(val_idx.tolist())
    assert dataview.split_positions("test") is None
    with pytest.raises(ValueError, match="split must be one of"):
        dataview.split_positions("holdout")


def test_class_counts_of_the_splits():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 100)
    test_labels = labels[:20]
    positions = {s: dataview.split_positions(s, 100, val_size=10, seed=3) for s in ("train", "validation")}
    by_split = {"train": labels[positions["train"]], "validation": labels[positions["validation"]],
                "test": test_labels}
    counts = dataview.class_counts(by_split)
    assert len(counts) == 30
    table = dataview.counts_table(counts)
    assert table.loc["total"].tolist() == [90, 10, 20]
    assert table["train"].iloc[:10].tolist() == np.bincount(by_split["train"], minlength=10).tolist()


def test_mean_images_against_a_loop():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)  # digits 6..9 absent
    means = dataview.mean_images(images, labels)
    assert means.shape == (10, 28, 28)
    for digit in range(6):
        expected = np.mean([images[i] / 255.0 for i in range(60) if labels[i] == digit], axis=0)
        assert np.allclose(means[digit], expected, atol=1e-6)
    assert not means[6:].any()


def test_select_samples():
    labels = np.array([3, 1, 3, 0, 3, 3])
    assert dataview.select_samples(labels, None, 0, 4).tolist() == [0, 1, 2, 3]
    assert dataview.select_samples(labels, 3, 1, 2).tolist() == [2, 4]
    assert dataview.select_samples(labels, 7).tolist() == []
