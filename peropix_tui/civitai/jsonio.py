"""JSON as CivitAI sends it and as the collector writes it.

CivitAI bodies carry raw control characters inside strings (model names, prompts), so parsing allows them
(`strict=False`); everything written back (sidecars, model JSON, the log) is strict JSON: no NaN, no lone
surrogates, so any reader, including a strict one, can open it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from peropix_tui.civitai.errors import CivitaiError

MAX_DEPTH = 64


class JsonBodyError(CivitaiError):
    """A body that is not JSON."""


def parse_json(data: bytes | str, *, where: str) -> Any:
    """Parse a CivitAI body; control characters inside strings are accepted. `where` names it in errors."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        return json.loads(text, strict=False)
    except (ValueError, RecursionError) as exc:
        snippet = " ".join(text[:80].split())
        raise JsonBodyError(f"{where}: not JSON ({type(exc).__name__}): {snippet!r}") from None


def json_safe(value: Any, depth: int = 0) -> Any:
    """A copy that strict JSON can hold: NaN/inf become null, unencodable characters become '?'."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", errors="replace").decode("utf-8")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int):
        return value
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(json_safe(k, depth + 1)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)


def dump_json(value: Any, *, indent: int | None = 2) -> bytes:
    """Strict UTF-8 JSON (non-ASCII kept readable), newline-terminated when indented."""
    separators = (",", ":") if indent is None else None
    text = json.dumps(json_safe(value), ensure_ascii=False, indent=indent, allow_nan=False, separators=separators)
    return (text + "\n" if indent is not None else text).encode("utf-8")
