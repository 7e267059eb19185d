"""Bounded zlib/gzip inflation: a few kilobytes of hostile input must never become gigabytes in memory."""

from __future__ import annotations

import zlib

from peropix_tui.core.metadata.errors import MetadataError

TEXT_LIMIT = 8 * 1024 * 1024
"""Largest decompressed zTXt/iTXt text accepted (a NovelAI Comment is a few kilobytes)."""

TEXT_TOTAL_LIMIT = 32 * 1024 * 1024
"""Largest total of text read from one file, whatever the number of chunks."""

STEALTH_LIMIT = 16 * 1024 * 1024
"""Largest decompressed stealth payload accepted."""

ZLIB = zlib.MAX_WBITS
GZIP = zlib.MAX_WBITS | 16
ZLIB_OR_GZIP = zlib.MAX_WBITS | 32


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MiB" if count >= 1024 * 1024 else f"{count} byte"


def inflate_capped(data: bytes, limit: int, *, wbits: int = ZLIB, what: str = "compressed data") -> bytes:
    """Decompress `data`, refusing output larger than `limit` bytes and truncated or corrupt streams."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MetadataError(f"{what} is not a valid compressed stream ({exc})") from exc
    if len(out) > limit:
        raise MetadataError(f"{what} inflates past the {_size(limit)} limit")
    if not inflater.eof:
        raise MetadataError(f"{what} is truncated")
    return out
