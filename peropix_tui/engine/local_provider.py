"""The local engine as the app and the command line see it, without importing torch until it is used.

`peropix_tui.engine.local` needs torch; a user who only uses NovelAI may not have it, and the app must start
without loading it either way. Everything here imports the engine lazily and turns a missing torch into one line
saying what to install. The app keeps one engine (`LocalEngineSlot`), made on the first local job and made again
when its settings change; checkpoints are listed by name (`scan_checkpoints`), the name a request's `model` holds;
and an image made locally gives its settings back for a new request (`local_settings_from_metadata`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.local_names import local_sampler, local_scheduler
from peropix_tui.engine.types import GRID, MAX_SCALE, MAX_SIDE, MAX_STEPS, SEED_LIMIT, CharacterPrompt

if TYPE_CHECKING:
    from peropix_tui.core.config import Config
    from peropix_tui.core.metadata import ImageMetadata
    from peropix_tui.engine.local.checkpoint import CheckpointInfo
    from peropix_tui.engine.local.engine import LocalEngine

log = logging.getLogger(__name__)

INSTALL_HINT: Final = "the local engine needs torch: install it with pip install 'peropix-tui[local]'"
FAMILY_LABELS: Final = {"sdxl_base": "SDXL", "sdxl_refiner": "SDXL refiner", "sd15": "SD 1.5"}
PREDICTION_LABELS: Final = {"eps": "eps", "v": "v-pred", "edm": "EDM", "v_edm": "v-pred EDM"}


class LocalEngineMissing(PeropixError):
    """The local engine was asked for and torch (the `[local]` extra) is not installed."""


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What a local engine is made with; an engine made with other settings is replaced by a new one."""

    checkpoint_dirs: tuple[Path, ...]
    lora_dirs: tuple[Path, ...]
    device: str = "auto"
    dtype: str = "auto"

    @classmethod
    def from_config(cls, config: Config) -> LocalSettings:
        settings = config.settings
        return cls(
            checkpoint_dirs=tuple(Path(p).expanduser() for p in settings.paths.checkpoint_dirs),
            lora_dirs=tuple(Path(p).expanduser() for p in settings.paths.lora_dirs),
            device=settings.local.device,
            dtype=settings.local.dtype,
        )


@contextlib.contextmanager
def torch_needed() -> Iterator[None]:
    """Around an import of the local engine: a missing torch becomes LocalEngineMissing, one line saying what to
    install, instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "torch":
            raise LocalEngineMissing(INSTALL_HINT) from None
        raise


def open_local_engine(settings: LocalSettings) -> LocalEngine:
    """A new engine for `settings` (blocking: the first call imports torch, seconds)."""
    with torch_needed():
        from peropix_tui.engine.local.engine import LocalEngine
    return LocalEngine(
        checkpoint_dirs=settings.checkpoint_dirs,
        lora_dirs=settings.lora_dirs,
        device=settings.device,
        dtype=settings.dtype,
    )


class LocalEngineSlot:
    """The app's one local engine: made on first use, replaced (the old one closed) when the settings change.

    Safe from any thread; `get` blocks while torch is imported, so callers run it in a worker. Only one local job
    runs at a time (their job group), so replacing the engine never pulls it from under a running generation.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: LocalEngine | None = None
        self._settings: LocalSettings | None = None

    def get(self, settings: LocalSettings) -> LocalEngine:
        with self._lock:
            if self._engine is not None and self._settings == settings:
                return self._engine
            if self._engine is not None:
                log.info("local engine settings changed: making a new engine")
                self._engine.close()
            self._engine = None
            self._engine = open_local_engine(settings)
            self._settings = settings
            return self._engine

    def close(self) -> None:
        """Close the engine (its models leave memory); the next `get` makes a new one."""
        with self._lock:
            engine, self._engine, self._settings = self._engine, None, None
        if engine is not None:
            engine.close()


# Checkpoints ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalCheckpoint:
    """A checkpoint the local engine can use, under the name a request gives as its `model`."""

    name: str
    path: Path
    family: str
    prediction: str
    size: int
    inpainting: bool = False
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """ "SDXL · v-pred · 6.9 GB" (with "inpainting" for 9-channel models)."""
        parts = [FAMILY_LABELS.get(self.family, self.family), PREDICTION_LABELS.get(self.prediction, self.prediction)]
        if self.inpainting:
            parts.append("inpainting")
        parts.append(f"{self.size / 1e9:.1f} GB")
        return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class CheckpointScan:
    """What the checkpoint folders hold: usable checkpoints by name, and one line per file or folder that is not."""

    checkpoints: tuple[LocalCheckpoint, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    def find(self, name: str) -> LocalCheckpoint | None:
        """The checkpoint `name` stands for: its name here, its file name, its stem or its path."""
        for keys in (
            lambda c: (c.name,),
            lambda c: (c.path.name, str(c.path)),
            lambda c: (c.path.name.rsplit(".", 1)[0],),
        ):
            found = [c for c in self.checkpoints if name in keys(c)]
            if len(found) == 1:
                return found[0]
        return None


def _relative(path: Path, folders: Sequence[Path]) -> str:
    for folder in folders:
        if path.is_relative_to(folder):
            return path.relative_to(folder).as_posix()
    return str(path)


def _names(infos: Sequence[CheckpointInfo], folders: Sequence[Path]) -> list[str]:
    """Each checkpoint's file stem; when another one has the same stem, its path inside its folder, or its full
    path when that is shared too (two folders with the same layout). The engine resolves all three."""
    stems = [info.path.name.rsplit(".", 1)[0] for info in infos]
    relatives = [_relative(info.path, folders) for info in infos]
    return [
        stem if stems.count(stem) == 1 else relative if relatives.count(relative) == 1 else str(info.path)
        for stem, relative, info in zip(stems, relatives, infos, strict=True)
    ]


def scan_checkpoints(folders: Sequence[Path]) -> CheckpointScan:
    """The checkpoints under `folders`, from their headers (blocking: run it in a worker; imports torch).

    Raises LocalEngineMissing when torch is not installed; unusable files and folders become `problems`.
    """
    if not folders:
        return CheckpointScan(problems=("no checkpoint folder: set paths.checkpoint_dirs in the settings",))
    with torch_needed():
        from peropix_tui.engine.local.checkpoint import CheckpointInfo, list_checkpoints

    found = list_checkpoints(list(folders))
    infos = [item for item in found if isinstance(item, CheckpointInfo)]
    problems = tuple(str(item) for item in found if not isinstance(item, CheckpointInfo))
    expanded = [Path(folder).expanduser() for folder in folders]
    checkpoints = tuple(
        LocalCheckpoint(
            name=name,
            path=info.path,
            family=info.family,
            prediction=info.prediction,
            size=info.size,
            inpainting=info.inpainting,
            warnings=info.warnings,
        )
        for name, info in zip(_names(infos, expanded), infos, strict=True)
    )
    return CheckpointScan(checkpoints, problems)


# Settings from an image ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class LocalImageSettings:
    """`GenerationRequest` fields that make an image again with the local engine (the provider itself left to the
    caller), and what could not be taken."""

    fields: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: object, low: float, high: float) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
    )


def local_settings_from_metadata(meta: ImageMetadata, *, model: str | None = None) -> LocalImageSettings:
    """The settings of `meta`'s image for the local engine: its prompts exactly as recorded (character prompts
    without their positions), size, steps, guidance, sampler, scheduler, seed, and its model as the checkpoint
    unless `model` is given. Settings the local engine cannot take (a NovelAI-only sampler, a size off the grid)
    are left out, one warning each."""
    if meta.prompt is None:
        raise PeropixError("the image holds no generation settings to reuse")
    result = LocalImageSettings()
    fields = result.fields
    fields["prompt"] = meta.prompt
    fields["negative"] = meta.negative_prompt or ""
    chosen = model or meta.model
    if chosen:
        fields["model"] = chosen
    for name, value, fits, limits in (
        ("steps", meta.steps, _whole(meta.steps, 1, MAX_STEPS), f"1-{MAX_STEPS}"),
        ("scale", meta.cfg, _number(meta.cfg, 0.0, MAX_SCALE), f"0-{MAX_SCALE:g}"),
        ("cfg_rescale", meta.cfg_rescale, _number(meta.cfg_rescale, 0.0, 1.0), "0-1"),
        ("seed", meta.seed, _whole(meta.seed, 0, SEED_LIMIT - 1), "a 64-bit seed"),
    ):
        if fits:
            fields[name] = value
        elif value is not None:
            result.warnings.append(f"{name} {value!r} is not {limits}; left out")
    if meta.width is not None and meta.height is not None:
        if all(_whole(side, GRID, MAX_SIDE) and side % GRID == 0 for side in (meta.width, meta.height)):
            fields["width"], fields["height"] = meta.width, meta.height
        else:
            result.warnings.append(f"size {meta.width}x{meta.height} is not on the {GRID}-pixel grid; left out")
    for key, text, canonical in (
        ("sampler", meta.sampler, local_sampler),
        ("scheduler", meta.scheduler, local_scheduler),
    ):
        if text is None:
            continue
        known = canonical(text)
        if known is None:
            result.warnings.append(f"{key} {text!r} is not one of the local engine's; left out")
        else:
            fields[key] = known
    if meta.characters:
        # Without their positions: the local engine adds each to the prompt as a section of its own.
        fields["characters"] = tuple(CharacterPrompt(c.prompt, c.negative) for c in meta.characters)
    if meta.smea:
        result.warnings.append("SMEA is NovelAI's; left out")
    return result
