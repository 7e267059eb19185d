"""Reading the files that image inputs name: every function here blocks (disk, image decoding, hashing) and is
called from thread workers, never from the UI thread.

Each check is the one the engine makes when the request is sent (the size limit, a decodable image, a mask that marks
something), made when the file is chosen instead, so a wrong file is refused at once with one line naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.metadata import ImageMetadata, read_metadata
from peropix_tui.engine.nai.imageprep import image_size, prepare_mask
from peropix_tui.engine.nai.models import VibeSupport, model_spec
from peropix_tui.engine.nai.payload import snap_size
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import load_vibes, sha256_hex
from peropix_tui.engine.types import RequestError, read_image_input
from peropix_tui.widgets.image_entries import (
    DEFAULT_SOURCE_STRENGTH,
    DEFAULT_VIBE_STRENGTH,
    ReferenceEntry,
    SourceEntry,
    VibeEntry,
    VibeState,
)
from peropix_tui.widgets.image_inputs import VIBE_FILE_SUFFIXES

if TYPE_CHECKING:
    from peropix_tui.nai_access import NaiAccess


class ImageFileError(PeropixError):
    """A file chosen as an image input that cannot be used; the message names the file."""


def resolve_path(text: str) -> Path:
    """The file a typed path names: `~` expanded, relative paths taken from the working folder."""
    cleaned = text.strip()
    if not cleaned:
        raise ImageFileError("no file given: type the path of an image")
    path = Path(cleaned).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _image(path: Path, what: str) -> tuple[bytes, tuple[int, int]]:
    """The bytes of an image file and its size as displayed; refuses what the engine would refuse."""
    try:
        if not path.is_file():
            raise ImageFileError(f"{path}: no such file")
        data = read_image_input(path, what)
        return data, image_size(data, what)
    except RequestError as exc:
        raise ImageFileError(f"{path}: {exc}") from None


def load_source(path: Path, *, strength: float = DEFAULT_SOURCE_STRENGTH, noise: float = 0.0) -> SourceEntry:
    """An img2img source, with the NovelAI size nearest to its own."""
    _, (width, height) = _image(path, "image")
    return SourceEntry(path, width, height, snap_size(width, height), strength=strength, noise=noise)


def check_mask(path: Path, width: int, height: int) -> None:
    """Refuse a mask that is not an image or marks nothing to repaint at `width`×`height`."""
    data, _ = _image(path, "mask")
    try:
        prepare_mask(data, width, height)
    except RequestError as exc:
        raise ImageFileError(f"{path}: {exc}") from None


def load_reference(path: Path, *, fidelity: float = 1.0, style_aware: bool = True) -> ReferenceEntry:
    _, (width, height) = _image(path, "character_reference")
    return ReferenceEntry(path, width, height, fidelity=fidelity, style_aware=style_aware)


def load_vibe_entries(path: Path, cache: VibeCache | None) -> list[VibeEntry]:
    """The vibes of an image file (one) or of a `.naiv4vibe`/`.naiv4vibebundle` file (its encodings are added to
    the cache, so they are never paid for again)."""
    if path.suffix.lower() not in VIBE_FILE_SUFFIXES:
        data, _ = _image(path, "vibe image")
        return [VibeEntry(path, path.name, sha256_hex(data))]
    vibes = load_vibes(path)
    entries = []
    for number, vibe in enumerate(vibes, start=1):
        if cache is not None:
            cache.import_vibe(vibe)
        name = vibe.name or (path.name if len(vibes) == 1 else f"{path.name} #{number}")
        strength = vibe.import_strength if vibe.import_strength is not None else DEFAULT_VIBE_STRENGTH
        info = vibe.import_information_extracted
        sha = sha256_hex(vibe.image) if vibe.image is not None else vibe.id
        entries.append(VibeEntry(path, name, sha, strength, info if info is not None else 1.0, file=vibe))
    return entries


def vibe_state(entry: VibeEntry, model: str, cache: VibeCache | None) -> VibeState:
    """Whether `entry` is already encoded for `model` (in its file or in the cache), must be encoded (False), or
    needs no encoding on this model (None); without a cache, an encoding not in the file must be made."""
    if model_spec(model).vibes is not VibeSupport.ENCODED:
        return None
    try:
        ref = entry.ref(model)
    except RequestError:
        return None  # an encoding-only file with nothing for this model: the request check names it
    if ref.encoding is not None:
        return True
    if cache is None:
        return False
    key = VibeKey.for_hash(entry.image_sha256, model, entry.information_extracted)
    return cache.get(key) is not None


def vibe_states(entries: Sequence[VibeEntry], model: str, cache: VibeCache | None) -> tuple[VibeState, ...]:
    return tuple(vibe_state(entry, model, cache) for entry in entries)


def read_settings(path: Path) -> ImageMetadata:
    """The generation settings recorded in an image file (empty metadata when it has none)."""
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    return read_metadata(path)


def vibe_cache_of(nai: NaiAccess) -> VibeCache | None:
    """The vibe cache requests go through now (the sandbox's own inside a sandbox); None without a token."""
    try:
        return nai.client().vibe_cache
    except PeropixError:
        return None
