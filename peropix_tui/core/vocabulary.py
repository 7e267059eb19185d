"""Completion candidates for the prompt editor: LoRA names now, tag lists and the collected vocabulary later.

A `Vocabulary` is a sorted, case-folded index; lookups are a binary search for the prefix, so completion keeps
up with typing even with hundreds of thousands of entries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str  # what gets inserted
    kind: str  # "lora", "tag", …: shown beside the candidate
    rank: int = 0  # higher first (e.g. a tag's post count)


class Vocabulary:
    """An immutable prefix index over candidates of one or more kinds."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        best: dict[tuple[str, str], Candidate] = {}
        for c in candidates:
            key = (c.text.casefold(), c.kind)
            if c.text and (key not in best or best[key].rank < c.rank):
                best[key] = c
        entries = sorted(best.values(), key=lambda c: (c.text.casefold(), -c.rank))
        self._keys = [c.text.casefold() for c in entries]
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def merged(self, other: Vocabulary) -> Vocabulary:
        return Vocabulary([*self._entries, *other._entries])

    def complete(self, prefix: str, *, kind: str | None = None, limit: int = 10) -> list[Candidate]:
        """Candidates starting with `prefix` (case-insensitive), best rank first, then alphabetical."""
        folded = prefix.casefold()
        if not folded:
            return []
        start = bisect.bisect_left(self._keys, folded)
        found: list[Candidate] = []
        for i in range(start, len(self._keys)):
            if not self._keys[i].startswith(folded):
                break
            entry = self._entries[i]
            if kind is None or entry.kind == kind:
                found.append(entry)
            if len(found) >= 2000:  # enough to rank; a one-letter prefix must stay fast
                break
        found.sort(key=lambda c: (-c.rank, len(c.text), c.text.casefold()))
        return found[:limit]


def lora_vocabulary(names: Iterable[str]) -> Vocabulary:
    return Vocabulary(Candidate(name, "lora") for name in names)
