"""Quality tags and UC presets: applied as the web does, and recognised again in real images' metadata so
re-applying settings never doubles them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.prompt import normalize_commas_nai
from peropix_tui.engine.nai.models import MODELS, Family
from peropix_tui.engine.nai.presets import (
    QUALITY,
    UC_PRESETS,
    apply_quality_tags,
    apply_uc_preset,
    available_uc_presets,
    compose_prompts,
    split_prompts,
    strip_quality_tags,
    strip_uc_preset,
    uc_preset_text,
)
from peropix_tui.engine.types import RequestError, UcPreset

IMAGES = Path(__file__).parent.parent / "fixtures" / "images"

V45_HEAVY = (
    "nsfw, lowres, artistic error, film grain, scan artifacts, worst quality, bad quality, jpeg artifacts, "
    "very displeasing, chromatic aberration, dithering, halftone, screentone, multiple views, logo, "
    "too many watermarks, negative space, blank page"
)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("nai-diffusion-4-5-full", "1girl, very aesthetic, masterpiece, no text"),
        (
            "nai-diffusion-4-5-curated",
            "1girl, very aesthetic, location, masterpiece, no text, -0.8::feet::, rating:general",
        ),
        ("nai-diffusion-4-full", "1girl, no text, best quality, very aesthetic, absurdres"),
        ("nai-diffusion-4-curated-preview", "1girl, rating:general, amazing quality, very aesthetic, absurdres"),
        ("nai-diffusion-3", "1girl, best quality, amazing quality, very aesthetic, absurdres"),
        ("nai-diffusion-furry-3", "1girl, {best quality}, {amazing quality}"),
        ("nai-diffusion-2", "very aesthetic, best quality, absurdres, 1girl"),
        ("nai-diffusion", "masterpiece, best quality, 1girl"),
        ("nai-diffusion-5-full", "1girl, very aesthetic, masterpiece, no text"),
    ],
)
def test_quality_tags_go_where_the_web_puts_them(model: str, expected: str) -> None:
    assert apply_quality_tags("1girl", model) == expected
    assert strip_quality_tags(expected, model) == ("1girl", True)


def test_quality_tags_alone_for_an_empty_prompt() -> None:
    assert apply_quality_tags("", "nai-diffusion-4-5-full") == "very aesthetic, masterpiece, no text"
    assert strip_quality_tags("very aesthetic, masterpiece, no text", "nai-diffusion-4-5-full") == ("", True)


def test_quality_tags_go_before_a_text_section_with_a_full_stop() -> None:
    tagged = apply_quality_tags("1girl, holding sign Text: Hello, World", "nai-diffusion-4-5-full")
    assert tagged == "1girl, holding sign, very aesthetic, masterpiece, no text. Text: Hello, World"
    assert strip_quality_tags(tagged, Family.V4_5) == ("1girl, holding sign Text: Hello, World", True)
    v5 = apply_quality_tags("sign teXt: Hi", "nai-diffusion-5-full")
    assert v5 == "sign, very aesthetic, masterpiece, no text. teXt: Hi"
    # V3 has no text section: the marker is just text there.
    assert apply_quality_tags("a Text: b", "nai-diffusion-3").endswith(", absurdres")


@pytest.mark.parametrize(
    ("prompt", "family"),
    [
        ("1girl, location, very aesthetic, masterpiece, no text", Family.V4_5),
        ("1girl, location, masterpiece, no text, -0.8::feet::, rating:general", Family.V4_5_CURATED),
        ("1girl, rating:general, best quality, very aesthetic, absurdres", Family.V4_CURATED),
        ("1girl, very aesthetic, amazing quality, no text", Family.V5),
    ],
)
def test_older_variants_are_recognised(prompt: str, family: Family) -> None:
    assert strip_quality_tags(prompt, family) == ("1girl", True)
    assert strip_quality_tags(prompt) == ("1girl", True)


def test_prompt_without_tags_is_left_alone() -> None:
    assert strip_quality_tags("1girl, masterpiece", Family.V4_5) == ("1girl, masterpiece", False)
    assert strip_quality_tags("very aesthetic, masterpiece, no text, 1girl", Family.V4_5)[1] is False


def test_uc_preset_is_prepended_and_nsfw_dropped_when_asked_for() -> None:
    model = "nai-diffusion-4-5-full"
    assert apply_uc_preset("", model, UcPreset.HEAVY) == V45_HEAVY
    assert apply_uc_preset("bad hands", model, UcPreset.HEAVY) == V45_HEAVY + ", bad hands"
    assert apply_uc_preset("bad hands", model, UcPreset.NONE) == "bad hands"
    assert apply_uc_preset("bad hands", model, None) == "bad hands"
    assert apply_uc_preset("", model, UcPreset.HEAVY, "1girl, {nsfw}") == V45_HEAVY.removeprefix("nsfw, ")
    # A negative weight does not ask for nsfw.
    assert apply_uc_preset("", model, UcPreset.HEAVY, "1girl, -1::nsfw::") == V45_HEAVY
    assert uc_preset_text(model, UcPreset.HUMAN_FOCUS) == (
        V45_HEAVY + ", @_@, mismatched pupils, glowing eyes, bad anatomy"
    )


def test_v3_none_preset_still_adds_lowres() -> None:
    assert apply_uc_preset("", "nai-diffusion-3", UcPreset.NONE) == "lowres"
    assert apply_uc_preset("text", "nai-diffusion-3", UcPreset.NONE) == "lowres, text"
    assert strip_uc_preset("lowres, text", "nai-diffusion-3") == ("text", UcPreset.NONE)


def test_presets_a_model_does_not_offer_are_refused() -> None:
    assert UcPreset.HUMAN_FOCUS not in available_uc_presets("nai-diffusion-4-full")
    with pytest.raises(RequestError, match="not offered for v4 models") as caught:
        apply_uc_preset("", "nai-diffusion-4-full", UcPreset.HUMAN_FOCUS)
    assert caught.value.field == "uc_preset"


def test_longest_preset_wins_when_one_extends_another() -> None:
    human = uc_preset_text("nai-diffusion-4-5-full", UcPreset.HUMAN_FOCUS)
    assert strip_uc_preset(human + ", text", Family.V4_5) == ("text", UcPreset.HUMAN_FOCUS)
    assert strip_uc_preset(V45_HEAVY + ", text", Family.V4_5) == ("text", UcPreset.HEAVY)


def test_uc_variant_of_another_web_version_is_recognised() -> None:
    heavy = uc_preset_text("nai-diffusion-4-curated-preview", UcPreset.HEAVY)
    assert strip_uc_preset(heavy + ", white blank page, blank page, x", Family.V4_CURATED) == (
        "x",
        UcPreset.HEAVY,
    )


def test_uc_strip_only_accepts_what_apply_would_send_for_this_prompt() -> None:
    # With nsfw in the prompt the web drops nsfw from the preset; the full text cannot have come from it.
    assert strip_uc_preset(V45_HEAVY, Family.V4_5, "nsfw") == (V45_HEAVY, None)
    assert strip_uc_preset(V45_HEAVY.removeprefix("nsfw, "), Family.V4_5, "nsfw") == ("", UcPreset.HEAVY)


# --- properties -----------------------------------------------------------------------------------------

# Prompt-like text: words, commas, emphasis and weights, but not the words of any preset.
_PROMPT = st.text(alphabet="xyzwq 0123456789,{}[]:.-|\n", max_size=60)
_MODELS = st.sampled_from(sorted(MODELS))


@settings(max_examples=300, deadline=None)
@given(prompt=_PROMPT, model=_MODELS)
def test_quality_tags_apply_then_strip_is_identity(prompt: str, model: str) -> None:
    assert strip_quality_tags(apply_quality_tags(prompt, model), model) == (prompt, True)


@settings(max_examples=300, deadline=None)
@given(negative=_PROMPT, prompt=_PROMPT, model=_MODELS, data=st.data())
def test_uc_preset_apply_then_strip_gives_the_same_negative_back(
    negative: str, prompt: str, model: str, data: st.DataObject
) -> None:
    preset = data.draw(st.sampled_from([None, *available_uc_presets(model)]))
    applied = apply_uc_preset(negative, model, preset, prompt)
    stripped, found = strip_uc_preset(applied, model, prompt)
    assert apply_uc_preset(stripped, model, found, prompt) == applied
    if preset is not None and uc_preset_text(model, preset, prompt):
        assert (stripped, found) == (negative, preset)


@settings(max_examples=300, deadline=None)
@given(prompt=_PROMPT, negative=_PROMPT, model=_MODELS, quality=st.booleans(), data=st.data())
def test_reapplying_split_settings_reproduces_the_sent_text(
    prompt: str, negative: str, model: str, quality: bool, data: st.DataObject
) -> None:
    # The web's comma rule removes one space before a comma per pass, so text with two or more spaces before a
    # comma changes again when re-sent; such prompts cannot round-trip, through the web client either.
    for text in (prompt, negative):
        assume(normalize_commas_nai(normalize_commas_nai(text)) == normalize_commas_nai(text))
    preset = data.draw(st.sampled_from([None, *available_uc_presets(model)]))
    dataset = data.draw(st.sampled_from([None, *MODELS[model].dataset_prefixes]))
    sent = compose_prompts(prompt, negative, model, quality_tags=quality, uc_preset=preset, dataset=dataset)
    parts = split_prompts(*sent, model)
    again = compose_prompts(
        parts.prompt,
        parts.negative,
        model,
        quality_tags=parts.quality_tags,
        uc_preset=parts.uc_preset,
        dataset=parts.dataset,
    )
    assert again == sent
    assert parts.prompt == normalize_commas_nai(prompt)
    assert parts.quality_tags is quality


def test_every_family_has_both_tables() -> None:
    assert set(QUALITY) == set(UC_PRESETS) == set(Family)
    for table in UC_PRESETS.values():
        assert UcPreset.NONE in table


# --- real images ----------------------------------------------------------------------------------------


def test_real_v4_5_image_settings_split_back_into_user_text() -> None:
    meta = read_metadata(IMAGES / "nai__enslo_sd-metadata__novelai-full-3char.png")
    assert meta.prompt is not None and meta.negative_prompt is not None
    parts = split_prompts(meta.prompt, meta.negative_prompt, meta.model)
    assert parts.prompt == "2girls, 1boy, dancing, #テスト\nwhite background, "
    assert (parts.negative, parts.quality_tags, parts.uc_preset) == ("", True, UcPreset.HEAVY)
    assert compose_prompts(
        parts.prompt, parts.negative, "nai-diffusion-4-5-full", quality_tags=True, uc_preset=UcPreset.HEAVY
    ) == (meta.prompt, meta.negative_prompt)


def test_real_v4_5_curated_webp_uses_a_tag_variant() -> None:
    meta = read_metadata(IMAGES / "webp__enslo_sd-metadata__novelai-curated.webp")
    assert meta.prompt is not None and meta.negative_prompt is not None
    parts = split_prompts(meta.prompt, meta.negative_prompt, meta.model)
    assert (parts.prompt, parts.quality_tags) == ("1girl, solo, hatsune miku, #テスト", True)
    assert (parts.negative, parts.uc_preset) == ("", UcPreset.LIGHT)


def test_real_v3_image_keeps_the_users_own_negative() -> None:
    meta = read_metadata(IMAGES / "nai__LlmKira_novelai-python__sample-0316.png")
    assert meta.prompt is not None and meta.negative_prompt is not None
    parts = split_prompts(meta.prompt, meta.negative_prompt, meta.model)
    assert (parts.prompt, parts.quality_tags) == (" silvery white", True)
    assert (parts.negative, parts.uc_preset) == ("small", UcPreset.HEAVY)


def test_real_v1_image_with_a_loosely_named_model() -> None:
    meta = read_metadata(IMAGES / "nai__d3x-at_sd-parsers__novelai1_cropped.png")
    assert meta.prompt is not None and meta.negative_prompt is not None
    parts = split_prompts(meta.prompt, meta.negative_prompt, meta.model)
    assert (parts.prompt, parts.quality_tags) == (" cat, space, icon", True)
    assert parts.negative == meta.negative_prompt
