"""Editing the `__metadata__` of a safetensors file without touching its tensors.

A header that still fits in the old length N is padded with spaces and written over the old one in place, so
a multi-gigabyte file costs one small write. A header that grew forces a rewrite through a temp file; it gets
`slack` spare bytes so later edits fit in place again. Tensor offsets are relative to the buffer start, so the
buffer is copied byte for byte and AutoV3 (the tensor-data hash) survives, while SHA256/AutoV2 change. Every
edit is checked twice before it is reported done: by our reader and by the `safetensors` library.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import safetensors

from peropix_tui.core.atomicio import atomic_writer
from peropix_tui.core.safetensors.header import (
    METADATA_KEY,
    PREFIX_LEN,
    LoadedHeader,
    SafetensorsError,
    TensorInfo,
    decode_header,
    read_header,
    read_header_from,
)

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class EditResult:
    """How an edit was made.

    `sha256_before` is the uppercase SHA256 of the file before the edit; a rewrite reads the whole file anyway
    and computes it on the way, an in-place edit reads only the header and leaves it None.
    """

    path: Path
    in_place: bool
    header_len: int
    sha256_before: str | None

    @property
    def rewritten(self) -> bool:
        return not self.in_place


def update_metadata(
    path: str | os.PathLike[str], changes: Mapping[str, str | None], *, slack: int = 4096
) -> EditResult:
    """Set (str value) or delete (None) `__metadata__` keys of the safetensors file at `path`.

    Other keys keep their order and values; new keys are appended. When the grown header no longer fits, the
    file is rewritten with a header of `len + slack` bytes rounded up to a multiple of 8. Bad changes are
    refused before the file is opened, so a refused edit leaves it byte-identical.
    """
    if slack < 0:
        raise ValueError(f"slack must be >= 0, got {slack}")
    target = Path(path)
    _check_changes(changes, target)
    try:
        with target.open("r+b") as fh:
            loaded = read_header_from(fh, target)
            metadata = _apply(loaded.header.metadata, changes)
            encoded = _encode(loaded.document, metadata)
            if len(encoded) <= loaded.header.header_len:
                result = _write_in_place(fh, loaded, encoded, metadata)
            else:
                result = _rewrite(fh, loaded, encoded, slack)
                _verify(target, metadata, loaded.header.tensors)
    except OSError as exc:
        raise SafetensorsError(f"cannot edit {target}: {exc.strerror or exc}") from exc
    log.info("edited metadata of %s (%s)", target, "in place" if result.in_place else "rewritten")
    return result


def _check_changes(changes: Mapping[str, str | None], target: Path) -> None:
    for key, value in changes.items():
        if not isinstance(key, str):
            raise SafetensorsError(f"cannot edit {target}: metadata key {key!r} is not a string")
        if value is not None and not isinstance(value, str):
            raise SafetensorsError(
                f"cannot edit {target}: value of {key!r} must be a string or None, not {type(value).__name__}"
            )
        for text in (key, value):
            if text is not None and not _is_utf8(text):
                raise SafetensorsError(f"cannot edit {target}: {key!r} holds text that is not valid Unicode")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _apply(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    metadata = dict(current)
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return metadata


def _encode(document: Mapping[str, Any], metadata: dict[str, str]) -> bytes:
    """Compact JSON of the header with the new metadata in the old one's place (first when it is new)."""
    updated: dict[str, Any] = {METADATA_KEY: metadata} if metadata and METADATA_KEY not in document else {}
    for key, value in document.items():
        if key != METADATA_KEY:
            updated[key] = value
        elif metadata:
            updated[METADATA_KEY] = metadata
    return json.dumps(updated, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _write_in_place(fh: IO[bytes], loaded: LoadedHeader, encoded: bytes, metadata: dict[str, str]) -> EditResult:
    header = loaded.header
    padded = encoded.ljust(header.header_len, b" ")
    decode_header(padded, header.file_size, header.path)
    try:
        _overwrite_header(fh, padded)
        _verify(header.path, metadata, header.tensors)
    except (SafetensorsError, OSError):
        _overwrite_header(fh, loaded.raw)
        raise
    return EditResult(header.path, True, header.header_len, None)


def _overwrite_header(fh: IO[bytes], raw: bytes) -> None:
    fh.seek(PREFIX_LEN)
    fh.write(raw)
    fh.flush()
    os.fsync(fh.fileno())


def _rewrite(fh: IO[bytes], loaded: LoadedHeader, encoded: bytes, slack: int) -> EditResult:
    header = loaded.header
    new_len = -(-(len(encoded) + slack) // 8) * 8
    padded = encoded.ljust(new_len, b" ")
    decode_header(padded, PREFIX_LEN + new_len + header.data_len, header.path)
    before = hashlib.sha256(header.header_len.to_bytes(PREFIX_LEN, "little"))
    before.update(loaded.raw)
    with atomic_writer(header.path) as out:
        out.write(new_len.to_bytes(PREFIX_LEN, "little"))
        out.write(padded)
        fh.seek(header.data_start)
        remaining = header.data_len
        while remaining:
            chunk = fh.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise SafetensorsError(f"{header.path}: file shrank while its tensor data was being copied")
            before.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        if fh.read(1):
            raise SafetensorsError(f"{header.path}: file grew while its tensor data was being copied")
    return EditResult(header.path, False, new_len, before.hexdigest().upper())


def _verify(target: Path, metadata: dict[str, str], tensors: dict[str, TensorInfo]) -> None:
    """Re-read the edited file with our reader and with the safetensors library; both must agree."""
    ours = read_header(target)
    if ours.metadata != metadata or ours.tensors != tensors:
        raise SafetensorsError(f"{target}: edited header does not read back as written")
    try:
        with safetensors.safe_open(str(target), framework="numpy") as reader:
            theirs = reader.metadata() or {}
            names = set(reader.keys())
    except safetensors.SafetensorError as exc:
        raise SafetensorsError(f"{target}: the safetensors library rejects the edited file: {exc}") from exc
    if theirs != metadata or names != set(tensors):
        raise SafetensorsError(f"{target}: the safetensors library reads the edited header differently")
