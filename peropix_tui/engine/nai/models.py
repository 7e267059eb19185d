"""What each NovelAI image model can do, as one table the payload builder, the cost estimator and the UI read.

Per-model differences (which prompt fields exist, SMEA, vibe encodings, character reference, inpainting ids,
samplers, the Variety+ sigma, character and token limits, the price multiplier) live here as data so that a
new model is one table row, not a new branch in every module.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from peropix_tui.engine.types import RequestError


class Family(enum.StrEnum):
    V1 = "v1"
    V2 = "v2"
    V3 = "v3"
    V3_FURRY = "v3-furry"
    V4 = "v4"
    V4_CURATED = "v4-curated"
    V4_5 = "v4.5"
    V4_5_CURATED = "v4.5-curated"
    V5 = "v5"
    V5_CURATED = "v5-curated"


class VibeSupport(enum.StrEnum):
    NONE = "none"
    RAW = "raw"
    """The request carries the reference images themselves (V3)."""
    ENCODED = "encoded"
    """The request carries `/ai/encode-vibe` encodings made for the same model (V4 and V4.5)."""


DEFAULT_MODEL: Final = "nai-diffusion-4-5-full"
INPAINT_SUFFIX: Final = "-inpainting"
MAX_PIXELS: Final = 3_145_728
MAX_STEPS: Final = 50
MAX_SEED: Final = (1 << 32) - 1
MAX_VIBES: Final = 16
VARIETY_REFERENCE_PIXELS: Final = 832 * 1216
GRID_STEPS: Final = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Character positions: the centers of the 5x5 grid's columns (x) and rows (y)."""
GRID_COLUMNS: Final = "ABCDE"

V4_SAMPLERS: Final = (
    "k_euler_ancestral",
    "k_dpmpp_2s_ancestral",
    "k_dpmpp_2m_sde",
    "k_euler",
    "k_dpmpp_2m",
    "k_dpmpp_sde",
)
V3_SAMPLERS: Final = (*V4_SAMPLERS, "ddim_v3")
LEGACY_SAMPLERS: Final = (*V4_SAMPLERS, "k_lms", "plms", "ddim")
ALL_SCHEDULES: Final = ("native", "karras", "exponential", "polyexponential")
V4_SCHEDULES: Final = ("karras", "exponential", "polyexponential")
SAMPLERS_WITHOUT_SCHEDULE: Final = frozenset({"ddim_v3", "ddim", "plms", "k_lms"})


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    family: Family
    label: str
    inpainting: str | None
    """The model id `infill` requests use; None when the model cannot inpaint."""
    v4_prompt: bool
    """Prompts travel in `v4_prompt`/`v4_negative_prompt` with per-character captions."""
    smea: bool
    vibes: VibeSupport
    character_reference: bool
    samplers: tuple[str, ...]
    schedules: tuple[str, ...]
    default_scale: float
    variety_sigma: int | None
    """Base sigma above which Variety+ skips guidance; None when the model has no Variety+."""
    dataset_prefixes: tuple[str, ...]
    max_characters: int
    token_limit: int | None
    cost_multiplier: float = 1.0
    opus_usage_limit: bool = False
    """Opus free generations on this model draw from the monthly usage allowance."""
    vibe_file_key: str | None = None
    """The model key inside `.naiv4vibe` encodings."""
    legacy: bool = False

    def variety_sigma_for(self, width: int, height: int) -> float | None:
        """The `skip_cfg_above_sigma` the web sends at this size: the base sigma scaled with the image side."""
        if self.variety_sigma is None:
            return None
        # Not rounded: NovelAI's own 1024×1024 images record 59.04722600415217 for V4.5 (58 at 832×1216).
        sigma = self.variety_sigma * math.sqrt(width * height / VARIETY_REFERENCE_PIXELS)
        return int(sigma) if sigma.is_integer() else sigma


def _v4(
    model_id: str,
    family: Family,
    label: str,
    inpainting: str,
    *,
    variety: int,
    datasets: tuple[str, ...],
    scale: float,
    vibe_key: str,
    char_ref: bool,
) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family=family,
        label=label,
        inpainting=inpainting,
        v4_prompt=True,
        smea=False,
        vibes=VibeSupport.ENCODED,
        character_reference=char_ref,
        samplers=V4_SAMPLERS,
        schedules=V4_SCHEDULES,
        default_scale=scale,
        variety_sigma=variety,
        dataset_prefixes=datasets,
        max_characters=6,
        token_limit=512,
        vibe_file_key=vibe_key,
    )


def _v5(model_id: str, family: Family, label: str, inpainting: str, token_limit: int) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family=family,
        label=label,
        inpainting=inpainting,
        v4_prompt=True,
        smea=False,
        vibes=VibeSupport.NONE,
        character_reference=False,
        samplers=V4_SAMPLERS,
        schedules=("karras",),
        default_scale=7.0,
        variety_sigma=None,
        dataset_prefixes=("fur", "background") if family is Family.V5 else ("background",),
        max_characters=32,
        token_limit=token_limit,
        cost_multiplier=1.5,
        opus_usage_limit=True,
    )


def _sdxl(model_id: str, family: Family, label: str, scale: float) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family=family,
        label=label,
        inpainting=model_id + INPAINT_SUFFIX,
        v4_prompt=False,
        smea=True,
        vibes=VibeSupport.RAW,
        character_reference=False,
        samplers=V3_SAMPLERS,
        schedules=ALL_SCHEDULES,
        default_scale=scale,
        variety_sigma=19,
        dataset_prefixes=(),
        max_characters=0,
        token_limit=225,
    )


def _legacy(model_id: str, family: Family, label: str, inpainting: str | None) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family=family,
        label=label,
        inpainting=inpainting,
        v4_prompt=False,
        smea=False,
        vibes=VibeSupport.NONE,
        character_reference=False,
        samplers=LEGACY_SAMPLERS,
        schedules=ALL_SCHEDULES,
        default_scale=10.0,
        variety_sigma=None,
        dataset_prefixes=(),
        max_characters=0,
        token_limit=225,
        legacy=True,
    )


_SPECS: Final = (
    _v4(
        "nai-diffusion-4-5-full",
        Family.V4_5,
        "NAI Diffusion V4.5 Full",
        "nai-diffusion-4-5-full-inpainting",
        variety=58,
        datasets=("fur", "background"),
        scale=5.0,
        vibe_key="v4-5full",
        char_ref=True,
    ),
    _v4(
        "nai-diffusion-4-5-curated",
        Family.V4_5_CURATED,
        "NAI Diffusion V4.5 Curated",
        "nai-diffusion-4-5-curated-inpainting",
        variety=58,
        datasets=("background",),
        scale=5.0,
        vibe_key="v4-5curated",
        char_ref=True,
    ),
    _v4(
        "nai-diffusion-4-full",
        Family.V4,
        "NAI Diffusion V4 Full",
        "nai-diffusion-4-full-inpainting",
        variety=19,
        datasets=("fur",),
        scale=6.0,
        vibe_key="v4full",
        char_ref=False,
    ),
    _v4(
        "nai-diffusion-4-curated-preview",
        Family.V4_CURATED,
        "NAI Diffusion V4 Curated",
        # The curated inpainting model dropped the "-preview" of its base id.
        "nai-diffusion-4-curated-inpainting",
        variety=19,
        datasets=(),
        scale=6.0,
        vibe_key="v4curated",
        char_ref=False,
    ),
    _v5("nai-diffusion-5-full", Family.V5, "NAI Diffusion V5 Full", "nai-diffusion-5-full-inpainting", 1471),
    # V5 curated has no inpainting model of its own; the web inpaints with the V4.5 curated one.
    _v5(
        "nai-diffusion-5-curated",
        Family.V5_CURATED,
        "NAI Diffusion V5 Curated",
        "nai-diffusion-4-5-curated-inpainting",
        703,
    ),
    _sdxl("nai-diffusion-3", Family.V3, "NAI Diffusion Anime V3", 5.0),
    _sdxl("nai-diffusion-furry-3", Family.V3_FURRY, "NAI Diffusion Furry V3", 6.2),
    _legacy("nai-diffusion-2", Family.V2, "NAI Diffusion Anime V2", None),
    _legacy("nai-diffusion", Family.V1, "NAI Diffusion Anime V1 (Full)", "nai-diffusion-inpainting"),
    _legacy("safe-diffusion", Family.V1, "NAI Diffusion Anime V1 (Curated)", "safe-diffusion-inpainting"),
    _legacy("nai-diffusion-furry", Family.V1, "NAI Diffusion Furry (Beta V1.3)", "furry-diffusion-inpainting"),
)

MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType({spec.id: spec for spec in _SPECS})


def _inpainting_owners() -> dict[str, str]:
    # A borrowed inpainting id (V5 curated uses V4.5 curated's) stays with the model listed first, its owner.
    owners: dict[str, str] = {}
    for spec in _SPECS:
        if spec.inpainting is not None:
            owners.setdefault(spec.inpainting, spec.id)
    return owners


_BY_INPAINTING: Final[Mapping[str, str]] = MappingProxyType(_inpainting_owners())

_BY_VIBE_KEY: Final[Mapping[str, str]] = MappingProxyType(
    {spec.vibe_file_key: spec.id for spec in _SPECS if spec.vibe_file_key is not None}
)


def model_spec(model: str) -> ModelSpec:
    """The capabilities of `model`; an inpainting id gives the spec of the model it belongs to."""
    spec = MODELS.get(model)
    if spec is None and model in _BY_INPAINTING:
        spec = MODELS[_BY_INPAINTING[model]]
    if spec is None:
        known = ", ".join(MODELS)
        raise RequestError("model", f"unknown NovelAI model {model!r} (known: {known})")
    return spec


def is_inpainting_model(model: str) -> bool:
    return model in _BY_INPAINTING


def base_model(model: str) -> str:
    """The generation model for `model`, mapping an inpainting id back to its base model."""
    return model_spec(model).id


def infill_model(model: str) -> str:
    """The model id an `infill` request must name for `model`."""
    if is_inpainting_model(model):
        return model
    spec = model_spec(model)
    if spec.inpainting is None:
        raise RequestError("model", f"{spec.label} ({spec.id}) has no inpainting model")
    return spec.inpainting


def model_for_vibe_key(key: str) -> str | None:
    """The model id behind a `.naiv4vibe` encodings key such as "v4-5full"."""
    return _BY_VIBE_KEY.get(key)


def same_encoding_family(model_a: str, model_b: str) -> bool:
    """True when a vibe encoding made for one model can be sent with the other (same weights family)."""
    try:
        return model_spec(model_a).family is model_spec(model_b).family
    except RequestError:
        return False


def max_samples(width: int, height: int) -> int:
    """The web's cap on images per request at this size."""
    pixels = width * height
    for limit, count in ((512 * 704, 8), (640 * 640, 6), (512 * 2560, 4), (1024 * 1536, 2)):
        if pixels <= limit:
            return count
    return 1


def position_center(position: str) -> tuple[float, float]:
    """The (x, y) center of a grid cell: letter = column = x, digit = row = y, A1 = (0.1, 0.1)."""
    return GRID_STEPS[ord(position[0]) - ord("A")], GRID_STEPS[int(position[1]) - 1]


def grid_cell(x: float, y: float) -> tuple[str, bool]:
    """The grid cell nearest to a character center, and whether the center is exactly that cell's."""
    column = min(range(len(GRID_STEPS)), key=lambda i: abs(GRID_STEPS[i] - x))
    row = min(range(len(GRID_STEPS)), key=lambda i: abs(GRID_STEPS[i] - y))
    exact = math.isclose(GRID_STEPS[column], x, abs_tol=1e-6) and math.isclose(GRID_STEPS[row], y, abs_tol=1e-6)
    return f"{GRID_COLUMNS[column]}{row + 1}", exact
