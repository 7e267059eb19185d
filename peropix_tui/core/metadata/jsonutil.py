"""JSON from untrusted chunks: parse errors and absurd nesting both read as "not JSON".

Real metadata is a few levels deep; a hostile file nesting thousands of levels would otherwise blow the
recursion limit later, in `copy.deepcopy`, `json.dumps` or the CLI's JSON output.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 64


def _shallow_enough(value: object) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def loads_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text`, or None when it is not valid JSON, not an object, or nested too deeply."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not _shallow_enough(value):
        return None
    return value
