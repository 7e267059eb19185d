"""The on-disk cache of vibe encodings, so no `/ai/encode-vibe` call is ever paid for twice.

An encoding is only valid for the model family it was made for and the information-extracted value it was
made with, so the key is (sha256 of the image, model family, information extracted in hundredths, sha256 of
the mask). Each encoding is one file under `<folder>/<family>/`, written atomically: a crash never leaves a
half-written entry that looks valid, and a damaged entry reads as missing (it is encoded again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.engine.nai.models import model_spec
from peropix_tui.engine.nai.vibe_files import (
    MAX_ENCODING_BYTES,
    VibeFile,
    info_hundredths,
    is_sha256_hex,
    sha256_hex,
)

log = logging.getLogger(__name__)

CACHE_SUFFIX: Final = ".vibe"


@dataclass(frozen=True, slots=True)
class VibeKey:
    """What makes two encodings interchangeable."""

    image_sha256: str
    family: str
    information_extracted: int
    """Hundredths: 0.7 and 0.699 share an entry, as they share a web slider position."""
    mask_sha256: str | None = None

    @classmethod
    def of(cls, image: bytes, model: str, information_extracted: float, mask: bytes | None = None) -> VibeKey:
        """The key of an encoding of `image` (with `mask`) for `model`'s family."""
        return cls.for_hash(sha256_hex(image), model, information_extracted, None if mask is None else sha256_hex(mask))

    @classmethod
    def for_hash(
        cls, image_sha256: str, model: str, information_extracted: float, mask_sha256: str | None = None
    ) -> VibeKey:
        """The key of an image known only by its hash (an imported encoding-only file)."""
        if not is_sha256_hex(image_sha256):
            raise ValueError(f"not a sha256 hex digest: {image_sha256!r}")
        if mask_sha256 is not None and not is_sha256_hex(mask_sha256):
            raise ValueError(f"not a sha256 hex digest: {mask_sha256!r}")
        return cls(image_sha256, model_spec(model).family.value, info_hundredths(information_extracted), mask_sha256)

    @property
    def filename(self) -> str:
        mask = self.mask_sha256 or "nomask"
        return f"{self.image_sha256}_{self.information_extracted:03d}_{mask}{CACHE_SUFFIX}"


class VibeCache:
    """Encodings on disk under `folder/<model family>/`; reads and writes are blocking file I/O."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, key: VibeKey) -> Path:
        return self.folder / key.family / key.filename

    def get(self, key: VibeKey) -> bytes | None:
        """The cached encoding, or None; an unreadable or implausible entry counts as missing."""
        path = self.path_for(key)
        try:
            size = path.stat().st_size
            if not 0 < size <= MAX_ENCODING_BYTES:
                log.warning("vibe cache: ignoring %s (%d bytes)", path, size)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("vibe cache: cannot read %s: %s", path, exc.strerror or exc)
            return None

    def put(self, key: VibeKey, encoding: bytes) -> None:
        if not encoding or len(encoding) > MAX_ENCODING_BYTES:
            raise ValueError(f"a vibe encoding must be 1 to {MAX_ENCODING_BYTES} bytes, not {len(encoding)}")
        atomic_write_bytes(self.path_for(key), encoding)

    def import_vibe(self, vibe: VibeFile) -> int:
        """Store every encoding of `vibe` whose model is known; returns how many were stored."""
        image_sha256 = sha256_hex(vibe.image) if vibe.image is not None else vibe.id
        stored = 0
        for entry in vibe.encodings:
            if entry.model is None:
                continue
            key = VibeKey.for_hash(image_sha256, entry.model, entry.information_extracted)
            if self.get(key) != entry.data:
                self.put(key, entry.data)
            stored += 1
        return stored
