"""The data a run trains and validates on, rebuilt from its config: MNIST's training images, or a
CSV's with MNIST's test images left out, split by the run's seed into train and validation; the
test set is MNIST's, whole. Training uses it, and so does anything that needs the run's own
validation images afterwards (calibration): the same fields give the same split, bit for bit."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Protocol

import torch

from core.data.csvfile import read_digits_csv
from core.data.mnist import MNIST, Split, load_mnist, make_split, mnist_test_copies
from core.errors import BadInput


class SourceError(BadInput, ValueError):
    """A training CSV that cannot be trained on; the message says why."""


class SplitFields(Protocol):
    """The fields of a run's config (core.config.TrainConfig) that decide its data."""
    csv: str | None
    val_size: int
    seed: int
    train_limit: int | None


MIN_ROWS = 2  # a training CSV needs one image to train on and one to validate with


@dataclass(frozen=True)
class Source:
    """The labelled images a run trains and validates on, MNIST's test set, and a summary."""
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)
    mnist: MNIST
    info: dict


@functools.lru_cache(maxsize=1)  # the CLI checks the file before the run folder exists, then trains
def _read_csv(path: str, version: tuple[int, int] | None):
    """`version` (size, mtime) keys the cache, so a file changed since is read again."""
    return read_digits_csv(path)


def load_source(cfg: SplitFields, data_root=None) -> Source:
    """Read and check the run's data (MNIST's content, the CSV's format and labels, enough
    rows); raise a LabError saying what is wrong. Called before a run folder is created, so
    bad data leaves no failed run behind."""
    mnist = load_mnist(data_root)
    if not cfg.csv:
        return Source(mnist.train_images, mnist.train_labels, mnist,
                      {"source": "MNIST train", "rows": len(mnist.train_images), "test_duplicates_left_out": 0})
    version = (os.stat(cfg.csv).st_size, os.stat(cfg.csv).st_mtime_ns) if os.path.isfile(cfg.csv) else None
    table = _read_csv(cfg.csv, version)
    if not table.has_labels:
        raise SourceError(f"{cfg.csv} has no 'label' column: it can be predicted, not trained on")
    leaked = mnist_test_copies(table.images, mnist.test_images)
    images, labels = table.images[~leaked], table.labels[~leaked]
    if not len(images):
        raise SourceError(f"every image of {cfg.csv} is one of MNIST's test images: nothing to train on")
    if len(images) < MIN_ROWS:
        raise SourceError(f"{cfg.csv} has too few rows to train on: {len(images)} usable "
                          f"(MNIST test images left out), at least {MIN_ROWS} needed")
    return Source(images, labels, mnist, {"source": cfg.csv, "rows": len(table.images),
                                          "test_duplicates_left_out": int(leaked.sum())})


def load_split(cfg: SplitFields, device: torch.device, data_root=None) -> tuple[Split, dict]:
    """The run's train/validation/test tensors on `device`, and what went into them."""
    src = load_source(cfg, data_root)
    split = make_split(src.images, src.labels, src.mnist.test_images, src.mnist.test_labels,
                       val_size=cfg.val_size, seed=cfg.seed, train_limit=cfg.train_limit, device=device)
    return split, {**src.info, "train": len(split.x_train), "validation": len(split.x_val), "test": len(split.x_test)}
