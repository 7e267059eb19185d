"""How values are written into NovelAI's JSON bodies and files, the way the web writes them."""

from __future__ import annotations

import base64


def b64(data: bytes) -> str:
    """Bytes (images, vibe encodings) as the base64 text NovelAI's JSON carries."""
    return base64.b64encode(data).decode("ascii")


def json_number(value: float) -> int | float:
    """Whole numbers as JSON integers (5, not 5.0), as the web writes them; others unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
