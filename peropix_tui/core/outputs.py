"""Saving generated images as `outputs/YYYY-MM-DD/NNNNN_<seed>.<ext>`.

The counter is the folder's highest one plus one. Two savers (threads or processes) never share a counter: each
claims it with an exclusively created `.NNNNN.reserved` marker, checks that no finished file already uses it, writes
the image atomically and only then drops the marker, so at every moment a used counter is visible to the others.
A crash can leave a marker behind; that counter is then skipped, which the numbering tolerates like any gap.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import DiskFullError, PeropixError
from peropix_tui.core.metadata import MetadataError, add_peropix_fields

log = logging.getLogger(__name__)

SaveFormat = Literal["png", "webp"]

COUNTER_DIGITS: Final = 5
MAX_CLAIM_ATTEMPTS: Final = 10_000
"""Counters tried in one save before giving up (only reachable with a folder full of stale markers)."""

_IMAGE_NAME = re.compile(r"(\d{5,})_\d+\.[A-Za-z0-9]+")
_MARKER_NAME = re.compile(r"\.(\d{5,})\.reserved")
_MAGIC: Final[dict[str, tuple[bytes, ...]]] = {"png": (b"\x89PNG\r\n\x1a\n",), "webp": (b"RIFF",)}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputError(PeropixError):
    """An image that cannot be saved into the outputs folder."""


def day_folder(outputs_dir: Path, when: datetime | None = None) -> Path:
    """The `YYYY-MM-DD` folder for `when` (now by default) in local time; a naive `when` is taken as local."""
    moment = (when or datetime.now()).astimezone()
    return outputs_dir / moment.strftime("%Y-%m-%d")


def _counters(folder: Path) -> tuple[set[int], set[int]]:
    """Counters used by finished images and counters claimed by markers in `folder`."""
    images: set[int] = set()
    markers: set[int] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if match := _IMAGE_NAME.fullmatch(entry.name):
                    images.add(int(match[1]))
                elif match := _MARKER_NAME.fullmatch(entry.name):
                    markers.add(int(match[1]))
    except FileNotFoundError:
        pass
    return images, markers


def next_counter(folder: Path) -> int:
    """One more than the highest counter in use in `folder` (1 for an empty or missing folder)."""
    images, markers = _counters(folder)
    return max(images | markers, default=0) + 1


def _check_bytes(image_bytes: bytes, fmt: str) -> None:
    if fmt not in _MAGIC:
        raise OutputError(f"cannot save images as {fmt!r}; use one of {', '.join(_MAGIC)}")
    if not image_bytes:
        raise OutputError("cannot save an empty image")
    if not image_bytes.startswith(_MAGIC[fmt]) or (fmt == "webp" and image_bytes[8:12] != b"WEBP"):
        raise OutputError(f"the image bytes are not a {fmt.upper()} file")


def _with_app_fields(image_bytes: bytes, fmt: str, extra_peropix: Mapping[str, Any] | None) -> bytes:
    """PNG bytes with the app's fields added; any other case keeps the bytes exactly as the backend sent them."""
    if not extra_peropix or fmt != "png":
        return image_bytes
    try:
        return add_peropix_fields(image_bytes, extra_peropix)
    except MetadataError as exc:
        # A paid image is never lost over its metadata: keep the server's bytes and say why.
        log.warning("saving the image without app fields: %s", exc)
        return image_bytes


def _claim(folder: Path, seed: int, ext: str) -> tuple[Path, Path]:
    """Reserve the next free counter; returns the image path and the marker that holds it."""
    counter = next_counter(folder)
    for _ in range(MAX_CLAIM_ATTEMPTS):
        marker = folder / f".{counter:0{COUNTER_DIGITS}d}.reserved"
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            counter += 1
            continue
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise DiskFullError(f"disk full while saving an image into {folder}; nothing was written") from exc
            raise OutputError(f"cannot save an image into {folder}: {exc.strerror or exc}") from exc
        # Holding the marker, a finished image with this counter can only be an earlier saver's: move past it.
        if counter in _counters(folder)[0]:
            marker.unlink()
            counter += 1
            continue
        return folder / f"{counter:0{COUNTER_DIGITS}d}_{seed}.{ext}", marker
    raise OutputError(f"no free image number in {folder} after {MAX_CLAIM_ATTEMPTS} tries (stale .reserved files?)")


def save_image(
    image_bytes: bytes,
    *,
    seed: int,
    outputs_dir: Path,
    when: datetime | None = None,
    extra_peropix: Mapping[str, Any] | None = None,
    fmt: SaveFormat = "png",
) -> Path:
    """Write one generated image into today's folder of `outputs_dir` and return its path.

    For a PNG, `extra_peropix` (provider, job id, wildcard choices...) is added under `peropix` in the Comment
    JSON while every chunk the server wrote stays byte for byte. A WebP is saved exactly as received. The file
    appears complete or not at all; a full disk raises `DiskFullError`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OutputError(f"seed must be a whole number of 0 or more, not {seed!r}")
    _check_bytes(image_bytes, fmt)
    data = _with_app_fields(image_bytes, fmt, extra_peropix)
    folder = day_folder(outputs_dir, when)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(f"disk full while creating {folder}; nothing was written") from exc
        raise OutputError(f"cannot create the outputs folder {folder}: {exc.strerror or exc}") from exc
    path, marker = _claim(folder, seed, fmt)
    try:
        atomic_write_bytes(path, data)
    except DiskFullError as exc:
        raise DiskFullError(f"disk full while saving {path}; nothing was written") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    log.info("saved %s (%d bytes)", path, len(data))
    return path
