"""NovelAI Comment <-> ImageMetadata mapping and the model-from-Source table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.metadata import (
    CharacterPrompt,
    ImageMetadata,
    from_nai_comment,
    to_a1111_parameters,
    to_nai_comment,
)
from peropix_tui.core.metadata.nai_models import model_from_source, source_for

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_PNGS = [
    "nai__LlmKira_novelai-python__sample-0316.png",
    "nai__LlmKira_novelai-python__sample-0317.png",
    "nai__d3x-at_sd-parsers__novelai1_cropped.png",
    "nai__enslo_sd-metadata__novelai-full-3char.png",
]


def fixture_comment(name: str) -> str:
    with Image.open(FIXTURES / name) as im:
        return str(im.text["Comment"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAI_PNGS)
def test_real_comment_round_trips_to_identical_json_text(name: str) -> None:
    text = fixture_comment(name)
    meta = from_nai_comment(json.loads(text))
    assert meta.warnings == []
    # same keys, same order, same number formatting: NovelAI's signature over this text stays checkable
    assert json.dumps(to_nai_comment(meta)) == text


def test_three_character_comment() -> None:
    comment = json.loads(fixture_comment("nai__enslo_sd-metadata__novelai-full-3char.png"))
    meta = from_nai_comment(comment)
    assert meta.prompt == comment["prompt"] == comment["v4_prompt"]["caption"]["base_caption"]
    assert meta.negative_prompt == comment["uc"]
    assert [c.prompt for c in meta.characters] == [
        "girl, hatsune miku, spread arms, ",
        "girl, kagamine rin, hand up, ",
        "boy, kagamine len, hand up, ",
    ]
    assert [c.centers for c in meta.characters] == [((0.5, 0.3),), ((0.7, 0.7),), ((0.3, 0.7),)]
    assert all(c.negative == "" for c in meta.characters)
    assert (meta.seed, meta.steps, meta.cfg, meta.cfg_rescale) == (1702945580, 28, 5.0, 0.0)
    assert (meta.sampler, meta.scheduler, meta.smea, meta.smea_dyn) == (
        "k_euler_ancestral",
        "karras",
        False,
        False,
    )
    assert meta.request_type == "PromptGenerateRequest"
    assert "signed_hash" in meta.extra and "prompt" not in meta.extra


def test_zero_values_survive() -> None:
    comment = {"prompt": "a", "cfg_rescale": 0, "noise": 0.0, "seed": 0, "scale": 0, "sm": False}
    meta = from_nai_comment(comment)
    assert (meta.cfg_rescale, meta.noise, meta.seed, meta.cfg, meta.smea) == (0, 0.0, 0, 0, False)
    assert to_nai_comment(meta) == comment


def test_wrong_types_are_kept_verbatim_with_warning() -> None:
    comment = {"seed": "123", "steps": 28.0, "sm": "yes", "scale": None, "peropix": [1]}
    meta = from_nai_comment(comment)
    assert meta.seed is None and meta.steps == 28 and meta.smea is None
    assert meta.extra == {"seed": "123", "sm": "yes", "scale": None, "peropix": [1]}
    assert len(meta.warnings) == 2
    assert to_nai_comment(meta) == comment


def test_peropix_fields_live_under_their_own_key() -> None:
    meta = ImageMetadata(prompt="x", seed=5, peropix={"job": "abc", "vibes": [1, 2]})
    comment = to_nai_comment(meta)
    assert comment["peropix"] == {"job": "abc", "vibes": [1, 2]}
    back = from_nai_comment(json.loads(json.dumps(comment)))
    assert back.peropix == meta.peropix and "peropix" not in back.extra


def test_characters_build_v4_blocks_when_absent() -> None:
    chars = [CharacterPrompt("girl, red eyes", "bad hands", ((0.1, 0.9),)), CharacterPrompt("boy")]
    meta = ImageMetadata(prompt="2people", negative_prompt="lowres", characters=chars)
    comment = to_nai_comment(meta)
    assert comment["v4_prompt"]["caption"] == {
        "base_caption": "2people",
        "char_captions": [
            {"char_caption": "girl, red eyes", "centers": [{"x": 0.1, "y": 0.9}]},
            {"char_caption": "boy", "centers": [{"x": 0.5, "y": 0.5}]},
        ],
    }
    assert comment["v4_prompt"]["use_coords"] is True
    negatives = comment["v4_negative_prompt"]["caption"]["char_captions"]
    assert [c["char_caption"] for c in negatives] == ["bad hands", ""]
    assert from_nai_comment(comment).characters == chars


def test_v5_model_keys_only_written_when_present() -> None:
    assert "model_name" not in to_nai_comment(ImageMetadata(model="nai-diffusion-4-5-full"))
    v5 = {"prompt": "a", "model_name": "nai-diffusion-5-full", "model_hash": "0ADF9AB7"}
    meta = from_nai_comment(v5)
    assert (meta.model, meta.model_hash) == ("nai-diffusion-5-full", "0ADF9AB7")
    assert to_nai_comment(meta) == v5


_MAPPED = {
    "prompt", "uc", "seed", "steps", "scale", "cfg_rescale", "sm", "sm_dyn", "noise_schedule", "sampler",
    "width", "height", "n_samples", "strength", "noise", "request_type", "model_name", "model_hash",
    "peropix", "v4_prompt", "v4_negative_prompt",
}  # fmt: skip
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    unknown=st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in _MAPPED), _json, max_size=6),
    known=st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.text(max_size=20),
            "uc": st.text(max_size=20),
            "seed": st.integers(0, 2**32 - 1),
            "steps": st.integers(1, 50),
            "scale": st.floats(0, 10),
            "cfg_rescale": st.sampled_from([0, 0.0, 0.38, 1]),
            "sm": st.booleans(),
            "noise_schedule": st.sampled_from(["karras", "native"]),
        },
    ),
)
def test_comment_round_trip_preserves_everything(unknown: dict[str, Any], known: dict[str, Any]) -> None:
    comment = {**known, **unknown}
    assert to_nai_comment(from_nai_comment(comment)) == comment


def test_spec_a1111_example() -> None:
    meta = ImageMetadata(
        prompt="1girl, solo, silver hair",
        negative_prompt="lowres, bad anatomy",
        steps=28,
        sampler="k_euler_ancestral",
        scheduler="karras",
        cfg=5.0,
        seed=1688743194,
        width=832,
        height=1216,
        model="nai-diffusion-4-5-full",
    )
    assert to_a1111_parameters(meta) == (
        "1girl, solo, silver hair\nNegative prompt: lowres, bad anatomy\nSteps: 28, Sampler: Euler a, "
        "Schedule type: Karras, CFG scale: 5, Seed: 1688743194, Size: 832x1216, Model: nai-diffusion-4-5-full"
    )


@pytest.mark.parametrize(
    ("source", "model", "digest"),
    [
        ("NovelAI Diffusion V4.5 4BDE2A90", "nai-diffusion-4-5-full", "4BDE2A90"),
        ("NovelAI Diffusion V4.5 C02D4F98", "nai-diffusion-4-5-curated", "C02D4F98"),
        ("NovelAI Diffusion V4 7ABFFA2A", "nai-diffusion-4-curated-preview", "7ABFFA2A"),
        ("Stable Diffusion XL C1E1DE52", "nai-diffusion-3", "C1E1DE52"),
        ("Stable Diffusion XL 9CC2F394", "nai-diffusion-furry-3", "9CC2F394"),
        ("NovelAI Diffusion V4.5 DEADBEEF", "nai-diffusion-4-5-full", "DEADBEEF"),
        ("Stable Diffusion 1D44365E", "Stable Diffusion", "1D44365E"),
        ("waiIllustriousSDXL_v160 45a21ea00a", "waiIllustriousSDXL_v160", "45a21ea00a"),
        ("NovelAI", "NovelAI", None),
    ],
)
def test_model_from_source(source: str, model: str, digest: str | None) -> None:
    assert model_from_source(source) == (model, digest)


def test_source_for_round_trips() -> None:
    for model in ("nai-diffusion-4-5-curated", "nai-diffusion-furry-3", "nai-diffusion-4-full", "my_model"):
        for digest in (None, "ABCDEF12"):
            back_model, back_digest = model_from_source(source_for(model, digest))
            if model.startswith("nai-") and digest is None:
                assert back_model == model and back_digest is not None
            elif model.startswith("nai-"):
                assert back_digest == digest
            else:
                assert (back_model, back_digest) == (model, digest)
