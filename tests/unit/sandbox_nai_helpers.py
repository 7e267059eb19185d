"""Shared pieces of the sandbox NovelAI server and client tests: web-shaped request bodies, images, stream
parsers, a recording retry wait and small requests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
from PIL import Image

from peropix_tui.engine.nai.client import NovelAIClient
from peropix_tui.engine.types import GenerationRequest
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN
from peropix_tui.sandbox.nai_server import NaiSandbox, RecordedRequest

V45 = "nai-diffusion-4-5-full"
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}

MakeClient = Callable[..., NovelAIClient]


class RecordingSleep:
    """The retry wait: records each delay and sleeps only `scale` of it."""

    def __init__(self, scale: float = 0.0) -> None:
        self.delays: list[float] = []
        self.scale = scale

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds * self.scale)


def small(prompt: str = "1girl, solo, silver hair", **changes: Any) -> GenerationRequest:
    """A cheap request: 256x256, 4 steps, a fixed seed unless `changes` say otherwise."""
    settings: dict[str, Any] = {"width": 256, "height": 256, "steps": 4, "seed": 1234}
    settings.update(changes)
    return GenerationRequest(prompt, **settings)


def on(sandbox: NaiSandbox, *paths: str) -> list[RecordedRequest]:
    """The requests the sandbox recorded on any of `paths`, oldest first."""
    return [r for r in sandbox.requests if r.path in paths]


def png_bytes(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 90), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def body(
    prompt: str = "1girl, solo, silver hair",
    *,
    model: str = V45,
    width: int = 256,
    height: int = 256,
    steps: int = 28,
    seed: int = 1000,
    n: int = 1,
    negative: str = "lowres, bad hands",
    characters: tuple[tuple[str, float, float], ...] = (),
) -> dict[str, Any]:
    """A V4/V4.5 txt2img body in the web shape (spec §1.4)."""
    centers = [[{"x": x, "y": y}] for _text, x, y in characters]
    use_coords = bool(characters)
    return {
        "input": prompt,
        "model": model,
        "action": "generate",
        "parameters": {
            "params_version": 3,
            "width": width,
            "height": height,
            "scale": 5,
            "sampler": "k_euler_ancestral",
            "steps": steps,
            "n_samples": n,
            "seed": seed,
            "extra_noise_seed": seed,
            "ucPreset": 0,
            "qualityToggle": True,
            "autoSmea": False,
            "sm": False,
            "sm_dyn": False,
            "dynamic_thresholding": False,
            "controlnet_strength": 1,
            "legacy": False,
            "add_original_image": True,
            "cfg_rescale": 0,
            "noise_schedule": "karras",
            "legacy_v3_extend": False,
            "skip_cfg_above_sigma": None,
            "use_coords": use_coords,
            "legacy_uc": False,
            "normalize_reference_strength_multiple": True,
            "inpaintImg2ImgStrength": 1,
            "characterPrompts": [
                {"prompt": text, "uc": "", "center": c[0], "enabled": True}
                for (text, _x, _y), c in zip(characters, centers, strict=True)
            ],
            "v4_prompt": {
                "caption": {
                    "base_caption": prompt,
                    "char_captions": [
                        {"char_caption": text, "centers": c}
                        for (text, _x, _y), c in zip(characters, centers, strict=True)
                    ],
                },
                "use_coords": use_coords,
                "use_order": True,
            },
            "v4_negative_prompt": {
                "caption": {
                    "base_caption": negative,
                    "char_captions": [{"char_caption": "", "centers": c} for c in centers],
                },
                "legacy_uc": False,
            },
            "negative_prompt": negative,
            "reference_image_multiple": [],
            "reference_information_extracted_multiple": [],
            "reference_strength_multiple": [],
            "deliberate_euler_ancestral_bug": False,
            "prefer_brownian": True,
            "image_format": "png",
        },
        "use_new_shared_trial": True,
    }


def pixels(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def msgpack_events(data: bytes) -> list[dict[str, Any]]:
    """Split a msgpack stream into its events: [uint32 BE length][msgpack map], repeated."""
    events = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunk = data[offset + 4 : offset + 4 + length]
        assert len(chunk) == length, "truncated frame"
        events.append(msgpack.unpackb(chunk, raw=False))
        offset += 4 + length
    return events


def sse_events(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, decoded JSON data) for each server-sent event."""
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        yield fields["event"], json.loads(fields["data"])
