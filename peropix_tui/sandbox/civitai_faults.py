"""Faults the sandbox CivitAI server can be told to inject, each one a way real downloads go wrong.

A fault is queued with a number of uses (or forever) and matches requests by path (glob patterns, `*`
crosses `/`), by query values, and by model file id (the `fileId` a download asks for, or the file a
storage URL serves). Each matching request uses one up; every fault that fired is counted by kind.

Where each kind acts, and its default paths:
- the answer instead of the real one: `status`, `throttle`, `drop`, `delay` (the API and download routes);
  `login_page`, `early_access`, `gone`, `quota` (the download route); `html_body`, `expired_url` (storage);
- the body while it streams: `truncate`, `wrong_hash`, `range_ignored`, `slow` (storage; give image
  paths to use them on the image CDN);
- the JSON: `raw_control_chars` (the API);
- the cursor: `repeat_item`, `skip_item` (the two list routes).
"""

from __future__ import annotations

import enum
import fnmatch
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

API_GLOB: Final = "/api/v1/*"
DOWNLOAD_PREFIX: Final = "/api/download/models/"
DOWNLOAD_GLOB: Final = DOWNLOAD_PREFIX + "*"
STORAGE_PREFIX: Final = "/storage/model/"
STORAGE_GLOB: Final = STORAGE_PREFIX + "*"
CDN_PREFIX: Final = "/xG1nkqKTMzGDvpLrqFT7WA/"
CDN_GLOB: Final = CDN_PREFIX + "*"
B2_PREFIX: Final = "/file/civitai-media-cache/"
B2_GLOB: Final = B2_PREFIX + "*"
MODELS_PATH: Final = "/api/v1/models"
IMAGES_PATH: Final = "/api/v1/images"
MAX_FAULT_DELAY_S: Final = 600.0


class FaultError(ValueError):
    """A fault description that cannot be used (from the control endpoint or the Python API)."""


class FaultKind(enum.StrEnum):
    STATUS = "status"
    """Answer `status` with `{"error": message}`, `Cache-Control: no-store`, and `Retry-After` if set
    (a 503 burst: `Fault(STATUS, status=503, retry_after=2)` queued `times=5`)."""
    THROTTLE = "throttle"
    """The edge's 429: an HTML page, `Retry-After: retry_after` only when set."""
    DROP = "drop"
    """Close the connection without answering."""
    DELAY = "delay"
    """Wait `delay_s`, then answer normally."""
    LOGIN_PAGE = "login_page"
    """A download answers 307 to the HTML login page, as it does for a browser without a key."""
    EARLY_ACCESS = "early_access"
    """A download answers 403 Early Access with a deadline `deadline_s` from now."""
    GONE = "gone"
    """A download answers 410 (archived)."""
    QUOTA = "quota"
    """A download answers the 429 of the rolling 24-hour download quota."""
    HTML_BODY = "html_body"
    """Answer 200 `text/html` where a file was expected."""
    EXPIRED_URL = "expired_url"
    """Storage answers 403 `Request has expired` (an XML body), as for a presigned URL past its time."""
    TRUNCATE = "truncate"
    """Announce the whole body, send `after_bytes` of it (half by default), close the connection."""
    WRONG_HASH = "wrong_hash"
    """Serve the body with one byte changed, so its SHA256 differs from the API's."""
    RANGE_IGNORED = "range_ignored"
    """Answer a Range request with 200 and the whole body."""
    SLOW = "slow"
    """Drip the body at `rate` bytes per second (for interrupting a download half-way)."""
    RAW_CONTROL_CHARS = "raw_control_chars"
    """Write control characters inside JSON strings raw (except tab, CR, LF), as CivitAI sometimes does."""
    REPEAT_ITEM = "repeat_item"
    """The next page of a cursor walk starts with the last item of this page again."""
    SKIP_ITEM = "skip_item"
    """The next page of a cursor walk leaves out the item that should start it."""


ANSWER_KINDS: Final = frozenset(
    {
        FaultKind.STATUS,
        FaultKind.THROTTLE,
        FaultKind.DROP,
        FaultKind.DELAY,
        FaultKind.LOGIN_PAGE,
        FaultKind.EARLY_ACCESS,
        FaultKind.GONE,
        FaultKind.QUOTA,
        FaultKind.HTML_BODY,
        FaultKind.EXPIRED_URL,
    }
)
CURSOR_KINDS: Final = frozenset({FaultKind.REPEAT_ITEM, FaultKind.SKIP_ITEM})
_API_AND_DOWNLOAD: Final = frozenset({API_GLOB, DOWNLOAD_GLOB})
_DEFAULT_PATHS: Final[Mapping[FaultKind, frozenset[str]]] = {
    FaultKind.STATUS: _API_AND_DOWNLOAD,
    FaultKind.THROTTLE: _API_AND_DOWNLOAD,
    FaultKind.DROP: _API_AND_DOWNLOAD,
    FaultKind.DELAY: _API_AND_DOWNLOAD,
    FaultKind.LOGIN_PAGE: frozenset({DOWNLOAD_GLOB}),
    FaultKind.EARLY_ACCESS: frozenset({DOWNLOAD_GLOB}),
    FaultKind.GONE: frozenset({DOWNLOAD_GLOB}),
    FaultKind.QUOTA: frozenset({DOWNLOAD_GLOB}),
    FaultKind.HTML_BODY: frozenset({STORAGE_GLOB}),
    FaultKind.EXPIRED_URL: frozenset({STORAGE_GLOB}),
    FaultKind.TRUNCATE: frozenset({STORAGE_GLOB}),
    FaultKind.WRONG_HASH: frozenset({STORAGE_GLOB}),
    FaultKind.RANGE_IGNORED: frozenset({STORAGE_GLOB}),
    FaultKind.SLOW: frozenset({STORAGE_GLOB}),
    FaultKind.RAW_CONTROL_CHARS: frozenset({API_GLOB}),
    FaultKind.REPEAT_ITEM: frozenset({MODELS_PATH, IMAGES_PATH}),
    FaultKind.SKIP_ITEM: frozenset({MODELS_PATH, IMAGES_PATH}),
}
STATUS_MESSAGES: Final[Mapping[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "File not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    status: int = 503
    message: str | None = None
    retry_after: int | None = None
    """Seconds for a `Retry-After` header (STATUS, THROTTLE, QUOTA); None sends none."""
    delay_s: float = 0.0
    after_bytes: int | None = None
    """TRUNCATE: body bytes sent before the connection closes; None is half the body."""
    rate: int = 64 * 1024
    """SLOW: bytes per second."""
    deadline_s: float = 86_400.0
    """EARLY_ACCESS: how far in the future the announced deadline is."""
    paths: frozenset[str] = field(default_factory=frozenset)
    """Glob patterns of the paths it applies to; empty means the kind's default paths."""
    query: Mapping[str, str] = field(default_factory=dict)
    """Query values a request must carry (`{"sort": "Newest"}`); empty matches any query."""
    file_id: int | None = None
    """Only downloads and storage answers of this model file."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FaultKind):
            raise FaultError(f"unknown fault kind {self.kind!r}")
        if not 400 <= self.status <= 599:
            raise FaultError(f"fault status must be 400-599, not {self.status}")
        if not 0 <= self.delay_s <= MAX_FAULT_DELAY_S:
            raise FaultError(f"fault delay must be 0-{MAX_FAULT_DELAY_S:g} s, not {self.delay_s}")
        if self.retry_after is not None and self.retry_after < 0:
            raise FaultError("retry_after must be 0 or more seconds")
        if self.after_bytes is not None and self.after_bytes < 0:
            raise FaultError("after_bytes must be 0 or more")
        if self.rate < 1:
            raise FaultError("rate must be at least 1 byte per second")
        object.__setattr__(self, "paths", frozenset(self.paths))
        object.__setattr__(self, "query", dict(self.query))

    def applies_to(self, path: str, query: Mapping[str, list[str]], file_id: int | None) -> bool:
        if self.file_id is not None and self.file_id != file_id:
            return False
        if any(value not in query.get(key, ()) for key, value in self.query.items()):
            return False
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.paths or _DEFAULT_PATHS[self.kind])

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
        query = data.get("query") or {}
        if not isinstance(query, dict) or not all(isinstance(v, str) for v in query.values()):
            raise FaultError("query must be an object of strings")
        values: dict[str, Any] = {}
        for key, kind_of in (
            ("status", int),
            ("retry_after", int),
            ("delay_s", float),
            ("after_bytes", int),
            ("rate", int),
            ("deadline_s", float),
            ("file_id", int),
        ):
            value = data.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultError(f"{key} must be a number")
            values[key] = kind_of(value)
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise FaultError("message must be a string")
        return cls(kind, message=message, paths=frozenset(paths), query=query, **values), times


@dataclass(slots=True)
class _Entry:
    fault: Fault
    remaining: int | None


class FaultPlan:
    """Queued faults, consumed in order by matching requests, and how often each kind fired; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._fired: Counter[FaultKind] = Counter()

    def add(self, fault: Fault, times: int | None = 1) -> None:
        if times is not None and times < 1:
            raise FaultError("times must be a positive integer or None (until cleared)")
        with self._lock:
            self._entries.append(_Entry(fault, times))

    def take(
        self,
        kinds: Iterable[FaultKind],
        path: str,
        query: Mapping[str, list[str]],
        file_id: int | None = None,
    ) -> Fault | None:
        """The first queued fault of one of `kinds` matching the request, using up one of its uses."""
        wanted = frozenset(kinds)
        with self._lock:
            for entry in self._entries:
                if entry.fault.kind in wanted and entry.fault.applies_to(path, query, file_id):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            self._entries.remove(entry)
                    self._fired[entry.fault.kind] += 1
                    return entry.fault
        return None

    def fired(self, kind: FaultKind | None = None) -> int:
        """How many times faults of `kind` (of any kind for None) were applied."""
        with self._lock:
            return self._fired[kind] if kind is not None else sum(self._fired.values())

    def pending(self) -> list[tuple[Fault, int | None]]:
        """The faults still queued, with their uses left."""
        with self._lock:
            return [(entry.fault, entry.remaining) for entry in self._entries]

    def clear(self) -> None:
        """Drop every queued fault (the counts stay)."""
        with self._lock:
            self._entries.clear()
