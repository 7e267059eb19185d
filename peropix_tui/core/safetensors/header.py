"""Reading and validating safetensors headers without torch.

Layout: 8 bytes of little-endian header length N, N bytes of UTF-8 JSON (starting with `{`, maybe
right-padded with spaces), then the tensor buffer that the header indexes. The checks follow the reference
reader, so a file accepted here loads in any safetensors loader, and a header we write back is one every
loader accepts. The header is read only after N has been checked against the file size, so a hostile file
costs at most N bytes (capped at 100 MB) plus its parse, never more.

Two checks are stricter than the reference reader, as the format description asks: the header must start
with `{` (no leading whitespace), and duplicate JSON keys are refused rather than resolved last-one-wins.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, NamedTuple

from peropix_tui.core.errors import PeropixError

PREFIX_LEN = 8
MAX_HEADER_LEN = 100_000_000
METADATA_KEY = "__metadata__"
_U64_MAX = 2**64 - 1

# Bits per element of every dtype the reference reader knows; sub-byte dtypes must fill whole bytes.
DTYPE_BITS: Mapping[str, int] = MappingProxyType(
    {
        "BOOL": 8,
        "F4": 4,
        "F6_E2M3": 6,
        "F6_E3M2": 6,
        "U8": 8,
        "I8": 8,
        "F8_E5M2": 8,
        "F8_E4M3": 8,
        "F8_E8M0": 8,
        "F8_E4M3FNUZ": 8,
        "F8_E5M2FNUZ": 8,
        "I16": 16,
        "U16": 16,
        "F16": 16,
        "BF16": 16,
        "I32": 32,
        "U32": 32,
        "F32": 32,
        "C64": 64,
        "F64": 64,
        "I64": 64,
        "U64": 64,
    }
)

# A JSON escape of a UTF-16 surrogate; only these can smuggle unpaired surrogates past the UTF-8 decoder.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class SafetensorsError(PeropixError):
    """A file that is not a valid safetensors file, or a metadata edit that cannot be made."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's entry in the header; `data_offsets` are relative to the start of the tensor buffer."""

    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """What a safetensors file says about itself, read without touching the tensor buffer."""

    path: Path
    header_len: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    file_size: int

    @property
    def data_start(self) -> int:
        """File offset of the tensor buffer (8 + N); AutoV3 hashes from here to the end."""
        return PREFIX_LEN + self.header_len

    @property
    def data_len(self) -> int:
        return self.file_size - self.data_start


class LoadedHeader(NamedTuple):
    """A parsed header plus what an in-place edit needs: the JSON object in file order and the raw bytes."""

    header: SafetensorsHeader
    document: dict[str, Any]
    raw: bytes


class _Rejected(ValueError):
    """Raised from inside the JSON parser hooks with a reason meant for the user."""


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of the safetensors file at `path`."""
    target = Path(path)
    try:
        with target.open("rb") as fh:
            return read_header_from(fh, target).header
    except OSError as exc:
        raise SafetensorsError(f"cannot read {target}: {exc.strerror or exc}") from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` map of a safetensors file (empty when the file has none)."""
    return read_header(path).metadata


def output_name(path: str | os.PathLike[str]) -> str | None:
    """The kohya `ss_output_name` of a LoRA file (the name its trainer gave it); None when unset or blank."""
    name = read_metadata(path).get("ss_output_name", "").strip()
    return name or None


def read_header_from(fh: IO[bytes], where: Path) -> LoadedHeader:
    """Read the header from an open binary file, whatever its current position."""
    file_size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    header_len = header_len_from_prefix(fh.read(PREFIX_LEN), file_size, where)
    raw = fh.read(header_len)
    if len(raw) != header_len:
        raise SafetensorsError(f"{where}: file shrank while its header was being read")
    header, document = decode_header(raw, file_size, where)
    return LoadedHeader(header, document, raw)


def header_len_from_prefix(prefix: bytes, file_size: int, where: Path) -> int:
    """Check the 8-byte length prefix against the limit and the file size; return N."""
    if file_size < PREFIX_LEN or len(prefix) < PREFIX_LEN:
        raise SafetensorsError(f"{where}: not a safetensors file: only {file_size} bytes long")
    header_len = int.from_bytes(prefix[:PREFIX_LEN], "little")
    if header_len > MAX_HEADER_LEN:
        raise SafetensorsError(
            f"{where}: not a safetensors file: header length {header_len} is over the {MAX_HEADER_LEN}-byte limit"
        )
    if header_len > file_size - PREFIX_LEN:
        raise SafetensorsError(
            f"{where}: not a safetensors file: header length {header_len} runs past the end of the file "
            f"({file_size} bytes)"
        )
    return header_len


def decode_header(raw: bytes, file_size: int, where: Path) -> tuple[SafetensorsHeader, dict[str, Any]]:
    """Parse and validate header bytes (`len(raw)` is N) for a file of `file_size` bytes."""
    if raw[:1] != b"{":
        raise SafetensorsError(f"{where}: not a safetensors file: header does not start with '{{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorsError(f"{where}: header is not valid UTF-8 (byte {exc.start})") from exc
    document = _parse_json(text, where)
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(document):
        raise SafetensorsError(f"{where}: header holds an unpaired UTF-16 surrogate escape")
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in document.items():
        if name == METADATA_KEY:
            metadata = _check_metadata(entry, where)
        else:
            tensors[name] = _check_tensor(name, entry, where)
    header_len = len(raw)
    _check_layout(tensors, file_size - PREFIX_LEN - header_len, where)
    header = SafetensorsHeader(where, header_len, metadata, tensors, file_size)
    return header, document


def _parse_json(text: str, where: Path) -> dict[str, Any]:
    try:
        document = json.loads(
            text,
            object_pairs_hook=_unique_pairs,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
        )
    except _Rejected as exc:
        raise SafetensorsError(f"{where}: invalid header: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise SafetensorsError(
            f"{where}: header is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise SafetensorsError(f"{where}: header JSON is nested too deeply") from exc
    if not isinstance(document, dict):
        raise SafetensorsError(f"{where}: header is not a JSON object")
    return document


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key {_show(key)}")
            seen.add(key)
    return obj


def _parse_int(literal: str) -> int | float:
    # Past 20 characters a literal cannot be a u64; like the reference parser, treat it as a float (which
    # the shape and offset checks then refuse) rather than feed a megabyte of digits to int().
    return int(literal) if len(literal) <= 20 else float(literal)


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not valid JSON")


def _has_lone_surrogate(document: dict[str, Any]) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_metadata(value: Any, where: Path) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SafetensorsError(f"{where}: {METADATA_KEY} must be a JSON object, not {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise SafetensorsError(
                f"{where}: {METADATA_KEY} value of {_show(key)} must be a string, not {_json_type(item)}"
            )
    return dict(value)


def _check_tensor(name: str, entry: Any, where: Path) -> TensorInfo:
    label = f"{where}: tensor {_show(name)}"
    if not isinstance(entry, dict):
        raise SafetensorsError(f"{label} must be a JSON object, not {_json_type(entry)}")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise SafetensorsError(f"{label} has unknown dtype {_show(dtype)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_u64(dim) for dim in shape):
        raise SafetensorsError(f"{label}: shape must be a list of non-negative integers")
    offsets = entry.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(off) for off in offsets):
        raise SafetensorsError(f"{label}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise SafetensorsError(f"{label}: data_offsets end {end} is before begin {begin}")
    count = 1
    for dim in shape:
        count *= dim
        if count > _U64_MAX:
            raise SafetensorsError(f"{label}: shape {_show(shape)} overflows")
    bits = count * DTYPE_BITS[dtype]
    if bits > _U64_MAX:
        raise SafetensorsError(f"{label}: shape {_show(shape)} overflows")
    if bits % 8:
        raise SafetensorsError(f"{label}: {count} elements of {dtype} do not fill a whole number of bytes")
    if end - begin != bits // 8:
        raise SafetensorsError(
            f"{label}: data_offsets span {end - begin} bytes but {dtype} x {_show(shape)} needs {bits // 8}"
        )
    return TensorInfo(dtype, tuple(shape), (begin, end))


def _check_layout(tensors: dict[str, TensorInfo], buffer_len: int, where: Path) -> None:
    """Tensors must tile the buffer exactly: no overlap, no hole, nothing after the last one."""
    covered = 0
    for name, info in sorted(tensors.items(), key=lambda item: item[1].data_offsets):
        begin, end = info.data_offsets
        if begin < covered:
            raise SafetensorsError(f"{where}: tensor {_show(name)} overlaps the tensor before it")
        if begin > covered:
            raise SafetensorsError(f"{where}: {begin - covered}-byte hole before tensor {_show(name)}")
        covered = end
    if covered != buffer_len:
        raise SafetensorsError(
            f"{where}: tensors cover {covered} bytes but the file holds {buffer_len} bytes of tensor data"
        )


def _is_u64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _U64_MAX


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
