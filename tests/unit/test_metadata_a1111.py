"""A1111 `parameters` text: parsing real files, quoting, and format/parse round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.metadata.a1111 import (
    SAMPLERS_TO_A1111,
    A1111Parameters,
    format_parameters,
    parse_parameters,
    parse_settings,
    sampler_to_a1111,
    sampler_to_nai,
    schedule_to_a1111,
    schedule_to_nai,
)
from peropix_tui.core.metadata.model import from_a1111, to_a1111_parameters

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"


def fixture_parameters(name: str) -> str:
    with Image.open(FIXTURES / name) as im:
        return str(im.text["parameters"])  # type: ignore[attr-defined]


def test_parse_cropped_a1111_fixture() -> None:
    text = fixture_parameters("a1111__d3x-at_sd-parsers__automatic1111_cropped.png")
    params = parse_parameters(text)
    assert params.prompt == "photo of a duck"
    assert params.negative_prompt == "monochrome"
    assert params.settings == {
        "Steps": "15",
        "Sampler": "UniPC",
        "CFG scale": "5",
        "Seed": "235284042",
        "Size": "512x400",
        "Model hash": "c0d1994c73",
        "Model": "realistic_realisticVisionV20_v20",
    }
    assert format_parameters(params) == text


def test_forge_fixture_multiline_prompt_and_round_trip() -> None:
    text = fixture_parameters("a1111__enslo_sd-metadata__forge.png")
    params = parse_parameters(text)
    assert params.prompt == "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, テスト"
    assert params.negative_prompt == "bad quality, worst quality, worst detail, sketch, censor,"
    assert params.settings["Schedule type"] == "Karras"
    assert params.settings["Version"] == "f2.0.1v1.10.1-previous-669-gdfdcbab6"
    assert format_parameters(params) == text
    meta = from_a1111(params)
    assert (meta.steps, meta.sampler, meta.scheduler, meta.cfg, meta.seed) == (
        25,
        "k_euler",
        "karras",
        5.0,
        747066619,
    )
    assert (meta.width, meta.height, meta.model, meta.model_hash) == (
        1024,
        1024,
        "waiIllustriousSDXL_v160",
        "45a21ea00a",
    )
    assert meta.parameters_extra == {"Version": "f2.0.1v1.10.1-previous-669-gdfdcbab6"}
    assert to_a1111_parameters(meta) == text


def test_multiline_negative_prompt() -> None:
    text = "a\nb\nNegative prompt: bad,\nworse\n\nSteps: 20, Sampler: Euler a, Seed: 1"
    params = parse_parameters(text)
    assert (params.prompt, params.negative_prompt) == ("a\nb", "bad,\nworse\n")
    assert format_parameters(params) == text


def test_quoted_values_with_commas_and_colons() -> None:
    line = 'Steps: 20, Lora hashes: "a: 123, b: 456", Hashes: {"model": "45a21ea00a"}, TI: "x \\"y\\""'
    settings = parse_settings(line)
    assert settings == {
        "Steps": "20",
        "Lora hashes": "a: 123, b: 456",
        "Hashes": '{"model": "45a21ea00a"}',
        "TI": 'x "y"',
    }
    again = parse_settings(format_parameters(A1111Parameters("", "", settings)).lstrip("\n"))
    assert again == settings


def test_text_without_settings_is_all_prompt() -> None:
    assert parse_parameters("just a prompt, 1girl") == A1111Parameters("just a prompt, 1girl", "", {})
    assert parse_parameters("style: anime") == A1111Parameters("style: anime", "", {})
    only_negative = parse_parameters("Negative prompt: lowres")
    assert (only_negative.prompt, only_negative.negative_prompt) == ("", "lowres")


def test_legacy_sampler_with_schedule() -> None:
    meta = from_a1111(parse_parameters("p\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7"))
    assert (meta.sampler, meta.scheduler) == ("k_dpmpp_2m", "karras")


def test_bad_numbers_stay_raw_with_warning() -> None:
    meta = from_a1111(parse_parameters("p\nSteps: many, Seed: 99999999999999999999999, Size: big, CFG scale: 0"))
    assert meta.steps is None and meta.seed is None and meta.width is None
    assert meta.cfg == 0.0  # zero is a value
    assert meta.parameters_extra == {"Steps": "many", "Seed": "99999999999999999999999", "Size": "big"}
    assert len(meta.warnings) == 3


@pytest.mark.parametrize("nai_id", sorted(SAMPLERS_TO_A1111))
def test_sampler_names_round_trip(nai_id: str) -> None:
    assert sampler_to_nai(sampler_to_a1111(nai_id)) == nai_id


def test_spec_sampler_and_schedule_names() -> None:
    assert sampler_to_a1111("k_euler_ancestral") == "Euler a"
    assert sampler_to_a1111("k_dpmpp_2s_ancestral") == "DPM++ 2S a"
    assert sampler_to_a1111("ddim_v3") == sampler_to_a1111("ddim") == "DDIM"
    assert sampler_to_nai("UniPC") == "UniPC"
    assert schedule_to_nai("Karras") == "karras" and schedule_to_a1111("polyexponential") == "Polyexponential"
    # The local engine's schedules have ids; one it lacks passes through unchanged.
    assert schedule_to_nai("SGM Uniform") == "sgm_uniform" and schedule_to_a1111("kl_optimal") == "KL Optimal"
    assert schedule_to_nai("Align Your Steps") == "Align Your Steps"
    assert sampler_to_a1111("k_heun") == "Heun"


_line_text = st.text(st.characters(exclude_characters="\n\r", exclude_categories=["Cs"]), max_size=30)
_key = st.text(
    st.characters(exclude_characters=':,\n"', exclude_categories=("Cs", "Zs", "Cc", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)
_value = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(
    prompt=st.lists(_line_text, max_size=3).map("\n".join),
    negative=st.lists(_line_text, max_size=3).map("\n".join),
    settings=st.dictionaries(_key, _value, max_size=6),
)
def test_format_parse_round_trip(prompt: str, negative: str, settings: dict[str, str]) -> None:
    # A prompt line that reads as "Key: value" settings, or that starts the negative block, is ambiguous in
    # the format; real A1111 text has the same limits.
    for line in (prompt + "\n" + negative).split("\n"):
        assume(parse_settings(line) is None and not line.startswith("Negative prompt:"))
    params = A1111Parameters(prompt, negative, settings)
    text = format_parameters(params)
    if settings and len(settings) < 3 and not {"Steps", "Sampler", "CFG scale", "Seed", "Size"} & set(settings):
        settings_line = text.rsplit("\n", 1)[-1]
        assert parse_settings(settings_line) == settings
        return
    assert parse_parameters(text) == params


def test_json_quoting_matches_a1111() -> None:
    settings = {"Lora hashes": "a: 1, b: 2", "Plain": "x"}
    line = format_parameters(A1111Parameters("p", "", settings)).split("\n")[1]
    assert line == "Lora hashes: " + json.dumps("a: 1, b: 2") + ", Plain: x"
