"""A file path input that completes what is typed from the folder on disk, shell-like: the first matching entry is
offered as ghost text and → accepts it; folders end in "/" so the next part completes at once.

Listing a folder may be slow (a network mount), so completion runs in a thread and reads a bounded number of
entries; hidden entries are offered only once a "." is typed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from textual.suggester import Suggester
from textual.widgets import Input

MAX_LISTED: Final = 5000
"""Entries of one folder looked at for a completion."""


def complete_path(typed: str, suffixes: Iterable[str] = ()) -> str | None:
    """`typed` completed with the first entry of its folder (by name) that continues it, or None.

    Files are offered only with one of `suffixes` (any file when empty); folders always, with a trailing "/".
    """
    if not typed:
        return None
    head, sep, prefix = typed.rpartition(os.sep)
    folder = Path(head + sep).expanduser() if sep else Path(os.curdir)
    wanted = tuple(s.lower() for s in suffixes)
    best: str | None = None
    try:
        with os.scandir(folder) as listing:
            for count, entry in enumerate(listing):
                if count >= MAX_LISTED:
                    break
                name = entry.name
                if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
                    continue
                is_dir = entry.is_dir()
                if not is_dir and wanted and not name.lower().endswith(wanted):
                    continue
                candidate = name + os.sep if is_dir else name
                if candidate != prefix and (best is None or candidate < best):
                    best = candidate
    except OSError:
        return None
    return None if best is None else head + sep + best


class PathSuggester(Suggester):
    """Completes file paths from disk (never cached: folders change)."""

    def __init__(self, suffixes: Iterable[str] = ()) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.suffixes = tuple(suffixes)

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value, self.suffixes)


class PathInput(Input):
    """An Input for a file path, completed from disk (→ accepts the completion)."""

    def __init__(
        self,
        value: str = "",
        *,
        suffixes: Iterable[str] = (),
        placeholder: str = "",
        id: str | None = None,
    ) -> None:
        super().__init__(value, placeholder=placeholder, suggester=PathSuggester(suffixes), compact=True, id=id)
