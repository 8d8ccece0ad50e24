"""MNIST-C's corruptions as written here, each against an oracle: where a known pixel goes, what a
mean or a column keeps, and the same images for the same seed."""
from __future__ import annotations

import numpy as np
import pytest

from core.data import corruptions as cc


def dot(row: int, col: int, n: int = 1) -> np.ndarray:
    image = np.zeros((n, 28, 28), dtype=np.float32)
    image[:, row, col] = 1.0
    return image


def blob(row: float, col: float) -> np.ndarray:
    """A small Gaussian spot (sigma 1.5 px): its centre of mass survives resampling."""
    rows, cols = np.mgrid[:28, :28]
    return np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 1.5 ** 2))[None].astype(np.float32)


def where(image: np.ndarray) -> tuple[float, float]:
    """The centre of mass of an image's ink."""
    rows, cols = np.mgrid[:28, :28]
    return float((rows * image).sum() / image.sum()), float((cols * image).sum() / image.sum())


@pytest.mark.parametrize("sign", [-1, 1])
def test_rotate_moves_a_known_pixel_by_the_known_angle(sign, monkeypatch):
    monkeypatch.setattr(cc, "_signs", lambda rng, n: np.full(n, float(sign)))
    angle = 0.4
    out = cc.rotate(blob(6, 14), np.random.default_rng(0), angle=angle)[0]
    # the output reads the input at M (p - c) + c: the ink lands where M maps back onto the dot
    m = np.array([[np.cos(sign * angle), np.sin(sign * angle)], [-np.sin(sign * angle), np.cos(sign * angle)]])
    target = np.linalg.solve(m, np.array([6, 14]) - 13.5) + 13.5
    assert np.allclose(where(out), target, atol=0.1)


def test_scale_and_shear_keep_the_centre_and_move_the_rest_as_stated(monkeypatch):
    monkeypatch.setattr(cc, "_signs", lambda rng, n: np.full(n, 1.0))
    centre = np.zeros((1, 28, 28), dtype=np.float32)
    centre[0, 13:15, 13:15] = 1.0
    for corrupt in (cc.scale, cc.shear, cc.rotate):
        assert np.allclose(where(corrupt(centre, np.random.default_rng(0))[0]), (13.5, 13.5), atol=1e-6)
    shrunk = cc.scale(blob(5, 7), np.random.default_rng(0))[0]  # shrinks towards the centre by 0.7
    assert np.allclose(where(shrunk), 13.5 + (np.array([5, 7]) - 13.5) * 0.7, atol=0.1)


def test_translate_moves_by_exactly_the_stated_pixels(monkeypatch):
    monkeypatch.setattr(cc, "_signs", lambda rng, n: np.array([1.0, -1.0] * (n // 2)))
    out = cc.translate(dot(10, 10), np.random.default_rng(0), pixels=3)[0]
    assert out[13, 7] == 1.0 and out.sum() == 1.0


def test_shot_noise_keeps_the_mean():
    images = np.full((200, 28, 28), 0.3, dtype=np.float32)
    noisy = cc.shot_noise(images, np.random.default_rng(0), photons=60)
    assert noisy.mean() == pytest.approx(0.3, abs=0.005) and noisy.std() > 0.05


def test_impulse_noise_hits_the_stated_share_with_black_and_white():
    images = np.full((50, 28, 28), 0.5, dtype=np.float32)
    noisy = cc.impulse_noise(images, np.random.default_rng(0), amount=0.17)
    changed = noisy != 0.5
    assert changed.mean() == pytest.approx(0.17, abs=0.01)
    assert set(np.unique(noisy[changed])) == {0.0, 1.0}


def test_stripe_inverts_exactly_the_stated_columns():
    images = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    out = cc.stripe(images, np.random.default_rng(0))
    for col in range(28):
        if col < 7 or col >= 21:
            np.testing.assert_allclose(out[:, :, col], 1 - images[:, :, col])
        else:
            np.testing.assert_array_equal(out[:, :, col], images[:, :, col])


def test_brightness_adds_and_clips():
    images = np.array([[[0.0, 0.3, 0.8]]], dtype=np.float32).repeat(28, 1).repeat(28 // 3 + 1, 2)[:, :, :28]
    np.testing.assert_allclose(cc.brightness(images, None, amount=0.5), np.minimum(images + 0.5, 1.0))


@pytest.mark.parametrize("name", list(cc.CORRUPTIONS))
def test_every_corruption_is_seeded_in_range_and_changes_the_image(name, mnist_root):
    from core.data.mnist import load_mnist
    digits = load_mnist(mnist_root).test_images[:6].numpy()
    first, again = cc.corrupt(name, digits, seed=1), cc.corrupt(name, digits, seed=1)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and first.shape == digits.shape
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert np.abs(first - digits / 255.0).mean() > 0.005
    with pytest.raises(ValueError, match="unknown corruption"):
        cc.corrupt("snow", digits)
