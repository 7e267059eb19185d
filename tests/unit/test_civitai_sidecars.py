from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peropix_tui.civitai.jsonio import dump_json, parse_json
from peropix_tui.civitai.sidecars import (
    ModelFileRef,
    SidecarContext,
    build_sidecar,
    family,
    lead_lora,
    loras_first,
    unwrap_meta,
)
from peropix_tui.core.prompt import WordFilter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "civitai"
FILTERS = WordFilter.from_lines(
    {"sex": ["large breasts", "nsfw"], "clothes": ["apron", "short sleeves", "pink skirt"], "etc": ["score_9"]}
)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"), strict=False)


def context_for(version: dict[str, Any], *, saved: dict[int, str] | None = None) -> SidecarContext:
    files = [
        ModelFileRef(f["id"], f["name"], (saved or {}).get(f["id"], f["name"]), f.get("hashes") or {})
        for f in version["files"]
    ]
    model = version.get("model") or {}
    return SidecarContext(
        model_id=version.get("modelId", 1),
        model_name=model.get("name", "m"),
        model_type=model.get("type", "LORA"),
        version_id=version["id"],
        version_name=version["name"],
        base_model=version.get("baseModel", ""),
        files=files,
    )


def test_real_version_image_sidecar() -> None:
    version = load("model-versions__OwenTruong_civitdl__399893.json")
    image = version["images"][0]
    meta = image["meta"]
    context = context_for(version)
    sidecar = build_sidecar(
        {**image, "id": 8202736, "username": 1234}, meta, context, FILTERS, image_url="https://x/8202736", showcase=True
    )
    assert sidecar["raw_prompt"] == meta["prompt"]
    own = "<lora:fukawa_miku_pony_ver1:0.7>"
    assert sidecar["lora"] == [own]
    assert sidecar["prompt"].startswith(own + ", 1girl, cowboy shot, (family restaurant:1.2)")
    # Filters: every category in `prompt`, all but clothes in `prompt_with_clothes`.
    for word in ("large breasts", "apron", "short sleeves", "pink skirt", "score_9"):
        assert word not in sidecar["prompt"]
    for word in ("apron", "short sleeves", "pink skirt"):
        assert word in sidecar["prompt_with_clothes"]
    assert "large breasts" not in sidecar["prompt_with_clothes"]
    assert sidecar["prompt"].count("<lora:") == 1
    assert "\n" not in sidecar["prompt"]
    assert sidecar["meta"] == meta
    assert sidecar["username"] == "1234"
    assert (sidecar["model_id"], sidecar["version_id"]) == (357756, 399893)
    assert sidecar["image_page"] == "https://civitai.com/images/8202736"
    assert sidecar["negative_prompt"] == meta["negativePrompt"]
    assert parse_json(dump_json(sidecar), where="sidecar") == sidecar


def test_own_tag_found_by_hash_is_renamed_to_the_file_on_disk() -> None:
    version = load("model-versions__OwenTruong_civitdl__399893.json")
    meta = version["images"][0]["meta"]
    file_id = version["files"][0]["id"]
    context = context_for(version, saved={file_id: "fukawa_miku_pony_ver1_322619.safetensors"})
    prompt = "1girl, <lora:some_other_name:0.7>, <lora:helper:0.3>, smile"
    meta = {**meta, "prompt": prompt, "hashes": {"lora:some_other_name": "407e165725a2"}}
    renamed, own = lead_lora(prompt, meta, context)
    assert own == "<lora:fukawa_miku_pony_ver1_322619:0.7>"
    front, tags = loras_first(renamed, own)
    assert tags == [own, "<lora:helper:0.3>"]
    assert front == f"{own}, <lora:helper:0.3>, 1girl, smile"


def test_own_tag_by_name_family_and_resources_weight() -> None:
    item = load("other__dfanr_CivitaiModelList__models-item-93270-ctrl-x10-x11-in-meta-Model-and-resource-name.json")
    version = {**item["modelVersions"][0], "model": {"name": item["name"], "type": item["type"]}}
    context = context_for(version)
    image = version["images"][1]
    sidecar = build_sidecar(image, image["meta"], context, FILTERS, image_url="u", showcase=False)
    # `art_numahana` in the prompt is the file `art_numahana-03.safetensors` (a version suffix apart).
    assert sidecar["lora"] == ["<lora:art_numahana-03:1>"]
    assert sidecar["prompt"].startswith("<lora:art_numahana-03:1>, 1girl, police")
    assert "\x10" in sidecar["meta"]["Model"]  # the raw meta is kept as it came


def test_generator_images_without_a_tag_get_one_weighted_from_resources() -> None:
    context = SidecarContext(
        5, "Style", "LoCon", 77, "v2", "Illustrious", [ModelFileRef(9, "style.safetensors", "style.safetensors")]
    )
    meta = {
        "prompt": "1girl, <lora:other:0.5>, smile",
        "civitaiResources": [{"type": "lora", "weight": 0.85, "modelVersionId": 77}],
    }
    renamed, own = lead_lora(meta["prompt"], meta, context)
    assert own == "<lora:style:0.85>"
    assert loras_first(renamed, own)[1] == ["<lora:style:0.85>", "<lora:other:0.5>"]
    # No resource names the version: weight 1.
    assert lead_lora("smile", {"prompt": "smile"}, context)[1] == "<lora:style:1>"
    # A prompt-less image still gets the tag alone.
    sidecar = build_sidecar({"id": 1}, None, context, FILTERS, image_url="u", showcase=True)
    assert (sidecar["raw_prompt"], sidecar["prompt"], sidecar["lora"]) == ("", "<lora:style:1>", ["<lora:style:1>"])


def test_checkpoints_get_no_lora_tag() -> None:
    context = SidecarContext(
        5, "Mix", "Checkpoint", 7, "v1", "SDXL", [ModelFileRef(9, "mix.safetensors", "mix.safetensors")]
    )
    sidecar = build_sidecar({"id": 3}, {"prompt": "a, <lora:x:1>, b"}, context, FILTERS, image_url="u", showcase=True)
    assert sidecar["lora"] == ["<lora:x:1>"]
    assert sidecar["prompt"] == "<lora:x:1>, a, b"


def test_control_characters_stay_raw_but_leave_the_curated_prompts() -> None:
    context = SidecarContext(5, "S", "LORA", 7, "v1", "", [ModelFileRef(9, "s.safetensors", "s.safetensors")])
    raw = "1 girl,\x18/\x01TX, solo \x11"
    sidecar = build_sidecar({"id": 3}, {"prompt": raw}, context, FILTERS, image_url="u", showcase=True)
    assert sidecar["raw_prompt"] == raw
    assert not any(ord(c) < 0x20 for c in sidecar["prompt"] + sidecar["prompt_with_clothes"])


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"id": 5, "meta": {"prompt": "x"}}, {"prompt": "x"}),
        ({"id": 5, "meta": None}, None),
        ({"prompt": "x", "id": 5}, {"prompt": "x", "id": 5}),
        (None, None),
        ("text", None),
    ],
)
def test_unwrap_meta(meta: Any, expected: Any) -> None:
    assert unwrap_meta(meta) == expected


def test_family() -> None:
    assert family("art_numahana-03") == family("Art_Numahana") == "art_numahana"
    assert family("style_v3") == family("style v1.5") == "style"
    assert family("style3") == "style3"


def test_sidecar_json_is_strict() -> None:
    context = SidecarContext(5, "S", "LORA", 7, "v1", "", [])
    sidecar = build_sidecar(
        {"id": 3},
        {"prompt": "a", "cfgScale": float("nan"), "seed": 2**70, "bad": "\ud800"},
        context,
        FILTERS,
        image_url="u",
        showcase=True,
    )
    data = dump_json(sidecar)
    loaded = json.loads(data.decode("utf-8"))
    assert loaded["meta"]["cfgScale"] is None
    assert loaded["meta"]["seed"] == 2**70
    assert loaded["meta"]["bad"] == "?"
