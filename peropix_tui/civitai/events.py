"""What a collector run reports as it goes, and the tally it ends with.

The run only emits these plain objects; the CLI turns them into progress bars or lines, and the TUI can turn
them into widgets, so neither the run nor the events know how they are shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ItemKind = Literal["model", "image"]
Level = Literal["info", "warning", "error"]

VERIFIED = "verified"
"""Tally word for a file that was already there and checked, so not downloaded again."""


def item_key(kind: ItemKind, ident: int) -> str:
    """The one name of an item across its events (queued, started, progress, finished): `file:<id>` for a
    model file, `image:<id>` for an image; ids of the two kinds may collide, keys do not."""
    return f"file:{ident}" if kind == "model" else f"image:{ident}"


@dataclass(frozen=True, slots=True)
class Notice:
    message: str
    level: Level = "info"


@dataclass(frozen=True, slots=True)
class Phase:
    """What the run is busy with between items, in a few words ("checking the API key")."""

    message: str


@dataclass(frozen=True, slots=True)
class CreatorStarted:
    username: str
    site: str


@dataclass(frozen=True, slots=True)
class CreatorPlanned:
    """What one creator's run will do; image counts are None until the image lists have been walked."""

    username: str
    models: int
    versions: int
    files_todo: int
    bytes_todo: int
    files_verified: int
    files_waiting: int
    images_todo: int | None = None
    images_verified: int | None = None
    images_waiting: int | None = None


@dataclass(frozen=True, slots=True)
class ImagesFound:
    """One version's image list was walked: `count` images not seen before in this model, `todo` of them
    to download (the rest were settled without one)."""

    username: str
    version_id: int
    count: int
    todo: int


@dataclass(frozen=True, slots=True)
class FileQueued:
    """An item waits for a download worker: every model file of a creator when its downloads begin, each
    image as the walk of the image lists hands it to the (bounded) image queue."""

    key: str
    kind: ItemKind
    name: str
    model: str
    total: int | None = None


@dataclass(frozen=True, slots=True)
class FileStarted:
    """A model file's transfer begins; `FileProgress` with the same key follows."""

    key: str
    name: str
    total: int | None


@dataclass(frozen=True, slots=True)
class ImageStarted:
    """An image worker took a queued image; images report no byte progress (they are small)."""

    key: str


@dataclass(frozen=True, slots=True)
class FileProgress:
    key: str
    done: int
    total: int | None


@dataclass(frozen=True, slots=True)
class ItemFinished:
    """One model file or image is settled; `status` is a log status or `verified`. `model` names the model it
    belongs to; `retry_after` is when a deferred item becomes due."""

    kind: ItemKind
    ident: int
    name: str
    status: str
    reason: str | None = None
    info: str = ""
    size: int | None = None
    key: str | None = None
    model: str = ""
    retry_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreatorFinished:
    username: str
    tally: Tally


Event = (
    Notice
    | Phase
    | CreatorStarted
    | CreatorPlanned
    | ImagesFound
    | FileQueued
    | FileStarted
    | ImageStarted
    | FileProgress
    | ItemFinished
    | CreatorFinished
)
EventSink = Callable[[Event], None]


@dataclass(slots=True)
class Tally:
    """Counts of settled items by `(kind, status)`, failure reasons by count, and creators that failed whole."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    creator_errors: list[str] = field(default_factory=list)
    listing_errors: int = 0

    def add(self, event: ItemFinished) -> None:
        self.counts[(event.kind, event.status)] += 1
        if event.reason and event.status not in ("done", VERIFIED):
            self.reasons[event.reason] += 1

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.reasons.update(other.reasons)
        self.creator_errors.extend(other.creator_errors)
        self.listing_errors += other.listing_errors

    def count(self, status: str, kind: ItemKind | None = None) -> int:
        return sum(n for (k, s), n in self.counts.items() if s == status and (kind is None or k == kind))

    @property
    def failed(self) -> int:
        """Items that did not make it and will not without help: failures and hash mismatches."""
        return self.count("failed") + self.count("hash_mismatch") + self.listing_errors + len(self.creator_errors)

    @property
    def deferred(self) -> int:
        return self.count("deferred")
