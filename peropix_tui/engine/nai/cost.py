"""Anlas prices as the NovelAI web computes them, and the account state the price depends on.

The per-image price grows with pixels and steps (SMEA and the V5 models cost more, img2img and inpaint cost
their strength's share), never below 2 and never above 140. An active Opus subscription gets one image per
request free when it is at most 1024x1024 px, at most 28 steps and uses no character reference; on models
with a usage allowance (V5) only while the allowance lasts. Vibe encodings, more than four vibes and
character references are charged on top, Opus or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.models import ModelSpec, VibeSupport, model_spec
from peropix_tui.engine.nai.payload import effective_sampling
from peropix_tui.engine.types import Action, GenerationRequest

PIXEL_COEFFICIENT: Final = 2.951823174884865e-6
STEP_COEFFICIENT: Final = 5.753298233447344e-7
MIN_PIXELS: Final = 65_536
MIN_COST: Final = 2
MAX_COST_PER_IMAGE: Final = 140
OPUS_TIER: Final = 3
OPUS_FREE_PIXELS: Final = 1_048_576
OPUS_FREE_STEPS: Final = 28
VIBE_ENCODE_COST: Final = 2
VIBES_INCLUDED: Final = 4
VIBE_BATCH_COST: Final = 2
CHARACTER_REFERENCE_COST: Final = 5
# Inpaint is priced at the size the web renders the masked area at: scaled up towards 1 MP on the grid.
INPAINT_PRICE_PIXELS: Final = 1_048_576
INPAINT_PRICE_GRID: Final = 64
TIER_NAMES: Final[Mapping[int, str]] = {0: "Paper", 1: "Tablet", 2: "Scroll", 3: "Opus"}


class CostError(PeropixError):
    """A request the web would price as invalid (over 140 Anlas per image) or a model with no known price."""


def per_image_cost(
    width: int,
    height: int,
    steps: int,
    *,
    smea: bool = False,
    smea_dyn: bool = False,
    strength: float = 1.0,
    multiplier: float = 1.0,
) -> int:
    """Anlas for one image. `strength` is the img2img strength (inpaint: its strength), else 1; `multiplier`
    is the model's price factor (1.5 for V5)."""
    pixels = max(width * height, MIN_PIXELS)
    base = math.ceil(PIXEL_COEFFICIENT * pixels + STEP_COEFFICIENT * pixels * steps)
    smea_factor = 1.4 if smea and smea_dyn else 1.2 if smea else 1.0
    cost = max(math.ceil(base * smea_factor * multiplier * strength), MIN_COST)
    if cost > MAX_COST_PER_IMAGE:
        raise CostError(
            f"{width}x{height} at {steps} steps would cost {cost} Anlas per image; NovelAI allows at most "
            f"{MAX_COST_PER_IMAGE} (use fewer steps, a smaller size or no SMEA)"
        )
    return cost


def inpaint_price_size(width: int, height: int) -> tuple[int, int]:
    """The size the web prices an inpaint at: areas under 80 % of 1 MP are scaled up to about 1 MP."""
    pixels = width * height
    if pixels >= 0.8 * INPAINT_PRICE_PIXELS:
        return width, height
    scale = math.sqrt(INPAINT_PRICE_PIXELS / pixels)
    grid = INPAINT_PRICE_GRID
    return math.floor(math.floor(width * scale) / grid) * grid, math.floor(math.floor(height * scale) / grid) * grid


@dataclass(frozen=True, slots=True)
class Account:
    """What pricing needs to know about the account, read from `/user/subscription`."""

    tier: int = 0
    active: bool = False
    fixed_anlas: int = 0
    purchased_anlas: int = 0
    usage_exhausted: bool = False
    """The Opus usage allowance is spent (`usage.isNegative`): V5 images are no longer free."""

    @property
    def balance(self) -> int:
        return self.fixed_anlas + self.purchased_anlas

    @property
    def tier_name(self) -> str:
        return TIER_NAMES.get(self.tier, f"tier {self.tier}")

    @property
    def opus(self) -> bool:
        return self.active and self.tier >= OPUS_TIER


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return int(value)


def parse_subscription(data: Mapping[str, Any]) -> Account:
    """The account state from a `/user/subscription` answer; missing or odd fields read as zero/false.

    The balance is the monthly Anlas (`fixedTrainingStepsLeft`) plus the purchased ones; an old numeric
    `trainingStepsLeft` is read as the monthly part.
    """
    steps = data.get("trainingStepsLeft")
    if isinstance(steps, Mapping):
        fixed, purchased = _int(steps.get("fixedTrainingStepsLeft")), _int(steps.get("purchasedTrainingSteps"))
    else:
        fixed, purchased = _int(steps), 0
    usage = data.get("usage")
    exhausted = isinstance(usage, Mapping) and usage.get("isNegative") is True
    return Account(_int(data.get("tier")), data.get("active") is True, fixed, purchased, exhausted)


@dataclass(frozen=True, slots=True)
class CostEstimate:
    per_image: int
    billable_images: int
    opus_free: bool
    vibe_cost: int
    character_reference_cost: int

    @property
    def total(self) -> int:
        return self.per_image * self.billable_images + self.vibe_cost + self.character_reference_cost

    @property
    def free(self) -> bool:
        return self.total == 0


def opus_free(spec: ModelSpec, account: Account, width: int, height: int, steps: int, char_refs: int) -> bool:
    if not account.opus or (spec.opus_usage_limit and account.usage_exhausted):
        return False
    return width * height <= OPUS_FREE_PIXELS and steps <= OPUS_FREE_STEPS and char_refs == 0


def estimate_cost(
    request: GenerationRequest, account: Account | None = None, *, uncached_vibes: int | None = None
) -> CostEstimate:
    """The Anlas a request costs. `uncached_vibes` is how many vibes still need encoding (2 Anlas each);
    by default every vibe without an encoding. Without an account the price is the non-subscriber one."""
    spec = model_spec(request.model)
    if spec.legacy:
        raise CostError(f"the price of {spec.label} images is not known to this app")
    account = account or Account()
    sampling = effective_sampling(request, spec)
    action = request.action
    strength = 1.0 if action is Action.GENERATE else request.strength
    width, height = request.width, request.height
    if action is Action.INPAINT:
        width, height = inpaint_price_size(width, height)
    per_image = per_image_cost(
        width,
        height,
        request.steps,
        smea=sampling.smea,
        smea_dyn=sampling.smea_dyn,
        strength=strength,
        multiplier=spec.cost_multiplier,
    )
    char_refs = int(
        request.character_reference is not None and spec.character_reference and action is not Action.INPAINT
    )
    free = opus_free(spec, account, request.width, request.height, request.steps, char_refs)
    vibe_cost = 0
    if request.vibes and spec.vibes is VibeSupport.ENCODED and not char_refs and action is not Action.INPAINT:
        pending = sum(vibe.encoding is None for vibe in request.vibes) if uncached_vibes is None else uncached_vibes
        vibe_cost = VIBE_ENCODE_COST * pending + VIBE_BATCH_COST * max(0, len(request.vibes) - VIBES_INCLUDED)
    return CostEstimate(
        per_image=per_image,
        billable_images=request.n - int(free),
        opus_free=free,
        vibe_cost=vibe_cost,
        character_reference_cost=CHARACTER_REFERENCE_COST * char_refs * request.n,
    )
