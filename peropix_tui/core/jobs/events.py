"""Job events and the bounded, coalescing stream that hands them to slow consumers.

Every change to a job is announced as a frozen `JobEvent`. Progress can arrive thousands of times a second
while a terminal redraws a few times a second, so an `EventStream` keeps at most one pending progress event
per job: a newer one replaces the older, and a consumer that falls behind sees the latest progress rather than
a backlog. State events are never dropped; events that are delivered keep the order in which they were
emitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Final, Literal

from peropix_tui.core.jobs.model import JobState, Progress

log = logging.getLogger(__name__)

EventKind = Literal["state", "progress", "log"]

NO_EXTRA: Final[Mapping[str, object]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A snapshot of one change; `message` is the failure message, the progress text or the log line."""

    job_id: int
    name: str
    kind: EventKind
    state: JobState
    progress: Progress
    message: str = ""
    extra: Mapping[str, object] = field(default_factory=lambda: NO_EXTRA)

    @staticmethod
    def freeze_extra(extra: Mapping[str, object]) -> Mapping[str, object]:
        return MappingProxyType(dict(extra)) if extra else NO_EXTRA


class _Slot:
    """A buffer cell; emptied in place when its progress event is superseded."""

    __slots__ = ("event",)

    def __init__(self, event: JobEvent) -> None:
        self.event: JobEvent | None = event


class EventStream:
    """An async iterator over job events with a bounded buffer.

    `maxsize` bounds the buffered progress and log events: once it is reached, new ones are dropped and
    counted in `dropped` (a coalesced progress event still replaces its predecessor). State events are always
    buffered; there are at most three per job. With `coalesce`, a pending progress event of a job is removed
    when a newer one of the same job arrives (counted in `replaced`); the newer one takes its place at the
    end. The stream ends after the manager closes and the buffer is drained, or when the consumer closes it.
    """

    def __init__(self, *, coalesce: bool, maxsize: int, on_close: Callable[[EventStream], None]) -> None:
        if maxsize < 1:
            raise ValueError(f"event stream maxsize must be >= 1, got {maxsize}")
        self._coalesce = coalesce
        self._maxsize = maxsize
        self._on_close = on_close
        self._slots: deque[_Slot] = deque()
        self._pending_progress: dict[int, _Slot] = {}
        self._live = 0
        self._ready = asyncio.Event()
        self._ended = False
        self._closed = False
        self.dropped = 0
        self.replaced = 0

    def __len__(self) -> int:
        """Events waiting to be read."""
        return self._live

    def push(self, event: JobEvent) -> None:
        """Buffer an event; called by the manager on the loop thread."""
        if self._ended:
            return
        progress = event.kind == "progress"
        if progress and self._coalesce:
            previous = self._pending_progress.pop(event.job_id, None)
            if previous is not None:
                previous.event = None
                self._live -= 1
                self.replaced += 1
        if event.kind != "state" and self._live >= self._maxsize:
            if not self.dropped:
                log.warning("job event consumer is falling behind; dropping progress and log events")
            self.dropped += 1
            return
        slot = _Slot(event)
        self._slots.append(slot)
        self._live += 1
        if progress and self._coalesce:
            self._pending_progress[event.job_id] = slot
        if len(self._slots) > 2 * self._live + 64:
            self._slots = deque(s for s in self._slots if s.event is not None)
        self._ready.set()

    def end(self) -> None:
        """No more events will come; the consumer still reads what is buffered."""
        self._ended = True
        self._ready.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> JobEvent:
        while True:
            while self._slots:
                event = self._slots.popleft().event
                if event is None:
                    continue
                self._live -= 1
                if event.kind == "progress":
                    # at most one live progress slot per job exists, so this was the pending one
                    self._pending_progress.pop(event.job_id, None)
                return event
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving events and drop what is buffered."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self._slots.clear()
        self._pending_progress.clear()
        self._live = 0
        self.end()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
