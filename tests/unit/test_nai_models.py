"""The NovelAI model capability table against the spec (sections 1.2-1.9, 4, 5)."""

from __future__ import annotations

import math

import pytest
from nai_model_ids import CURRENT_MODELS, INPAINTING_IDS

from peropix_tui.core.metadata.nai_models import MODELS as METADATA_MODELS
from peropix_tui.engine.nai.models import (
    MODELS,
    Family,
    VibeSupport,
    base_model,
    infill_model,
    is_inpainting_model,
    max_samples,
    model_for_vibe_key,
    model_spec,
    position_center,
    same_encoding_family,
)
from peropix_tui.engine.types import RequestError


def test_families() -> None:
    expected = {
        "nai-diffusion-4-5-full": Family.V4_5,
        "nai-diffusion-4-5-curated": Family.V4_5_CURATED,
        "nai-diffusion-4-full": Family.V4,
        "nai-diffusion-4-curated-preview": Family.V4_CURATED,
        "nai-diffusion-5-full": Family.V5,
        "nai-diffusion-5-curated": Family.V5_CURATED,
        "nai-diffusion-3": Family.V3,
        "nai-diffusion-furry-3": Family.V3_FURRY,
        "nai-diffusion-2": Family.V2,
        "nai-diffusion": Family.V1,
        "safe-diffusion": Family.V1,
        "nai-diffusion-furry": Family.V1,
    }
    assert {model: spec.family for model, spec in MODELS.items()} == expected


def test_every_model_the_metadata_reader_recognises_is_in_the_table() -> None:
    assert set(METADATA_MODELS) <= set(MODELS)


@pytest.mark.parametrize(("model", "infill"), INPAINTING_IDS)
def test_inpainting_ids_including_the_curated_exceptions(model: str, infill: str) -> None:
    assert infill_model(model) == infill
    assert infill_model(infill) == infill
    assert is_inpainting_model(infill)
    assert not is_inpainting_model(model)


def test_inpainting_ids_map_back_to_their_own_model() -> None:
    assert base_model("nai-diffusion-4-curated-inpainting") == "nai-diffusion-4-curated-preview"
    # Borrowed by V5 curated, but it belongs to V4.5 curated.
    assert base_model("nai-diffusion-4-5-curated-inpainting") == "nai-diffusion-4-5-curated"
    assert base_model("furry-diffusion-inpainting") == "nai-diffusion-furry"
    assert model_spec("nai-diffusion-5-full-inpainting").id == "nai-diffusion-5-full"


def test_models_without_inpainting_and_unknown_models_are_refused() -> None:
    with pytest.raises(RequestError, match="no inpainting model") as caught:
        infill_model("nai-diffusion-2")
    assert caught.value.field == "model"
    with pytest.raises(RequestError, match=r"unknown NovelAI model 'nai-diffusion-6'.*nai-diffusion-4-5-full"):
        model_spec("nai-diffusion-6")
    # A V5 curated inpainting id does not exist on the server; it must not be accepted either.
    with pytest.raises(RequestError):
        model_spec("nai-diffusion-5-curated-inpainting")


def test_smea_only_on_v3_and_v4_prompt_fields_from_v4() -> None:
    assert {m for m, s in MODELS.items() if s.smea} == {"nai-diffusion-3", "nai-diffusion-furry-3"}
    assert {m for m, s in MODELS.items() if s.v4_prompt} == {
        m for m in CURRENT_MODELS if "diffusion-4" in m or "diffusion-5" in m
    }


def test_vibes_raw_on_v3_encoded_on_v4_and_none_on_v5() -> None:
    vibes = {model: spec.vibes for model, spec in MODELS.items()}
    assert vibes["nai-diffusion-3"] is vibes["nai-diffusion-furry-3"] is VibeSupport.RAW
    for model in CURRENT_MODELS[:4]:
        assert vibes[model] is VibeSupport.ENCODED
    assert vibes["nai-diffusion-5-full"] is vibes["nai-diffusion-5-curated"] is VibeSupport.NONE
    assert vibes["nai-diffusion-2"] is VibeSupport.NONE


def test_character_reference_only_on_v4_5() -> None:
    assert {m for m, s in MODELS.items() if s.character_reference} == {
        "nai-diffusion-4-5-full",
        "nai-diffusion-4-5-curated",
    }


def test_character_and_token_limits() -> None:
    assert [MODELS[m].max_characters for m in CURRENT_MODELS] == [6, 6, 6, 6, 32, 32, 0, 0]
    assert [MODELS[m].token_limit for m in CURRENT_MODELS] == [512, 512, 512, 512, 1471, 703, 225, 225]


def test_samplers_and_schedules() -> None:
    v45 = MODELS["nai-diffusion-4-5-full"]
    assert v45.samplers[0] == "k_euler_ancestral"
    assert "ddim_v3" not in v45.samplers and "ddim_v3" in MODELS["nai-diffusion-3"].samplers
    assert "native" not in v45.schedules and "native" in MODELS["nai-diffusion-3"].schedules
    assert MODELS["nai-diffusion-5-full"].schedules == ("karras",)


def test_variety_sigma_per_model_scaled_like_the_web() -> None:
    assert MODELS["nai-diffusion-4-5-full"].variety_sigma == 58
    assert MODELS["nai-diffusion-4-full"].variety_sigma == MODELS["nai-diffusion-3"].variety_sigma == 19
    assert MODELS["nai-diffusion-5-full"].variety_sigma is None
    spec = MODELS["nai-diffusion-4-5-full"]
    assert spec.variety_sigma_for(832, 1216) == 58
    assert spec.variety_sigma_for(1472, 1472) == 58 * math.sqrt(1472 * 1472 / (832 * 1216))
    # the value a genuine NovelAI 1024×1024 V4.5 image records (tests/fixtures/images/…novelai-full-3char.png)
    assert spec.variety_sigma_for(1024, 1024) == 59.04722600415217
    assert MODELS["nai-diffusion-5-full"].variety_sigma_for(832, 1216) is None


def test_dataset_prefixes_price_and_defaults() -> None:
    assert MODELS["nai-diffusion-4-5-full"].dataset_prefixes == ("fur", "background")
    assert MODELS["nai-diffusion-4-curated-preview"].dataset_prefixes == ()
    assert MODELS["nai-diffusion-5-full"].cost_multiplier == 1.5
    assert MODELS["nai-diffusion-5-full"].opus_usage_limit
    assert MODELS["nai-diffusion-4-5-full"].cost_multiplier == 1.0
    assert [MODELS[m].default_scale for m in CURRENT_MODELS] == [5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 5.0, 6.2]


def test_vibe_file_keys() -> None:
    assert model_for_vibe_key("v4-5full") == "nai-diffusion-4-5-full"
    assert model_for_vibe_key("v4-5curated") == "nai-diffusion-4-5-curated"
    assert model_for_vibe_key("v4full") == "nai-diffusion-4-full"
    assert model_for_vibe_key("v4curated") == "nai-diffusion-4-curated-preview"
    assert model_for_vibe_key("v4-full") is None
    assert same_encoding_family("nai-diffusion-4-5-full", "nai-diffusion-4-5-full-inpainting")
    assert not same_encoding_family("nai-diffusion-4-5-full", "nai-diffusion-4-5-curated")
    assert not same_encoding_family("nai-diffusion-4-5-full", "made-up")


def test_grid_positions() -> None:
    assert position_center("A1") == (0.1, 0.1)
    assert position_center("C3") == (0.5, 0.5)
    assert position_center("E5") == (0.9, 0.9)
    assert position_center("B4") == (0.3, 0.7)  # letter = column = x, digit = row = y
    centers = {position_center(f"{c}{r}") for c in "ABCDE" for r in "12345"}
    assert len(centers) == 25


@pytest.mark.parametrize(
    ("size", "count"),
    [((512, 704), 8), ((640, 640), 6), ((832, 1216), 4), ((1024, 1536), 2), ((1472, 1472), 1)],
)
def test_images_per_request_cap(size: tuple[int, int], count: int) -> None:
    assert max_samples(*size) == count
