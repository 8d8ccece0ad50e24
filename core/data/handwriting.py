"""The personal handwriting set: digits a person drew on the Sketch page, with true labels.

One file, `<folder>/handwriting.npz` (folder: the argument, else $MNIST_LAB_HANDWRITING,
else data/handwriting), holding
  images  uint8 (N, 28, 28)  the 28x28 MNIST-form image the models received, 0..255
  labels  int64 (N,)         the digit the person meant
  ids     int64 (N,)         stable ids (never reused), for deleting one drawing
  created <U32 (N,)          UTC ISO time of saving
It is read with np.load(allow_pickle=False) and rewritten whole (a few KB per hundred
drawings) to a temporary file that is renamed into place, under an exclusive lock, so two
browser tabs saving at once lose nothing and a reader never sees a torn file.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from core.data.images import DIGIT_SIZE
from core.fsio import atomic_write_bytes, file_lock
from core.errors import LabError

HANDWRITING_ENV = "MNIST_LAB_HANDWRITING"
DEFAULT_DIR = Path("data") / "handwriting"
FILE_NAME = "handwriting.npz"


class HandwritingError(LabError, RuntimeError):
    """The set cannot be read or written, or a drawing is not usable; the message says why."""


@dataclass(frozen=True)
class HandwritingSet:
    images: np.ndarray   # uint8 (N, 28, 28)
    labels: np.ndarray   # int64 (N,)
    ids: np.ndarray      # int64 (N,)
    created: np.ndarray  # str (N,)

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def unit_images(self) -> np.ndarray:
        """float32 (N, 28, 28) on [0, 1], what Predictor.probabilities takes."""
        return self.images.astype(np.float32) / 255.0

    @classmethod
    def empty(cls) -> "HandwritingSet":
        return cls(np.zeros((0, DIGIT_SIZE, DIGIT_SIZE), np.uint8), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, "<U32"))


def handwriting_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get(HANDWRITING_ENV) or DEFAULT_DIR)


def set_path(root: str | os.PathLike | None = None) -> Path:
    return handwriting_dir(root) / FILE_NAME


def load_set(root: str | os.PathLike | None = None) -> HandwritingSet:
    """The saved drawings (an empty set if none were saved yet)."""
    path = set_path(root)
    if not path.is_file():
        return HandwritingSet.empty()
    try:
        with np.load(path, allow_pickle=False) as data:
            hw = HandwritingSet(data["images"].astype(np.uint8), data["labels"].astype(np.int64),
                                data["ids"].astype(np.int64), data["created"].astype("<U32"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise HandwritingError(f"{path} is unreadable ({type(exc).__name__}); move it away to "
                               "start a new set") from None
    n = len(hw.labels)
    if hw.images.shape != (n, DIGIT_SIZE, DIGIT_SIZE) or hw.ids.shape != (n,) or hw.created.shape != (n,):
        raise HandwritingError(f"{path} holds arrays of inconsistent shapes; move it away to "
                               "start a new set")
    return hw


def _write(hw: HandwritingSet, root: str | os.PathLike | None) -> None:
    path = set_path(root)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=hw.images, labels=hw.labels, ids=hw.ids, created=hw.created)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def _locked(root: str | os.PathLike | None):
    folder = handwriting_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".lock").touch()
    except OSError as exc:
        raise HandwritingError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    with file_lock(folder / ".lock"):
        yield


def as_uint8(image: np.ndarray) -> np.ndarray:
    """A 28x28 image as uint8 0..255: uint8 is kept, floats are read on [0, 1]."""
    array = np.asarray(image)
    if array.shape != (DIGIT_SIZE, DIGIT_SIZE):
        raise HandwritingError(f"a drawing must be a 28x28 image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.copy()
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all() \
            or array.min() < 0 or array.max() > 1:
        raise HandwritingError("a drawing must be uint8 0..255 or floats on [0, 1]")
    return np.round(array * 255).astype(np.uint8)


def add_drawing(image: np.ndarray, label: int, root: str | os.PathLike | None = None) -> int:
    """Save one 28x28 drawing (as the models saw it) with the digit meant; return its id."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label <= 9:
        raise HandwritingError(f"the label must be a digit 0..9, got {label!r}")
    pixels = as_uint8(image)
    if not pixels.any():
        raise HandwritingError("the drawing is empty: draw a digit first")
    with _locked(root):
        hw = load_set(root)
        new_id = int(hw.ids.max()) + 1 if len(hw) else 1
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        try:
            _write(HandwritingSet(np.concatenate([hw.images, pixels[None]]),
                                  np.append(hw.labels, np.int64(label)),
                                  np.append(hw.ids, np.int64(new_id)),
                                  np.append(hw.created, now).astype("<U32")), root)
        except OSError as exc:
            raise HandwritingError(f"cannot save in {handwriting_dir(root)}: {exc.strerror or exc}") from None
    return new_id


def delete_drawings(ids: Iterable[int], root: str | os.PathLike | None = None) -> int:
    """Remove the drawings with these ids; return how many were removed."""
    ids = {int(i) for i in ids}
    if not ids or not set_path(root).is_file():
        return 0
    with _locked(root):
        hw = load_set(root)
        keep = ~np.isin(hw.ids, list(ids))
        removed = int((~keep).sum())
        if removed:
            _write(HandwritingSet(hw.images[keep], hw.labels[keep], hw.ids[keep], hw.created[keep]), root)
    return removed


def label_counts(hw: HandwritingSet) -> list[int]:
    """How many drawings of each digit 0..9."""
    return np.bincount(hw.labels, minlength=10)[:10].astype(int).tolist()


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """correct, total and accuracy (%, None for an empty set) of (N, 10) probabilities."""
    labels = np.asarray(labels)
    total = int(len(labels))
    correct = int((np.asarray(probabilities).argmax(1) == labels).sum()) if total else 0
    return {"correct": correct, "total": total, "accuracy": 100.0 * correct / total if total else None}
