"""Tests for core.data.images: user images and drawings into MNIST form."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from core.data.images import (
    MAX_IMAGE_PIXELS,
    MNIST_MEAN,
    MNIST_STD,
    ImageError,
    load_image,
    normalize,
    preprocess,
    to_mnist,
)

CANVAS = 300  # px, side of the synthetic drawings, large like a real canvas or photo


# --------------------------------------------------------------------------- drawings


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, ink) -> None:
    """Draw a thick digit, off-centre (up and left), so centring has work to do."""
    if shape == "seven":
        draw.line([(40, 50), (170, 50), (90, 230)], fill=ink, width=22, joint="curve")
    elif shape == "zero":
        draw.ellipse((30, 40, 150, 250), outline=ink, width=20)
    elif shape == "one":
        draw.line([(90, 40), (90, 260)], fill=ink, width=14)
    elif shape == "dash":
        draw.line([(40, 120), (260, 120)], fill=ink, width=14)
    else:
        raise ValueError(shape)


def drawing(shape: str, kind: str) -> Image.Image:
    """The same shape drawn as each kind of user image."""
    if kind == "white_on_black":
        image = Image.new("L", (CANVAS, CANVAS), 0)
        draw_shape(ImageDraw.Draw(image), shape, 255)
    elif kind == "black_on_white":
        image = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
        draw_shape(ImageDraw.Draw(image), shape, (0, 0, 0))
    elif kind == "transparent":
        # Like the drawable canvas: background alpha 0 and RGB 0, strokes black but opaque.
        image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
        draw_shape(ImageDraw.Draw(image), shape, (0, 0, 0, 255))
    elif kind == "coloured_on_black":
        image = Image.new("RGB", (CANVAS, CANVAS), (0, 0, 0))
        draw_shape(ImageDraw.Draw(image), shape, (220, 30, 40))
    else:
        raise ValueError(kind)
    return image


KINDS = ["white_on_black", "black_on_white", "transparent", "coloured_on_black"]


def ink_box(digit: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bounding box of the ink."""
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    """(row, col) in pixel-index coordinates."""
    indices = np.arange(digit.shape[0])
    return (
        float(np.average(indices, weights=digit.sum(axis=1))),
        float(np.average(indices, weights=digit.sum(axis=0))),
    )


# --------------------------------------------------------------------------- to_mnist


@pytest.mark.parametrize("shape", ["seven", "zero"])
def test_every_kind_of_drawing_gives_the_same_digit(shape):
    reference = normalize(to_mnist(drawing(shape, "white_on_black")))
    for kind in KINDS[1:]:
        result = normalize(to_mnist(drawing(shape, kind)))
        difference = (result - reference).abs().max().item()
        assert difference < 0.05, f"{kind} differs from white_on_black by {difference}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["seven", "zero"])
def test_result_is_in_mnist_form(shape, kind):
    digit = to_mnist(drawing(shape, kind))
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and digit.max() <= 1.0
    assert digit.max() > 0.9  # full-strength ink, as every MNIST digit has
    assert max(ink_box(digit)) in (19, 20, 21)
    row, col = centre_of_mass(digit)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    # The drawing sat in the top-left of its canvas; the digit must not.
    assert digit[:4].sum() == 0 and digit[:, :4].sum() == 0


def test_aspect_ratio_is_kept():
    one_height, one_width = ink_box(to_mnist(drawing("one", "black_on_white")))
    assert one_height == 20 and one_width <= 3
    dash_height, dash_width = ink_box(to_mnist(drawing("dash", "white_on_black")))
    assert dash_width == 20 and dash_height <= 3


def synthetic_mnist_digit() -> np.ndarray:
    """A '4' already in MNIST form: 20x14 box, antialiased edges, centre of mass centred.

    Placed by an independent computation of the centre of mass (numpy's weighted average).
    """
    glyph = np.zeros((20, 14), dtype=np.float32)
    glyph[0:12, 0:3] = 1.0  # left stroke
    glyph[0:12, 3] = 0.5  # its antialiased edge
    glyph[10:13, 0:14] = 1.0  # bar
    glyph[0:20, 9:12] = 1.0  # right stroke
    glyph[0:20, 8] = np.maximum(glyph[0:20, 8], 0.4)
    row, col = centre_of_mass_of(glyph)
    top, left = int(np.round(14 - row)), int(np.round(14 - col))
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top : top + 20, left : left + 14] = glyph
    return digit


def centre_of_mass_of(glyph: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(glyph.shape)
    return float((rows * glyph).sum() / glyph.sum()), float((cols * glyph).sum() / glyph.sum())


def test_oracle_upscaled_inverted_digit_comes_back():
    original = synthetic_mnist_digit()
    # A x10 photo of it, dark ink on white paper, with a margin of paper around it.
    photo = 1.0 - np.kron(original, np.ones((10, 10), dtype=np.float32))
    photo = np.pad(photo, 37, constant_values=1.0)
    result = to_mnist(photo)
    assert np.abs(result - original).mean() < 0.05
    assert np.allclose(centre_of_mass(result), centre_of_mass(original), atol=0.5)


def test_photo_of_grey_paper_matches_clean_drawing():
    clean = to_mnist(drawing("seven", "white_on_black"))
    ink = np.asarray(drawing("seven", "white_on_black")) > 0
    noise = np.random.default_rng(0).uniform(-0.04, 0.04, ink.shape)
    photo = np.where(ink, 0.25, 0.75) + noise  # dark grey ink on light grey paper
    result = to_mnist((photo * 255).astype(np.uint8))
    assert np.abs(result - clean).mean() < 0.02
    assert np.abs(result - clean).max() < 0.15


def modes_of(image: Image.Image) -> dict[str, Image.Image]:
    """The white-on-black drawing in every PIL mode a user's file might come in."""
    rgba = Image.merge("RGBA", [image, image, image, image])  # alpha = ink
    return {
        "1": image.convert("1"),
        "L": image,
        "P": image.convert("P"),
        "RGB": image.convert("RGB"),
        "RGBA": rgba,
        "RGBa": rgba.convert("RGBa"),
        "LA": rgba.convert("LA"),
        "La": Image.frombytes("La", image.size, rgba.convert("LA").tobytes()),
        "PA": rgba.convert("PA"),
        "I": image.convert("I"),
        "I;16": image.convert("I").convert("I;16"),
        "I;16B": image.convert("I").convert("I;16B"),
        "F": image.convert("F"),
        "F_unit": Image.fromarray(np.asarray(image, dtype=np.float32) / 255),
        "CMYK": image.convert("CMYK"),
        "YCbCr": image.convert("YCbCr"),
        "HSV": image.convert("RGB").convert("HSV"),
    }


@pytest.mark.parametrize("mode", list(modes_of(Image.new("L", (1, 1)))))
def test_every_pil_mode_works(mode):
    source = drawing("seven", "white_on_black")
    reference = to_mnist(source)
    result = to_mnist(modes_of(source)[mode])
    assert np.abs(result - reference).max() < 0.02


def test_opaque_image_with_a_few_translucent_pixels_is_read_by_colour():
    photo = drawing("seven", "black_on_white").convert("RGBA")
    photo.putpixel((5, 5), (255, 255, 255, 200))  # a stray half-transparent pixel
    reference = to_mnist(drawing("seven", "white_on_black"))
    assert np.abs(to_mnist(photo) - reference).max() < 0.02


@pytest.mark.parametrize(
    "make_array",
    [
        lambda gray: gray,  # (H, W) uint8
        lambda gray: gray.astype(np.float32) / 255,  # (H, W) float in [0, 1]
        lambda gray: gray.astype(np.float64),  # (H, W) float in 0..255
        lambda gray: np.stack([gray] * 3, axis=-1),  # (H, W, 3) uint8
        lambda gray: np.dstack([np.zeros_like(gray)] * 3 + [gray]),  # (H, W, 4) black strokes
        lambda gray: 255 - np.stack([gray] * 3, axis=-1),  # (H, W, 3) black on white
    ],
)
def test_numpy_arrays_work(make_array):
    gray = np.asarray(drawing("zero", "white_on_black"))
    reference = to_mnist(gray)
    assert np.abs(to_mnist(make_array(gray)) - reference).max() < 0.02


@pytest.mark.parametrize(
    "blank",
    [
        Image.new("L", (200, 200), 0),
        Image.new("RGB", (200, 200), (255, 255, 255)),
        Image.new("RGBA", (200, 200), (0, 0, 0, 0)),
        Image.new("RGBA", (200, 200), (255, 255, 255, 0)),
        np.zeros((50, 50), dtype=np.uint8),
        np.random.default_rng(1).uniform(0, 0.05, (80, 80)),  # faint noise only
    ],
    ids=["black", "white", "transparent", "transparent_white", "zeros", "faint_noise"],
)
def test_empty_drawing_is_refused(blank):
    with pytest.raises(ImageError, match="empty"):
        to_mnist(blank)


def test_one_pixel_of_ink_still_works():
    image = np.zeros((50, 50), dtype=np.uint8)
    image[10, 30] = 255
    digit = to_mnist(image)
    assert digit.shape == (28, 28) and 0 < digit.max() <= 1.0


def test_light_noise_does_not_stretch_the_box():
    clean = drawing("seven", "white_on_black")
    noisy = np.asarray(clean, dtype=np.float32) / 255
    noisy = noisy + np.random.default_rng(2).uniform(0, 0.06, noisy.shape)  # speckle
    assert np.abs(to_mnist(noisy) - to_mnist(clean)).max() < 0.1


# --------------------------------------------------------------------------- load_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_load_image_reads_paths_bytes_and_files(tmp_path):
    data = png_bytes(drawing("seven", "black_on_white"))
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    uploaded = io.BytesIO(data)
    uploaded.read()  # Streamlit reruns hand back a buffer that was already read
    for source in (path, str(path), data, io.BytesIO(data), uploaded):
        image = load_image(source)
        assert image.size == (CANVAS, CANVAS)
        assert np.asarray(image).shape == (CANVAS, CANVAS, 3)


def test_load_image_applies_exif_orientation():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write
    Image.new("RGB", (60, 40), "white").save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (40, 60)


def test_load_image_names_a_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nowhere.png"):
        load_image(tmp_path / "nowhere.png")


@pytest.mark.parametrize(
    "data",
    [b"label,pixel0\n1,2\n", np.random.default_rng(3).bytes(4000), b""],
    ids=["text", "random_bytes", "empty"],
)
def test_load_image_refuses_what_is_not_an_image(data, tmp_path):
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="'upload.png' is not an image PIL can read"):
        load_image(path)
    with pytest.raises(ImageError, match="not an image PIL can read"):
        load_image(data)


def test_load_image_refuses_a_truncated_png():
    noise = np.random.default_rng(4).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_load_image_refuses_too_many_pixels():
    data = png_bytes(Image.new("L", (101, 100)))
    assert load_image(data, max_pixels=10_100).size == (101, 100)
    with pytest.raises(ImageError, match="10,000 pixels"):
        load_image(data, max_pixels=10_000)


def test_load_image_refuses_a_decompression_bomb():
    # 30 megapixels of one colour: a small file that would expand past the default limit.
    data = png_bytes(Image.new("1", (6000, 5000)))
    assert len(data) < 100_000
    with pytest.raises(ImageError, match=f"{MAX_IMAGE_PIXELS:,} pixels"):
        load_image(data)


def test_load_image_refuses_too_many_bytes():
    data = png_bytes(Image.new("L", (100, 100)))
    with pytest.raises(ImageError, match="too large"):
        load_image(data, max_bytes=len(data) - 1)
    with pytest.raises(ImageError, match="too large"):
        load_image(io.BytesIO(data), max_bytes=len(data) - 1)


# --------------------------------------------------------------------------- normalize


def test_normalize_matches_hand_computation():
    batch = np.random.default_rng(5).uniform(0, 1, (3, 28, 28)).astype(np.float32)
    result = normalize(batch)
    assert result.shape == (3, 1, 28, 28) and result.dtype == torch.float32
    for index, row, col in [(0, 0, 0), (1, 13, 7), (2, 27, 27)]:
        expected = (float(batch[index, row, col]) - 0.1307) / 0.3081
        assert result[index, 0, row, col].item() == pytest.approx(expected, abs=1e-5)
    black = normalize(np.zeros((28, 28)))[0, 0, 0, 0].item()
    assert black == pytest.approx(-MNIST_MEAN / MNIST_STD)


def test_normalize_takes_one_image_tensors_and_uint8():
    one = normalize(torch.ones(28, 28))
    assert one.shape == (1, 1, 28, 28)
    assert torch.allclose(one, torch.full_like(one, (1 - MNIST_MEAN) / MNIST_STD))
    as_bytes = normalize(np.full((2, 28, 28), 255, dtype=np.uint8))
    assert torch.allclose(as_bytes, torch.full((2, 1, 28, 28), (1 - MNIST_MEAN) / MNIST_STD))


def test_normalize_refuses_0_to_255_floats_and_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        normalize(np.full((28, 28), 255.0))
    with pytest.raises(ValueError, match="28"):
        normalize(np.zeros((32, 32)))


# --------------------------------------------------------------------------- preprocess


def test_preprocess_from_file_and_image_agree(tmp_path):
    image = drawing("zero", "black_on_white")
    path = tmp_path / "zero.png"
    image.save(path)
    digit, model_input = preprocess(path)
    assert digit.shape == (28, 28) and model_input.shape == (1, 1, 28, 28)
    assert torch.allclose(model_input, normalize(digit))
    same_digit, _ = preprocess(image)
    assert np.array_equal(digit, same_digit)
    bytes_digit, _ = preprocess(path.read_bytes())
    assert np.array_equal(digit, bytes_digit)


@pytest.mark.parametrize("vertical", [False, True])
def test_a_stroke_in_a_strip_a_few_pixels_thick_is_not_an_empty_drawing(vertical):
    # A 3 x 5000 scan with one clear dark stroke along its middle third: the border is most of
    # the image, so it cannot tell the background. The oracle: the same stroke on a big sheet.
    strip = np.full((3, 5000), 255, np.uint8)
    strip[1, 1000:4000] = 0
    sheet = np.full((2000, 5000), 255, np.uint8)
    sheet[1000, 1000:4000] = 0
    if vertical:
        strip, sheet = strip.T.copy(), sheet.T.copy()
    from_strip, from_sheet = to_mnist(Image.fromarray(strip)), to_mnist(Image.fromarray(sheet))
    assert from_strip.max() == pytest.approx(1.0)
    assert np.abs(from_strip - from_sheet).max() < 0.05
