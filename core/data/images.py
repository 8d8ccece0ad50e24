"""Turn a user's image or drawing into an MNIST digit, the way MNIST itself was made.

MNIST recipe (LeCun et al.): the digit's ink is scaled, keeping its aspect ratio, to fit a
20x20 px box with antialiasing, then placed in a 28x28 black field so that its centre of
mass sits at the field's centre. Digits are white (1.0) on black (0.0).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from core.errors import BadInput
from core.fsio import GivenFileError, read_given

# Pixel statistics of the MNIST training set on the [0, 1] scale; training normalises
# every input with them, so prediction must too.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
BACKGROUND = -MNIST_MEAN / MNIST_STD  # a pixel with no ink, normalised as the models see it

# Guards against decompression bombs and uploads that would exhaust memory.
MAX_IMAGE_PIXELS = 25_000_000  # width * height, about a 25-megapixel photo
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # 20 MiB, file size on disk

DIGIT_SIZE = 28  # px, side of an MNIST image
DIGIT_BOX = 20  # px, longer side of the ink's bounding box in MNIST
# Centre of mass target in pixel-index coordinates (row, col), as in the usual MNIST
# recipe (scipy.ndimage.center_of_mass convention).
DIGIT_CENTRE = 14.0
# On the [0, 1] ink scale: fainter values are paper texture or sensor noise, not ink.
INK_THRESHOLD = 0.1
# px: larger images are first shrunk by an integer factor to at most this side.
MAX_WORKING_SIDE = 1024
# A border brighter than this (median, [0, 1]) means dark ink on light paper.
LIGHT_BACKGROUND = 0.5

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
ImageLike = Union[Image.Image, np.ndarray]


class ImageError(BadInput, ValueError):
    """An image that cannot be used; the message tells the user what to do."""


class EmptyDrawing(ImageError):
    """No ink: nothing stands out from the background. Said of a drawing (the Sketch pad's array);
    `preprocess` says it of an image file in the file's words (EMPTY_FILE)."""


EMPTY_DRAWING = "The drawing is empty: draw a digit first."
EMPTY_FILE = ("The image is empty: nothing in it stands out from its background (one colour all over, or marks "
              "too faint to be ink), so there is no digit to read.")


# --------------------------------------------------------------------------- loading


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> Image.Image:
    """Open and fully decode an image from a path, bytes or binary file-like object.

    Applies the EXIF orientation (phone photos). Raises ImageError for anything unusable.
    """
    name, data = _read_source(source, max_bytes)
    try:
        with warnings.catch_warnings():
            # PIL only warns for images between its own limit and twice it; make that fatal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            # Check the declared size before decoding, so a bomb is never expanded.
            if width * height > max_pixels:
                raise ImageError(
                    f"{name} is {width}x{height} px; images may have at most "
                    f"{max_pixels:,} pixels."
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        message = f"{name} is too large; images may have at most {max_pixels:,} pixels."
        raise ImageError(message) from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{name} is not an image PIL can read.") from error
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # PIL signals truncated or corrupt data with any of these.
        raise ImageError(f"{name} is truncated or corrupt and cannot be decoded.") from error
    return image


def _read_source(source: ImageSource, max_bytes: int) -> tuple[str, bytes]:
    """Return (a name for messages, the raw bytes), refusing more than max_bytes."""
    limit_text = f"files may be at most {max_bytes / 1024 / 1024:g} MiB."
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = f"The file '{path.name}'"
        try:
            return name, read_given(path, "an image file", max_bytes, lambda size: f"{name} is too large; {limit_text}")
        except GivenFileError as exc:
            raise ImageError(str(exc)) from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "The uploaded data", bytes(source)
    elif hasattr(source, "read"):
        if hasattr(source, "getvalue"):
            data = source.getvalue()  # the whole buffer even if already read (Streamlit reruns)
        else:
            # One byte past the limit is enough to know it is over without reading it all.
            data = source.read(max_bytes + 1)
        if not isinstance(data, bytes):
            raise ImageError("The image must be opened in binary mode, not as text.")
        file_name = getattr(source, "name", None)
        has_name = isinstance(file_name, str)
        name = f"The file '{Path(file_name).name}'" if has_name else "The uploaded file"
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(f"{name} is too large; {limit_text}")
    return name, data


# --------------------------------------------------------------------------- MNIST form


def to_mnist(image: ImageLike) -> np.ndarray:
    """Return the digit as MNIST has it: float32 (28, 28) in [0, 1], white ink on black.

    Accepts a PIL image of any mode or an array (H, W), (H, W, 3) or (H, W, 4).
    Raises ImageError when there is no ink.
    """
    ink = _ink_map(image)
    top, bottom, left, right = _ink_bounds(ink)
    glyph = _scale_to_box(ink[top:bottom, left:right], DIGIT_BOX)
    return _place_by_centre_of_mass(glyph, DIGIT_SIZE)


def _ink_map(image: ImageLike) -> np.ndarray:
    """Return ink in [0, 1] (1 = full ink, 0 = background), float32 (H, W)."""
    pixels = _to_unit_array(image)
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        alpha = pixels[:, :, -1]
        colour = pixels[:, :, :-1]
        if alpha.min() < 1.0 and np.median(_border(alpha)) < LIGHT_BACKGROUND:
            # Drawn on a transparent background (e.g. the drawable canvas): strokes may be
            # any colour, even black, so only the alpha channel says where the ink is.
            return _stretch_from_background(alpha)
        pixels = colour
    if pixels.ndim == 3:
        pixels = _luminance(pixels)
    if np.median(_border(pixels)) > LIGHT_BACKGROUND:
        if pixels.size and float(pixels.max() - pixels.min()) < INK_THRESHOLD:
            raise ImageError("The image is empty: one light colour all over (a blank page, a white square), "
                             "with no digit in it.")
        pixels = 1.0 - pixels  # dark ink on light paper
    return _stretch_from_background(pixels)


def _to_unit_array(image: ImageLike) -> np.ndarray:
    """Return float32 (H, W) or (H, W, C) values on [0, 1]; C is 1 to 4."""
    if isinstance(image, Image.Image):
        array, full_scale = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array, full_scale = image, None
    else:
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise ImageError(
            f"An image array must have shape (H, W), (H, W, 3) or (H, W, 4), not {array.shape}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise EmptyDrawing(EMPTY_DRAWING)
    values = array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.integer):  # integers hold no NaN or infinity
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    scale = full_scale if full_scale is not None else _full_scale(array.dtype, values)
    return np.clip(values / scale, 0.0, 1.0)


def _pil_to_array(image: Image.Image) -> tuple[np.ndarray, float | None]:
    """Return the image as an array plus its full-scale value (None: infer from values)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16/32-bit and float images carry no declared range (PIL's own conversion from L
        # keeps 0..255), so infer it from the values.
        return np.asarray(image), None
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if mode == "La":
        image = image.convert("LA")  # PIL converts premultiplied La only to LA
    try:
        converted = image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as error:
        message = f"Images in PIL mode '{mode}' are not supported; save it as PNG or JPEG."
        raise ImageError(message) from error
    # A photo has far more pixels than a 20 px digit needs; shrinking it first (area
    # average, C speed) keeps the float work below about 1 megapixel.
    factor = -(-max(converted.size) // MAX_WORKING_SIDE)
    if factor > 1:
        converted = converted.reduce(factor)
    return np.asarray(converted), 255.0


def _full_scale(dtype: np.dtype, values: np.ndarray) -> float:
    """Guess the value meaning 'full intensity' for an array without a declared range."""
    if dtype == np.bool_:
        return 1.0
    if dtype == np.uint8:
        return 255.0
    peak = float(values.max()) if values.size else 0.0
    if np.issubdtype(dtype, np.floating) and peak <= 1.5:
        # Floats on [0, 1], allowing some overshoot from noise or resampling (clipped later);
        # on a 0..255 scale a peak this low would be an invisible drawing anyway.
        return 1.0
    if peak <= 255.0:
        return 255.0
    if peak <= 65535.0:
        return 65535.0
    return peak


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, the weights PIL uses for mode 'L'."""
    return rgb[:, :, :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _border(pixels: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, which is background in a framed drawing."""
    return np.concatenate([pixels[0, :], pixels[-1, :], pixels[:, 0], pixels[:, -1]])


def _stretch_from_background(ink: np.ndarray) -> np.ndarray:
    """Map the background level to 0 and the strongest ink to 1; drop faint noise.

    A photo of paper has a grey, not white, background; MNIST backgrounds are exactly 0 and
    every digit reaches full intensity, so the model expects the same.
    """
    border = _border(ink)
    # In a strip a few pixels thick the "border" is most of the image, stroke included:
    # there the background is the faint end of the whole image instead.
    background = float(np.median(border) if 2 * border.size <= ink.size else np.percentile(ink, 10))
    peak = float(ink.max())
    if peak - background < INK_THRESHOLD:
        raise EmptyDrawing(EMPTY_DRAWING)
    stretched = np.clip((ink - background) / (peak - background), 0.0, 1.0)
    stretched[stretched < INK_THRESHOLD] = 0.0
    return stretched.astype(np.float32)


def _ink_bounds(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right), end-exclusive, of the pixels holding ink."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _scale_to_box(glyph: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is `box` px, keeping the aspect ratio, antialiased."""
    height, width = glyph.shape
    factor = box / max(height, width)
    new_height = max(1, round(height * factor))
    new_width = max(1, round(width * factor))
    # BOX averages the ink over each output pixel's area: exact antialiasing when
    # shrinking, without LANCZOS's ringing. Enlarging a tiny drawing needs interpolation.
    resample = Image.Resampling.BOX if factor <= 1.0 else Image.Resampling.LANCZOS
    resized = Image.fromarray(glyph).resize((new_width, new_height), resample)  # mode "F"
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _place_by_centre_of_mass(glyph: np.ndarray, size: int) -> np.ndarray:
    """Paste glyph into a black size x size field with its centre of mass at the centre."""
    height, width = glyph.shape
    total = float(glyph.sum())
    if total > 0:
        centre_row = float((glyph.sum(axis=1) * np.arange(height)).sum()) / total
        centre_col = float((glyph.sum(axis=0) * np.arange(width)).sum()) / total
    else:  # resampling erased faint ink entirely: centre the box instead
        centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    # Clip so the whole glyph stays inside the field.
    top = min(max(round(DIGIT_CENTRE - centre_row), 0), size - height)
    left = min(max(round(DIGIT_CENTRE - centre_col), 0), size - width)
    field = np.zeros((size, size), dtype=np.float32)
    field[top : top + height, left : left + width] = glyph
    return field


# --------------------------------------------------------------------------- model input


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Return float32 (N, 1, 28, 28) normalised with MNIST_MEAN/MNIST_STD, as in training.

    Takes (28, 28), (N, 28, 28) or (N, 1, 28, 28) values in [0, 1]; uint8 is read as 0..255.
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif not tensor.is_floating_point():
        raise TypeError(f"expected [0, 1] floats or uint8, got {tensor.dtype}")
    tensor = tensor.to(torch.float32)
    if tensor.shape[-2:] != (DIGIT_SIZE, DIGIT_SIZE) or tensor.dim() not in (2, 3, 4):
        shape = tuple(tensor.shape)
        raise ValueError(f"expected (28, 28), (N, 28, 28) or (N, 1, 28, 28), got {shape}")
    if tensor.dim() == 4 and tensor.shape[1] != 1:
        raise ValueError(f"expected one channel, got {tuple(tensor.shape)}")
    if tensor.numel() and (tensor.min() < -1e-6 or tensor.max() > 1 + 1e-6):
        # Catches 0..255 floats passed by mistake, which would silently ruin predictions.
        raise ValueError("pixel values must be in [0, 1]; divide 0..255 values by 255 first")
    return standardise(tensor.reshape(-1, 1, DIGIT_SIZE, DIGIT_SIZE))


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), normalised as every model expects; no checks
    (MNIST's own tensors, trusted and large)."""
    return standardise(images.float() / 255.0).unsqueeze(1)


def standardise(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the models' input scale: the one normalisation of the lab."""
    return (pixels - MNIST_MEAN) / MNIST_STD


def unstandardise(x: torch.Tensor) -> np.ndarray:
    """Normalised model inputs (N, 1, 28, 28), on any device -> their [0, 1] pixels as float32
    numpy (N, 28, 28): the inverse of `normalize`."""
    return (x[:, 0].detach().float().cpu() * MNIST_STD + MNIST_MEAN).clamp(0, 1).numpy()


def preprocess(source: ImageSource | ImageLike) -> tuple[np.ndarray, torch.Tensor]:
    """Return (the 28x28 [0, 1] digit for display, its (1, 1, 28, 28) model input). An empty image
    read from a file (or an upload) is said to be one, not an empty drawing."""
    if isinstance(source, (Image.Image, np.ndarray)):
        digit = to_mnist(source)
    else:
        image = load_image(source)
        try:
            digit = to_mnist(image)
        except EmptyDrawing:
            raise ImageError(EMPTY_FILE) from None
    return digit, normalize(digit)
