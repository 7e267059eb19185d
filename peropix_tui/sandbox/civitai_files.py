"""Model files the sandbox CivitAI storage serves: valid safetensors LoRAs of any size, made on the fly.

A file is never held in memory whole. Its bytes are a function of a seed: the header (kohya `__metadata__`
with `ss_output_name`, three F16 tensors that index the whole buffer), then the buffer as 1 MiB blocks,
each block one per-file random block with its index stamped over its first 8 bytes. Any byte range can be
produced without the bytes before it, two files never share content, and a client that resumes at a wrong
offset, or joins two answers in the wrong place, ends up with a different SHA256.

The hashes CivitAI publishes (SHA256, AutoV1, AutoV2, AutoV3, CRC32) are computed once from the very bytes
served, on first use.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

BLOCK_SIZE: Final = 1 << 20
STAMP_LEN: Final = 8
MIN_FILE_SIZE: Final = 4096
MAX_FILE_SIZE: Final = 1 << 40
AUTOV1_OFFSET: Final = 0x100000
AUTOV1_LEN: Final = 0x10000
AUTOV1_MIN_SIZE: Final = 0x200000
AUTOV3_API_LEN: Final = 12
_RANK: Final = 4
_F16: Final = 2
_TENSOR_PREFIX: Final = "lora_unet_input_blocks_4_1_proj_in"
# CivitAI base model -> kohya's `ss_base_model_version` and the ModelSpec architecture.
_KOHYA_BASES: Final[Mapping[str, tuple[str, str]]] = {
    "SD 1.5": ("sd_v1", "stable-diffusion-v1/lora"),
    "SDXL 1.0": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    "Pony": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    "Illustrious": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
}


class FileSizeError(ValueError):
    """A file size the sandbox cannot make a safetensors file of."""


@dataclass(frozen=True, slots=True)
class BlobHashes:
    """CivitAI's hashes of one file, uppercase hex; `autov3` is the full tensor-data hash."""

    size: int
    sha256: str
    autov1: str | None
    autov2: str
    autov3: str
    crc32: str

    def api(self) -> dict[str, str]:
        """The `hashes` object of a file in the API (AutoV3 shortened as CivitAI shows it)."""
        out = {
            "AutoV2": self.autov2,
            "SHA256": self.sha256,
            "CRC32": self.crc32,
            "AutoV3": self.autov3[:AUTOV3_API_LEN],
        }
        if self.autov1 is not None:
            out = {"AutoV1": self.autov1, **out}
        return out


def kohya_metadata(output_name: str, *, base_model: str = "SDXL 1.0", seed: int = 0) -> dict[str, str]:
    """A believable kohya sd-scripts `__metadata__` map (every value a string, as kohya writes it) for a
    LoRA trained on the CivitAI base model `base_model`."""
    version, architecture = _KOHYA_BASES.get(base_model, _KOHYA_BASES["SDXL 1.0"])
    rng = random.Random(seed)
    started = 1_700_000_000 + rng.randrange(10_000_000)
    steps = rng.randrange(800, 4000)
    tags = {"1girl": rng.randrange(20, 60), "solo": rng.randrange(10, 40), output_name: rng.randrange(20, 60)}
    return {
        "ss_output_name": output_name,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(_RANK),
        "ss_network_alpha": "2.0",
        "ss_base_model_version": version,
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(started + steps * 2),
        "ss_steps": str(steps),
        "ss_num_epochs": "10",
        "ss_learning_rate": "0.0001",
        "ss_tag_frequency": json.dumps({f"10_{output_name}": tags}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.title": output_name,
    }


class SafetensorsBlob:
    """The bytes of one sandbox model file; thread-safe, nothing held but the header and one block."""

    def __init__(self, size: int, seed: int, metadata: Mapping[str, str]) -> None:
        if not MIN_FILE_SIZE <= size <= MAX_FILE_SIZE:
            raise FileSizeError(f"file size must be {MIN_FILE_SIZE}-{MAX_FILE_SIZE} bytes, not {size}")
        self.size = size
        self.seed = seed
        self.metadata = dict(metadata)
        self.header = _header(size, self.metadata)
        self._block: bytes | None = None
        self._hashes: BlobHashes | None = None
        self._lock = threading.Lock()

    @property
    def data_start(self) -> int:
        """Where the tensor buffer begins (8 + header length)."""
        return len(self.header)

    def _base_block(self) -> bytes:
        with self._lock:
            if self._block is None:
                length = min(BLOCK_SIZE, self.size - self.data_start)
                self._block = random.Random(self.seed).randbytes(length)
            return self._block

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes | memoryview]:
        """The bytes in [start, end) as pieces of at most one block each, without copying the block."""
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range {start}-{end} is outside a {self.size}-byte file")
        head = self.data_start
        if start < head:
            yield self.header[start : min(end, head)]
            start = head
        if start >= end:
            return
        base = memoryview(self._base_block())
        offset = start - head
        stop = end - head
        while offset < stop:
            index, within = divmod(offset, BLOCK_SIZE)
            take = min(BLOCK_SIZE - within, stop - offset, len(base) - within)
            if within < STAMP_LEN:
                stamp = index.to_bytes(STAMP_LEN, "little")
                cut = min(STAMP_LEN - within, take)
                yield stamp[within : within + cut]
                if take > cut:
                    yield base[STAMP_LEN : within + take]
            else:
                yield base[within : within + take]
            offset += take

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """The bytes in [start, end) as one object: for tests and small files."""
        return b"".join(self.iter_range(start, end))

    @property
    def hashes(self) -> BlobHashes:
        """The file's hashes, computed from the served bytes on first use."""
        with self._lock:
            if self._hashes is not None:
                return self._hashes
        whole = hashlib.sha256()
        tensors = hashlib.sha256()
        crc = 0
        position = 0
        head = self.data_start
        for piece in self.iter_range():
            whole.update(piece)
            crc = zlib.crc32(piece, crc)
            if position >= head:
                tensors.update(piece)
            position += len(piece)
        autov1 = None
        if self.size >= AUTOV1_MIN_SIZE:
            autov1 = hashlib.sha256(self.read(AUTOV1_OFFSET, AUTOV1_OFFSET + AUTOV1_LEN)).hexdigest()[:8].upper()
        sha = whole.hexdigest().upper()
        result = BlobHashes(self.size, sha, autov1, sha[:10], tensors.hexdigest().upper(), f"{crc:08X}")
        with self._lock:
            self._hashes = result
        return result


def _tensors(buffer_len: int) -> dict[str, Any]:
    elements = (buffer_len - _F16) // _F16
    columns = max(1, elements // (2 * _RANK))
    down = _RANK * columns
    up = elements - down
    return {
        f"{_TENSOR_PREFIX}.alpha": {"dtype": "F16", "shape": [], "data_offsets": [0, _F16]},
        f"{_TENSOR_PREFIX}.lora_down.weight": {
            "dtype": "F16",
            "shape": [_RANK, columns],
            "data_offsets": [_F16, _F16 + down * _F16],
        },
        f"{_TENSOR_PREFIX}.lora_up.weight": {
            "dtype": "F16",
            "shape": [up],
            "data_offsets": [_F16 + down * _F16, buffer_len],
        },
    }


def _render(buffer_len: int, metadata: Mapping[str, str]) -> bytes:
    document = {"__metadata__": dict(metadata), **_tensors(buffer_len)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _header(size: int, metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and the space-padded JSON header for a file of exactly `size` bytes.

    The header length N is padded to a multiple of 8 (one more space when `size` is odd, so the F16
    buffer has an even length); N and the offsets inside the header depend on each other, so the length
    is settled by a few rounds of fixed-point iteration.
    """
    length = len(_render(size, metadata))
    for _ in range(8):
        padded = -(-length // 8) * 8
        if (size - 8 - padded) % 2:
            padded += 1
        buffer_len = size - 8 - padded
        if buffer_len < _F16 * (2 * _RANK + 2):
            raise FileSizeError(f"{size} bytes is too small for a header of {padded} bytes")
        text = _render(buffer_len, metadata)
        if len(text) <= padded:
            return padded.to_bytes(8, "little") + text + b" " * (padded - len(text))
        length = len(text)
    raise FileSizeError(f"no stable safetensors header length for a {size}-byte file")
