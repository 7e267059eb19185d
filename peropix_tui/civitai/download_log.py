"""Reading the per-creator download logs the collector leaves on disk.

Layout: `<civitai_root>/download_logs/<username>/<username>_download_log.json`, an object holding
`success` (`{id, type, path, size}` entries) and `failed` (`{id, type, reason, info}` entries), plus keys this
reader does not need. A log is someone's record of a long run, so reading is lenient: unknown keys are
ignored, odd entries are counted rather than fatal, and a log that cannot be read at all becomes a
`CreatorLog` with a one-line `error`, never an exception, so one broken file never hides the other creators.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

LOGS_DIR = "download_logs"
LOG_SUFFIX = "_download_log.json"
MAX_LOG_BYTES = 64 * 1024 * 1024
IMAGE_TYPE = "image"
_CELL_LIMIT = 300


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One download that failed, as the log tells it; every field is one line of text."""

    id: str
    type: str
    reason: str
    info: str


@dataclass(frozen=True, slots=True)
class CreatorLog:
    """What one creator's log says: counts of what was downloaded and every failure.

    Success entries of type `image` count as images; any other type (lora, locon, checkpoint...) is a model
    file. `odd_entries` counts entries that are not objects; `error` is set when the log could not be read.
    """

    username: str
    path: Path
    mtime: float
    models_ok: int = 0
    images_ok: int = 0
    failures: tuple[FailedItem, ...] = ()
    odd_entries: int = 0
    error: str | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def failed_by_reason(self) -> list[tuple[str, int]]:
        """`(reason, count)`, most frequent first, ties by reason."""
        counts = Counter(item.reason for item in self.failures)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def logs_dir(civitai_root: Path) -> Path:
    return civitai_root / LOGS_DIR


def log_path(civitai_root: Path, username: str) -> Path:
    return logs_dir(civitai_root) / username / f"{username}{LOG_SUFFIX}"


def scan_download_logs(civitai_root: Path) -> list[CreatorLog]:
    """Every creator folder under `download_logs`, newest log first; an empty list when there is none yet."""
    folder = logs_dir(civitai_root)
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc)
        return [CreatorLog("", folder, 0.0, error=f"cannot list {folder}: {exc.strerror or exc}")]
    logs = [read_download_log(child / f"{child.name}{LOG_SUFFIX}", child.name) for child in children]
    return sorted(logs, key=lambda entry: (-entry.mtime, entry.username))


def read_download_log(path: Path, username: str) -> CreatorLog:
    """One creator's log; problems become the entry's `error`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return CreatorLog(username, path, 0.0, error=f"no {path.name} in {path.parent}")
    except OSError as exc:
        return CreatorLog(username, path, 0.0, error=f"cannot read {path}: {exc.strerror or exc}")
    if st.st_size > MAX_LOG_BYTES:
        limit = f"over the {MAX_LOG_BYTES}-byte limit"
        return CreatorLog(username, path, st.st_mtime, error=f"{path} is {st.st_size} bytes, {limit}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return CreatorLog(username, path, st.st_mtime, error=f"cannot read {path}: {exc.strerror or exc}")
    return parse_download_log(data, path, username, st.st_mtime)


def parse_download_log(data: bytes, path: Path, username: str, mtime: float) -> CreatorLog:
    """Parse log bytes; `path` and `mtime` are only carried into the result."""

    def broken(message: str) -> CreatorLog:
        return CreatorLog(username, path, mtime, error=f"{path}: {message}")

    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return broken(f"not valid JSON ({_one_line(str(exc), 120)})")
    if not isinstance(document, dict):
        return broken(f"must hold a JSON object, not {_kind(document)}")
    success = document.get("success", [])
    failed = document.get("failed", [])
    for key, value in (("success", success), ("failed", failed)):
        if not isinstance(value, list):
            return broken(f"{key!r} must be a list, not {_kind(value)}")
    odd = 0
    models = images = 0
    for entry in success:
        if not isinstance(entry, dict):
            odd += 1
        elif _text(entry.get("type")).lower() == IMAGE_TYPE:
            images += 1
        else:
            models += 1
    failures: list[FailedItem] = []
    for entry in failed:
        if not isinstance(entry, dict):
            odd += 1
            continue
        failures.append(
            FailedItem(
                id=_text(entry.get("id")) or "?",
                type=_text(entry.get("type")) or "?",
                reason=_text(entry.get("reason")) or "unknown",
                info=_text(entry.get("info")),
            )
        )
    return CreatorLog(username, path, mtime, models, images, tuple(failures), odd)


def _text(value: Any) -> str:
    """Any JSON value as one line: strings as they are, numbers as written, the rest as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _one_line(value, _CELL_LIMIT)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _one_line(orjson.dumps(value).decode("utf-8"), _CELL_LIMIT)


def _one_line(text: str, limit: int) -> str:
    folded = " ".join(text.split())
    if not folded.isprintable():
        folded = "".join(c if c.isprintable() else "\ufffd" for c in folded)
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "a boolean"
