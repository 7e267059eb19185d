"""Character reference images, prepared exactly as the NovelAI web prepares them.

The server accepts only three canvases and answers 400 for anything else, and the reference's look depends
on how it was scaled and compressed, so this copies the web: pick the canvas by orientation, scale the image
to fit (sizes rounded up, bilinear), centre it on black (transparency composited on black too), and encode
as JPEG at quality 95.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from peropix_tui.engine.nai.imageprep import has_alpha, open_image

PORTRAIT: Final = (1024, 1536)
LANDSCAPE: Final = (1536, 1024)
SQUARE: Final = (1472, 1472)
CANVASES: Final = (PORTRAIT, LANDSCAPE, SQUARE)
JPEG_QUALITY: Final = 95


def reference_canvas(width: int, height: int) -> tuple[int, int]:
    """The canvas for an image of this size: landscape, portrait or square by its orientation."""
    if width > height:
        return LANDSCAPE
    if width < height:
        return PORTRAIT
    return SQUARE


def _fit(width: int, height: int, canvas: tuple[int, int]) -> tuple[int, int]:
    """The scaled size, each side rounded up and never past the canvas (integer maths, no float drift)."""
    cw, ch = canvas
    if cw * height <= ch * width:  # width is the limiting side
        return cw, min(ch, -(-height * cw // width))
    return min(cw, -(-width * ch // height)), ch


def prepare_character_reference(data: bytes) -> bytes:
    """The JPEG bytes to send as a `director_reference_images` entry."""
    image = open_image(data, "character_reference")
    if has_alpha(image):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    else:
        image = image.convert("RGB")
    canvas_size = reference_canvas(image.width, image.height)
    size = _fit(image.width, image.height, canvas_size)
    scaled = image.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", canvas_size, (0, 0, 0))
    canvas.paste(scaled, ((canvas_size[0] - size[0]) // 2, (canvas_size[1] - size[1]) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False)
    return buffer.getvalue()
