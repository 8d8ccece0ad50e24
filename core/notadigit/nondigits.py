"""Images that are not digits, made here, the same on every machine and with no internet: what a
person sketching might draw instead of a digit. Each is a float32 (28, 28) image on [0, 1], white
on black like MNIST.

- letters: the Latin letters that no digit resembles, in the DejaVu fonts matplotlib ships (the
  same files everywhere), drawn large and then preprocessed exactly as a Sketch drawing is
  (core.data.images.to_mnist: cropped to the ink, scaled into 20 px, centred by mass);
- shapes and strokes drawn with the Sketch pad's pen (18 px on its 280 px canvas): triangles,
  squares, stars, hearts, crosses, arrows, smileys, ticks, zigzags, hash signs;
- scribbles: seeded random polylines with the pad's pen;
- noise: uniform, salt-and-pepper and blotches, straight into 28x28 (no preprocessing);
- blank-ish: a faint smudge or a few grey pixels, and a full white square;
- inverted: MNIST-like digits black on white (1 - x), which the models never saw.

`pad_redrawn` turns MNIST digits into drawings as the pad makes them: solid, round-capped strokes of
the pen's width along each digit's medial axis. The not-a-digit check is measured against both:
it must flag the set above and let the digits through.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from core.data.images import to_mnist

CANVAS = 280   # px, the Sketch pad's side
PEN = 18       # px, its pen (dashboard/views/sketch.py STROKE)
# Letters a digit can look like are left out (O/o/D/Q like 0, I/l/i/j like 1, Z/z like 2, S/s
# like 5, G/b like 6, T like 7, B like 8, g/q like 9): the set is of things that are not digits.
LETTERS = "ACEFHJKLMNPRUVWXYacdefhkmnprtuvwxy"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf")
SHAPES = ("triangle", "square", "star", "heart", "cross", "arrow", "smiley", "tick", "zigzag", "hash")


@dataclass(frozen=True)
class NonDigits:
    images: np.ndarray   # float32 (N, 28, 28) on [0, 1]
    kinds: np.ndarray    # (N,) str: letter, shape, scribble, noise, blank, inverted
    names: np.ndarray    # (N,) str: what each one is ("letter K (DejaVuSerif)", "shape star", ...)

    def __len__(self) -> int:
        return len(self.images)

    def part(self, held_out: bool) -> "NonDigits":
        """One of two fixed halves (every other image of each kind): the default detector is
        chosen on one (held_out=False) and reported on the other."""
        keep = np.zeros(len(self), dtype=bool)
        for kind in np.unique(self.kinds):
            where = np.flatnonzero(self.kinds == kind)
            keep[where[int(held_out)::2]] = True
        return NonDigits(self.images[keep], self.kinds[keep], self.names[keep])


def font_path(name: str) -> str:
    import matplotlib  # heavy: only to find the fonts it ships
    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", name)


def blank_canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (CANVAS, CANVAS), 0)
    return image, ImageDraw.Draw(image)


def pen_stroke(draw: ImageDraw.ImageDraw, points, width: int = PEN) -> None:
    """A polyline as the pad draws it: round caps and joins."""
    points = [(float(x), float(y)) for x, y in points]
    draw.line(points, fill=255, width=width, joint="curve")
    r = width / 2
    for x, y in (points[0], points[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _letter(char: str, font: str) -> np.ndarray:
    image, draw = blank_canvas()
    face = ImageFont.truetype(font_path(font), 200)
    draw.text((CANVAS / 2, CANVAS / 2), char, font=face, fill=255, anchor="mm")
    return to_mnist(np.asarray(image))


def _polygon(centre, radius, corners, turn=0.0, inner=None):
    points = []
    for k in range(corners * (2 if inner else 1)):
        r = inner if inner and k % 2 else radius
        angle = turn + math.pi * 2 * k / (corners * (2 if inner else 1))
        points.append((centre[0] + r * math.sin(angle), centre[1] - r * math.cos(angle)))
    return points + points[:1]


def _shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    image, draw = blank_canvas()
    c = (CANVAS / 2 + rng.uniform(-15, 15), CANVAS / 2 + rng.uniform(-15, 15))
    size = rng.uniform(70, 100)
    turn = rng.uniform(-0.3, 0.3)
    if kind == "triangle":
        pen_stroke(draw, _polygon(c, size, 3, turn))
    elif kind == "square":
        pen_stroke(draw, _polygon(c, size, 4, math.pi / 4 + turn))
    elif kind == "star":
        pen_stroke(draw, _polygon(c, size, 5, turn, inner=size * 0.42))
    elif kind == "heart":
        t = np.linspace(0, 2 * math.pi, 60)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pen_stroke(draw, list(zip(c[0] + x * size / 17, c[1] + y * size / 17)))
    elif kind == "cross":
        pen_stroke(draw, [(c[0] - size, c[1] - size), (c[0] + size, c[1] + size)])
        pen_stroke(draw, [(c[0] + size, c[1] - size), (c[0] - size, c[1] + size)])
    elif kind == "arrow":
        pen_stroke(draw, [(c[0] - size, c[1]), (c[0] + size, c[1])])
        pen_stroke(draw, [(c[0] + size * 0.5, c[1] - size * 0.5), (c[0] + size, c[1]), (c[0] + size * 0.5, c[1] + size * 0.5)])
    elif kind == "smiley":
        pen_stroke(draw, _polygon(c, size, 40, turn))
        for dx in (-0.35, 0.35):
            e = (c[0] + dx * size, c[1] - 0.3 * size)
            draw.ellipse((e[0] - 10, e[1] - 10, e[0] + 10, e[1] + 10), fill=255)
        t = np.linspace(0.2 * math.pi, 0.8 * math.pi, 20)
        pen_stroke(draw, list(zip(c[0] + 0.55 * size * np.cos(t), c[1] + 0.55 * size * np.sin(t))))
    elif kind == "tick":
        pen_stroke(draw, [(c[0] - size, c[1]), (c[0] - size * 0.3, c[1] + size * 0.7), (c[0] + size, c[1] - size * 0.8)])
    elif kind == "zigzag":
        xs = np.linspace(c[0] - size, c[0] + size, 6)
        pen_stroke(draw, [(x, c[1] + (size * 0.5 if k % 2 else -size * 0.5)) for k, x in enumerate(xs)])
    elif kind == "hash":
        for d in (-0.35, 0.35):
            pen_stroke(draw, [(c[0] + d * size, c[1] - size), (c[0] + d * size, c[1] + size)])
            pen_stroke(draw, [(c[0] - size, c[1] + d * size), (c[0] + size, c[1] + d * size)])
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return to_mnist(np.asarray(image))


def _scribble(rng: np.random.Generator) -> np.ndarray:
    image, draw = blank_canvas()
    points = rng.uniform(30, CANVAS - 30, size=(int(rng.integers(6, 14)), 2))
    pen_stroke(draw, points)
    return to_mnist(np.asarray(image))


def _noise(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(0, 1, (28, 28)).astype(np.float32)
    if kind == "salt":
        return (rng.uniform(0, 1, (28, 28)) < rng.uniform(0.05, 0.3)).astype(np.float32)
    blobs = ndimage.gaussian_filter(rng.normal(size=(28, 28)), sigma=rng.uniform(1.5, 3))
    return np.clip((blobs - blobs.mean()) / (blobs.std() + 1e-9) * 0.5, 0, 1).astype(np.float32)


def _blank(k: int, rng: np.random.Generator) -> np.ndarray:
    if k == 0:
        return np.ones((28, 28), dtype=np.float32)  # a full white square
    out = np.zeros((28, 28), dtype=np.float32)
    if k % 2:  # a faint smudge
        y, x = rng.integers(6, 22, size=2)
        out[y - 2:y + 2, x - 2:x + 2] = rng.uniform(0.05, 0.25)
    else:  # a few grey pixels
        out[rng.integers(0, 28, 6), rng.integers(0, 28, 6)] = rng.uniform(0.1, 0.5, 6)
    return out


@lru_cache(maxsize=2)
def make_set(mnist_like: bytes | None = None, seed: int = 0) -> NonDigits:
    """The whole set, deterministic for `seed`. `mnist_like` (uint8 (N, 28, 28) bytes of digits,
    e.g. the first MNIST training images) gives the inverted digits; without it there are none."""
    rng = np.random.default_rng(seed)
    images, kinds, names = [], [], []

    def add(image, kind, name):
        images.append(np.asarray(image, dtype=np.float32))
        kinds.append(kind)
        names.append(name)
    for font in FONTS:
        for char in LETTERS:
            add(_letter(char, font), "letter", f"letter {char} ({font.removesuffix('.ttf')})")
    for shape in SHAPES:
        for k in range(12):
            add(_shape(shape, rng), "shape", f"shape {shape} #{k}")
    for k in range(120):
        add(_scribble(rng), "scribble", f"scribble #{k}")
    for kind in ("uniform", "salt", "blotches"):
        for k in range(20):
            add(_noise(kind, rng), "noise", f"noise {kind} #{k}")
    for k in range(20):
        add(_blank(k, rng), "blank", "a full white square" if k == 0 else f"almost blank #{k}")
    if mnist_like:
        digits = np.frombuffer(mnist_like, dtype=np.uint8).reshape(-1, 28, 28)
        for k, digit in enumerate(digits):
            add(1.0 - digit / 255.0, "inverted", f"inverted digit #{k}")
    return NonDigits(np.stack(images), np.array(kinds), np.array(names))


def pad_redrawn(digits: np.ndarray) -> np.ndarray:
    """MNIST digits (N, 28, 28) on [0, 1] redrawn as the Sketch pad draws: each digit's ink
    (where it is over half on, scaled to the 280 px canvas) thinned to its medial axis (the ridge
    of its distance transform), drawn again with the pad's round 18 px pen, then preprocessed as a
    drawing. Solid, even strokes with hard edges, where MNIST's are soft and uneven.

    Some 2 ms a digit, and a detector fit redraws 2,000: the last few sets are remembered, as runs
    of one seed and split (the seeds of a sweep, a run and its ensemble) fit on the same digits."""
    digits = np.ascontiguousarray(digits, dtype=np.float32)
    return _redrawn(digits.tobytes(), digits.shape).copy()


def _around(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The box of a mask's set pixels (some must be set), `margin` pixels wider on every side
    that the array has."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


@lru_cache(maxsize=4)
def _redrawn(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    # Each distance transform is taken in a box around the ink (the ridge) only, with a margin, not
    # on the whole canvas: the same numbers at half the cost. An ink pixel's nearest background
    # pixel is in the box or on its one-pixel margin of background (or the canvas ends there), and
    # a pixel within PEN / 2 of the ridge is inside a margin of more than PEN / 2.
    out = []
    for digit in np.frombuffer(data, dtype=np.float32).reshape(shape):
        big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((CANVAS, CANVAS), Image.BILINEAR))
        ink = big > 127
        ridge = np.zeros_like(ink)
        if ink.any():
            box = _around(ink, 1)
            distance = ndimage.distance_transform_edt(ink[box])
            ridge[box] = ink[box] & (distance >= ndimage.maximum_filter(distance, size=3)) & (distance > 1)
        if not ridge.any():
            out.append(digit)
            continue
        # the pen laid along the ridge: every pixel within PEN / 2 of it (a dilation by a disk,
        # pixel for pixel, at a tenth of its cost)
        box = _around(ridge, PEN // 2 + 1)
        strokes = np.zeros_like(ink)
        strokes[box] = ndimage.distance_transform_edt(~ridge[box]) <= PEN / 2
        out.append(to_mnist((strokes * 255).astype(np.uint8)))
    found = np.stack(out).astype(np.float32) if out else np.zeros((0, 28, 28), np.float32)
    found.setflags(write=False)
    return found
