"""NovelAI's vibe files: `.naiv4vibe` (one vibe) and `.naiv4vibebundle` (several), read and written as the
web does.

A vibe file holds the source image (optional: "encoding" files leave it out), its sha256 as `id`, and its
encodings keyed by model and by the parameters they were made with. Encodings are model-family specific
and cost Anlas to make, so importing a file lets a request use them instead of paying again; a file from
elsewhere that is malformed gives one clear line naming the file and the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson
from PIL import Image

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.imageprep import open_image
from peropix_tui.engine.nai.models import model_for_vibe_key, model_spec, same_encoding_family
from peropix_tui.engine.nai.wire import b64, json_number
from peropix_tui.engine.types import RequestError, VibeRef

VIBE_IDENTIFIER: Final = "novelai-vibe-transfer"
BUNDLE_IDENTIFIER: Final = "novelai-vibe-transfer-bundle"
FILE_VERSION: Final = 1
VIBE_SUFFIX: Final = ".naiv4vibe"
BUNDLE_SUFFIX: Final = ".naiv4vibebundle"
MAX_FILE_BYTES: Final = 256 * 1024 * 1024
MAX_ENCODING_BYTES: Final = 32 * 1024 * 1024
MAX_BUNDLE_VIBES: Final = 1000
THUMBNAIL_SIDE: Final = 256
DEFAULT_STRENGTH: Final = 0.6
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


class VibeFileError(PeropixError):
    """A `.naiv4vibe` or `.naiv4vibebundle` file that cannot be used; the message names the file."""


def info_hundredths(information_extracted: float) -> int:
    """Information extracted on the 0.01 grid the web uses, as a whole number of hundredths."""
    return round(information_extracted * 100)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def params_key(params: Mapping[str, Any]) -> str:
    """A key for new encodings' parameters; reading never depends on the key, only on `params`."""
    return sha256_hex(orjson.dumps(dict(params), option=orjson.OPT_SORT_KEYS))


def is_sha256_hex(text: str) -> bool:
    return _SHA256_HEX.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class VibeEncoding:
    """One encoding inside a vibe file, with the keys it was stored under so a re-export is faithful."""

    model_key: str
    """The file's model key, such as "v4-5full"."""
    params_key: str
    """The key the encoding is stored under for its parameters (opaque in the web's files)."""
    data: bytes
    params: Mapping[str, Any]

    @property
    def model(self) -> str | None:
        """The model id behind `model_key`; None for a model this app does not know."""
        return model_for_vibe_key(self.model_key)

    @property
    def information_extracted(self) -> float:
        value = self.params.get("information_extracted", 1)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0


@dataclass(frozen=True, slots=True)
class VibeFile:
    """One vibe as the web exports it. `image` is None for an encoding-only file."""

    id: str
    """sha256 hex of the source image."""
    encodings: tuple[VibeEncoding, ...]
    image: bytes | None = None
    name: str = ""
    thumbnail: str | None = None
    """A `data:image/...;base64,` URL, as stored."""
    created_at: int = 0
    """Milliseconds since the epoch."""
    import_model: str | None = None
    import_information_extracted: float | None = None
    import_strength: float | None = None

    @property
    def type(self) -> str:
        return "image" if self.image is not None else "encoding"

    def encoding_for(self, model: str, information_extracted: float | None = None) -> VibeEncoding | None:
        """The encoding for `model`'s family made with `information_extracted` (else the first one for the
        family), or None when the file has none for it."""
        family = model_spec(model).family
        usable = [e for e in self.encodings if e.model is not None and model_spec(e.model).family is family]
        if information_extracted is not None:
            wanted = info_hundredths(information_extracted)
            for entry in usable:
                if info_hundredths(entry.information_extracted) == wanted:
                    return entry
        return usable[0] if usable else None

    def to_vibe_ref(
        self, model: str, *, strength: float | None = None, information_extracted: float | None = None
    ) -> VibeRef:
        """A request's vibe from this file: its encoding for `model` when it has one, else its image (to be
        encoded), with the file's own strength and information extracted unless given."""
        info = information_extracted
        # The file's own information extracted belongs to the model it was last used with.
        if info is None and self.import_model is not None and same_encoding_family(self.import_model, model):
            info = self.import_information_extracted
        entry = self.encoding_for(model, info)
        # An encoding made with another information-extracted value is not what was asked for: with the
        # image at hand it is encoded afresh; an encoding-only file can only offer what it holds.
        if (
            entry is not None
            and info is not None
            and self.image is not None
            and info_hundredths(entry.information_extracted) != info_hundredths(info)
        ):
            entry = None
        if entry is None and self.image is None:
            models = ", ".join(e.model or e.model_key for e in self.encodings)
            raise RequestError("vibes", f"vibe {self.name or self.id} has encodings for {models}, not for {model}")
        if entry is not None:
            info = entry.information_extracted
        if strength is None:
            strength = self.import_strength if self.import_strength is not None else DEFAULT_STRENGTH
        return VibeRef(
            image=self.image,
            encoding=entry.data if entry is not None else None,
            encoding_model=entry.model if entry is not None else None,
            strength=strength,
            information_extracted=info if info is not None else 1.0,
        )


# --- reading ------------------------------------------------------------------------------------------------


def _b64decode(value: object, what: str, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise VibeFileError(f"{where}: {what} is missing or not text")
    text = value.partition(",")[2] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VibeFileError(f"{where}: {what} is not valid base64") from exc


def _number(value: object, what: str, where: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VibeFileError(f"{where}: {what} must be a number, not {value!r}")
    if not low <= value <= high:
        raise VibeFileError(f"{where}: {what} must be between {low:g} and {high:g}, not {value:g}")
    return float(value)


def _encodings(raw: object, where: str) -> tuple[VibeEncoding, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise VibeFileError(f"{where}: encodings must be an object keyed by model")
    found: list[VibeEncoding] = []
    for model_key, entries in raw.items():
        if not isinstance(entries, dict):
            raise VibeFileError(f"{where}: encodings.{model_key} must be an object")
        for key, entry in entries.items():
            at = f"encodings.{model_key}.{key}"
            if not isinstance(entry, dict):
                raise VibeFileError(f"{where}: {at} must be an object")
            data = _b64decode(entry.get("encoding"), f"{at}.encoding", where)
            if len(data) > MAX_ENCODING_BYTES:
                raise VibeFileError(f"{where}: {at}.encoding is larger than {MAX_ENCODING_BYTES} bytes")
            params = entry.get("params", {})
            if not isinstance(params, dict):
                raise VibeFileError(f"{where}: {at}.params must be an object")
            _number(params.get("information_extracted"), f"{at}.params.information_extracted", where, 0.0, 1.0)
            found.append(VibeEncoding(model_key, key, data, MappingProxyType(dict(params))))
    return tuple(found)


def vibe_from_json(raw: object, where: str) -> VibeFile:
    """One vibe from the parsed JSON of a `.naiv4vibe` file (or a bundle entry)."""
    if not isinstance(raw, dict):
        raise VibeFileError(f"{where}: not a vibe (a JSON object is expected)")
    if raw.get("identifier") != VIBE_IDENTIFIER:
        raise VibeFileError(f"{where}: not a NovelAI vibe file (identifier {raw.get('identifier')!r})")
    if raw.get("version") != FILE_VERSION:
        raise VibeFileError(f"{where}: vibe file version {raw.get('version')!r} is not supported (1 is)")
    kind = raw.get("type", "image" if "image" in raw else "encoding")
    if kind not in ("image", "encoding"):
        raise VibeFileError(f"{where}: type must be image or encoding, not {kind!r}")
    image = _b64decode(raw.get("image"), "image", where) if kind == "image" else None
    identifier = raw.get("id")
    if image is not None:
        identifier = sha256_hex(image) if not isinstance(identifier, str) or not identifier else identifier
    if not isinstance(identifier, str) or not is_sha256_hex(identifier.lower()):
        raise VibeFileError(f"{where}: id must be the 64-hex sha256 of the source image, not {identifier!r}")
    encodings = _encodings(raw.get("encodings"), where)
    if image is None and not encodings:
        raise VibeFileError(f"{where}: holds neither an image nor an encoding")
    info = raw.get("importInfo")
    info = info if isinstance(info, dict) else {}
    model = info.get("model")
    name, thumbnail, created = raw.get("name"), raw.get("thumbnail"), raw.get("createdAt")
    return VibeFile(
        id=identifier.lower(),
        encodings=encodings,
        image=image,
        name=name if isinstance(name, str) else "",
        thumbnail=thumbnail if isinstance(thumbnail, str) else None,
        created_at=created if isinstance(created, int) and not isinstance(created, bool) else 0,
        import_model=model if isinstance(model, str) else None,
        import_information_extracted=_number(
            info.get("information_extracted"), "importInfo.information_extracted", where, 0.0, 1.0
        ),
        import_strength=_number(info.get("strength"), "importInfo.strength", where, 0.0, 1.0),
    )


def parse_vibes(data: bytes, where: str) -> list[VibeFile]:
    """The vibes in the bytes of a `.naiv4vibe` (one) or `.naiv4vibebundle` (several) file."""
    if len(data) > MAX_FILE_BYTES:
        raise VibeFileError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise VibeFileError(f"{where}: not JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("identifier") == BUNDLE_IDENTIFIER:
        if raw.get("version") != FILE_VERSION:
            raise VibeFileError(f"{where}: bundle version {raw.get('version')!r} is not supported (1 is)")
        items = raw.get("vibes")
        if not isinstance(items, list):
            raise VibeFileError(f"{where}: a bundle needs a vibes list")
        if len(items) > MAX_BUNDLE_VIBES:
            raise VibeFileError(f"{where}: {len(items)} vibes; at most {MAX_BUNDLE_VIBES} are read")
        return [vibe_from_json(item, f"{where} vibe {number}") for number, item in enumerate(items, start=1)]
    return [vibe_from_json(raw, where)]


def load_vibes(path: Path) -> list[VibeFile]:
    """The vibes of a `.naiv4vibe` or `.naiv4vibebundle` file on disk."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VibeFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise VibeFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_vibes(data, str(path))


# --- writing ------------------------------------------------------------------------------------------------


def thumbnail_data_url(image: bytes) -> str:
    """A small PNG of `image` as a data URL, as the web stores beside the original."""
    picture = open_image(image, "vibe image")
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    if picture.mode not in ("RGB", "RGBA"):
        picture = picture.convert("RGBA")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + b64(buffer.getvalue())


def make_vibe_file(
    image: bytes,
    encodings: Iterable[tuple[str, float, bytes]],
    *,
    strength: float = DEFAULT_STRENGTH,
    name: str | None = None,
    include_image: bool = True,
    created_at: int | None = None,
) -> VibeFile:
    """A vibe file for `image` holding `(model, information_extracted, encoding)` entries; the first entry
    is the one recorded as imported."""
    entries: list[VibeEncoding] = []
    first: tuple[str, float] | None = None
    for model, information_extracted, data in encodings:
        spec = model_spec(model)
        if spec.vibe_file_key is None:
            raise RequestError("vibes", f"{spec.label} has no vibe encodings to export")
        info = round(information_extracted, 2)
        params = MappingProxyType({"information_extracted": json_number(info)})
        entries.append(VibeEncoding(spec.vibe_file_key, params_key(params), data, params))
        first = first or (spec.id, info)
    identifier = sha256_hex(image)
    return VibeFile(
        id=identifier,
        encodings=tuple(entries),
        image=image if include_image else None,
        name=name or f"{identifier[:6]}-{identifier[-6:]}",
        thumbnail=thumbnail_data_url(image) if include_image else None,
        created_at=created_at if created_at is not None else int(time.time() * 1000),
        import_model=first[0] if first else None,
        import_information_extracted=first[1] if first else None,
        import_strength=strength,
    )


def vibe_to_json(vibe: VibeFile) -> dict[str, Any]:
    encodings: dict[str, dict[str, Any]] = {}
    for entry in vibe.encodings:
        encodings.setdefault(entry.model_key, {})[entry.params_key] = {
            "encoding": b64(entry.data),
            "params": dict(entry.params),
        }
    out: dict[str, Any] = {"identifier": VIBE_IDENTIFIER, "version": FILE_VERSION, "type": vibe.type}
    if vibe.image is not None:
        out["image"] = b64(vibe.image)
    out |= {"id": vibe.id, "encodings": encodings, "name": vibe.name}
    if vibe.thumbnail is not None:
        out["thumbnail"] = vibe.thumbnail
    out["createdAt"] = vibe.created_at
    import_info: dict[str, Any] = {}
    if vibe.import_model is not None:
        import_info["model"] = vibe.import_model
    if vibe.import_information_extracted is not None:
        import_info["information_extracted"] = json_number(vibe.import_information_extracted)
    if vibe.import_strength is not None:
        import_info["strength"] = json_number(vibe.import_strength)
    out["importInfo"] = import_info
    return out


def vibe_file_bytes(vibe: VibeFile) -> bytes:
    return orjson.dumps(vibe_to_json(vibe))


def bundle_bytes(vibes: Iterable[VibeFile]) -> bytes:
    return orjson.dumps(
        {"identifier": BUNDLE_IDENTIFIER, "version": FILE_VERSION, "vibes": [vibe_to_json(v) for v in vibes]}
    )


def save_vibes(path: Path, vibes: Iterable[VibeFile]) -> None:
    """Write one vibe as `.naiv4vibe`, or several as `.naiv4vibebundle`, atomically; the suffix decides."""
    items = list(vibes)
    if path.suffix == VIBE_SUFFIX:
        if len(items) != 1:
            raise VibeFileError(f"{path}: a {VIBE_SUFFIX} file holds exactly one vibe, not {len(items)}")
        atomic_write_bytes(path, vibe_file_bytes(items[0]))
    elif path.suffix == BUNDLE_SUFFIX:
        atomic_write_bytes(path, bundle_bytes(items))
    else:
        raise VibeFileError(f"{path}: name it {VIBE_SUFFIX} (one vibe) or {BUNDLE_SUFFIX} (several)")
