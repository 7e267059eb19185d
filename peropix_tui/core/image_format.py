"""Which image container a byte string holds, told by its magic bytes alone.

File names and servers' Content-Type headers are not trusted, the first 12 bytes are. Free of Pillow and numpy
so that the request types and the HTTP client can use it without loading the image codecs.
"""

from __future__ import annotations

from typing import Final, Literal

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def sniff_image_format(data: bytes) -> Literal["png", "webp", "jpeg"] | None:
    """The container of `data` ("png", "webp" or "jpeg") from its first 12 bytes; None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if is_webp(data):
        return "webp"
    if is_jpeg(data):
        return "jpeg"
    return None
