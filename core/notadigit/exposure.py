"""Images a run's not-a-digit detector learns "not a digit" from: the auxiliary outliers of outlier
exposure (Hendrycks, Mazeika & Dietterich 2019), made here, the same on every machine and with no
internet. Each is a float32 (28, 28) image on [0, 1], white on black like MNIST.

They are kept apart from core.notadigit.nondigits, the set that measures the detectors, so that what
is measured is not what was learnt:
- glyphs in other typefaces: the STIX and Computer Modern fonts matplotlib ships (the measuring
  set has DejaVu), the same non-digit letters plus Greek letters and symbols, turned up to 15°;
  and the letters again in the sans-serif and hand-drawn faces of small font packages (PACKAGED:
  Roboto, Source Sans Pro, Lato, Manrope, Fredoka One, Intuitive, Amatic SC), whose plain strokes
  are nearer a digit's than the serifed STIX and Computer Modern ones;
- other generators: smooth curves through random points and compositions of two or three arcs,
  polygons and straight strokes, with pens of 14 to 22 px (the measuring set has named shapes and
  straight polylines, with the pad's 18 px pen);
- Gaussian noise (the measuring set has uniform, salt-and-pepper and blotches);
- faint specks and inverted digits, made from the run's own training digits (`from_digits`).
Another seed, too. Glyphs a font lacks (drawn as its "missing" box) are left out.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFont

from core.data import images
from core.data.images import to_mnist
from core.fsio import atomic_write_bytes
from core.notadigit import nondigits
from core.notadigit.nondigits import CANVAS, LETTERS, blank_canvas, font_path, pen_stroke
from core.store.folder import read_run_file

FONTS = ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
         "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf")
SYMBOL_FONTS = FONTS[:4]  # the Computer Modern files map only the ASCII letters
GREEK = "αβγδεζηθκλμξπρσφψωΓΔΘΛΞΠΣΦΨΩ"
SYMBOLS = "@#&%?!+=<>*÷∞≈√∑∫∂∇♠♣♥♦☺★✓✗→←↑↓"
PACKAGED = ("font_roboto", "font_source_sans_pro", "font_lato", "font_manrope", "font_fredoka_one",
            "font_intuitive", "font_amatic_sc")  # modules whose files/ hold TrueType fonts (requirements.txt)
PER_KIND = 6000  # glyphs, curves and compositions each; a quarter as much noise, and half as much
                 # again of the packaged fonts' letters
SEED = 2         # core.notadigit.nondigits uses 0


def packaged_fonts() -> list[str]:
    """The TrueType files of the PACKAGED font modules, in a fixed order."""
    found = []
    for module in PACKAGED:
        files = Path(importlib.import_module(module).__file__).parent / "files"
        found += sorted(str(path) for path in files.glob("*.ttf"))
    return found


def count(per_kind: int = PER_KIND) -> int:
    """How many images make_exposure(per_kind) draws."""
    return 3 * per_kind + per_kind // 4 + 3 * per_kind // 2


def _glyph(char: str, font: str, rng: np.random.Generator) -> np.ndarray | None:
    """`char` in the font file at `font`, of a random size, turned up to 15°; None if it lacks it."""
    face = ImageFont.truetype(font, int(rng.uniform(150, 210)))
    mask = face.getmask(char)
    if mask.getbbox() is None or list(mask) == list(face.getmask("\uffff")):
        return None  # the font has no such glyph
    image, draw = blank_canvas()
    draw.text((CANVAS / 2, CANVAS / 2), char, font=face, fill=255, anchor="mm")
    turned = np.asarray(image.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR))
    return to_mnist(turned) if turned.max() >= 128 else None


def _curve(rng: np.random.Generator) -> np.ndarray:
    """A smooth pen stroke through 4-7 random points (Chaikin's corner cutting, four rounds)."""
    image, draw = blank_canvas()
    points = rng.uniform(30, CANVAS - 30, size=(int(rng.integers(4, 8)), 2))
    for _ in range(4):
        near, far = 0.75 * points[:-1] + 0.25 * points[1:], 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.vstack([points[:1], np.column_stack([near, far]).reshape(-1, 2), points[-1:]])
    pen_stroke(draw, points, int(rng.integers(14, 23)))
    return to_mnist(np.asarray(image))


def _composition(rng: np.random.Generator) -> np.ndarray:
    """Two or three parts, each an arc of an ellipse, a polygon or a straight stroke."""
    image, draw = blank_canvas()
    width = int(rng.integers(14, 23))
    for _ in range(int(rng.integers(2, 4))):
        kind, centre, radius = int(rng.integers(0, 3)), rng.uniform(60, 220, 2), rng.uniform(25, 100)
        if kind == 0:
            start = rng.uniform(0, 360)
            turn = np.radians(np.linspace(start, start + rng.uniform(90, 360), 40))
            squash = rng.uniform(0.4, 1)
            points = np.column_stack([centre[0] + radius * np.cos(turn), centre[1] + squash * radius * np.sin(turn)])
        elif kind == 1:
            turn = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, int(rng.integers(3, 9)) + 1)
            points = np.column_stack([centre[0] + radius * np.cos(turn), centre[1] + radius * np.sin(turn)])
        else:
            points = [centre, centre + rng.uniform(-120, 120, 2)]
        pen_stroke(draw, points, width)
    return to_mnist(np.asarray(image))


@lru_cache(maxsize=2)
def make_exposure(per_kind: int = PER_KIND, seed: int = SEED, keep_in: str | None = None) -> np.ndarray:
    """The drawn part of the set, deterministic for `seed`: per_kind glyphs, curves and
    compositions each, per_kind // 4 Gaussian noise images and 3 * per_kind // 2 letters in the
    packaged fonts (`count`); float32 (N, 28, 28). Read-only.
    `keep_in`: a folder (the data folder's exposure/) where the set is kept once drawn, which
    takes some 15 s, and read back from the next time; a copy that is damaged, or was drawn by
    other code or other library versions, is drawn again, and a folder that cannot be written
    only costs the drawing."""
    path = Path(keep_in) / f"exposure-{per_kind}-{seed}-{_drawing_key()}.npy" if keep_in else None
    if path is not None:
        found = _read_kept(path, count(per_kind))
        if found is not None:
            return found
    out = _draw(per_kind, seed)
    if path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, out, allow_pickle=False)
            atomic_write_bytes(path, buffer.getvalue(), durable=False)
            for stale in path.parent.glob(f"exposure-{per_kind}-{seed}-*.npy"):
                if stale != path:
                    stale.unlink()
    return out


def kept(data_root=None) -> np.ndarray:
    """The drawn part of the set (make_exposure's defaults), kept in the data folder's exposure/
    (`data_root`: core.data.mnist.data_dir) once drawn: what training and the detector learn from."""
    from core.data.mnist import data_dir  # torch: only where the data folder is asked for
    return make_exposure(keep_in=str(data_dir(data_root).resolve() / "exposure"))


def _drawing_key() -> str:
    """What the drawn set depends on besides its arguments: the code that draws it and the
    libraries (and, with matplotlib, the font files) it draws with."""
    import matplotlib  # heavy: only its version, as font_path's fonts come with it
    digest = hashlib.sha256()
    for source in (__file__, nondigits.__file__, images.__file__):
        digest.update(Path(source).read_bytes())
    digest.update(f"{np.__version__} {PIL.__version__} {matplotlib.__version__}".encode())
    for module in PACKAGED:
        digest.update(f"{module} {importlib.metadata.version(module.replace('_', '-'))}".encode())
    return digest.hexdigest()[:16]


def _read_kept(path: Path, expected: int) -> np.ndarray | None:
    """The kept set, or None where there is none or it is not a whole .npy of `expected` images on
    [0, 1] (drawn again then). Read by the store's reader (a FIFO is refused, never waited on), no
    larger than such a file is, and its header checked before an array is made: a header that
    claims (60000000, 28, 28) allocates nothing."""
    data, _problem = read_run_file(path, limit=4096 + expected * 28 * 28 * 4)
    if data is None:
        return None
    stream = io.BytesIO(data)
    try:
        major, _minor = np.lib.format.read_magic(stream)
        header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(stream)
        if shape != (expected, 28, 28) or dtype != np.float32 or fortran:
            return None
        stream.seek(0)
        found = np.load(stream, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # not a whole .npy file
    if not np.isfinite(found).all() or found.min() < 0 or found.max() > 1:
        return None
    found.setflags(write=False)
    return found


def _draw(per_kind: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chars = LETTERS + GREEK + SYMBOLS
    glyphs: list[np.ndarray] = []
    while len(glyphs) < per_kind:
        char = chars[rng.integers(len(chars))]
        fonts = FONTS if char in LETTERS else SYMBOL_FONTS
        found = _glyph(char, font_path(fonts[rng.integers(len(fonts))]), rng)
        if found is not None:
            glyphs.append(found)
    curves = [_curve(rng) for _ in range(per_kind)]
    compositions = [_composition(rng) for _ in range(per_kind)]
    noise = [np.clip(rng.normal(rng.uniform(0, 0.5), rng.uniform(0.1, 0.5), (28, 28)), 0, 1)
             for _ in range(per_kind // 4)]
    packaged, letters = packaged_fonts(), []
    while len(letters) < 3 * per_kind // 2:
        found = _glyph(LETTERS[rng.integers(len(LETTERS))], packaged[rng.integers(len(packaged))], rng)
        if found is not None:
            letters.append(found)
    out = np.stack([*glyphs, *curves, *compositions, *noise, *letters]).astype(np.float32)
    out.setflags(write=False)
    return out


def from_digits(digits: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Two images per digit (N, 28, 28) on [0, 1]: the digit inverted (black on white), and a few
    faint specks on black, of 1 to 7 squares of grey; float32 (2N, 28, 28)."""
    rng = np.random.default_rng(seed)
    specks = np.zeros((len(digits), 28, 28), dtype=np.float32)
    for image in specks:
        for _ in range(int(rng.integers(1, 8))):
            y, x = rng.integers(2, 26, size=2)
            r = int(rng.integers(1, 4))
            image[max(0, y - r):y + r, max(0, x - r):x + r] = rng.uniform(0.05, 0.6)
    return np.concatenate([1.0 - np.asarray(digits, dtype=np.float32), specks])
