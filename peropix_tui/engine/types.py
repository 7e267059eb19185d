"""Provider-neutral generation types: a `GenerationRequest` goes in, `ProgressEvent`s come out while it runs,
and `GeneratedImage`s (bytes, metadata, seed) come out at the end.

NovelAI and the local engine both take the same request, so the TUI, the CLI and `--from-image` build one
object whatever the backend; `provider` says which one it is for. Checks here are the ones true for every backend
(sizes on the 64-pixel grid, values in range) plus, for the local engine, its sampler and scheduler names and the
refusal of NovelAI-only settings; NovelAI's per-model limits are checked by its payload builder.
"""

from __future__ import annotations

import enum
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.local_names import LOCAL_SAMPLERS, LOCAL_SCHEDULERS, local_sampler, local_scheduler

if TYPE_CHECKING:
    # Only for annotations: the metadata codec pulls in Pillow and numpy, which the app shell must not wait for.
    from peropix_tui.core.metadata import ImageMetadata

ImageInput = bytes | Path
"""An image given inline (bytes) or by file path (read when the request is sent)."""

ImageFormat = Literal["png", "webp"]
Provider = Literal["novelai", "local"]

NOVELAI: Final = "novelai"
LOCAL: Final = "local"
PROVIDERS: Final[tuple[Provider, ...]] = (NOVELAI, LOCAL)

GRID: Final = 64
MAX_SIDE: Final = 16384
MAX_STEPS: Final = 1000
MAX_SCALE: Final = 100.0
MAX_SAMPLES: Final = 64
SEED_LIMIT: Final = 1 << 64
# Random seeds stay below 2**32 - 8 so that seed + i for every sample of a batch is still a 32-bit seed.
RANDOM_SEED_MAX: Final = (1 << 32) - 8
MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024
POSITION_RE: Final = re.compile(r"[A-E][1-5]")


class RequestError(PeropixError):
    """A generation setting that cannot be used; `field` names the setting so a form can point at it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Action(enum.StrEnum):
    GENERATE = "generate"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class UcPreset(enum.StrEnum):
    """The undesired-content presets a user picks from; the text behind each depends on the model."""

    HEAVY = "heavy"
    LIGHT = "light"
    HUMAN_FOCUS = "human_focus"
    FURRY_FOCUS = "furry_focus"
    NONE = "none"


def read_image_input(source: ImageInput, field: str) -> bytes:
    """The bytes of an image input, read from disk when it is a path; bounded so a wrong file cannot eat RAM."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            size = source.stat().st_size
            if size > MAX_IMAGE_BYTES:
                raise RequestError(field, f"{source} is {size} bytes, more than the {MAX_IMAGE_BYTES} allowed")
            data = source.read_bytes()
        except OSError as exc:
            raise RequestError(field, f"cannot read {source}: {exc.strerror or exc}") from exc
    if not data:
        raise RequestError(field, "the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise RequestError(field, f"the image is {len(data)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    return data


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise RequestError(field, f"must be between {low} and {high}, not {value}")


def _check_float(field: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(field, f"must be a number, not {value!r}")
    if not low <= value <= high:
        raise RequestError(field, f"must be between {low:g} and {high:g}, not {value:g}")


def _check_side(field: str, value: object) -> None:
    _check_int(field, value, GRID, MAX_SIDE)
    assert isinstance(value, int)
    if value % GRID:
        raise RequestError(field, f"must be a multiple of {GRID}, not {value}")


def _check_image(field: str, value: object) -> None:
    if not isinstance(value, bytes | Path):
        raise RequestError(field, f"must be image bytes or a file path, not {type(value).__name__}")


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise RequestError(field, f"must be text, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class CharacterPrompt:
    """One character of a multi-character prompt; `position` is a cell of the 5x5 grid (A1..E5) or None
    to let the model place it."""

    prompt: str
    negative: str = ""
    position: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_text("character prompt", self.prompt)
        _check_text("character negative", self.negative)
        if self.position is not None:
            _check_text("character position", self.position)
            position = self.position.strip().upper()
            if not POSITION_RE.fullmatch(position):
                raise RequestError(
                    "character position", f"{self.position!r} is not a grid cell A1..E5 (column A-E, row 1-5)"
                )
            object.__setattr__(self, "position", position)


@dataclass(frozen=True, slots=True)
class VibeRef:
    """A vibe-transfer reference: the source image, an encoding of it made for one model, or both.

    Models that take encodings need `encoding`; the client fills it from the vibe cache (or the server)
    before the request is built. `encoding_model` is the model the encoding was made for, when known.
    """

    image: ImageInput | None = None
    encoding: bytes | None = None
    encoding_model: str | None = None
    strength: float = 0.6
    information_extracted: float = 1.0

    def __post_init__(self) -> None:
        if self.image is None and self.encoding is None:
            raise RequestError("vibe", "needs an image or an encoding")
        if self.image is not None:
            _check_image("vibe image", self.image)
        if self.encoding is not None and (not isinstance(self.encoding, bytes) or not self.encoding):
            raise RequestError("vibe encoding", "must be non-empty bytes")
        _check_float("vibe strength", self.strength, 0.0, 1.0)
        _check_float("vibe information_extracted", self.information_extracted, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class CharacterReference:
    """A character reference image; `fidelity` 1.0 copies the character most closely, `style_aware` also
    carries over the drawing style."""

    image: ImageInput
    fidelity: float = 1.0
    style_aware: bool = True
    strength: float = 1.0

    def __post_init__(self) -> None:
        _check_image("character_reference", self.image)
        _check_float("character_reference fidelity", self.fidelity, 0.0, 1.0)
        _check_float("character_reference strength", self.strength, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything one generation needs. `seed` None means "pick one": call `resolved()` before sending so
    the seed that made the image is always known. `extra` holds provider-specific settings passed through
    as they are."""

    prompt: str
    negative: str = ""
    model: str = "nai-diffusion-4-5-full"
    width: int = 832
    height: int = 1216
    steps: int = 28
    scale: float = 5.0
    cfg_rescale: float = 0.0
    sampler: str = "k_euler_ancestral"
    scheduler: str = "karras"
    seed: int | None = None
    n: int = 1
    variety: bool = False
    smea: bool = False
    smea_dyn: bool = False
    quality_tags: bool = True
    uc_preset: UcPreset | None = UcPreset.HEAVY
    """None leaves the negative prompt exactly as written (no preset text, not even the model's "None")."""
    dataset: str | None = None
    """A dataset prefix such as "fur" or "background" for models that have them."""
    characters: tuple[CharacterPrompt, ...] = ()
    image: ImageInput | None = None
    strength: float = 0.7
    noise: float = 0.0
    mask: ImageInput | None = None
    vibes: tuple[VibeRef, ...] = ()
    character_reference: CharacterReference | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    provider: Provider = NOVELAI
    """"novelai", or "local": then `model` names a checkpoint, the sampler and scheduler are the local engine's
    (NovelAI's spellings are translated), character prompts have no position (each becomes a section of the
    prompt), and the quality tags and undesired-content preset, NovelAI's own prompt additions, are off: the
    prompts go to the local engine as written."""

    def __post_init__(self) -> None:
        _check_text("prompt", self.prompt)
        _check_text("negative", self.negative)
        _check_text("model", self.model)
        if not self.model.strip():
            raise RequestError("model", "must not be empty")
        _check_side("width", self.width)
        _check_side("height", self.height)
        _check_int("steps", self.steps, 1, MAX_STEPS)
        _check_float("scale", self.scale, 0.0, MAX_SCALE)
        _check_float("cfg_rescale", self.cfg_rescale, 0.0, 1.0)
        for name in ("sampler", "scheduler"):
            value = getattr(self, name)
            _check_text(name, value)
            if not value:
                raise RequestError(name, "must not be empty")
        if self.seed is not None:
            _check_int("seed", self.seed, 0, SEED_LIMIT - 1)
        _check_int("n", self.n, 1, MAX_SAMPLES)
        if self.smea_dyn and not self.smea:
            raise RequestError("smea_dyn", "SMEA DYN works only together with SMEA")
        if self.uc_preset is not None and not isinstance(self.uc_preset, UcPreset):
            raise RequestError("uc_preset", f"must be one of {', '.join(p.value for p in UcPreset)}")
        if self.dataset is not None:
            _check_text("dataset", self.dataset)
        if not all(isinstance(c, CharacterPrompt) for c in self.characters):
            raise RequestError("characters", "must all be CharacterPrompt values")
        if not all(isinstance(v, VibeRef) for v in self.vibes):
            raise RequestError("vibes", "must all be VibeRef values")
        if self.character_reference is not None and not isinstance(self.character_reference, CharacterReference):
            raise RequestError("character_reference", "must be a CharacterReference")
        if self.image is not None:
            _check_image("image", self.image)
        if self.mask is not None:
            _check_image("mask", self.mask)
            if self.image is None:
                raise RequestError("mask", "an inpaint mask needs a source image")
        _check_float("strength", self.strength, 0.01, 1.0)
        _check_float("noise", self.noise, 0.0, 1.0)
        if not isinstance(self.extra, Mapping) or not all(isinstance(k, str) for k in self.extra):
            raise RequestError("extra", "must be a mapping with text keys")
        object.__setattr__(self, "characters", tuple(self.characters))
        object.__setattr__(self, "vibes", tuple(self.vibes))
        if self.provider == LOCAL:
            self._check_local()
        elif self.provider != NOVELAI:
            raise RequestError("provider", f"must be one of {', '.join(PROVIDERS)}, not {self.provider!r}")

    def _check_local(self) -> None:
        """The local engine's names, and no NovelAI-only setting (each would be silently lost otherwise)."""
        for name, canonical, known in (
            ("sampler", local_sampler(self.sampler), LOCAL_SAMPLERS),
            ("scheduler", local_scheduler(self.scheduler), LOCAL_SCHEDULERS),
        ):
            if canonical is None:
                raise RequestError(
                    name, f"the local engine has no {name} {getattr(self, name)!r}; use one of {', '.join(known)}"
                )
            object.__setattr__(self, name, canonical)
        for name, used in (
            ("smea", self.smea or self.smea_dyn),
            ("variety", self.variety),
            ("dataset", self.dataset is not None),
            ("vibes", bool(self.vibes)),
            ("character_reference", self.character_reference is not None),
            ("noise", self.noise > 0.0),
        ):
            if used:
                raise RequestError(name, "is a NovelAI setting; the local engine has none")
        for number, character in enumerate(self.characters, 1):
            if character.enabled and character.position is not None:
                raise RequestError(
                    "characters",
                    f"character {number} is placed at {character.position}: positions are NovelAI's; "
                    "clear it to add the character to the prompt",
                )
        object.__setattr__(self, "quality_tags", False)
        object.__setattr__(self, "uc_preset", None)

    @property
    def action(self) -> Action:
        if self.mask is not None:
            return Action.INPAINT
        return Action.IMG2IMG if self.image is not None else Action.GENERATE

    def resolved(self) -> GenerationRequest:
        """This request with a concrete seed (a fresh random one when none was set)."""
        if self.seed is not None:
            return self
        return replace(self, seed=secrets.randbelow(RANDOM_SEED_MAX) + 1)

    def sample_seeds(self) -> list[int]:
        """The seed of each image of the batch: sample i uses seed + i."""
        if self.seed is None:
            raise RequestError("seed", "is not resolved yet; call resolved() first")
        return [self.seed + index for index in range(self.n)]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of a running generation; `preview` is a small intermediate image when the backend sends one."""

    step: int
    total: int
    preview: bytes | None = None
    sample_index: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True, slots=True, eq=False)
class GeneratedImage:
    """A finished image: encoded bytes as the backend produced them, their format, seed and metadata."""

    data: bytes
    format: ImageFormat
    seed: int
    metadata: ImageMetadata
    request: GenerationRequest
    index: int = 0
