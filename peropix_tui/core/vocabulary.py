"""Completion candidates for the prompt editor: LoRA names, wildcard file names, tag lists and the collected vocabulary.

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
    detail: str = ""  # shown while the candidate is offered (category, post count, alias)
    match: str | None = None  # what the typed prefix is matched against, when not `text` (an alias)

    @property
    def key(self) -> str:
        return fold(self.match if self.match is not None else self.text)


def fold(text: str) -> str:
    """Matching form: case-folded, underscores as spaces, so `long_h` and `Long h` find `long hair`."""
    return text.casefold().replace("_", " ")


class Vocabulary:
    """An immutable prefix index over candidates of one or more kinds."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        best: dict[tuple[str, str, str], Candidate] = {}
        for c in candidates:
            key = (c.key, c.text, c.kind)
            if c.text and (key not in best or best[key].rank < c.rank):
                best[key] = c
        entries = sorted(best.values(), key=lambda c: (c.key, -c.rank))
        self._keys = [c.key for c in entries]
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def merged(self, other: Vocabulary) -> Vocabulary:
        return Vocabulary([*self._entries, *other._entries])

    def complete(self, prefix: str, *, kind: str | None = None, limit: int = 10) -> list[Candidate]:
        """Candidates whose text or alias starts with `prefix`, best rank first; one entry per inserted text."""
        folded = fold(prefix)
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
        found.sort(key=lambda c: (-c.rank, c.match is not None, len(c.text), c.text.casefold()))
        unique: dict[tuple[str, str], Candidate] = {}
        for c in found:
            unique.setdefault((c.text, c.kind), c)
        return list(unique.values())[:limit]


def lora_vocabulary(names: Iterable[str]) -> Vocabulary:
    return Vocabulary(Candidate(name, "lora") for name in names)


def wildcard_candidates(names: Iterable[str]) -> list[Candidate]:
    """Wildcard file names, completed after `__` (the editor adds the closing `__`)."""
    return [Candidate(name, "wildcard", detail="wildcard file") for name in names]
