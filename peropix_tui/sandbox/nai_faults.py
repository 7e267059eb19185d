"""Faults the sandbox can be told to inject, so clients can be tested against every way a request fails.

A fault is queued with a number of uses (or forever) and a set of paths; each matching request consumes one
use. Most faults replace the answer before any work is done (nothing is charged); a truncated ZIP and a
mid-stream error happen after the images are made, where they happen in real life.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

GENERATE_PATH: Final = "/ai/generate-image"
STREAM_PATH: Final = "/ai/generate-image-stream"
ENCODE_PATH: Final = "/ai/encode-vibe"
SUBSCRIPTION_PATH: Final = "/user/subscription"
GENERATION_PATHS: Final = frozenset({GENERATE_PATH, STREAM_PATH, ENCODE_PATH})
STATUS_MESSAGES: Final[Mapping[int, str]] = {
    429: "Concurrent generation is locked",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class FaultError(ValueError):
    """A fault description that cannot be used (from the control endpoint or the Python API)."""


class FaultKind(enum.StrEnum):
    STATUS = "status"
    """Answer `status` with NovelAI's JSON error body."""
    DROP = "drop"
    """Send the start of an answer, then close the connection."""
    GARBAGE = "garbage"
    """Answer 200 with an HTML page, as a proxy or Cloudflare block does."""
    DELAY = "delay"
    """Wait `delay_s`, then answer normally."""
    TRUNCATED_ZIP = "truncated_zip"
    """Make the images, then send only the first half of the ZIP."""
    STREAM_ERROR = "stream_error"
    """Make the images, then end the stream with an `error` frame after `after_frames` previews."""


# Faults that stand in for the whole answer; the others apply once the answer is being made.
UP_FRONT: Final = frozenset({FaultKind.STATUS, FaultKind.DROP, FaultKind.GARBAGE, FaultKind.DELAY})
_DEFAULT_PATHS: Final[Mapping[FaultKind, frozenset[str]]] = {
    FaultKind.TRUNCATED_ZIP: frozenset({GENERATE_PATH}),
    FaultKind.STREAM_ERROR: frozenset({STREAM_PATH}),
}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    status: int = 500
    message: str | None = None
    delay_s: float = 0.0
    after_frames: int = 1
    paths: frozenset[str] = field(default_factory=frozenset)
    """Paths it applies to; empty means the generation paths (or the one path the kind makes sense on)."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FaultKind):
            raise FaultError(f"unknown fault kind {self.kind!r}")
        if not 400 <= self.status <= 599:
            raise FaultError(f"fault status must be 400-599, not {self.status}")
        if not 0 <= self.delay_s <= 600:
            raise FaultError(f"fault delay must be 0-600 s, not {self.delay_s}")
        if self.after_frames < 0:
            raise FaultError("after_frames must be 0 or more")
        object.__setattr__(self, "paths", frozenset(self.paths))

    def applies_to(self, path: str) -> bool:
        return path in (self.paths or _DEFAULT_PATHS.get(self.kind, GENERATION_PATHS))

    @property
    def error_message(self) -> str:
        return self.message or STATUS_MESSAGES.get(self.status, "Error")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> tuple[Fault, int | None]:
        """A fault and its number of uses (None = until cleared) from a control-endpoint body."""
        try:
            kind = FaultKind(str(data.get("kind")))
        except ValueError as exc:
            known = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {data.get('kind')!r} (known: {known})") from exc
        times = data.get("times", 1)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise FaultError("times must be a positive integer or null (until cleared)")
        paths = data.get("paths") or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise FaultError("paths must be a list of strings")
        numbers = {"status": int, "delay_s": float, "after_frames": int}
        values: dict[str, Any] = {}
        for key, kind_of in numbers.items():
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise FaultError(f"{key} must be a number")
                values[key] = kind_of(value)
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise FaultError("message must be a string")
        return cls(kind, message=message, paths=frozenset(paths), **values), times


@dataclass(slots=True)
class _Entry:
    fault: Fault
    remaining: int | None


class FaultPlan:
    """Queued faults, consumed in order by matching requests; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def add(self, fault: Fault, times: int | None = 1) -> None:
        if times is not None and times < 1:
            raise FaultError("times must be a positive integer or None (until cleared)")
        with self._lock:
            self._entries.append(_Entry(fault, times))

    def take(self, path: str, kinds: Iterable[FaultKind]) -> Fault | None:
        """The first queued fault of one of `kinds` for `path`, using up one of its uses."""
        wanted = frozenset(kinds)
        with self._lock:
            for entry in self._entries:
                if entry.fault.kind in wanted and entry.fault.applies_to(path):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            self._entries.remove(entry)
                    return entry.fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
