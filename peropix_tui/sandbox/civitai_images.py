"""Image files the sandbox CivitAI image CDN serves: small PNG, JPEG and WebP originals carrying generation
metadata the way the tools that made them write it, and the re-encoded variants that lose it.

Originals follow A1111: a PNG gets a `parameters` text chunk, a JPEG or WebP an EXIF UserComment in UTF-16
behind the `UNICODE` charset id. An image whose API `meta` is null carries nothing. A variant (any options
other than `original=true`) is a smaller JPEG without metadata, as the real CDN's resized copies are, so a
client that forgets `original=true` gets visibly different bytes. Everything is made from the image id, so
the same image always has the same bytes.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Mapping
from typing import Any, Final

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from peropix_tui.core.metadata.a1111 import A1111Parameters, format_parameters

EXIF_IFD: Final = 0x8769
USER_COMMENT: Final = 0x9286
SOFTWARE_TAG: Final = 0x0131
UNICODE_PREFIX: Final = b"UNICODE\0"
_JPEG_QUALITY: Final = 90
# Meta keys that go into the A1111 settings line, in A1111's order; the rest of `meta` is not embedded.
_SETTINGS: Final = (
    ("steps", "Steps"),
    ("sampler", "Sampler"),
    ("cfgScale", "CFG scale"),
    ("seed", "Seed"),
    ("Size", "Size"),
    ("Model hash", "Model hash"),
    ("Model", "Model"),
    ("Clip skip", "Clip skip"),
    ("Denoising strength", "Denoising strength"),
)


class ImageFormat(enum.StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


def parameters_text(meta: Mapping[str, Any]) -> str:
    """The A1111 `parameters` text an image with this API `meta` carries."""
    settings: dict[str, str] = {}
    for key, label in _SETTINGS:
        value = meta.get(key)
        if value is not None and not isinstance(value, dict | list):
            settings[label] = str(value)
    hashes = meta.get("hashes")
    loras = [f"{k[5:]}: {v}" for k, v in hashes.items() if k.startswith("lora:")] if isinstance(hashes, dict) else []
    if loras:
        settings["Lora hashes"] = ", ".join(loras)
    prompt = meta.get("prompt")
    negative = meta.get("negativePrompt")
    return format_parameters(
        A1111Parameters(
            prompt if isinstance(prompt, str) else "",
            negative if isinstance(negative, str) else "",
            settings,
        )
    )


def _picture(image_id: int, width: int, height: int) -> Image.Image:
    """A simple picture that differs from image to image: a colour, a band, a diagonal."""
    seed = image_id * 2654435761 % (1 << 32)
    colour = (seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF)
    picture = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(picture)
    band = (seed >> 24) % max(1, height - 8)
    draw.rectangle((0, band, width, band + 8), fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
    draw.line((0, 0, width, height), fill=(255, 255, 255), width=3)
    return picture


def _user_comment_exif(text: str) -> bytes:
    exif = Image.Exif()
    exif[SOFTWARE_TAG] = "peropix sandbox"
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = UNICODE_PREFIX + text.encode("utf-16-be")
    return exif.tobytes()


def original_bytes(
    image_id: int, image_format: ImageFormat, width: int, height: int, meta: Mapping[str, Any] | None
) -> bytes:
    """The original file of an image: the picture, plus `meta` embedded unless it is None."""
    picture = _picture(image_id, width, height)
    buffer = io.BytesIO()
    text = parameters_text(meta) if meta is not None else None
    if image_format is ImageFormat.PNG:
        info = PngInfo()
        if text is not None:
            info.add_text("parameters", text)
        picture.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    elif image_format is ImageFormat.JPEG:
        extra = {"exif": _user_comment_exif(text)} if text is not None else {}
        picture.save(buffer, format="JPEG", quality=_JPEG_QUALITY, **extra)
    else:
        extra = {"exif": _user_comment_exif(text)} if text is not None else {}
        picture.save(buffer, format="WEBP", quality=_JPEG_QUALITY, **extra)
    return buffer.getvalue()


def variant_bytes(original: bytes, width: int | None) -> bytes:
    """A resized (or just re-encoded) JPEG of `original` with no metadata, like the CDN's variants."""
    with Image.open(io.BytesIO(original)) as source:
        picture = source.convert("RGB")
    if width is not None and 0 < width < picture.width:
        picture = picture.resize((width, max(1, picture.height * width // picture.width)))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def blurhash_like(image_id: int) -> str:
    """A stable 36-character stand-in for the image's blurhash (clients only store it)."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
    value = image_id * 0x9E3779B97F4A7C15 % (1 << 192)
    chars = []
    for _ in range(36):
        value, index = divmod(value, len(alphabet))
        chars.append(alphabet[index])
        value = value * 31 + index + 7
    return "U" + "".join(chars[1:])
