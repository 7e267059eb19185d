"""Safetensors files without torch: header and metadata access, in-place metadata edits, CivitAI hashes."""

from __future__ import annotations

from peropix_tui.core.safetensors.edit import EditResult, update_metadata
from peropix_tui.core.safetensors.hashes import (
    AUTOV1_MIN_SIZE,
    FileHashes,
    HashingError,
    compute_hashes,
    hash_matches,
)
from peropix_tui.core.safetensors.header import (
    DTYPE_BITS,
    MAX_HEADER_LEN,
    SafetensorsError,
    SafetensorsHeader,
    TensorInfo,
    output_name,
    read_header,
    read_metadata,
)

__all__ = [
    "AUTOV1_MIN_SIZE",
    "DTYPE_BITS",
    "MAX_HEADER_LEN",
    "EditResult",
    "FileHashes",
    "HashingError",
    "SafetensorsError",
    "SafetensorsHeader",
    "TensorInfo",
    "compute_hashes",
    "hash_matches",
    "output_name",
    "read_header",
    "read_metadata",
    "update_metadata",
]
