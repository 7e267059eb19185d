"""Character reference preprocessing: canvas choice, black letterbox, JPEG q95, and golden output bytes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from peropix_tui.engine.nai.charref import (
    CANVASES,
    LANDSCAPE,
    PORTRAIT,
    SQUARE,
    _fit,
    prepare_character_reference,
    reference_canvas,
)
from peropix_tui.engine.types import RequestError


def fixed_input(width: int, height: int, mode: str = "RGB") -> bytes:
    """A deterministic test picture: colour ramps in both directions plus a checker pattern."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = (xx * 255 // max(1, width - 1)).astype(np.uint8)
    g = (yy * 255 // max(1, height - 1)).astype(np.uint8)
    b = np.where(((xx // 37) + (yy // 23)) % 2 == 0, 200, 40).astype(np.uint8)
    channels = [r, g, b]
    if mode == "RGBA":
        channels.append(np.where(xx < width // 2, 255, 0).astype(np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(np.stack(channels, axis=-1), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


@pytest.mark.parametrize(
    ("size", "canvas"),
    [((900, 1400), PORTRAIT), ((1400, 900), LANDSCAPE), ((700, 700), SQUARE), ((1, 2), PORTRAIT)],
)
def test_canvas_follows_orientation(size: tuple[int, int], canvas: tuple[int, int]) -> None:
    assert reference_canvas(*size) == canvas


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_fitted_size_touches_the_canvas_and_never_exceeds_it(width: int, height: int) -> None:
    canvas = reference_canvas(width, height)
    fitted = _fit(width, height, canvas)
    assert fitted[0] <= canvas[0] and fitted[1] <= canvas[1]
    assert canvas[0] in fitted or canvas[1] in fitted
    assert all(side >= 1 for side in fitted)


def test_portrait_is_centred_on_black_bars_as_a_q95_jpeg() -> None:
    image = decode(prepare_character_reference(fixed_input(900, 1400)))
    assert image.size == PORTRAIT and image.mode == "RGB"
    # 900x1400 scaled to height 1536 is ceil(987.4) = 988 wide, so 18 black columns on each side.
    pixels = np.asarray(image).astype(int)
    assert pixels[:, :14].max() < 12 and pixels[:, -14:].max() < 12
    assert pixels[:, 24:1000].mean() > 60
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, format="JPEG", quality=95)
    expected = Image.open(reference)
    assert isinstance(image, JpegImageFile) and isinstance(expected, JpegImageFile)
    assert image.quantization == expected.quantization  # the quality-95 tables


def test_transparent_parts_become_black() -> None:
    image = decode(prepare_character_reference(fixed_input(600, 600, "RGBA")))
    pixels = np.asarray(image).astype(int)
    assert image.size == SQUARE
    assert pixels[:, 760:].max() < 12  # the right half was transparent
    assert pixels[:, :700].mean() > 60


def test_exif_orientation_is_applied_before_choosing_the_canvas() -> None:
    stored = Image.open(io.BytesIO(fixed_input(1400, 900)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: shows as 900x1400
    buffer = io.BytesIO()
    stored.convert("RGB").save(buffer, format="JPEG", exif=exif.tobytes())
    assert decode(prepare_character_reference(buffer.getvalue())).size == PORTRAIT


def test_output_is_one_of_the_three_canvases_whatever_the_input() -> None:
    for size in ((64, 64), (3000, 200), (200, 3000), (1024, 1536)):
        assert decode(prepare_character_reference(fixed_input(*size))).size in CANVASES


# Golden bytes: the exact JPEG for the fixed inputs. A change here changes what NovelAI receives, so it
# must be deliberate (a new Pillow/libjpeg can also change them; check the images still look right).
GOLDEN = {
    (900, 1400, "RGB"): "02ddac58a3ac17c943da87d55d33af1c9b08ad9453bfb4704183a4d699692662",
    (1400, 900, "RGBA"): "76c54d01de41e5e510d64475997f7fed075f9f23f2f03bbc69fff86d77ce3526",
}


@pytest.mark.parametrize(("width", "height", "mode"), list(GOLDEN))
def test_golden_bytes_for_fixed_inputs(width: int, height: int, mode: str) -> None:
    output = prepare_character_reference(fixed_input(width, height, mode))
    assert hashlib.sha256(output).hexdigest() == GOLDEN[width, height, mode]
    assert output == prepare_character_reference(fixed_input(width, height, mode))


def test_unreadable_reference_is_a_one_line_error() -> None:
    with pytest.raises(RequestError, match="character_reference: not an image") as caught:
        prepare_character_reference(b"GIF89a-not-really")
    assert caught.value.field == "character_reference"
