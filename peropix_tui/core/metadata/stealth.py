"""Stealth metadata: a payload hidden in the least significant bit of the alpha channel.

NovelAI (and the A1111 stealth-pnginfo extension) write it column by column (x outer, y inner), most
significant bit first: a 15-byte magic, a 32-bit big-endian length in *bits*, then the payload (gzip for
`stealth_pngcomp`, raw UTF-8 for `stealth_pnginfo`). It survives chunk stripping and conversion to lossless
WebP, which is why a strip has to clear the alpha bits too.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from peropix_tui.core.metadata.errors import MetadataError
from peropix_tui.core.metadata.inflate import STEALTH_LIMIT, ZLIB_OR_GZIP, inflate_capped

MAGIC_COMPRESSED = b"stealth_pngcomp"
MAGIC_PLAIN = b"stealth_pnginfo"
_MAGIC_BITS = len(MAGIC_COMPRESSED) * 8
HEADER_BITS = _MAGIC_BITS + 32

Alpha = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class StealthPayload:
    compressed: bool
    text: str


def alpha_channel(image: Image.Image) -> Alpha | None:
    """The alpha plane as an (H, W) uint8 array, or None when the image has no alpha channel."""
    if image.mode in ("RGBA", "LA"):
        return np.asarray(image.getchannel("A"))
    if image.mode in ("RGBa", "La", "PA"):
        return np.asarray(image.convert("RGBA").getchannel("A"))
    return None


def _bits_bytes(alpha: Alpha, nbits: int) -> bytes:
    """The first `nbits` alpha LSBs in column-major order, packed MSB-first; only needed columns are read."""
    height = alpha.shape[0]
    columns = math.ceil(nbits / height)
    lsb = alpha[:, :columns].T.reshape(-1)[:nbits] & 1
    return np.packbits(lsb).tobytes()


def _magic(alpha: Alpha) -> bytes | None:
    height, width = alpha.shape
    if height * width < HEADER_BITS:
        return None
    magic = _bits_bytes(alpha, _MAGIC_BITS)
    return magic if magic in (MAGIC_COMPRESSED, MAGIC_PLAIN) else None


def has_stealth(alpha: Alpha) -> bool:
    return _magic(alpha) is not None


def read_stealth(alpha: Alpha) -> StealthPayload | None:
    """Decode the payload hidden in `alpha`; None when there is no magic.

    Raises `MetadataError` when a magic is present but the length or payload is unusable.
    """
    magic = _magic(alpha)
    if magic is None:
        return None
    height, width = alpha.shape
    header = _bits_bytes(alpha, HEADER_BITS)
    nbits = int.from_bytes(header[len(magic) :], "big")
    room = height * width - HEADER_BITS
    if nbits == 0 or nbits % 8 or nbits > room:
        raise MetadataError(f"stealth header declares {nbits} bits but the image holds at most {room}")
    raw = _bits_bytes(alpha, HEADER_BITS + nbits)[HEADER_BITS // 8 :]
    compressed = magic == MAGIC_COMPRESSED
    if compressed:
        raw = inflate_capped(raw, STEALTH_LIMIT, wbits=ZLIB_OR_GZIP, what="stealth payload")
    elif len(raw) > STEALTH_LIMIT:
        raise MetadataError("stealth payload is larger than the 16 MiB limit")
    try:
        return StealthPayload(compressed, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MetadataError("stealth payload is not valid UTF-8") from exc


def stealth_payload(fields: Mapping[str, str]) -> bytes:
    """The gzip payload NovelAI embeds: the text-chunk dict without `Title`, as JSON."""
    body = json.dumps({k: v for k, v in fields.items() if k != "Title"}).encode("utf-8")
    return gzip.compress(body, mtime=0)


def embed_stealth(image: Image.Image, fields: Mapping[str, str]) -> Image.Image:
    """A copy of `image` as RGBA with `fields` written as `stealth_pngcomp`; RGB values are not changed.

    Only the LSB of the touched pixels changes: an opaque image gets alpha 254 | bit exactly as NovelAI writes
    it, and a transparent one keeps its transparency.
    """
    payload = stealth_payload(fields)
    stream = MAGIC_COMPRESSED + (len(payload) * 8).to_bytes(4, "big") + payload
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    rgba = image.convert("RGBA")
    width, height = rgba.size
    if bits.size > width * height:
        raise MetadataError(f"image {width}x{height} is too small for {bits.size} bits of stealth metadata")
    alpha = np.asarray(rgba.getchannel("A"))
    columns = np.ascontiguousarray(alpha.T)
    flat = columns.reshape(-1)
    flat[: bits.size] = (flat[: bits.size] & 0xFE) | bits
    rgba.putalpha(Image.fromarray(np.ascontiguousarray(columns.T)))
    return rgba


def clear_alpha_lsb(image: Image.Image) -> Image.Image | None:
    """A copy whose alpha has every LSB set (NovelAI's 254/255 alpha becomes 255), or None if nothing changes.

    Setting the bit rather than forcing 255 keeps genuine transparency while destroying any hidden payload.
    """
    alpha = alpha_channel(image)
    if alpha is None or bool((alpha & 1).all()):
        return None
    out = image.copy() if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    out.putalpha(Image.fromarray(alpha | np.uint8(1)))
    return out
