"""ComfyUI API-graph extraction on real graphs and on hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from peropix_tui.core.metadata.comfy import extract_settings, parse_graph, sampler_to_nai

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"


def fixture_graph(name: str) -> dict[str, Any]:
    with Image.open(FIXTURES / name) as im:
        graph = json.loads(im.text["prompt"])  # type: ignore[attr-defined]
    assert isinstance(graph, dict)
    return graph


def test_img2img_graph() -> None:
    raw = fixture_graph("comfy__d3x-at_sd-parsers__img2img_cropped.png")
    graph = parse_graph(json.dumps(raw))
    assert graph is not None
    s = extract_settings(graph)
    assert s is not None
    sampler = raw["3"]["inputs"]
    assert (
        s.prompt == raw["6"]["inputs"]["text"] == "photograph of victorian woman with wings, sky clouds, meadow grass\n"
    )
    assert s.negative_prompt == raw["7"]["inputs"]["text"]
    assert (s.seed, s.steps, s.cfg, s.denoise) == (sampler["seed"], 20, 8.0, sampler["denoise"])
    assert (s.sampler, s.scheduler) == ("sample_dpmpp_2m", "normal")
    assert s.model == "v1-5-pruned-emaonly.ckpt"
    assert (s.width, s.height) == (None, None)  # the latent comes from a loaded image


def test_two_pass_graph_reports_the_final_sampler() -> None:
    raw = fixture_graph("comfy__d3x-at_sd-parsers__unclip_2pass_cropped.png")
    s = extract_settings(parse_graph(json.dumps(raw)) or {})
    assert s is not None
    assert s.seed == raw["41"]["inputs"]["seed"]
    assert (s.steps, s.cfg, s.sampler) == (8, 9.0, "dpmpp_sde")
    assert s.prompt == "beautiful scenery landscape outdoors mountains"
    assert s.model == "cardosAnimated_v20.safetensors"
    assert (s.width, s.height) == (1920, 1088)  # from the LatentUpscale feeding the second pass


def test_primitive_links_lora_chain_and_sdxl_encoder() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sub/model.safetensors"}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": "a/first.safetensors", "strength_model": 0.7, "model": ["1", 0]},
        },
        "3": {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": "second.pt", "strength_model": 1.0, "model": ["2", 0]},
        },
        "4": {"class_type": "PrimitiveNode", "inputs": {"value": "a girl, <lora:x:1>"}},
        "5": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": ["4", 0], "text_l": "ignored"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres"}},
        "7": {"class_type": "Seed", "inputs": {"seed": 42}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216}},
        "9": {
            "class_type": "KSamplerAdvanced",
            "inputs": {
                "noise_seed": ["7", 0],
                "steps": 30,
                "cfg": 6,
                "sampler_name": "euler_ancestral",
                "scheduler": "karras",
                "model": ["3", 0],
                "positive": ["5", 0],
                "negative": ["6", 0],
                "latent_image": ["8", 0],
            },
        },
    }
    s = extract_settings(graph)
    assert s is not None
    assert (s.prompt, s.negative_prompt, s.seed, s.steps, s.cfg) == (
        "a girl, <lora:x:1>",
        "lowres",
        42,
        30,
        6.0,
    )
    assert s.model == "sub/model.safetensors"
    assert s.loras == [("first", 0.7), ("second", 1.0)]
    assert (s.width, s.height) == (832, 1216)
    assert sampler_to_nai(s.sampler or "") == "k_euler_ancestral"
    assert sampler_to_nai("uni_pc") == "uni_pc"


def test_cycles_and_junk_do_not_hang_or_crash() -> None:
    graph = {
        "1": {
            "class_type": "KSampler",
            "inputs": {
                "positive": ["2", 0],
                "negative": ["2", 0],
                "steps": "x",
                "model": ["3", 0],
                "latent_image": ["3", 0],
            },
        },
        "2": {"class_type": "Combine", "inputs": {"conditioning": ["2", 0], "other": ["1", 0]}},
        "3": {"class_type": "Loop", "inputs": {"model": ["3", 0], "samples": ["3", 0]}},
    }
    s = extract_settings(graph)
    assert s is not None
    assert (s.prompt, s.steps, s.model, s.width) == (None, None, None, None)


def test_not_a_graph() -> None:
    assert parse_graph("not json") is None
    assert parse_graph("[1, 2]") is None
    assert parse_graph('{"a": 1}') is None
    assert extract_settings({"1": {"class_type": "SaveImage", "inputs": {}}}) is None
