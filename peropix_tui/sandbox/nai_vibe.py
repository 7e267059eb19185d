"""Vibe encodings the sandbox hands out: deterministic, and marked with the model family they were made for.

A real encoding is opaque; the sandbox's carries a short header naming its family so that sending it with a
model of another family is refused the way NovelAI refuses it, while encodings from elsewhere (imported
`.naiv4vibe` files) are accepted as they are.
"""

from __future__ import annotations

import hashlib
from typing import Final

MAGIC: Final = b"PPXVIBE1"
FAMILY_FIELD: Final = 16
BODY_BLOCKS: Final = 64
"""sha256 blocks after the header: 2 KiB, the order of size of a real encoding."""


def encode_vibe(image: bytes, family: str, information_extracted: float, mask: bytes | None) -> bytes:
    """The encoding of `image` for a model family: the same inputs always give the same bytes."""
    seed = hashlib.sha256()
    for part in (image, family.encode(), f"{information_extracted:.2f}".encode(), mask or b""):
        seed.update(len(part).to_bytes(8, "big"))
        seed.update(part)
    digest = seed.digest()
    body = b"".join(hashlib.sha256(digest + n.to_bytes(4, "big")).digest() for n in range(BODY_BLOCKS))
    return MAGIC + family.encode().ljust(FAMILY_FIELD, b"\0") + body


def encoding_family(data: bytes) -> str | None:
    """The family a sandbox encoding was made for; None for bytes the sandbox did not make."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + FAMILY_FIELD:
        return None
    return data[len(MAGIC) : len(MAGIC) + FAMILY_FIELD].rstrip(b"\0").decode("ascii", "replace")
