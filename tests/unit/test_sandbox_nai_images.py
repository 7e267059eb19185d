"""What the sandbox NovelAI server sends back: ZIP/JSON images with NovelAI metadata and stealth data,
msgpack and SSE streams, deterministic pictures that follow prompt and seed, and the client's own payloads
accepted for every model family."""

from __future__ import annotations

import base64
import io
import json
import math
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sandbox_nai_helpers import V45, b64, body, msgpack_events, pixels, png_bytes, sse_events

from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.metadata.pngchunks import replace_text_chunks
from peropix_tui.core.metadata.stealth import alpha_channel, read_stealth
from peropix_tui.engine.nai.models import model_spec
from peropix_tui.engine.nai.payload import build_payload
from peropix_tui.engine.types import CharacterPrompt, CharacterReference, GenerationRequest, VibeRef
from peropix_tui.sandbox.nai_faults import ENCODE_PATH, GENERATE_PATH, STREAM_PATH
from peropix_tui.sandbox.nai_server import NaiSandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[NaiSandbox]:
    """One server for the whole module: these tests only read what it renders."""
    with NaiSandbox() as server:
        yield server


def zip_images(response: httpx.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "binary/octet-stream"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def generate(client: httpx.Client, request: dict[str, Any]) -> bytes:
    return zip_images(client.post(GENERATE_PATH, json=request))["image_0.png"]


def comment_of(png: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(png)) as image:
        text: dict[str, str] = image.text  # type: ignore[attr-defined]
    parsed: dict[str, Any] = json.loads(text["Comment"])
    return parsed


# --- images and metadata ---------------------------------------------------------------------------------


def test_zip_holds_one_image_per_sample_with_its_seed(client: httpx.Client) -> None:
    images = zip_images(client.post(GENERATE_PATH, json=body(n=3, seed=4_294_967_294)))
    assert list(images) == ["image_0.png", "image_1.png", "image_2.png"]
    seeds = []
    for data in images.values():
        meta = read_metadata(data)
        assert "novelai" in meta.found_in
        assert meta.prompt == "1girl, solo, silver hair"
        assert meta.negative_prompt == "lowres, bad hands"
        assert (meta.width, meta.height, meta.steps, meta.n_samples) == (256, 256, 28, 3)
        assert meta.model == V45
        seeds.append(meta.seed)
    assert seeds == [4_294_967_294, 4_294_967_295, 0]  # seed + i, inside the 32-bit range


def test_png_carries_novelai_text_chunks(client: httpx.Client) -> None:
    request = body(characters=(("girl, red eyes", 0.3, 0.7),), seed=5)
    png = generate(client, request)
    with Image.open(io.BytesIO(png)) as image:
        assert (image.size, image.mode) == ((256, 256), "RGBA")
        text: dict[str, str] = image.text  # type: ignore[attr-defined]
    assert list(text) == ["Title", "Description", "Software", "Source", "Generation time", "Comment"]
    assert text["Software"] == "NovelAI"
    assert text["Source"] == "NovelAI Diffusion V4.5 4BDE2A90"
    assert text["Description"] == request["input"]
    assert float(text["Generation time"]) > 0
    comment = json.loads(text["Comment"])
    params = request["parameters"]
    assert comment["seed"] == 5
    assert comment["scale"] == 5.0
    assert comment["uc"] == params["negative_prompt"]
    assert comment["request_type"] == "PromptGenerateRequest"
    assert comment["v4_prompt"] == params["v4_prompt"] | {"legacy_uc": False}
    assert comment["v4_negative_prompt"]["caption"] == params["v4_negative_prompt"]["caption"]
    assert comment["sampler"] == "k_euler_ancestral"
    assert (comment["noise_schedule"], comment["prefer_brownian"], comment["sm"]) == ("karras", True, False)
    meta = read_metadata(png)
    assert [(c.prompt, c.centers) for c in meta.characters] == [("girl, red eyes", ((0.3, 0.7),))]


def test_stealth_data_is_readable_without_the_text_chunks(client: httpx.Client) -> None:
    png = generate(client, body(seed=31337))
    with Image.open(io.BytesIO(png)) as image:
        alpha = alpha_channel(image)
    assert alpha is not None
    assert set(np.unique(alpha)) <= {254, 255}
    payload = read_stealth(alpha)
    assert payload is not None and payload.compressed
    fields = json.loads(payload.text)
    assert "Title" not in fields
    assert fields["Software"] == "NovelAI"
    assert json.loads(fields["Comment"])["seed"] == 31337
    bare = replace_text_chunks(png, {})
    meta = read_metadata(bare)
    assert "stealth" in meta.found_in
    assert meta.seed == 31337


def test_json_variant(client: httpx.Client) -> None:
    response = client.post(GENERATE_PATH, json=body(n=2, seed=40), headers={"Accept": "application/json"})
    assert response.status_code == 200
    images = response.json()["images"]
    assert [(entry["index"], entry["seed"]) for entry in images] == [(0, 40), (1, 41)]
    for entry in images:
        data = base64.b64decode(entry["image"])
        assert read_metadata(data).seed == entry["seed"]


def test_webp_output_keeps_metadata_in_exif(client: httpx.Client) -> None:
    request = body(seed=9)
    request["parameters"]["image_format"] = "webp"
    images = zip_images(client.post(GENERATE_PATH, json=request))
    data = images["image_0.webp"]
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    meta = read_metadata(data)
    assert meta.seed == 9
    assert meta.prompt == request["input"]


def test_tiny_image_has_text_chunks_but_no_room_for_stealth(client: httpx.Client) -> None:
    png = generate(client, body(width=64, height=64, seed=3))
    meta = read_metadata(png)
    assert meta.seed == 3
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (64, 64)


def test_v5_comment_names_the_model(client: httpx.Client) -> None:
    png = generate(client, body(model="nai-diffusion-5-full"))
    comment = comment_of(png)
    assert (comment["model_name"], comment["model_hash"]) == ("nai-diffusion-5-full", "0ADF9AB7")


# --- determinism -----------------------------------------------------------------------------------------


def test_same_request_same_bytes(client: httpx.Client) -> None:
    request = body(width=832, height=1216, seed=123)
    assert generate(client, request) == generate(client, request)


def _difference(a: bytes, b: bytes) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_seed_and_prompt_visibly_change_the_picture(client: httpx.Client) -> None:
    base = generate(client, body(seed=1))
    other_seed = generate(client, body(seed=2))
    other_prompt = generate(client, body("1boy, city, night", seed=1))
    assert _difference(base, other_seed) > 10
    assert _difference(base, other_prompt) > 10


def test_character_position_shows_in_the_picture(client: httpx.Client) -> None:
    alone = pixels(generate(client, body()))
    with_character = pixels(generate(client, body(characters=(("girl", 0.1, 0.5),))))
    change = np.abs(alone - with_character)
    assert change[118:138, 16:36].mean() > 30  # around (0.1 W, 0.5 H): the character's halo and ring
    assert change[:, 192:].mean() < 1  # far from it: the same picture


# --- streams ---------------------------------------------------------------------------------------------


def _stream_body(kind: str, steps: int) -> dict[str, Any]:
    request = body(steps=steps, seed=77)
    request["parameters"]["stream"] = kind
    return request


def test_msgpack_stream_sends_one_preview_per_step_then_the_final_png(client: httpx.Client) -> None:
    response = client.post(STREAM_PATH, json=_stream_body("msgpack", 12))
    assert response.headers["content-type"] == "application/msgpack"
    events = msgpack_events(response.content)
    intermediates = [e for e in events if e["event_type"] == "intermediate"]
    assert len(intermediates) == 12
    assert [e["step_ix"] for e in intermediates] == list(range(12))
    assert all(e["image"].startswith(b"\xff\xd8\xff") for e in intermediates)
    sigmas = [e["sigma"] for e in intermediates]
    assert sigmas == sorted(sigmas, reverse=True)
    assert events[-1]["event_type"] == "final"
    assert len(events) == 13
    final = events[-1]["image"]
    assert final.startswith(b"\x89PNG")
    assert read_metadata(final).seed == 77
    assert comment_of(final)["stream"] == "msgpack"


def test_previews_progress_towards_the_final_image(client: httpx.Client) -> None:
    events = msgpack_events(client.post(STREAM_PATH, json=_stream_body("msgpack", 8)).content)
    final = events[-1]["image"]
    frames = [pixels(e["image"]) for e in events[:-1]]
    with Image.open(io.BytesIO(final)) as image:
        target = np.asarray(image.convert("RGB").resize(frames[0].shape[1::-1]), dtype=np.int16)
    distances = [float(np.abs(frame - target).mean()) for frame in frames]
    assert distances[0] > 30
    assert distances[-1] < 5
    assert distances == sorted(distances, reverse=True)


def test_sse_stream(client: httpx.Client) -> None:
    response = client.post(STREAM_PATH, json=_stream_body("sse", 6))
    assert response.headers["content-type"] == "text/event-stream"
    events = list(sse_events(response.text))
    assert [name for name, _ in events] == ["intermediate"] * 6 + ["final"]
    for name, data in events:
        assert data["event_type"] == name
    final = base64.b64decode(events[-1][1]["image"])
    assert read_metadata(final).seed == 77
    assert base64.b64decode(events[0][1]["image"]).startswith(b"\xff\xd8\xff")


def test_img2img_stream_sends_the_strength_share_of_steps(client: httpx.Client) -> None:
    request = _stream_body("msgpack", 20)
    request["action"] = "img2img"
    request["parameters"] |= {"image": b64(png_bytes(256, 256)), "strength": 0.62, "noise": 0}
    events = msgpack_events(client.post(STREAM_PATH, json=request).content)
    assert len([e for e in events if e["event_type"] == "intermediate"]) == math.ceil(20 * 0.62)
    assert comment_of(events[-1]["image"])["strength"] == 0.62


def test_bad_stream_kind_is_400(client: httpx.Client) -> None:
    assert client.post(STREAM_PATH, json=_stream_body("websocket", 5)).status_code == 400


# --- img2img and infill ----------------------------------------------------------------------------------


def test_img2img_blends_the_source_by_strength(client: httpx.Client) -> None:
    red = png_bytes(256, 256, (255, 0, 0))
    weak, strong = body(seed=8), body(seed=8)
    for request, strength in ((weak, 0.2), (strong, 0.9)):
        request["action"] = "img2img"
        request["parameters"] |= {"image": b64(red), "strength": strength, "noise": 0}
    red_weak = pixels(generate(client, weak))[..., 0].mean()
    red_strong = pixels(generate(client, strong))[..., 0].mean()
    assert red_weak > red_strong + 50


def test_img2img_source_must_match_the_size(client: httpx.Client) -> None:
    request = body()
    request["action"] = "img2img"
    request["parameters"] |= {"image": b64(png_bytes(200, 256)), "strength": 0.5}
    response = client.post(GENERATE_PATH, json=request)
    assert response.status_code == 400
    assert "200x256" in response.json()["message"]


def test_infill_changes_only_the_masked_area(client: httpx.Client) -> None:
    source = png_bytes(256, 256, (0, 0, 255))
    mask = Image.new("RGB", (32, 32), (0, 0, 0))  # the 1/8-size mask form
    mask.paste((255, 255, 255), (0, 0, 16, 32))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    request = body(model=V45 + "-inpainting", seed=12)
    request["action"] = "infill"
    request["parameters"] |= {"image": b64(source), "mask": b64(buffer.getvalue()), "strength": 1, "noise": 0}
    out = pixels(generate(client, request))
    assert (out[:, 128:] == (0, 0, 255)).all()
    assert np.abs(out[:, :128] - (0, 0, 255)).mean() > 30


# --- what the client builds is accepted ------------------------------------------------------------------

FAMILIES = [
    "nai-diffusion-4-5-full",
    "nai-diffusion-4-5-curated",
    "nai-diffusion-4-full",
    "nai-diffusion-4-curated-preview",
    "nai-diffusion-3",
    "nai-diffusion-furry-3",
    "nai-diffusion-5-full",
    "nai-diffusion-5-curated",
]


@pytest.mark.parametrize("model", FAMILIES)
def test_client_payload_of_every_family_is_accepted(client: httpx.Client, model: str) -> None:
    characters = (CharacterPrompt("girl, red eyes", position="B4"),) if model_spec(model).max_characters else ()
    request = GenerationRequest(
        prompt="1girl, garden", model=model, width=256, height=384, seed=999, characters=characters
    )
    payload = build_payload(request)
    png = generate(client, payload)
    comment = comment_of(png)
    assert comment["prompt"] == payload["input"]
    assert comment["uc"] == payload["parameters"]["negative_prompt"]
    assert comment["seed"] == 999
    assert read_metadata(png).model == model


def test_client_img2img_infill_charref_and_vibes_are_accepted(client: httpx.Client) -> None:
    source = png_bytes(300, 500, (30, 160, 60))
    mask = png_bytes(300, 500, (255, 255, 255))
    requests = [
        GenerationRequest(prompt="a", width=256, height=384, seed=1, image=source, strength=0.5),
        GenerationRequest(prompt="b", width=256, height=384, seed=2, image=source, mask=mask),
        GenerationRequest(prompt="c", width=256, height=384, seed=3, character_reference=CharacterReference(source)),
        GenerationRequest(
            prompt="d", model="nai-diffusion-3", width=256, height=384, seed=4, vibes=(VibeRef(image=source),)
        ),
    ]
    encoding = client.post(ENCODE_PATH, json={"image": b64(source), "model": V45, "information_extracted": 1})
    requests.append(
        GenerationRequest(prompt="e", width=256, height=384, seed=5, vibes=(VibeRef(encoding=encoding.content),))
    )
    for request in requests:
        payload = build_payload(request)
        response = client.post(GENERATE_PATH, json=payload)
        assert response.status_code == 200, (payload["action"], response.text)
        assert read_metadata(zip_images(response)["image_0.png"]).seed == request.seed
