"""What a job is: its state machine, progress, timestamps and outcome.

`Job` objects are owned by the `JobManager`, which is their only writer; everyone else reads them. Consumers
that need a stable view take the frozen `JobEvent`s instead.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from peropix_tui.core.jobs.context import JobContext

T = TypeVar("T")

JobFn = Callable[["JobContext"], Awaitable[T]]

LOG_LINES_KEPT: Final = 200


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self]

    def can_become(self, new: JobState) -> bool:
        return new in TRANSITIONS[self]


TRANSITIONS: Final[Mapping[JobState, frozenset[JobState]]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """A state change the table forbids; always a bug in the manager, never a user error."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """A moment as both clocks: monotonic for durations, wall for display and history."""

    mono: float
    wall: float

    @classmethod
    def now(cls) -> Stamp:
        return cls(time.monotonic(), time.time())


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job is: `done` of `total` units (steps, bytes, files); `total` None when unknown."""

    done: float = 0
    total: float | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.done) and self.done >= 0):
            raise ValueError(f"progress done must be a finite number >= 0, got {self.done!r}")
        if self.total is not None and not (math.isfinite(self.total) and self.total >= 0):
            raise ValueError(f"progress total must be None or a finite number >= 0, got {self.total!r}")

    @property
    def fraction(self) -> float | None:
        """0..1 when the total is known and non-zero, else None (show an indeterminate bar)."""
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)


@dataclass(frozen=True, slots=True)
class JobFailure:
    """Why a job failed: the one-line message users see and the exception for logs and tests."""

    message: str
    exception: BaseException
    internal: bool  # True when the exception is not a PeropixError, i.e. a bug


@dataclass(eq=False)
class Job(Generic[T]):
    """One unit of work and everything known about it; fields are written by the manager only."""

    id: int
    name: str
    kind: str
    group: str | None
    fn: JobFn[T] = field(repr=False)
    attempt: int = 1
    retry_of: int | None = None
    state: JobState = JobState.QUEUED
    created: Stamp = field(default_factory=Stamp.now)
    started: Stamp | None = None
    finished: Stamp | None = None
    progress: Progress = field(default_factory=Progress)
    result: T | None = None
    failure: JobFailure | None = None
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT), repr=False)

    @property
    def elapsed(self) -> float | None:
        """Seconds spent running so far (or in total once finished); None before it starts."""
        if self.started is None:
            return None
        end = self.finished.mono if self.finished is not None else time.monotonic()
        return end - self.started.mono

    def advance(self, new: JobState) -> None:
        """Move to `new`, stamping start and finish; raises `IllegalTransitionError` outside the table."""
        if not self.state.can_become(new):
            raise IllegalTransitionError(f"job {self.id}: {self.state} -> {new} is not allowed")
        self.state = new
        if new is JobState.RUNNING:
            self.started = Stamp.now()
        elif new.terminal:
            self.finished = Stamp.now()
