"""`LocalEngine` end to end on tiny synthetic checkpoints: PNGs with metadata our reader and A1111's format
read back, seeds and batches, progress on the event loop, cancellation, checkpoint resolution, model switching
and one-line errors for what the local engine cannot do."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from local.tiny_checkpoint import tiny_checkpoint, tiny_model, write_kohya_lora
from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.jobs import CancelToken, JobCancelled
from peropix_tui.core.metadata import parse_parameters, read_metadata
from peropix_tui.core.safetensors import compute_hashes
from peropix_tui.engine.local.engine import LocalEngine, resolve_device, resolve_dtype
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.types import (
    CharacterPrompt,
    CharacterReference,
    GeneratedImage,
    GenerationRequest,
    ProgressEvent,
    RequestError,
    VibeRef,
)

SIZE = 64


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    shared = tmp_path_factory.getbasetemp() / "tiny_checkpoints"
    shared.mkdir(exist_ok=True)
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    tiny_checkpoint(shared, checkpoints / "tiny_xl.safetensors", sdxl=True, seed=0)
    tiny_checkpoint(shared, checkpoints / "sd" / "tiny_sd15.safetensors", sdxl=False, seed=1)
    loras = tmp_path_factory.mktemp("loras")
    write_kohya_lora(loras / "style_v1.safetensors", tiny_model(sdxl=True, seed=0), output_name="inkstyle", seed=3)
    return checkpoints, loras


@pytest.fixture(scope="module")
def engine(folders: tuple[Path, Path]) -> Iterator[LocalEngine]:
    checkpoints, loras = folders
    local = LocalEngine(checkpoint_dirs=[checkpoints], lora_dirs=[loras], device="cpu")
    yield local
    local.close()


def request(**settings: object) -> GenerationRequest:
    base: dict[str, object] = {
        "prompt": "a cat sitting on a red chair",
        "negative": "blurry",
        "model": "tiny_xl",
        "width": SIZE,
        "height": SIZE,
        "steps": 3,
        "sampler": "k_euler",
        "scheduler": "karras",
        "seed": 1234,
    }
    base.update(settings)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.float64)


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gradient() -> Image.Image:
    x = np.linspace(0, 255, SIZE)
    rgb = np.stack([np.tile(x, (SIZE, 1)), np.tile(x[:, None], (1, SIZE)), np.full((SIZE, SIZE), 90.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


async def test_txt2img_png_and_metadata_round_trip(engine: LocalEngine, folders: tuple[Path, Path]) -> None:
    (image,) = await engine.generate(request(width=64, height=128, scale=6.5, cfg_rescale=0.25))
    assert image.format == "png" and sniff_image_format(image.data[:16]) == "png"
    assert Image.open(io.BytesIO(image.data)).size == (64, 128)
    assert (image.seed, image.index) == (1234, 0)

    meta = read_metadata(image.data)
    expected_hash = compute_hashes(folders[0] / "tiny_xl.safetensors").autov2.lower()
    assert meta.prompt == "a cat sitting on a red chair"
    assert meta.negative_prompt == "blurry"
    assert (meta.seed, meta.steps, meta.cfg, meta.cfg_rescale) == (1234, 3, 6.5, 0.25)
    assert (meta.sampler, meta.scheduler) == ("k_euler", "karras")
    assert (meta.width, meta.height) == (64, 128)
    assert (meta.model, meta.model_hash) == ("tiny_xl", expected_hash)
    assert meta.request_type == "PromptGenerateRequest" and meta.strength is None
    assert {"novelai", "a1111"} <= set(meta.found_in)
    assert meta.warnings == []
    assert image.metadata.seed == 1234 and image.metadata.model_hash == expected_hash

    params = parse_parameters(meta.raw["parameters"])
    assert params.prompt == "a cat sitting on a red chair"
    assert params.negative_prompt == "blurry"
    assert params.settings["Steps"] == "3"
    assert params.settings["Sampler"] == "Euler"
    assert params.settings["Schedule type"] == "Karras"
    assert params.settings["CFG scale"] == "6.5"
    assert params.settings["Seed"] == "1234"
    assert params.settings["Size"] == "64x128"
    assert params.settings["Model"] == "tiny_xl"
    assert params.settings["Model hash"] == expected_hash


async def test_same_seed_same_bytes_and_batch_seeds_follow_on(engine: LocalEngine) -> None:
    (first,) = await engine.generate(request(seed=77, sampler="k_euler_ancestral"))
    (again,) = await engine.generate(request(seed=77, sampler="k_euler_ancestral"))
    assert first.data == again.data
    batch = await engine.generate(request(seed=77, n=2, sampler="k_euler_ancestral"))
    assert [(image.seed, image.index) for image in batch] == [(77, 0), (78, 1)]
    (single78,) = await engine.generate(request(seed=78, sampler="k_euler_ancestral"))
    np.testing.assert_array_equal(pixels(batch[0]), pixels(first))
    np.testing.assert_array_equal(pixels(batch[1]), pixels(single78))
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 10
    assert read_metadata(batch[1].data).seed == 78


async def test_an_unset_seed_is_resolved_and_recorded(engine: LocalEngine) -> None:
    (image,) = await engine.generate(request(seed=None))
    assert image.seed > 0
    assert read_metadata(image.data).seed == image.seed == image.request.seed


async def test_progress_arrives_on_the_loop_per_step_with_previews(engine: LocalEngine) -> None:
    events: list[ProgressEvent] = []
    loop = asyncio.get_running_loop()
    threads: set[bool] = set()

    def on_progress(event: ProgressEvent) -> None:
        threads.add(asyncio.get_running_loop() is loop)
        events.append(event)

    await engine.generate(request(n=2, steps=3), on_progress=on_progress)
    await asyncio.sleep(0)  # callbacks queued by the worker's last step
    assert threads == {True}
    assert [(e.sample_index, e.step, e.total) for e in events] == [(i, s, 3) for i in (0, 1) for s in (1, 2, 3)]
    first = events[0].preview
    assert first is not None and sniff_image_format(first[:16]) == "jpeg"
    assert Image.open(io.BytesIO(first)).size == (SIZE // 8, SIZE // 8)
    assert events[3].preview is not None  # each sample starts with a preview
    assert events[2].preview is None and events[5].preview is None  # the finished image follows at once

    events.clear()
    await engine.generate(request(steps=2), on_progress=on_progress, stream=False)
    await asyncio.sleep(0)
    assert [(e.step, e.preview) for e in events] == [(1, None), (2, None)]


async def test_a_cancel_token_stops_the_generation(engine: LocalEngine) -> None:
    token = CancelToken()
    events: list[ProgressEvent] = []

    def on_progress(event: ProgressEvent) -> None:
        events.append(event)
        token.cancel()

    with pytest.raises(JobCancelled):
        await engine.generate(request(steps=40), on_progress=on_progress, cancel=token)
    assert 1 <= len(events) < 40
    (after,) = await engine.generate(request(steps=2))  # the worker is free again
    assert after.seed == 1234


async def test_cancelling_the_task_stops_the_worker(engine: LocalEngine) -> None:
    started = asyncio.Event()
    abandoned: list[ProgressEvent] = []

    def on_progress(event: ProgressEvent) -> None:
        abandoned.append(event)
        started.set()

    task = asyncio.create_task(engine.generate(request(steps=200), on_progress=on_progress, stream=False))
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events: list[ProgressEvent] = []
    await asyncio.wait_for(engine.generate(request(steps=2), on_progress=events.append), timeout=60)
    await asyncio.sleep(0)
    assert [e.total for e in events] == [2, 2]
    # The next job ran after the abandoned one on the single worker, so that one had stopped early.
    assert 1 <= len(abandoned) < 200


async def test_two_calls_at_once_both_finish(engine: LocalEngine) -> None:
    one, two = await asyncio.gather(engine.generate(request(seed=1)), engine.generate(request(seed=2)))
    assert one[0].seed == 1 and two[0].seed == 2
    assert one[0].data != two[0].data


async def test_lora_tags_change_the_image_and_are_hashed(engine: LocalEngine, folders: tuple[Path, Path]) -> None:
    (plain,) = await engine.generate(request())
    (styled,) = await engine.generate(request(prompt="a cat sitting on a red chair, <lora:inkstyle:0.9>"))
    assert np.abs(pixels(plain) - pixels(styled)).mean() > 1
    meta = read_metadata(styled.data)
    assert meta.loras == [("<lora:inkstyle:0.9>", "inkstyle")]
    short = compute_hashes(folders[1] / "style_v1.safetensors").autov3_short
    assert short is not None
    assert parse_parameters(meta.raw["parameters"]).settings["Lora hashes"] == f"inkstyle: {short.lower()}"
    (plain_again,) = await engine.generate(request())
    assert plain_again.data == plain.data


async def test_img2img_and_inpaint_from_bytes(engine: LocalEngine, tmp_path: Path) -> None:
    source = gradient()
    path = tmp_path / "source.png"
    source.save(path)
    (moved,) = await engine.generate(request(image=path, strength=0.4))
    meta = read_metadata(moved.data)
    assert (meta.request_type, meta.strength) == ("Img2ImgRequest", 0.4)
    assert parse_parameters(meta.raw["parameters"]).settings["Denoising strength"] == "0.4"

    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, 32:] = 255
    (painted,) = await engine.generate(request(image=png_of(source), mask=png_of(Image.fromarray(mask)), strength=1.0))
    assert read_metadata(painted.data).request_type == "NativeInfillingRequest"
    out = pixels(painted)
    np.testing.assert_array_equal(out[:, :32], np.asarray(source, dtype=np.float64)[:, :32])
    assert np.abs(out[:, 32:] - np.asarray(source, dtype=np.float64)[:, 32:]).mean() > 10


async def test_a_broken_source_image_is_one_line(engine: LocalEngine) -> None:
    with pytest.raises(RequestError, match=r"^image: cannot be read as an image") as caught:
        await engine.generate(request(image=b"\x89PNG\r\n\x1a\nnot really"))
    one_line(caught)


async def test_switching_checkpoints_keeps_one_resident_and_close_evicts(
    engine: LocalEngine, folders: tuple[Path, Path]
) -> None:
    checkpoints = folders[0]
    (sd15,) = await engine.generate(request(model="tiny_sd15", extra={"clip_skip": 2}))
    assert engine.loaded == [(checkpoints / "sd" / "tiny_sd15.safetensors").resolve()]
    meta = read_metadata(sd15.data)
    assert meta.model == "tiny_sd15"
    assert parse_parameters(meta.raw["parameters"]).settings["Clip skip"] == "2"
    (skip1,) = await engine.generate(request(model="sd/tiny_sd15.safetensors"))
    assert np.abs(pixels(sd15) - pixels(skip1)).mean() > 0.1
    await engine.generate(request(model="tiny_xl"))
    assert engine.loaded == [(checkpoints / "tiny_xl.safetensors").resolve()]
    engine.close()
    assert engine.loaded == []
    (after,) = await engine.generate(request())
    assert after.seed == 1234


def test_checkpoints_lists_the_folders(engine: LocalEngine) -> None:
    names = sorted(item.path.name for item in engine.checkpoints())
    assert names == ["tiny_sd15.safetensors", "tiny_xl.safetensors"]


def fake_sd15(path: Path) -> Path:
    """A file whose header reads as an SD 1.5 checkpoint (enough to be listed and resolved, not to load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    unet = "model.diffusion_model."
    save_file(
        {
            unet + "input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
            unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(32, 768),
        },
        str(path),
    )
    return path


def test_resolve_model_by_every_spelling(engine: LocalEngine, folders: tuple[Path, Path]) -> None:
    checkpoints = folders[0]
    xl = checkpoints / "tiny_xl.safetensors"
    sd15 = checkpoints / "sd" / "tiny_sd15.safetensors"
    assert engine.resolve_model("tiny_xl") == xl
    assert engine.resolve_model("tiny_xl.safetensors") == xl
    assert engine.resolve_model(str(xl)) == xl
    assert engine.resolve_model("sd/tiny_sd15.safetensors") == sd15
    assert engine.resolve_model("sd/tiny_sd15") == sd15
    assert engine.resolve_model("TINY_SD15").resolve() == sd15.resolve()


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("nai-diffusion-4-5-full", "no checkpoint named 'nai-diffusion-4-5-full'"),
        ("/nowhere/model.safetensors", "checkpoint /nowhere/model.safetensors does not exist"),
        ("   ", "no checkpoint chosen"),
        ("twin", "ambiguous: 2 files match"),
        ("old", "pickle checkpoint refused"),
    ],
)
def test_resolve_model_errors_are_one_line(tmp_path: Path, name: str, phrase: str) -> None:
    fake_sd15(tmp_path / "a" / "twin.safetensors")
    fake_sd15(tmp_path / "b" / "twin.safetensors")
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04not a real pickle")
    local = LocalEngine(checkpoint_dirs=[tmp_path], lora_dirs=[], device="cpu")
    with pytest.raises(LocalEngineError) as caught:
        local.resolve_model(name)
    assert phrase in one_line(caught)


async def test_unknown_checkpoint_lora_and_sampler_fail_in_one_line(engine: LocalEngine) -> None:
    cases = [
        (request(model="missing_model"), "missing_model"),
        (request(prompt="a cat <lora:no_such_lora:1>"), "LoRA 'no_such_lora' not found"),
        (request(sampler="k_euler_plus"), "unknown sampler 'k_euler_plus'"),
        (request(scheduler="lumpy"), "unknown scheduler 'lumpy'"),
    ]
    for bad, phrase in cases:
        with pytest.raises(LocalEngineError) as caught:
            await engine.generate(bad)
        assert phrase in one_line(caught)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"vibes": (VibeRef(encoding=b"x"),)}, "vibes"),
        ({"character_reference": CharacterReference(image=b"x")}, "character_reference"),
        ({"characters": (CharacterPrompt("girl", position="B2"),)}, "characters"),
        ({"dataset": "fur"}, "dataset"),
        ({"noise": 0.2, "image": b"x"}, "noise"),
        ({"extra": {"clip_skip": 0}}, "clip_skip"),
    ],
)
async def test_novelai_only_settings_are_refused_naming_them(
    engine: LocalEngine, settings: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestError) as caught:
        await engine.generate(request(**settings))
    assert caught.value.field == field
    one_line(caught)


async def test_harmless_novelai_settings_are_ignored_and_characters_join_the_prompt(engine: LocalEngine) -> None:
    (plain,) = await engine.generate(request())
    (ignored,) = await engine.generate(request(smea=True, variety=True, quality_tags=False, uc_preset=None))
    np.testing.assert_array_equal(pixels(plain), pixels(ignored))
    characters = (CharacterPrompt("a girl", negative="extra arms"), CharacterPrompt("a boy", enabled=False))
    (joined,) = await engine.generate(request(characters=characters))
    meta = read_metadata(joined.data)
    assert meta.prompt == "a cat sitting on a red chair BREAK a girl"
    assert meta.negative_prompt == "blurry BREAK extra arms"


def test_device_and_dtype_choices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("BF16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    for bad_device in ("tpu", "not a device"):
        with pytest.raises(LocalEngineError, match="device"):
            resolve_device(bad_device)
    with pytest.raises(LocalEngineError, match="dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(LocalEngineError, match="CUDA is not available"):
            resolve_device("cuda")
