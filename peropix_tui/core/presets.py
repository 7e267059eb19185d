"""Named presets of three kinds: generation parameters, resolutions and characters.

Each kind is kept in `<config dir>/presets/<kind>.json`; an export file holds every kind in the same shape, so a
store file and an export file import alike. Importing merges without asking: a preset whose name is taken
replaces the old one, and the report names every replacement. A file that cannot be read, or holds one value out
of range, is refused whole with one line naming the file, the preset and what is wrong; a store file that cannot
be read is never written over. Checks here are the backend-neutral ones (types, ranges, the 64-pixel grid); which
model takes which sampler is for the form that applies a preset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.capped_read import read_capped
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.saved_documents import MAX_NAME as MAX_NAME
from peropix_tui.core.saved_documents import check_name, dump_document, json_type, list_field, load_document

PRESETS_FOLDER: Final = "presets"
MAX_MODEL: Final = 1024
FORMAT: Final = "peropix-presets"
VERSION: Final = 1
MAX_PRESETS: Final = 1000
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
GRID: Final = 64
MAX_SIDE: Final = 16384
MAX_STEPS: Final = 1000
UC_AS_WRITTEN: Final = "as_written"
"""The undesired-content setting that adds no preset text: the negative prompt is sent as written."""
UC_PRESETS: Final = ("heavy", "light", "human_focus", "furry_focus", "none", UC_AS_WRITTEN)
_POSITION: Final = re.compile(r"[A-E][1-5]")


class PresetError(PeropixError):
    """A preset, a preset file or an import that cannot be used."""


class PresetKind(StrEnum):
    PARAMETERS = "parameters"
    RESOLUTIONS = "resolutions"
    CHARACTERS = "characters"


def snap64(value: int) -> int:
    """Round a side to the nearest multiple of 64 (at least 64), as the API requires."""
    return max(GRID, round(value / GRID) * GRID)


# Field checks: each returns the value in its stored type or raises PresetError naming what it wants ------------


def _text(what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise PresetError(f"{what} must be text, not {json_type(value)}")
        return value

    return check


def _line(what: str, limit: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(what)(value).strip()
        if not text or len(text) > limit or any(not c.isprintable() for c in text):
            raise PresetError(f"{what} must be one line of at most {limit} characters, not {value!r}")
        return text

    return check


def _word(what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(what)(value).strip()
        if not text or len(text) > MAX_NAME or any(c.isspace() for c in text):
            raise PresetError(f"{what} must be one word of at most {MAX_NAME} characters, not {value!r}")
        return text

    return check


def _whole(what: str, low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PresetError(f"{what} must be a whole number from {low} to {high}, not {value!r}")
        return value

    return check


def _number(what: str, low: float, high: float) -> Callable[[object], float]:
    def check(value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise PresetError(f"{what} must be a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    return check


def _flag(what: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise PresetError(f"{what} must be true or false, not {value!r}")
        return value

    return check


def _choice(what: str, choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise PresetError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
        assert isinstance(value, str)
        return value

    return check


def _position(value: object) -> str:
    text = _text("position")(value).strip().upper()
    if not _POSITION.fullmatch(text):
        raise PresetError(f"position must be a grid cell A1..E5 (column A-E, row 1-5), not {value!r}")
    return text


def _checked(preset: Any, checks: Mapping[str, Callable[[object], Any]]) -> None:
    """Run each field's check on a frozen preset and store the normalised value; None means "not set"."""
    object.__setattr__(preset, "name", check_name(preset.name, "name", PresetError))
    for key, check in checks.items():
        value = getattr(preset, key)
        if value is not None:
            object.__setattr__(preset, key, check(value))


# The three kinds ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParameterPreset:
    """Generation parameters; a field left at None is not part of the preset and applying it keeps the form's."""

    kind: ClassVar[PresetKind] = PresetKind.PARAMETERS
    CHECKS: ClassVar[Mapping[str, Callable[[object], Any]]] = {
        # A NovelAI model id, or a local checkpoint's name: a path inside its folder, which may hold spaces.
        "model": _line("model", MAX_MODEL),
        "steps": _whole("steps", 1, MAX_STEPS),
        "scale": _number("scale", 0.0, 100.0),
        "cfg_rescale": _number("cfg_rescale", 0.0, 1.0),
        "sampler": _word("sampler"),
        "scheduler": _word("scheduler"),
        "variety": _flag("variety"),
        "smea": _flag("smea"),
        "smea_dyn": _flag("smea_dyn"),
        "quality_tags": _flag("quality_tags"),
        "uc_preset": _choice("uc_preset", UC_PRESETS),
    }

    name: str
    model: str | None = None
    steps: int | None = None
    scale: float | None = None
    cfg_rescale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    variety: bool | None = None
    smea: bool | None = None
    smea_dyn: bool | None = None
    quality_tags: bool | None = None
    uc_preset: str | None = None

    def __post_init__(self) -> None:
        _checked(self, self.CHECKS)

    def describe(self) -> str:
        parts = [
            self.model,
            None if self.steps is None else f"{self.steps} steps",
            None if self.scale is None else f"guidance {self.scale:g}",
            None if self.cfg_rescale is None else f"rescale {self.cfg_rescale:g}",
            "/".join(s for s in (self.sampler, self.scheduler) if s) or None,
            None if self.variety is None else f"Variety+ {'on' if self.variety else 'off'}",
            "SMEA DYN" if self.smea_dyn else "SMEA" if self.smea else None,
            None if self.quality_tags is None else f"quality tags {'on' if self.quality_tags else 'off'}",
            None if self.uc_preset is None else f"UC {self.uc_preset}",
        ]
        return " · ".join(p for p in parts if p) or "(nothing set)"


@dataclass(frozen=True, slots=True)
class ResolutionPreset:
    """An image size; both sides are snapped to the 64-pixel grid."""

    kind: ClassVar[PresetKind] = PresetKind.RESOLUTIONS
    CHECKS: ClassVar[Mapping[str, Callable[[object], Any]]] = {
        "width": _whole("width", 1, MAX_SIDE),
        "height": _whole("height", 1, MAX_SIDE),
    }

    name: str
    width: int
    height: int

    def __post_init__(self) -> None:
        for key in ("width", "height"):
            if getattr(self, key) is None:
                raise PresetError(f"{key} is missing")
        _checked(self, self.CHECKS)
        object.__setattr__(self, "width", snap64(self.width))
        object.__setattr__(self, "height", snap64(self.height))

    @property
    def label(self) -> str:
        return f"{self.name} {self.width}×{self.height}"

    def describe(self) -> str:
        return f"{self.width}×{self.height}"


@dataclass(frozen=True, slots=True)
class CharacterPreset:
    """One character of a multi-character prompt: its prompt, negative prompt and grid cell (None: anywhere)."""

    kind: ClassVar[PresetKind] = PresetKind.CHARACTERS
    CHECKS: ClassVar[Mapping[str, Callable[[object], Any]]] = {
        "prompt": _text("prompt"),
        "negative": _text("negative"),
        "position": _position,
    }

    name: str
    prompt: str = ""
    negative: str = ""
    position: str | None = None

    def __post_init__(self) -> None:
        _checked(self, self.CHECKS)

    def describe(self) -> str:
        where = self.position or "anywhere"
        return f"{where} · {' '.join(self.prompt.split()) or '(empty prompt)'}"


Preset = ParameterPreset | ResolutionPreset | CharacterPreset
P = TypeVar("P", ParameterPreset, ResolutionPreset, CharacterPreset)
PRESET_CLASSES: Final[Mapping[PresetKind, type[Preset]]] = {
    cls.kind: cls for cls in (ParameterPreset, ResolutionPreset, CharacterPreset)
}

BUILTIN_RESOLUTIONS: Final = (
    ResolutionPreset("Portrait", 832, 1216),
    ResolutionPreset("Landscape", 1216, 832),
    ResolutionPreset("Square", 1024, 1024),
    ResolutionPreset("Large portrait", 1024, 1536),
    ResolutionPreset("Large landscape", 1536, 1024),
    ResolutionPreset("Wallpaper", 1088, 1920),
    ResolutionPreset("Wallpaper wide", 1920, 1088),
)
"""The sizes offered before any preset is saved; a saved resolution preset of the same name takes its place."""
_BUILTIN_NAMES: Final = frozenset(p.name.casefold() for p in BUILTIN_RESOLUTIONS)


def preset_to_json(preset: Preset) -> dict[str, Any]:
    """The preset as a JSON object; fields that are not set are left out."""
    out: dict[str, Any] = {"name": preset.name}
    for item in fields(preset):
        value = getattr(preset, item.name)
        if item.name != "name" and value is not None:
            out[item.name] = value
    return out


def preset_from_json(kind: PresetKind, entry: object) -> Preset:
    """A preset of `kind` from a JSON object; keys this version does not know are ignored."""
    if not isinstance(entry, dict):
        raise PresetError(f"must be an object, not {json_type(entry)}")
    if "name" not in entry:
        raise PresetError("has no name")
    cls = PRESET_CLASSES[kind]
    known = {item.name for item in fields(cls)}
    values = {key: value for key, value in entry.items() if key in known}
    if cls is ResolutionPreset and not {"width", "height"} <= values.keys():
        raise PresetError("needs a width and a height")
    return cls(**values)


# Files ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PresetDocument:
    """The presets of a file, by kind, in file order."""

    presets: dict[PresetKind, list[Preset]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.presets.values())


def document_to_json(presets: Mapping[PresetKind, Iterable[Preset]]) -> bytes:
    return dump_document(
        FORMAT, VERSION, {kind.value: [preset_to_json(p) for p in items] for kind, items in presets.items()}
    )


def document_from_json(data: bytes, source: str) -> PresetDocument:
    """Parse a store or export file; every error names `source` and, when one preset is at fault, that preset."""
    document = load_document(data, source, PresetError, version=VERSION, fmt=FORMAT, what="peropix presets file")
    parsed = PresetDocument()
    for kind in PresetKind:
        entries = list_field(document, kind.value, source, PresetError)
        if entries is None:
            continue
        if len(entries) > MAX_PRESETS:
            raise PresetError(f"{source}: {len(entries)} {kind.value} presets; at most {MAX_PRESETS} are read")
        items: list[Preset] = []
        seen: set[str] = set()
        for number, entry in enumerate(entries, 1):
            label = f"{kind.value}[{number}]"
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                label += f" ({entry['name'].strip()!r})"
            try:
                preset = preset_from_json(kind, entry)
            except PresetError as exc:
                raise PresetError(f"{source}: {label}: {exc}") from None
            if preset.name.casefold() in seen:
                raise PresetError(f"{source}: {label}: a second {kind.value} preset of that name")
            seen.add(preset.name.casefold())
            items.append(preset)
        parsed.presets[kind] = items
    return parsed


def read_document(path: Path) -> PresetDocument:
    return document_from_json(read_capped(path, MAX_FILE_BYTES, PresetError, what="a presets file"), str(path))


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: presets added and presets that replaced one of the same name, as (kind, name)."""

    source: Path
    added: tuple[tuple[PresetKind, str], ...]
    replaced: tuple[tuple[PresetKind, str], ...]

    def describe(self) -> str:
        total = len(self.added) + len(self.replaced)
        line = f"{total} preset{'s' if total != 1 else ''} imported from {self.source.name}: {len(self.added)} new"
        if self.replaced:
            names = ", ".join(f"{kind.value} {name!r}" for kind, name in self.replaced)
            line += f", {len(self.replaced)} replaced ({names})"
        return line


@dataclass(frozen=True, slots=True)
class PresetStore:
    """The saved presets: `<config dir>/presets/<kind>.json`, read on every call (the files are small)."""

    folder: Path

    @classmethod
    def in_config_dir(cls, config_dir: Path) -> PresetStore:
        return cls(config_dir / PRESETS_FOLDER)

    def path(self, kind: PresetKind) -> Path:
        return self.folder / f"{kind.value}.json"

    def saved(self, cls: type[P]) -> list[P]:
        """The presets of one kind saved by the user, in the order they were first saved."""
        return [item for item in self._read(cls.kind) if isinstance(item, cls)]

    def _read(self, kind: PresetKind) -> list[Preset]:
        path = self.path(kind)
        if not path.exists():
            return []
        return read_document(path).presets.get(kind, [])

    def resolutions(self) -> list[ResolutionPreset]:
        """The built-in sizes (a saved preset of the same name in their place), then the other saved ones."""
        saved = {p.name.casefold(): p for p in self.saved(ResolutionPreset)}
        builtins = [saved.pop(p.name.casefold(), p) for p in BUILTIN_RESOLUTIONS]
        return builtins + list(saved.values())

    def listed(self, kind: PresetKind) -> list[Preset]:
        """What a user picks from: the saved presets, plus the built-in sizes for resolutions."""
        if kind is PresetKind.RESOLUTIONS:
            return list(self.resolutions())
        return self._read(kind)

    def save(self, preset: Preset) -> bool:
        """Save `preset`, replacing one of the same name (True then) in its place."""
        return bool(self._merge(preset.kind, [preset]))

    def delete(self, kind: PresetKind, name: str) -> None:
        items = self._read(kind)
        kept = [p for p in items if p.name.casefold() != name.strip().casefold()]
        if len(kept) == len(items):
            if kind is PresetKind.RESOLUTIONS and name.strip().casefold() in _BUILTIN_NAMES:
                raise PresetError(f"{name!r} is a built-in size and cannot be deleted")
            raise PresetError(f"no {kind.value} preset named {name!r} in {self.path(kind)}")
        self._write(kind, kept)

    def export(self, path: Path) -> int:
        """Write every saved preset (not the built-in sizes) to `path`; returns how many. An existing file is
        replaced only when it is a presets file itself."""
        path = path.expanduser()
        if path.is_dir():
            raise PresetError(f"{path} is a folder: give a file name such as {path / 'presets.json'}")
        if path.exists():
            try:
                read_document(path)
            except PresetError:
                raise PresetError(f"{path} exists and is not a peropix presets file; not overwritten") from None
        presets = {kind: self._read(kind) for kind in PresetKind}
        atomic_write_bytes(path, document_to_json(presets))
        return sum(len(items) for items in presets.values())

    def import_file(self, path: Path) -> ImportReport:
        """Merge the presets of `path` (an export or a store file) into the store; nothing is written when the
        file or one of the store files cannot be read."""
        path = path.expanduser()
        document = read_document(path)
        current = {kind: self._read(kind) for kind in document.presets}
        added: list[tuple[PresetKind, str]] = []
        replaced: list[tuple[PresetKind, str]] = []
        for kind, items in document.presets.items():
            names = {p.name.casefold() for p in current[kind]}
            for preset in items:
                (replaced if preset.name.casefold() in names else added).append((kind, preset.name))
        for kind, items in document.presets.items():
            if items:
                self._merge(kind, items)
        return ImportReport(path, tuple(added), tuple(replaced))

    def _merge(self, kind: PresetKind, incoming: list[Preset]) -> list[str]:
        """Add or replace presets of one kind; returns the names replaced."""
        items = self._read(kind)
        index = {p.name.casefold(): i for i, p in enumerate(items)}
        replaced: list[str] = []
        for preset in incoming:
            at = index.get(preset.name.casefold())
            if at is None:
                index[preset.name.casefold()] = len(items)
                items.append(preset)
            else:
                replaced.append(items[at].name)
                items[at] = preset
        if len(items) > MAX_PRESETS:
            raise PresetError(f"{self.path(kind)} would hold {len(items)} presets; at most {MAX_PRESETS} are kept")
        self._write(kind, items)
        return replaced

    def _write(self, kind: PresetKind, items: list[Preset]) -> None:
        atomic_write_bytes(self.path(kind), document_to_json({kind: items}))
