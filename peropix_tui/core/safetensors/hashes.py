"""The hashes CivitAI publishes for model files, computed in one streaming pass.

SHA256 covers the whole file and AutoV3 covers the tensor buffer (offset 8+N to the end), so both are full
SHA-256 runs over nearly the same bytes. The AutoV3 digest runs on its own thread, fed the same chunks as they
are read; hashlib releases the GIL on large updates, so the second digest costs a second core rather than a
second read of the file or twice the wall time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.safetensors.header import (
    PREFIX_LEN,
    SafetensorsError,
    decode_header,
    header_len_from_prefix,
)

log = logging.getLogger(__name__)

AUTOV1_OFFSET = 0x100000
AUTOV1_LEN = 0x10000
AUTOV1_MIN_SIZE = 0x200000
AUTOV3_API_LEN = 12
DEFAULT_CHUNK_SIZE = 1 << 20
_QUEUE_DEPTH = 8
_HEX = re.compile(r"[0-9A-F]+")


class HashingError(PeropixError):
    """A file that could not be hashed (unreadable, or changed while it was read)."""


@dataclass(frozen=True, slots=True)
class FileHashes:
    """CivitAI-style hashes of one file, all uppercase hex.

    `autov1` follows CivitAI's scanner: SHA-256 of the 0x10000 bytes at offset 0x100000, first 8 hex, and None
    for files under 2 MiB (0x200000 bytes), even though such a file may hold the whole range. `autov3` is None
    for anything that is not a valid safetensors file.
    """

    size: int
    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None

    @property
    def autov3_short(self) -> str | None:
        """AutoV3 as the CivitAI API shows it: the first 12 hex characters."""
        return None if self.autov3 is None else self.autov3[:AUTOV3_API_LEN]


def compute_hashes(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> FileHashes:
    """Hash the file at `path` in one pass; `progress(done, total)` runs on this thread after each chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    target = Path(path)
    try:
        with target.open("rb") as fh:
            return _Pass(fh, target, os.fstat(fh.fileno()).st_size).run(chunk_size, progress)
    except OSError as exc:
        raise HashingError(f"cannot hash {target}: {exc.strerror or exc}") from exc


def hash_matches(expected: str, hashes: FileHashes) -> bool:
    """Whether `expected` (any case, optional 0x) is one of the file's hashes, its kind told by its length.

    64 hex: SHA256 or full AutoV3; 12: AutoV3 as the API shows it; 10: AutoV2; 8: AutoV1.
    """
    value = expected.strip().upper().removeprefix("0X")
    if not _HEX.fullmatch(value):
        return False
    if len(value) == 64:
        return value in (hashes.sha256, hashes.autov3)
    if len(value) == AUTOV3_API_LEN:
        return hashes.autov3_short == value
    if len(value) == 10:
        return hashes.autov2 == value
    if len(value) == 8:
        return hashes.autov1 == value
    return False


class _DigestThread:
    """A SHA-256 fed through a bounded queue and computed on its own thread."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._thread = threading.Thread(target=self._run, name="peropix-autov3-hash", daemon=True)
        self._thread.start()

    def feed(self, data: memoryview) -> None:
        self._queue.put(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest().upper()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._digest.update(data)


class _Pass:
    """State of one read through a file; each chunk is handed to every hash that wants part of it."""

    def __init__(self, fh: IO[bytes], where: Path, total: int) -> None:
        self.fh = fh
        self.where = where
        self.total = total
        self.full = hashlib.sha256()
        self.autov1_bytes = bytearray()
        self.prefix = bytearray()
        self.prefix_seen = False
        self.header = bytearray()
        self.data_start: int | None = None
        self.tensor_digest: _DigestThread | None = None

    def run(self, chunk_size: int, progress: Callable[[int, int], None] | None) -> FileHashes:
        try:
            done = 0
            while chunk := self.fh.read(chunk_size):
                self._take(memoryview(chunk), done)
                done += len(chunk)
                if progress is not None:
                    progress(done, self.total)
            if done != self.total:
                raise HashingError(f"{self.where} changed size while hashed ({self.total} -> {done} bytes)")
            sha256 = self.full.hexdigest().upper()
            autov3 = self._autov3()
        finally:
            if self.tensor_digest is not None:
                self.tensor_digest.close()
        autov1 = None
        if self.total >= AUTOV1_MIN_SIZE:
            autov1 = hashlib.sha256(self.autov1_bytes).hexdigest().upper()[:8]
        return FileHashes(self.total, sha256, autov1, sha256[:10], autov3)

    def _take(self, chunk: memoryview, offset: int) -> None:
        self.full.update(chunk)
        end = offset + len(chunk)
        if self.total >= AUTOV1_MIN_SIZE:
            self.autov1_bytes += _window(chunk, offset, AUTOV1_OFFSET, AUTOV1_OFFSET + AUTOV1_LEN)
        if not self.prefix_seen:
            self.prefix += _window(chunk, offset, 0, PREFIX_LEN + 1)
            if len(self.prefix) > PREFIX_LEN:
                self.prefix_seen = True
                self._start_tensor_digest()
        if self.data_start is None:
            return
        if offset < self.data_start:
            self.header += _window(chunk, offset, PREFIX_LEN, self.data_start)
        if end > self.data_start and self.tensor_digest is not None:
            self.tensor_digest.feed(_window(chunk, offset, self.data_start, end))

    def _start_tensor_digest(self) -> None:
        """Once 9 bytes are in: a plausible length and a `{` mean the rest may be a tensor buffer."""
        if self.prefix[PREFIX_LEN] != ord("{"):
            return
        try:
            header_len = header_len_from_prefix(bytes(self.prefix), self.total, self.where)
        except SafetensorsError:
            return
        self.data_start = PREFIX_LEN + header_len
        self.tensor_digest = _DigestThread()

    def _autov3(self) -> str | None:
        if self.tensor_digest is None:
            return None
        digest = self.tensor_digest.hexdigest()
        try:
            decode_header(bytes(self.header), self.total, self.where)
        except SafetensorsError as exc:
            log.debug("no AutoV3 for %s: %s", self.where, exc)
            return None
        return digest


def _window(chunk: memoryview, offset: int, lo: int, hi: int) -> memoryview:
    """The part of `chunk` (which starts at file `offset`) that lies in the file range [lo, hi)."""
    start = min(max(lo - offset, 0), len(chunk))
    stop = min(max(hi - offset, 0), len(chunk))
    return chunk[start:stop]
