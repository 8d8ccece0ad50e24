"""MNIST-C's corruptions (Mu & Gilmer 2019), written here with numpy and scipy at the severity the
MNIST-C dataset uses, seeded: the same images every time. Each takes float images (N, 28, 28) on
[0, 1] and a numpy Generator and returns float32 images on [0, 1].

Thirteen of MNIST-C's fifteen: shot noise, impulse noise, glass blur, motion blur, shear, scale,
rotate, brightness, translate, stripe, fog, dotted line and zigzag. Spatter and Canny edges are
left out (their reference code needs scikit-image's filters, which this project does not install).
The affine ones keep the image centre (13.5, 13.5) fixed, as MNIST-C does; a random direction
(left or right, up or down) is drawn per image.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from core.data.images import DIGIT_SIZE

CENTRE = (DIGIT_SIZE - 1) / 2


def _affine(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Each image resampled (bilinear) through its own 2x2 matrix about the centre: the output
    pixel p reads the input at M @ (p - centre) + centre (MNIST-C's inverse map), zero outside."""
    out = np.empty_like(images)
    for k, (image, m) in enumerate(zip(images, matrices)):
        offset = np.array([CENTRE, CENTRE]) - m @ np.array([CENTRE, CENTRE])
        out[k] = ndimage.affine_transform(image, m, offset=offset, order=1, mode="constant", cval=0.0)
    return out


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=n)


def shot_noise(images, rng, photons: float = 3.0):
    """Poisson noise: each pixel a photon count with mean `photons` times its intensity, rescaled."""
    return np.clip(rng.poisson(images * photons) / photons, 0, 1).astype(np.float32)


def impulse_noise(images, rng, amount: float = 0.17):
    """Salt and pepper: a share `amount` of the pixels set to 0 or 1, half each."""
    out = images.copy()
    hit = rng.random(images.shape) < amount
    out[hit] = (rng.random(int(hit.sum())) < 0.5).astype(images.dtype)
    return out.astype(np.float32)


def glass_blur(images, rng, sigma: float = 0.7, delta: int = 1, iterations: int = 2):
    """Blur, swap each pixel with a random neighbour within `delta` (`iterations` sweeps), blur again."""
    out = np.stack([ndimage.gaussian_filter(image, sigma) for image in images])
    for _ in range(iterations):
        for h in range(DIGIT_SIZE - delta - 1, delta - 1, -1):
            for w in range(DIGIT_SIZE - delta - 1, delta - 1, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, len(out)))
                rows = np.arange(len(out))
                here = out[rows, h, w].copy()
                out[rows, h, w] = out[rows, h + dy, w + dx]
                out[rows, h + dy, w + dx] = here
    return np.clip(np.stack([ndimage.gaussian_filter(image, sigma) for image in out]), 0, 1).astype(np.float32)


def motion_blur(images, rng, radius: int = 10, sigma: float = 3.0):
    """The mean along a short line (Gaussian weights of `sigma` px, up to `radius` px) at a random
    angle within 45 degrees of horizontal: the camera moved while the shutter was open."""
    out = np.empty_like(images)
    steps = np.arange(radius + 1)
    weights = np.exp(-steps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    for k, image in enumerate(images):
        angle = np.deg2rad(rng.uniform(-45, 45))
        acc = np.zeros_like(image)
        for step, weight in zip(steps, weights):
            acc += weight * ndimage.shift(image, (step * np.sin(angle), step * np.cos(angle)), order=1, cval=0.0)
        out[k] = acc
    return np.clip(out, 0, 1).astype(np.float32)


def shear(images, rng, amount: float = 0.4):
    """Shear by the angle `amount` (radians, as skimage's AffineTransform counts it), either way: in
    (row, col) the output reads the input at (cos a * row, col - sin a * row) about the centre."""
    signs = _signs(rng, len(images))
    mats = np.array([[[np.cos(a), 0.0], [-np.sin(a), 1.0]] for a in signs * amount])
    return np.clip(_affine(images, mats), 0, 1).astype(np.float32)


def rotate(images, rng, angle: float = 0.4):
    """Rotation by `angle` radians (23 degrees), either way, about the centre."""
    signs = _signs(rng, len(images))
    mats = np.array([[[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]] for a in signs * angle])
    return np.clip(_affine(images, mats), 0, 1).astype(np.float32)


def scale(images, rng, factor: float = 1 / 0.7):
    """Shrunk about the centre: the output reads the input `factor` times further out."""
    mats = np.repeat((np.eye(2) * factor)[None], len(images), axis=0)
    return np.clip(_affine(images, mats), 0, 1).astype(np.float32)


def translate(images, rng, pixels: int = 3):
    """Moved `pixels` px along each axis, in a random direction each."""
    out = np.empty_like(images)
    for k, (dy, dx) in enumerate(_signs(rng, 2 * len(images)).reshape(-1, 2) * pixels):
        out[k] = ndimage.shift(images[k], (dy, dx), order=0, cval=0.0)
    return out.astype(np.float32)


def brightness(images, rng, amount: float = 0.5):
    """Brighter by `amount` (the value channel of HSV, which for grey is the intensity itself)."""
    return np.clip(images + amount, 0, 1).astype(np.float32)


STRIPES = (slice(0, 7), slice(21, DIGIT_SIZE))  # the columns MNIST-C inverts


def stripe(images, rng):
    """Columns 0-6 and 21-27 inverted (1 - x); the middle kept."""
    out = images.astype(np.float32).copy()
    for columns in STRIPES:
        out[:, :, columns] = 1.0 - out[:, :, columns]
    return out


def plasma(rng: np.random.Generator, size: int = 256, roughness: float = 1.4) -> np.ndarray:
    """A diamond-square plasma fractal on [0, 1] (size a power of two): the texture of fog."""
    grid = np.zeros((size, size))
    step, scale_ = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        # squares: the mean of four corners, plus noise
        square = (corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(np.roll(corners, -1, 0), -1, 1)) / 4
        grid[half:size:step, half:size:step] = square + rng.uniform(-scale_, scale_, square.shape)
        # diamonds: the mean of the four neighbours, plus noise
        for rows, cols in ((slice(0, size, step), slice(half, size, step)), (slice(half, size, step), slice(0, size, step))):
            r, c = np.mgrid[rows, cols]
            mean = (grid[(r - half) % size, c] + grid[(r + half) % size, c] + grid[r, (c - half) % size]
                    + grid[r, (c + half) % size]) / 4
            grid[rows, cols] = mean + rng.uniform(-scale_, scale_, mean.shape)
        step, scale_ = half, scale_ / roughness
    grid -= grid.min()
    return grid / grid.max()


def fog(images, rng, density: float = 3.0, roughness: float = 1.4):
    """Plasma-fractal fog of strength `density` added, then rescaled to keep the brightest pixel."""
    out = np.empty_like(images)
    for k, image in enumerate(images):
        peak = image.max()
        foggy = image + density * plasma(rng, roughness=roughness)[:DIGIT_SIZE, :DIGIT_SIZE]
        out[k] = np.clip(foggy * peak / (peak + density), 0, 1)
    return out.astype(np.float32)


def _line(r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    """An anti-aliased line (28x28 mask on [0, 1]) from (r0, c0) to (r1, c1)."""
    mask = np.zeros((DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    n = int(max(abs(r1 - r0), abs(c1 - c0)) * 3) + 2
    for t in np.linspace(0, 1, n):
        r, c = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
        for rr in (int(np.floor(r)), int(np.floor(r)) + 1):
            for cc in (int(np.floor(c)), int(np.floor(c)) + 1):
                if 0 <= rr < DIGIT_SIZE and 0 <= cc < DIGIT_SIZE:
                    mask[rr, cc] = max(mask[rr, cc], (1 - abs(r - rr)) * (1 - abs(c - cc)))
    return mask


def dotted_line(images, rng):
    """A dotted line across the image (every other pair of columns left out)."""
    out = images.astype(np.float32).copy()
    dashes = (np.arange(DIGIT_SIZE) // 2) % 2 == 0
    for k in range(len(out)):
        r0, r1 = rng.integers(0, DIGIT_SIZE - 1, size=2)
        line = _line(r0, 0, r1, DIGIT_SIZE - 1)
        line[:, dashes] = 0
        out[k] = np.clip(out[k] + line, 0, 1)
    return out


def zigzag(images, rng, length: float = 2.0, width: float = 2.0):
    """A zigzag line across the image, at a small random slope."""
    out = images.astype(np.float32).copy()
    for k in range(len(out)):
        r0 = float(rng.integers(0, DIGIT_SIZE - 1))
        r1 = r0 + float(rng.integers(-5, 5))
        c0, c1 = 2.0, 25.0
        theta = np.arctan((r1 - r0) / (c1 - c0))
        span = (c1 - c0) / np.cos(theta)
        points = [(0.0, 0.0)] + [((2 * i + 1) * length, (-1) ** i * width) for i in range(int(span // (2 * length)))]
        points.append((span, 0.0))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        turned = [rot @ np.array(p) for p in points]
        for (ca, ra), (cb, rb) in zip(turned, turned[1:]):
            out[k] = np.clip(out[k] + _line(ra + r0, ca + c0, rb + r0, cb + c0), 0, 1)
    return out


CORRUPTIONS: dict[str, Callable] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness, "translate": translate,
    "stripe": stripe, "fog": fog, "dotted_line": dotted_line, "zigzag": zigzag,
}


def corrupt(name: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """`images` (N, 28, 28) on [0, 1] (or uint8) through the corruption `name`, seeded."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return CORRUPTIONS[name](x, np.random.default_rng(seed))
