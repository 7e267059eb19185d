"""The per-creator download log the collector writes: what is done, what failed and why, what waits.

It is the same file the Downloads screen reads (`download_logs/<user>/<user>_download_log.json`) and keeps the
long-standing `success` (`{id, type, path, size}`) and `failed` (`{id, type, reason, info}`) lists, so an
older log is read as it is and older readers can read ours. Entries carry more than those fields: `status`
(`failed`, `skipped_permanent`, `deferred`, `hash_mismatch`), `retry_after` for deferrals, attempts, hashes
and ids. `models` remembers which folder and file names were given to which ids, so reruns land in the
same place. Unknown keys, top-level or in entries, are kept.

Writes are atomic (temp file, fsync, rename) and happen while the run goes, at most every `save_interval_s`,
not only at the end, so a killed run loses at most a few seconds of bookkeeping, and the files themselves
are verified on disk before the log is believed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from peropix_tui.civitai.download_log import IMAGE_TYPE, MAX_LOG_BYTES, log_path
from peropix_tui.civitai.errors import CivitaiError
from peropix_tui.civitai.jsonio import JsonBodyError, dump_json, parse_json
from peropix_tui.civitai.layout import user_folder_name
from peropix_tui.core.atomicio import atomic_write_bytes

log = logging.getLogger(__name__)

SCHEMA = 1
DEFAULT_SAVE_INTERVAL_S = 2.0
Kind = Literal["model", "image"]


class Status(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped_permanent"
    DEFERRED = "deferred"
    HASH_MISMATCH = "hash_mismatch"


class LogError(CivitaiError):
    """A download log that cannot be written."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: Any) -> datetime | None:
    """An ISO 8601 moment (a trailing Z is fine), as aware UTC; None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(slots=True)
class Entry:
    """One file's state. `id` is the file id for model files, the image id for images."""

    kind: Kind
    id: str
    type: str
    status: Status
    path: str | None = None
    size: int | None = None
    reason: str | None = None
    info: str = ""
    retry_after: datetime | None = None
    attempts: int = 0
    sha256: str | None = None
    sha256_expected: str | None = None
    http_status: int | None = None
    model_id: int | None = None
    version_id: int | None = None
    updated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        numeric = self.id.isdigit() and (self.id == "0" or not self.id.startswith("0"))
        body["id"] = int(self.id) if numeric else self.id
        body["type"] = self.type
        if self.status is Status.DONE:
            body["path"] = self.path
            body["size"] = self.size
        else:
            body["reason"] = self.reason or self.status.value
            body["info"] = self.info
            body["status"] = self.status.value
            if self.path is not None:
                body["path"] = self.path
            if self.size is not None:
                body["size"] = self.size
            if self.retry_after is not None:
                body["retry_after"] = iso(self.retry_after)
            if self.http_status is not None:
                body["http_status"] = self.http_status
        body["attempts"] = self.attempts
        for key in ("sha256", "sha256_expected", "model_id", "version_id"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body["updated_at"] = self.updated_at
        return body


def _entry_from_json(raw: dict[str, Any], *, success: bool) -> Entry | None:
    ident = raw.get("id")
    if ident is None or isinstance(ident, bool | dict | list):
        return None
    kind_type = str(raw.get("type") or ("image" if success else "model"))
    kind: Kind = "image" if kind_type.lower() == IMAGE_TYPE else "model"
    if success:
        status = Status.DONE
    else:
        try:
            status = Status(str(raw.get("status") or "failed"))
        except ValueError:
            status = Status.FAILED
        if status is Status.DONE:
            status = Status.FAILED
    known = {"id", "type", "path", "size", "reason", "info", "status", "retry_after", "attempts", "sha256"}
    known |= {"sha256_expected", "http_status", "model_id", "version_id", "updated_at"}
    info = raw.get("info")
    return Entry(
        kind=kind,
        id=str(ident),
        type=kind_type,
        status=status,
        path=raw["path"] if isinstance(raw.get("path"), str) else None,
        size=_int(raw.get("size")),
        reason=raw["reason"] if isinstance(raw.get("reason"), str) else None,
        info=info if isinstance(info, str) else ("" if info is None else dump_json(info, indent=None).decode()),
        retry_after=parse_iso(raw.get("retry_after")),
        attempts=_int(raw.get("attempts")) or 0,
        sha256=raw["sha256"] if isinstance(raw.get("sha256"), str) else None,
        sha256_expected=raw["sha256_expected"] if isinstance(raw.get("sha256_expected"), str) else None,
        http_status=_int(raw.get("http_status")),
        model_id=_int(raw.get("model_id")),
        version_id=_int(raw.get("version_id")),
        updated_at=raw["updated_at"] if isinstance(raw.get("updated_at"), str) else "",
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass(slots=True)
class ModelRecord:
    """Where one model lives: its folder and the names given to its files (file id -> name)."""

    name: str
    folder: str
    files: dict[int, str] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)


class DownloadLog:
    """One creator's log, shared by every worker of a run; all methods are thread-safe."""

    def __init__(
        self, path: Path, username: str, *, site: str = "", save_interval_s: float = DEFAULT_SAVE_INTERVAL_S
    ) -> None:
        self.path = path
        self.username = username
        self.site = site
        self.save_interval_s = save_interval_s
        self.problem: str | None = None
        self._lock = threading.RLock()
        self._entries: dict[tuple[Kind, str], Entry] = {}
        self._by_path: dict[str, Entry] = {}
        self._models: dict[int, ModelRecord] = {}
        self._extra: dict[str, Any] = {}
        self._dirty = False
        self._last_save = 0.0

    # Reading ---------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, root: Path, username: str, *, site: str = "", save_interval_s: float = DEFAULT_SAVE_INTERVAL_S
    ) -> DownloadLog:
        """The creator's log under `root`, or an empty one. A log that cannot be parsed is moved aside
        (`.unreadable-<time>`) and noted in `problem`; files already on disk are then found again by the run."""
        path = log_path(root, user_folder_name(username))
        book = cls(path, username, site=site, save_interval_s=save_interval_s)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return book
        except OSError as exc:
            raise LogError(f"cannot read download log {path}: {exc.strerror or exc}") from exc
        try:
            if size > MAX_LOG_BYTES:
                raise JsonBodyError(f"{path} is {size} bytes, over the {MAX_LOG_BYTES}-byte limit")
            document = parse_json(path.read_bytes(), where=str(path))
            if not isinstance(document, dict):
                raise JsonBodyError(f"{path} does not hold a JSON object")
        except JsonBodyError as exc:
            book.problem = book._move_aside(str(exc))
            return book
        except OSError as exc:
            raise LogError(f"cannot read download log {path}: {exc.strerror or exc}") from exc
        book._load(document)
        return book

    def _move_aside(self, why: str) -> str:
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise LogError(f"{why}; and it cannot be moved aside: {exc.strerror or exc}") from exc
        message = f"download log unreadable ({why}); kept as {aside.name}, starting a new one"
        log.warning("%s", message)
        return message

    def _load(self, document: dict[str, Any]) -> None:
        lists = {"success", "failed", "models"}
        self._extra = {k: v for k, v in document.items() if k not in lists | {"schema", "username", "updated_at"}}
        self.site = self.site or str(document.get("site") or "")
        for key, success in (("failed", False), ("success", True)):
            entries = document.get(key)
            for raw in entries if isinstance(entries, list) else []:
                if isinstance(raw, dict) and (entry := _entry_from_json(raw, success=success)) is not None:
                    self._put(entry)
        models = document.get("models")
        for key, raw in (models if isinstance(models, dict) else {}).items():
            model_id = _int(key)
            if model_id is None or not isinstance(raw, dict) or not isinstance(raw.get("folder"), str):
                continue
            files_raw = raw.get("files")
            files = {
                file_id: name
                for k, name in (files_raw.items() if isinstance(files_raw, dict) else ())
                if (file_id := _int(k)) is not None and isinstance(name, str)
            }
            versions = [v for v in raw.get("versions") or [] if isinstance(v, int) and not isinstance(v, bool)]
            self._models[model_id] = ModelRecord(str(raw.get("name") or ""), raw["folder"], files, versions)

    def _put(self, entry: Entry) -> None:
        old = self._entries.get((entry.kind, entry.id))
        if old is not None and old.path is not None and self._by_path.get(old.path) is old:
            del self._by_path[old.path]
        self._entries[(entry.kind, entry.id)] = entry
        if entry.path is not None and entry.status is Status.DONE:
            self._by_path[entry.path] = entry

    # Queries ---------------------------------------------------------------------------------------------------

    def get(self, kind: Kind, ident: int | str) -> Entry | None:
        with self._lock:
            return self._entries.get((kind, str(ident)))

    def done_at(self, path: Path) -> Entry | None:
        """A success entry recorded for this path (older logs may key model files by another id)."""
        with self._lock:
            return self._by_path.get(str(path))

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def model(self, model_id: int) -> ModelRecord | None:
        with self._lock:
            return self._models.get(model_id)

    def folders(self) -> dict[int, str]:
        with self._lock:
            return {model_id: record.folder for model_id, record in self._models.items()}

    # Updates ---------------------------------------------------------------------------------------------------

    def set_model(self, model_id: int, record: ModelRecord) -> None:
        with self._lock:
            self._models[model_id] = record
            self._dirty = True

    def record(self, entry: Entry) -> None:
        """Store the newest state of one file (attempts accumulate) and save if the interval has passed."""
        with self._lock:
            old = self._entries.get((entry.kind, entry.id))
            if old is not None:
                entry.attempts += old.attempts
                merged = dict(old.extra)
                merged.update(entry.extra)
                entry.extra = merged
            entry.updated_at = iso(utc_now())
            self._put(entry)
            self._dirty = True
        self.maybe_save()

    # Saving ----------------------------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.kind, len(e.id), e.id))
            return {
                **self._extra,
                "schema": SCHEMA,
                "username": self.username,
                "site": self.site,
                "updated_at": iso(utc_now()),
                "success": [e.to_json() for e in entries if e.status is Status.DONE],
                "failed": [e.to_json() for e in entries if e.status is not Status.DONE],
                "models": {
                    str(model_id): {
                        "name": record.name,
                        "folder": record.folder,
                        "files": {str(k): v for k, v in sorted(record.files.items())},
                        "versions": record.versions,
                    }
                    for model_id, record in sorted(self._models.items())
                },
            }

    def save(self) -> None:
        """Write the log now (atomically) if anything changed."""
        with self._lock:
            if not self._dirty:
                return
            data = dump_json(self.document(), indent=1)
            atomic_write_bytes(self.path, data)
            self._dirty = False
            self._last_save = time.monotonic()

    def maybe_save(self) -> None:
        with self._lock:
            if self._dirty and time.monotonic() - self._last_save >= self.save_interval_s:
                self.save()

    @contextlib.contextmanager
    def saving(self) -> Iterator[DownloadLog]:
        """Save on the way out, whatever happens (Ctrl-C included)."""
        try:
            yield self
        finally:
            self.save()


def defer_until(hours: float) -> datetime:
    return utc_now() + timedelta(hours=hours)


def verified(entry: Entry) -> bool:
    """A success entry whose file is still there with the recorded size."""
    if entry.status is not Status.DONE or entry.path is None:
        return False
    try:
        size = Path(entry.path).stat().st_size
    except OSError:
        return False
    return entry.size is None or size == entry.size


def due(entry: Entry, *, now: datetime, retry_failed: bool, have_key: bool) -> bool:
    """Whether a logged non-success should be tried again in this run.

    Transient failures always are; a file that needed a key is when a key is set now; deferrals when their
    time has come; permanent skips and hash mismatches only when asked (`retry_failed`, which also ignores
    deferral times).
    """
    if entry.status is Status.DONE:
        return False
    if retry_failed:
        return True
    if entry.status is Status.FAILED:
        return have_key if entry.reason == "needs_api_key" else True
    if entry.status is Status.DEFERRED:
        return entry.retry_after is None or now >= entry.retry_after
    return False
