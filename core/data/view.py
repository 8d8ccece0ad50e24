"""The dataset as the Data page shows it: the train/validation/test splits, class counts,
each class's mean image and a page of samples. Plain arrays in, arrays or DataFrames out;
nothing here imports streamlit."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.config import TrainConfig
from core.data.mnist import TRAIN_SIZE, split_indices

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0    # TrainConfig's default seed
CLASSES = 10


def split_positions(split: str, n_train: int = TRAIN_SIZE, val_size: int = TrainConfig.val_size,
                    seed: int = SPLIT_SEED) -> np.ndarray | None:
    """Indices into the training files for 'train' or 'validation' (ascending, so the first
    images are the first of the file); None for 'test' (the whole test file, in order)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test":
        return None
    train_idx, val_idx = split_indices(n_train, val_size, seed)
    return np.sort((train_idx if split == "train" else val_idx).numpy())


def class_counts(labels_by_split: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table: split, digit, count (every digit present for every split)."""
    rows = [{"split": split, "digit": digit, "count": int(count)}
            for split, labels in labels_by_split.items()
            for digit, count in enumerate(np.bincount(np.asarray(labels, dtype=np.int64),
                                                      minlength=CLASSES)[:CLASSES])]
    return pd.DataFrame(rows, columns=["split", "digit", "count"])


def counts_table(counts: pd.DataFrame) -> pd.DataFrame:
    """`class_counts` as digits x splits, with a 'total' row."""
    table = counts.pivot(index="digit", columns="split", values="count")
    table = table[[s for s in SPLITS if s in table.columns]
                  + [s for s in table.columns if s not in SPLITS]]
    table.index = table.index.astype(str)
    table.loc["total"] = table.sum()
    return table.astype(int)


def mean_images(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean image per class, float32 (10, 28, 28) on [0, 1] (zeros for an absent class)."""
    labels = np.asarray(labels, dtype=np.int64)
    means = np.zeros((CLASSES, *images.shape[1:]), dtype=np.float32)
    for digit in range(CLASSES):
        chosen = images[labels == digit]
        if len(chosen):
            # One class at a time: its float32 copy is at most ~27 MB (6,742 images).
            means[digit] = chosen.astype(np.float32).mean(0) / 255.0
    return means


def select_samples(labels: np.ndarray, digit: int | None = None, start: int = 0,
                   count: int = 30) -> np.ndarray:
    """Positions of `count` images from `start` on, optionally only of class `digit`."""
    positions = np.arange(len(labels)) if digit is None else np.flatnonzero(np.asarray(labels) == digit)
    start = max(0, int(start))
    return positions[start:start + max(0, int(count))]
