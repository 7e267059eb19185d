"""Typed settings stored as JSON in the config dir.

The file belongs to the user: keys this version does not know are kept, a value that fails validation is reported
(key and file named) and its default used, and nothing is ever written over a file that could not be read. Saving
writes the keys the user changed and fills in missing ones; an invalid value stays in the file until the user sets
that key. Environment overrides (`PEROPIX_*_URL`) apply to the running process only and are never saved.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import orjson

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import ConfigError
from peropix_tui.core.notify import DesktopNotify
from peropix_tui.core.outputs import (
    DEFAULT_NAME_PATTERN,
    DEFAULT_QUALITY,
    SaveFormat,
    SaveOptions,
    name_pattern_problem,
    parse_name_pattern,
)
from peropix_tui.core.paths import AppDirs

log = logging.getLogger(__name__)

ImageRenderer = Literal["auto", "tgp", "sixel", "halfcell", "unicode", "off"]
UnderscoreStyle = Literal["keep", "spaces", "underscores"]
LocalDtype = Literal["auto", "fp16", "bf16", "fp32"]

IMAGE_RENDERERS: tuple[str, ...] = get_args(ImageRenderer)


def _check_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http(s) URL such as https://example.com"
    return None


def _check_device(value: str) -> str | None:
    kind, _, index = value.partition(":")
    if kind in ("auto", "cpu") and not index:
        return None
    if kind == "cuda" and (not index or index.isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def _meta(
    *, lo: float | None = None, hi: float | None = None, check: Callable[[Any], str | None] | None = None
) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "check": check}


@dataclass
class PathSettings:
    """Folders; an empty string means the default under the data dir."""

    outputs_dir: str = ""
    gallery_dir: str = ""
    civitai_root: str = ""
    filters_dir: str = ""
    lora_dirs: list[str] = field(default_factory=list)
    checkpoint_dirs: list[str] = field(default_factory=list)


@dataclass
class EndpointSettings:
    nai_base_url: str = field(default="https://image.novelai.net", metadata=_meta(check=_check_url))
    nai_account_url: str = field(default="https://api.novelai.net", metadata=_meta(check=_check_url))
    civitai_base_url: str = field(default="https://civitai.com", metadata=_meta(check=_check_url))


@dataclass
class ExecutorSettings:
    """Sizes of the bounded worker pools; the GPU pool is one worker by design."""

    gpu: int = field(default=1, metadata=_meta(lo=1, hi=1))
    metadata: int = field(default=4, metadata=_meta(lo=1, hi=64))
    io: int = field(default=4, metadata=_meta(lo=1, hi=64))
    hash: int = field(default=2, metadata=_meta(lo=1, hi=64))


@dataclass
class UiSettings:
    image_renderer: ImageRenderer = "auto"
    theme: str = "textual-dark"
    mouse: bool = True
    underscores: UnderscoreStyle = "keep"


@dataclass
class CivitaiSettings:
    download_workers: int = field(default=4, metadata=_meta(lo=1, hi=16))
    image_workers: int = field(default=6, metadata=_meta(lo=1, hi=16))
    request_spacing_s: float = field(default=1.0, metadata=_meta(lo=0.0, hi=60.0))
    types: list[str] = field(default_factory=lambda: ["LORA", "LoCon", "DoRA"])


@dataclass
class SavingSettings:
    """How generated images are written (see core/outputs.py). With `auto_save` off they wait in the data dir's
    `unsaved` folder, listed in the history, until saved; after `unsaved_keep_days`, or beyond
    `unsaved_max_mb`, the oldest are deleted when the app starts."""

    format: SaveFormat = "png"
    quality: int = field(default=DEFAULT_QUALITY, metadata=_meta(lo=1, hi=100))
    webp_lossless: bool = False
    auto_save: bool = True
    name_pattern: str = field(default=DEFAULT_NAME_PATTERN, metadata=_meta(check=name_pattern_problem))
    unsaved_keep_days: int = field(default=7, metadata=_meta(lo=1, hi=3650))
    unsaved_max_mb: int = field(default=2048, metadata=_meta(lo=16, hi=1 << 20))


@dataclass
class NotifySettings:
    """What happens in the terminal when the generation queue finishes (see core/notify.py)."""

    bell: bool = True
    desktop: DesktopNotify = "auto"


@dataclass
class LocalEngineSettings:
    """The local SDXL / SD 1.5 engine (the `[local]` extra); its checkpoints are found in `paths.checkpoint_dirs`.
    "auto" picks the GPU when there is one, and bf16 (else fp16) on it, fp32 on the CPU."""

    device: str = field(default="auto", metadata=_meta(check=_check_device))
    dtype: LocalDtype = "auto"


@dataclass
class Settings:
    paths: PathSettings = field(default_factory=PathSettings)
    endpoints: EndpointSettings = field(default_factory=EndpointSettings)
    executors: ExecutorSettings = field(default_factory=ExecutorSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    civitai: CivitaiSettings = field(default_factory=CivitaiSettings)
    saving: SavingSettings = field(default_factory=SavingSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    local: LocalEngineSettings = field(default_factory=LocalEngineSettings)


ENV_OVERRIDES: dict[str, str] = {
    "PEROPIX_NAI_BASE_URL": "endpoints.nai_base_url",
    "PEROPIX_NAI_ACCOUNT_URL": "endpoints.nai_account_url",
    "PEROPIX_CIVITAI_BASE_URL": "endpoints.civitai_base_url",
}


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found while loading; `str()` is the message shown to the user."""

    file: Path
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


@dataclass(frozen=True, slots=True)
class _Leaf:
    key: str  # dotted, e.g. "ui.theme"
    section: str
    name: str
    type: Any
    default: Any
    meta: Mapping[str, Any]


def _leaves() -> Iterator[_Leaf]:
    for section in dataclasses.fields(Settings):
        section_cls = get_type_hints(Settings)[section.name]
        hints = get_type_hints(section_cls)
        defaults = section_cls()
        for f in dataclasses.fields(section_cls):
            yield _Leaf(
                key=f"{section.name}.{f.name}",
                section=section.name,
                name=f.name,
                type=hints[f.name],
                default=getattr(defaults, f.name),
                meta=f.metadata,
            )


LEAVES: dict[str, _Leaf] = {leaf.key: leaf for leaf in _leaves()}


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return "a list of strings"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(tp, str(tp))


def coerce(leaf: _Leaf, value: Any, *, from_text: bool = False) -> Any:
    """Validate (and, for text from a form or the command line, convert) one value; raise ValueError with a reason."""
    tp = leaf.type
    if from_text and isinstance(value, str):
        value = _parse_text(tp, value)
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"must be {_describe(tp)}, got {value!r}")
    elif origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be {_describe(tp)}, got {value!r}")
        value = list(value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    lo, hi = leaf.meta.get("lo"), leaf.meta.get("hi")
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {lo:g}, got {value!r}" if lo != hi else f"must be {lo:g}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {hi:g}, got {value!r}" if lo != hi else f"must be {hi:g}")
    check = leaf.meta.get("check")
    if check is not None and (problem := check(value)):
        raise ValueError(f"{problem}, got {value!r}")
    return value


def _parse_text(tp: Any, text: str) -> Any:
    text = text.strip()
    if tp is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        return text
    if tp is int:
        try:
            return int(text)
        except ValueError:
            return text
    if tp is float:
        try:
            return float(text)
        except ValueError:
            return text
    if get_origin(tp) is list:
        if text.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                return text
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


class Config:
    """Settings plus where they came from: the file, its raw JSON, issues found and environment overrides."""

    def __init__(self, dirs: AppDirs) -> None:
        self.dirs = dirs
        self.settings = Settings()
        self.issues: list[ConfigIssue] = []
        self.overridden: dict[str, str] = {}  # dotted key -> environment variable name
        self._raw: dict[str, Any] = {}
        self._touched: set[str] = set()  # keys set through `set()` since the last load or save
        self._unreadable = False

    @property
    def path(self) -> Path:
        return self.dirs.config_file

    @classmethod
    def load(cls, dirs: AppDirs | None = None, environ: Mapping[str, str] | None = None) -> Config:
        """Read settings; problems become `issues` (and log warnings), never exceptions."""
        cfg = cls(dirs or AppDirs.from_env())
        cfg._read_file()
        cfg._apply_env(os.environ if environ is None else environ)
        for issue in cfg.issues:
            log.warning("settings: %s", issue)
        return cfg

    def _read_file(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._unreadable = True
            self.issues.append(ConfigIssue(self.path, "", f"cannot read ({exc.strerror}); using defaults"))
            return
        try:
            raw = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError as exc:
            self._unreadable = True
            self.issues.append(ConfigIssue(self.path, "", f"not valid JSON ({exc}); using defaults"))
            return
        if not isinstance(raw, dict):
            self._unreadable = True
            self.issues.append(ConfigIssue(self.path, "", "must hold a JSON object; using defaults"))
            return
        self._raw = raw
        for leaf in LEAVES.values():
            section = raw.get(leaf.section)
            if section is None:
                continue
            if not isinstance(section, dict):
                self.issues.append(ConfigIssue(self.path, leaf.section, "must be an object; using defaults"))
                continue
            if leaf.name not in section:
                continue
            try:
                value = coerce(leaf, section[leaf.name])
            except ValueError as exc:
                self.issues.append(ConfigIssue(self.path, leaf.key, f"{exc}; using default {leaf.default!r}"))
                continue
            setattr(getattr(self.settings, leaf.section), leaf.name, copy.deepcopy(value))

    def _apply_env(self, environ: Mapping[str, str]) -> None:
        for var, key in ENV_OVERRIDES.items():
            value = environ.get(var)
            if not value:
                continue
            try:
                self.set(key, value, from_text=True)
            except ConfigError as exc:
                self.issues.append(ConfigIssue(Path(var), key, str(exc)))
                continue
            self._touched.discard(key)
            self.overridden[key] = var

    def get(self, key: str) -> Any:
        leaf = self._leaf(key)
        return getattr(getattr(self.settings, leaf.section), leaf.name)

    def set(self, key: str, value: Any, *, from_text: bool = False) -> Any:
        """Validate and set one dotted key; raise ConfigError naming the key. Returns the stored value."""
        leaf = self._leaf(key)
        try:
            stored = coerce(leaf, value, from_text=from_text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        setattr(getattr(self.settings, leaf.section), leaf.name, stored)
        self.overridden.pop(key, None)
        self._touched.add(key)
        return stored

    @staticmethod
    def _leaf(key: str) -> _Leaf:
        try:
            return LEAVES[key]
        except KeyError:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(LEAVES)}") from None

    def items(self) -> Iterator[tuple[str, Any]]:
        for key in LEAVES:
            yield key, self.get(key)

    def save(self) -> None:
        """Write changed and missing keys atomically, keeping unknown keys and any value the user has not set."""
        raw = copy.deepcopy(self._raw)
        if self._unreadable and self.path.exists():
            backup = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(self.path, backup)
            except OSError as exc:
                raise ConfigError(f"{self.path}: cannot move the unreadable file aside: {exc.strerror}") from exc
            log.warning("settings: kept the unreadable %s as %s", self.path, backup)
        for key, leaf in LEAVES.items():
            section = raw.setdefault(leaf.section, {})
            if not isinstance(section, dict):
                section = raw[leaf.section] = {}
            missing = leaf.name not in section
            if key in self._touched or (missing and key not in self.overridden):
                section[leaf.name] = self.get(key)
        atomic_write_bytes(self.path, orjson.dumps(raw, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        self._raw = raw
        self._unreadable = False
        self._touched.clear()

    # Resolved folders -------------------------------------------------------------------------------------------

    def _folder(self, configured: str, default: Path) -> Path:
        return Path(configured).expanduser() if configured else default

    @property
    def outputs_dir(self) -> Path:
        return self._folder(self.settings.paths.outputs_dir, self.dirs.data_dir / "outputs")

    @property
    def gallery_dir(self) -> Path:
        return self._folder(self.settings.paths.gallery_dir, self.dirs.data_dir / "gallery")

    @property
    def civitai_root(self) -> Path:
        return self._folder(self.settings.paths.civitai_root, self.dirs.data_dir / "civitai")

    @property
    def filters_dir(self) -> Path:
        return self._folder(self.settings.paths.filters_dir, self.dirs.config_dir / "filters")

    @property
    def vibes_dir(self) -> Path:
        return self.dirs.data_dir / "vibes"

    @property
    def history_file(self) -> Path:
        return self.dirs.data_dir / "history.sqlite3"

    @property
    def unsaved_dir(self) -> Path:
        """Where images wait while auto-save is off; not an outputs folder, so never indexed from disk."""
        return self.dirs.data_dir / "unsaved"

    def save_options(self, *, format: SaveFormat | None = None, quality: int | None = None) -> SaveOptions:
        """The saving settings as `SaveOptions`; `format` and `quality` override them (command-line flags)."""
        saving = self.settings.saving
        return SaveOptions(
            format=format or saving.format,
            quality=saving.quality if quality is None else quality,
            webp_lossless=saving.webp_lossless,
            pattern=parse_name_pattern(saving.name_pattern),
        )
