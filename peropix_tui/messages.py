"""Messages that cross screens. They are posted to the app, which routes them: screens never call each other.

`ApplySettings` goes from the History pane to the Generate screen (the app switches mode and forwards it), and so
does `UseImage` (an image file as the img2img or inpaint base, a vibe or the character reference);
`HistoryAdded` is posted by whatever saved an image into the history store, so the History pane shows it
without a rescan; `HistoryStatus` carries the app's history worker's news to the app thread, which publishes it
as a `HistoryEvent` on `app.history_signal` for the screens that follow the store.
`CollectedVocabularyChanged` tells the app that an update rewrote the collected vocabulary's cache; the app
publishes the cache's path on `app.vocabulary_signal`, and the Generate screen's editors reload their vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from textual.message import Message

if TYPE_CHECKING:
    from peropix_tui.core.metadata import ImageMetadata

ApplyWhat = Literal["all", "prompt", "seed"]
"""What to take from an image: every setting, the prompts (with their quality-tag and preset flags), the seed."""

UseAs = Literal["img2img", "inpaint", "vibe", "reference"]
"""What an image file becomes in the next generation: the img2img base, the inpaint base (a mask is asked for next),
a vibe, or the character reference."""

HistoryEventKind = Literal["opened", "progress", "imported", "added", "failed"]


class ApplySettings(Message, bubble=False):
    """Fill the Generate editors and parameter form from an image's settings.

    Post it to the app (`app.post_message`): the app shows the Generate mode and hands it on. It does not
    bubble, so the Generate screen's handler is the last to see it.
    """

    def __init__(self, metadata: ImageMetadata, what: ApplyWhat, source: str = "") -> None:
        super().__init__()
        self.metadata = metadata
        self.what: ApplyWhat = what
        self.source = source
        """Where the settings come from (a file name), for the notification."""

    def forwarded(self) -> ApplySettings:
        """A fresh copy for the next recipient: a handled message is not posted again."""
        return ApplySettings(self.metadata, self.what, self.source)


class UseImage(Message, bubble=False):
    """Use an image file as an input of the next generation (see `UseAs`).

    Post it to the app: like `ApplySettings`, it shows the Generate mode and hands the message on.
    """

    def __init__(self, path: Path, use: UseAs, source: str = "") -> None:
        super().__init__()
        self.path = path
        self.use: UseAs = use
        self.source = source
        """Where the image comes from (a file name), for the notification."""

    def forwarded(self) -> UseImage:
        return UseImage(self.path, self.use, self.source)


class HistoryAdded(Message):
    """An image was indexed in the history store (post it to the app with the entry's id)."""

    def __init__(self, entry_id: int) -> None:
        super().__init__()
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """What happened to the history store: opened, import progress or result, an entry added, a failure."""

    kind: HistoryEventKind
    entry_id: int | None = None
    done: int = 0
    total: int = 0
    added: int = 0
    skipped: int = 0
    removed: int = 0
    message: str = ""

    @property
    def changes_entries(self) -> bool:
        return self.kind in ("opened", "imported", "added")


class HistoryStatus(Message):
    """A `HistoryEvent` on its way from the history worker thread to the app."""

    def __init__(self, event: HistoryEvent) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        # Import progress arrives faster than it can be shown: a newer count replaces an older one.
        return isinstance(message, HistoryStatus) and message.event.kind == "progress" and self.event.kind == "progress"


class CollectedVocabularyChanged(Message):
    """The collected vocabulary's cache at `path` was rewritten (post it to the app; safe from any thread)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
