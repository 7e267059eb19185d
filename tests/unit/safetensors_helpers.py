"""Shared pieces of the safetensors and LoRA library tests: real kohya metadata, hand-built files, file splitting."""

from __future__ import annotations

import json
import struct
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lora"
PEPPER = "metadata__civitai_civitai__Pepper__Carrot-headerData-jsonb.json"
BOO = "metadata__rockerBOO_lora-inspector-rs__boo-safetensors-ground-truth.json"


def kohya_metadata(name: str) -> dict[str, str]:
    """A real kohya `__metadata__` map; nested values go back to the JSON strings kohya writes."""
    raw = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}


def raw_file(path: Path, header: bytes | str, buffer: bytes = b"", length: int | None = None) -> Path:
    """A file laid out by hand: 8-byte little-endian length (the real one unless `length` lies), header, buffer."""
    data = header.encode("utf-8") if isinstance(header, str) else header
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(data) if length is None else length) + data + buffer)
    return path


def split(path: Path) -> tuple[int, bytes, bytes]:
    """The header length, the header bytes and the tensor buffer of a file, read independently of the library."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    return n, blob[8 : 8 + n], blob[8 + n :]
