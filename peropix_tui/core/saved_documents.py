"""The small versioned JSON files users save named things in (presets, slot sets): one shape for all of them.

Each file is a JSON object with a `format` name and a `version`; a file from a newer peropix is refused rather
than half read, and keys this version does not know are left to the caller to ignore. Names are what people
type: trimmed, bounded, without control characters. Every refusal is one line, raised as the caller's error kind
and starting with the file it comes from.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from peropix_tui.core.errors import PeropixError

MAX_NAME: Final = 80

ErrorKind = Callable[[str], PeropixError]


def json_type(value: object) -> str:
    """How a JSON value is called in messages: "an object", "a list", "null", "true/false", "int"…"""
    return {dict: "an object", list: "a list", type(None): "null", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def check_name(value: object, what: str, error: ErrorKind) -> str:
    """`value` trimmed, when it is usable as the name of a saved thing; `what` starts the messages ("name")."""
    if not isinstance(value, str):
        raise error(f"{what} must be text, not {json_type(value)}")
    name = value.strip()
    if not name:
        raise error(f"{what} must not be empty")
    if len(name) > MAX_NAME:
        raise error(f"{what} {name[:20]!r}… is longer than {MAX_NAME} characters")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise error(f"{what} {name!r} holds a control character")
    return name


def dump_document(fmt: str, version: int, body: Mapping[str, Any]) -> bytes:
    """The file's bytes: `format`, `version`, then `body`, indented for people who open it."""
    return orjson.dumps({"format": fmt, "version": version, **body}, option=orjson.OPT_INDENT_2) + b"\n"


def load_document(
    data: bytes,
    source: str,
    error: ErrorKind,
    *,
    version: int,
    fmt: str | None = None,
    what: str = "",
) -> dict[str, Any]:
    """The JSON object of a file written with `dump_document`, its envelope checked.

    `fmt` given, the `format` key must name it (`what` says what such a file is: "peropix presets file"); the
    version must be one this peropix reads, `version` at most.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise error(f"{source}: must hold a JSON object, not {json_type(document)}")
    if fmt is not None and document.get("format") != fmt:
        raise error(f'{source}: not a {what or fmt} ("format" is not {fmt!r})')
    found = document.get("version")
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise error(f"{source}: needs a version number ({version}), found {found!r}")
    if found > version:
        raise error(f"{source}: version {found} was written by a newer peropix (this one reads {version})")
    return document


def list_field(document: Mapping[str, Any], key: str, source: str, error: ErrorKind) -> list[Any] | None:
    """`document[key]` when it is a list, None when the key is absent; anything else is refused."""
    entries = document.get(key)
    if entries is not None and not isinstance(entries, list):
        raise error(f"{source}: {key!r} must be a list, not {json_type(entries)}")
    return entries
