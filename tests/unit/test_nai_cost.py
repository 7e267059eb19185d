"""Anlas pricing: every test vector of the spec (section 5.1), the Opus-free rule, extras, and the account."""

from __future__ import annotations

import pytest

from peropix_tui.engine.nai.cost import (
    Account,
    CostError,
    estimate_cost,
    inpaint_price_size,
    parse_subscription,
    per_image_cost,
)
from peropix_tui.engine.types import CharacterReference, GenerationRequest, VibeRef

OPUS = Account(tier=3, active=True, fixed_anlas=10000, purchased_anlas=250)
PNG = b"\x89PNG\r\n\x1a\n"  # never decoded: pricing does not read images


@pytest.mark.parametrize(
    ("width", "height", "steps", "options", "cost"),
    [
        (832, 1216, 28, {}, 20),
        (832, 1216, 28, {"smea": True}, 24),
        (832, 1216, 28, {"smea": True, "smea_dyn": True}, 28),
        (832, 1216, 28, {"strength": 0.7}, 14),
        (832, 1216, 23, {}, 17),
        (1024, 1024, 28, {}, 20),
        (1024, 1536, 28, {}, 30),
        (1472, 1472, 28, {}, 42),
        (1088, 1920, 28, {}, 40),
        (640, 640, 28, {}, 8),
        (832, 1216, 50, {}, 33),
        (2048, 1536, 50, {}, 100),
        (2048, 1536, 50, {"smea": True, "smea_dyn": True}, 140),
    ],
)
def test_spec_test_vectors(width: int, height: int, steps: int, options: dict[str, object], cost: int) -> None:
    assert per_image_cost(width, height, steps, **options) == cost  # type: ignore[arg-type]


def test_measured_v5_and_v4_5_prices() -> None:
    # Measured on the live service: 1088x1024 at 1 step costs 6 on V5 and 4 on V4.5.
    assert per_image_cost(1088, 1024, 1, multiplier=1.5) == 6
    assert per_image_cost(1088, 1024, 1) == 4


def test_small_images_cost_at_least_two_and_tiny_ones_are_priced_as_256_squared() -> None:
    assert per_image_cost(64, 64, 1) == 2
    assert per_image_cost(64, 64, 28) == per_image_cost(256, 256, 28)
    assert per_image_cost(832, 1216, 28, strength=0.01) == 2


def test_over_the_per_image_cap_is_refused() -> None:
    with pytest.raises(CostError, match="at most 140"):
        per_image_cost(2048, 1536, 50, smea=True, smea_dyn=True, multiplier=1.5)


def test_opus_gets_one_free_image_within_the_limits() -> None:
    request = GenerationRequest("x", width=1024, height=1024, steps=28)
    assert estimate_cost(request, OPUS).total == 0
    assert estimate_cost(request, OPUS).opus_free
    two = GenerationRequest("x", width=832, height=1216, steps=23, n=2)
    assert estimate_cost(two, OPUS).total == 17  # the second image is paid
    over_steps = estimate_cost(GenerationRequest("x", steps=29), OPUS)
    assert (over_steps.opus_free, over_steps.total) == (False, 20)
    assert estimate_cost(GenerationRequest("x", width=1088, height=1024), OPUS).total > 0
    assert estimate_cost(request, Account(tier=2, active=True)).total == 20
    assert estimate_cost(request, Account(tier=3, active=False)).total == 20
    assert estimate_cost(request).total == 20


def test_v5_is_free_only_while_the_usage_allowance_lasts() -> None:
    request = GenerationRequest("x", model="nai-diffusion-5-full", width=832, height=1216, steps=23)
    assert estimate_cost(request, OPUS).total == 0
    exhausted = Account(tier=3, active=True, usage_exhausted=True)
    assert estimate_cost(request, exhausted).total == 26  # ceil(17 * 1.5)
    # The allowance only limits models that have one.
    assert estimate_cost(GenerationRequest("x", width=832, height=1216, steps=23), exhausted).total == 0


def test_img2img_costs_its_strength_share_and_smea_is_off_there() -> None:
    request = GenerationRequest("x", steps=28, image=PNG, strength=0.7)
    assert estimate_cost(request).per_image == 14
    v3 = GenerationRequest("x", model="nai-diffusion-3", smea=True, image=PNG, strength=1.0)
    assert estimate_cost(v3).per_image == 20
    assert estimate_cost(GenerationRequest("x", model="nai-diffusion-3", smea=True)).per_image == 24


def test_inpaint_is_priced_at_the_upscaled_area_and_its_strength() -> None:
    assert inpaint_price_size(832, 1216) == (832, 1216)
    assert inpaint_price_size(512, 768) == (832, 1216)
    request = GenerationRequest("x", width=512, height=768, image=PNG, mask=PNG, strength=1.0)
    assert estimate_cost(request).per_image == 20
    half = GenerationRequest("x", width=832, height=1216, image=PNG, mask=PNG, strength=0.5)
    assert estimate_cost(half).per_image == 10


def test_vibe_extras_count_uncached_encodings_and_vibes_beyond_four() -> None:
    encoded = tuple(VibeRef(encoding=b"e") for _ in range(6))
    request = GenerationRequest("x", width=1024, height=1024, vibes=encoded)
    estimate = estimate_cost(request, OPUS)
    assert (estimate.vibe_cost, estimate.total) == (4, 4)  # 6 vibes: 2 beyond four, all cached
    needing = GenerationRequest("x", vibes=(VibeRef(image=PNG), VibeRef(encoding=b"e")))
    assert estimate_cost(needing).vibe_cost == 2
    assert estimate_cost(needing, uncached_vibes=0).vibe_cost == 0
    assert estimate_cost(needing, uncached_vibes=2).vibe_cost == 4
    # V3 sends the images themselves: nothing to encode, no vibe price.
    v3 = GenerationRequest("x", model="nai-diffusion-3", vibes=(VibeRef(image=PNG),) * 6)
    assert estimate_cost(v3).vibe_cost == 0


def test_character_reference_is_five_per_image_and_never_free() -> None:
    request = GenerationRequest("x", width=1024, height=1024, character_reference=CharacterReference(PNG), n=2)
    estimate = estimate_cost(request, OPUS)
    assert not estimate.opus_free
    assert (estimate.per_image, estimate.character_reference_cost, estimate.total) == (20, 10, 50)
    # With a character reference, vibes are not priced (the two cannot be combined anyway).
    both = GenerationRequest("x", vibes=(VibeRef(image=PNG),), character_reference=CharacterReference(PNG))
    assert estimate_cost(both).vibe_cost == 0


def test_legacy_models_have_no_known_price() -> None:
    with pytest.raises(CostError, match="not known"):
        estimate_cost(GenerationRequest("x", model="nai-diffusion-2", scale=10))


def test_subscription_answer_gives_tier_and_balance() -> None:
    account = parse_subscription(
        {
            "tier": 3,
            "active": True,
            "trainingStepsLeft": {"fixedTrainingStepsLeft": 10000, "purchasedTrainingSteps": 250},
            "usage": {"percent": 100, "isNegative": False, "timeUntilNextPercent": 7888},
        }
    )
    assert account == OPUS
    assert (account.balance, account.tier_name, account.opus) == (10250, "Opus", True)
    old = parse_subscription({"tier": 1, "active": True, "trainingStepsLeft": 980})
    assert (old.balance, old.tier_name, old.opus) == (980, "Tablet", False)
    odd = parse_subscription({"tier": "3", "active": "yes", "trainingStepsLeft": None, "usage": {"isNegative": True}})
    assert odd == Account(usage_exhausted=True)
