"""core.data.handwriting: saving, listing and deleting drawings, and scoring models on them."""
from __future__ import annotations

import numpy as np
import pytest

from core.data import handwriting
from core.data.handwriting import HandwritingError


def digit(value: int = 200) -> np.ndarray:
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 12:16] = value
    return image


def test_empty_set_when_nothing_was_saved(tmp_path):
    hw = handwriting.load_set(tmp_path / "none")
    assert len(hw) == 0 and hw.images.shape == (0, 28, 28)
    assert handwriting.label_counts(hw) == [0] * 10


def test_add_list_delete_roundtrip(tmp_path):
    first = handwriting.add_drawing(digit(), 1, tmp_path)
    second = handwriting.add_drawing(digit(100).astype(np.float32) / 255.0, 7, tmp_path)
    hw = handwriting.load_set(tmp_path)
    assert hw.ids.tolist() == [first, second] and hw.labels.tolist() == [1, 7]
    assert np.array_equal(hw.images[0], digit()) and np.array_equal(hw.images[1], digit(100))
    assert hw.unit_images.max() == pytest.approx(200 / 255)
    assert handwriting.label_counts(hw)[7] == 1
    assert handwriting.delete_drawings([first, 999], tmp_path) == 1
    third = handwriting.add_drawing(digit(), 3, tmp_path)
    assert third not in (first, second)  # ids are never reused
    assert handwriting.load_set(tmp_path).ids.tolist() == [second, third]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "handwriting.npz"]  # no temp files left
    with np.load(tmp_path / "handwriting.npz", allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) == {"images", "labels", "ids", "created"}


def test_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(handwriting.HANDWRITING_ENV, str(tmp_path / "mine"))
    handwriting.add_drawing(digit(), 4)
    assert (tmp_path / "mine" / "handwriting.npz").is_file()
    assert len(handwriting.load_set()) == 1


@pytest.mark.parametrize("image, label, message", [
    (np.zeros((28, 28), np.uint8), 1, "empty"),
    (np.zeros((20, 20), np.uint8), 1, "28x28"),
    (digit().astype(np.float32), 1, "floats on \\[0, 1\\]"),  # 0..255 floats by mistake
    (digit(), 10, "digit 0..9"),
    (digit(), True, "digit 0..9"),
])
def test_unusable_drawings_are_refused(tmp_path, image, label, message):
    with pytest.raises(HandwritingError, match=message):
        handwriting.add_drawing(image, label, tmp_path)
    assert not (tmp_path / "handwriting.npz").exists()


def test_corrupt_file_is_reported(tmp_path):
    (tmp_path / "handwriting.npz").write_bytes(b"not a zip file")
    with pytest.raises(HandwritingError, match="unreadable"):
        handwriting.load_set(tmp_path)


def test_scores_against_counting(tmp_path):
    for label in (0, 1, 1, 2):
        handwriting.add_drawing(digit(), label, tmp_path)
    hw = handwriting.load_set(tmp_path)
    says_1 = np.eye(10)[np.full(len(hw), 1)]
    assert handwriting.score(says_1, hw.labels) == {"correct": 2, "total": 4, "accuracy": pytest.approx(50.0)}
    assert handwriting.score(np.eye(10)[np.full(len(hw), 5)], hw.labels)["correct"] == 0
    assert handwriting.score(np.zeros((0, 10)), np.zeros(0))["accuracy"] is None

