"""Shared pieces of the CivitAI collector tests: a fast retry policy, a recording sleep, small datasets and a
one-call collector run against the sandbox server over real HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peropix_tui.civitai.client import CivitaiClient, RetryPolicy
from peropix_tui.civitai.collector import CollectOptions, Collector
from peropix_tui.civitai.events import Event, ItemFinished, Tally
from peropix_tui.civitai.urls import CreatorRef
from peropix_tui.core.prompt import WordFilter
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, FileAccess, ModelType, SandboxFile
from peropix_tui.sandbox.civitai_images import ImageFormat
from peropix_tui.sandbox.civitai_server import SANDBOX_API_KEY, CivitaiSandbox

KEY = SANDBOX_API_KEY
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.02, jitter=0.0, throttle_s=(0.01, 0.02), max_wait_s=0.05)
FILTERS = WordFilter.from_lines({"sex": ["nsfw"], "clothes": ["school uniform"], "etc": ["masterpiece"]})


class SleepRecorder:
    """A `sleep` for the client that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def alice_dataset(*, file_size: int = 96 * 1024) -> CivitaiDataset:
    """`alice`: two LoRAs (one with two versions, one with two files), a checkpoint, images in three formats."""
    dataset = CivitaiDataset(seed=7)
    alice = dataset.add_creator("alice")
    style = dataset.add_model(alice, "Alice Style", type=ModelType.LORA)
    v1 = dataset.add_version(style, "v1.0", trained_words=["alicestyle"])
    dataset.add_file(v1, size=file_size)
    dataset.add_image(v1, image_format=ImageFormat.PNG)
    dataset.add_image(v1, image_format=ImageFormat.JPEG)
    v2 = dataset.add_version(style, "v2.0", trained_words=["alicestyle", "v2"])
    dataset.add_file(v2, size=file_size)
    dataset.add_image(v2, image_format=ImageFormat.WEBP)
    outfit = dataset.add_model(alice, "Alice Outfit", type=ModelType.LOCON)
    v3 = dataset.add_version(outfit, "v1.0", trained_words=["aliceoutfit"])
    dataset.add_file(v3, size=file_size)
    dataset.add_file(v3, size=file_size // 2, type="Training Data", name="alice_outfit_dataset.safetensors")
    dataset.add_image(v3, image_format=ImageFormat.PNG, meta=None)
    mix = dataset.add_model(alice, "Alice Mix", type=ModelType.CHECKPOINT)
    v4 = dataset.add_version(mix, "v1.0")
    dataset.add_file(v4, size=file_size)
    dataset.add_image(v4, image_format=ImageFormat.PNG)
    return dataset


def model_files(
    dataset: CivitaiDataset, username: str, types: Iterable[str] | None = ("LORA", "LoCon", "DoRA")
) -> list[SandboxFile]:
    wanted = None if types is None else {t.lower() for t in types}
    files = []
    for model in dataset.models.values():
        if model.username != username or (wanted is not None and model.type.value.lower() not in wanted):
            continue
        for version in model.versions:
            files.extend(version.files)
    return files


def add_key_file(dataset: CivitaiDataset, username: str) -> SandboxFile:
    creator = dataset.creators[username.lower()]
    model = dataset.add_model(creator, "Members Style", type=ModelType.LORA)
    version = dataset.add_version(model, "v1.0")
    return dataset.add_file(version, access=FileAccess.KEY)


@dataclass
class RunResult:
    tally: Tally
    events: list[Event] = field(default_factory=list)

    def finished(self, kind: str | None = None) -> dict[int, ItemFinished]:
        return {e.ident: e for e in self.events if isinstance(e, ItemFinished) and (kind is None or e.kind == kind)}


async def collect(
    sandbox: CivitaiSandbox,
    root: Path,
    creators: Iterable[str] = ("alice",),
    *,
    key: str | None = KEY,
    **options: Any,
) -> RunResult:
    """One collector run over real HTTP, events recorded."""
    events: list[Event] = []
    settings = {"types": ("LORA", "LoCon", "DoRA"), **options}
    async with CivitaiClient(sandbox.base_url, key, spacing_s=0.0, policy=FAST, sleep=SleepRecorder()) as client:
        collector = Collector(client, CollectOptions(root=root, **settings), filters=FILTERS, on_event=events.append)
        tally = await collector.run([CreatorRef(name) for name in creators])
    return RunResult(tally, events)
