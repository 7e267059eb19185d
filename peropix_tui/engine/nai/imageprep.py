"""Turning user images into what NovelAI accepts: img2img sources at exactly the request size, inpaint masks
as pure black and white on the model's 8x8 latent grid, and letterboxed V3 vibe references.

Anything Pillow cannot decode, or too large to decode safely, becomes a one-line `RequestError` naming the
setting it came from.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from peropix_tui.engine.types import RequestError

MAX_DECODE_PIXELS: Final = 50_000_000
MASK_CELL: Final = 8
V3_VIBE_SIDE: Final = 448
_OPAQUE_WHITE: Final = (255, 255, 255, 255)
_ORIENTATION: Final = 0x0112


def open_image(data: bytes, field: str, *, upright: bool = True) -> Image.Image:
    """Decode `data`, upright (EXIF orientation applied) unless told otherwise, refusing non-images and
    decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_DECODE_PIXELS:
                raise RequestError(field, f"the image is {width}x{height}, larger than this app decodes")
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(field, f"not an image that can be read ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(field, f"the image is damaged ({exc})") from exc
    return ImageOps.exif_transpose(image) if upright else image


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_source_image(data: bytes, width: int, height: int) -> bytes:
    """An img2img/inpaint source as a PNG of exactly `width`x`height` (a matching PNG is sent untouched)."""
    raw = open_image(data, "image", upright=False)
    if raw.format == "PNG" and raw.size == (width, height) and raw.getexif().get(_ORIENTATION, 1) == 1:
        return data
    upright = ImageOps.exif_transpose(raw)
    image = upright.convert("RGBA" if has_alpha(upright) else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return encode_png(image)


def prepare_mask(data: bytes, width: int, height: int) -> bytes:
    """An inpaint mask as an opaque black/white PNG (white = repaint) snapped to 8x8 cells.

    A pixel asks for repainting when it is light and not transparent, so both a black-and-white mask and a
    white brush layer on a transparent canvas work. A cell is repainted when any of its pixels is: grey
    anti-aliased edges or a mask drawn off the grid would otherwise leave seams.
    """
    image = open_image(data, "mask")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int32)
    luma = (rgba[..., 0] * 299 + rgba[..., 1] * 587 + rgba[..., 2] * 114) // 1000
    marked = (luma >= 128) & (rgba[..., 3] >= 128)
    cells = marked.reshape(height // MASK_CELL, MASK_CELL, width // MASK_CELL, MASK_CELL).any(axis=(1, 3))
    if not cells.any():
        raise RequestError("mask", "marks nothing to repaint (it is all black or transparent)")
    full = np.repeat(np.repeat(cells, MASK_CELL, axis=0), MASK_CELL, axis=1)
    out = np.zeros((height, width, 4), dtype=np.uint8)
    out[..., 3] = 255
    out[full] = _OPAQUE_WHITE
    return encode_png(Image.fromarray(out, "RGBA"))


def letterbox_v3_vibe(data: bytes) -> bytes:
    """A V3 vibe reference: the image scaled to fit 448x448, centred on a transparent square."""
    image = open_image(data, "vibe image").convert("RGBA")
    ratio = min(V3_VIBE_SIDE / image.width, V3_VIBE_SIDE / image.height)
    size = (max(1, int(image.width * ratio)), max(1, int(image.height * ratio)))
    scaled = image.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (V3_VIBE_SIDE, V3_VIBE_SIDE), (0, 0, 0, 0))
    canvas.paste(scaled, ((V3_VIBE_SIDE - size[0]) // 2, (V3_VIBE_SIDE - size[1]) // 2))
    return encode_png(canvas)


def image_size(data: bytes, field: str) -> tuple[int, int]:
    """Width and height of an image as displayed (EXIF orientation applied)."""
    image = open_image(data, field)
    return image.width, image.height
