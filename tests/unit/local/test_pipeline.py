"""The generation pipeline on tiny synthetic checkpoints with the real key names: txt2img, seeds and batches,
img2img strength, inpainting (blended 4-channel and 9-channel models), LoRA merge and exact removal, step
reports with previews, cancellation, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from local.tiny_checkpoint import TinyModel, tiny_checkpoint, tiny_model, write_kohya_lora, write_safetensors
from peropix_tui.core.jobs import JobCancelled
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.lora import LoraError
from peropix_tui.engine.local.pipeline import (
    LoadedModel,
    LoraFinder,
    LoraNotFoundError,
    PipelineJob,
    run,
)
from peropix_tui.engine.local.sampling import Prediction

CPU = torch.device("cpu")
SIZE = 64


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "tiny_checkpoints"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def xl_tiny() -> TinyModel:
    return tiny_model(sdxl=True, seed=0)


@pytest.fixture(scope="module")
def xl(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tiny_checkpoint(shared, tmp_path_factory.mktemp("xl") / "tiny_xl.safetensors", sdxl=True, seed=0)
    return LoadedModel.load(path, device=CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def sd15_inpaint(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    destination = tmp_path_factory.mktemp("sd15") / "tiny_inpaint.safetensors"
    path = tiny_checkpoint(shared, destination, sdxl=False, in_channels=9, seed=2)
    return LoadedModel.load(path, device=CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def lora_dir(xl_tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_kohya_lora(folder / "style_v1.safetensors", xl_tiny, output_name="inkstyle", seed=3)
    write_kohya_lora(folder / "nested" / "other.safetensors", xl_tiny, seed=4)
    return folder


def job(**settings: object) -> PipelineJob:
    base: dict[str, object] = {
        "prompt": "a cat sitting on a red chair",
        "negative": "blurry",
        "width": SIZE,
        "height": SIZE,
        "steps": 3,
        "sampler": "euler",
        "seeds": (7,),
    }
    base.update(settings)
    return PipelineJob(**base)  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def gradient(width: int = SIZE, height: int = SIZE) -> Image.Image:
    x = np.linspace(0, 255, width)
    y = np.linspace(0, 255, height)
    rgb = np.stack([np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), np.full((height, width), 90.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_loaded_model_reads_the_checkpoint(xl: LoadedModel) -> None:
    assert xl.family == "sdxl_base"
    assert xl.prediction is Prediction.EPS
    assert xl.name == "tiny_xl"
    assert not xl.inpainting
    assert xl.unet.config.context_dim == 2048 and xl.unet.config.adm_in_channels == 2816
    assert xl.encoders.clip_g is not None
    assert next(xl.unet.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in xl.unet.parameters())


def test_txt2img_gives_the_requested_size(xl: LoadedModel) -> None:
    (image,) = run(xl, job(width=64, height=128))
    assert image.mode == "RGB"
    assert image.size == (64, 128)
    assert pixels(image).std() > 10  # a picture, not a flat colour


def test_same_seed_same_image_other_seed_other_image(xl: LoadedModel) -> None:
    first = pixels(run(xl, job(seeds=(11,), sampler="euler_ancestral"))[0])
    again = pixels(run(xl, job(seeds=(11,), sampler="euler_ancestral"))[0])
    other = pixels(run(xl, job(seeds=(12,), sampler="euler_ancestral"))[0])
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 10


def test_a_batch_equals_single_generations_of_each_seed(xl: LoadedModel) -> None:
    batch = run(xl, job(seeds=(21, 22)))
    singles = [run(xl, job(seeds=(seed,)))[0] for seed in (21, 22)]
    assert len(batch) == 2
    for together, alone in zip(batch, singles, strict=True):
        assert np.abs(pixels(together) - pixels(alone)).max() <= 2


def test_cfg_and_negative_prompt_matter(xl: LoadedModel) -> None:
    base = pixels(run(xl, job(cfg_scale=5.0))[0])
    other_negative = pixels(run(xl, job(cfg_scale=5.0, negative="a dog"))[0])
    unguided = pixels(run(xl, job(cfg_scale=1.0, negative="a dog"))[0])
    unguided_again = pixels(run(xl, job(cfg_scale=1.0, negative="anything else"))[0])
    assert np.abs(base - other_negative).mean() > 1
    np.testing.assert_array_equal(unguided, unguided_again)  # scale 1 never looks at the negative


def test_img2img_strength_decides_how_far_the_image_moves(xl: LoadedModel) -> None:
    source = gradient()
    tensor = torch.from_numpy(pixels(source)).float().permute(2, 0, 1)[None] / 127.5 - 1
    with torch.inference_mode():
        decoded = xl.vae.decode(xl.vae.encode(tensor))
    round_trip = ((decoded.float() + 1) * 127.5).clamp(0, 255).round()[0].permute(1, 2, 0).numpy()
    light = pixels(run(xl, job(image=source, strength=0.05, steps=4))[0])
    full = pixels(run(xl, job(image=source, strength=1.0, steps=4))[0])
    near = np.abs(light - round_trip).mean()
    far = np.abs(full - round_trip).mean()
    assert near < 0.5 * far
    assert near < 25


def test_img2img_resizes_the_source_to_the_target(xl: LoadedModel) -> None:
    (image,) = run(xl, job(image=gradient(200, 120), strength=0.5, width=64, height=128))
    assert image.size == (64, 128)


def square_mask(value_inside: int = 255) -> Image.Image:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[16:48, 16:48] = value_inside
    return Image.fromarray(mask)


@pytest.mark.parametrize("which", ["xl", "sd15_inpaint"])
def test_inpaint_keeps_the_unmasked_area(which: str, request: pytest.FixtureRequest) -> None:
    model: LoadedModel = request.getfixturevalue(which)
    source = gradient()
    (image,) = run(model, job(image=source, mask=square_mask(), strength=1.0))
    out, src = pixels(image), pixels(source)
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[16:48, 16:48] = False
    np.testing.assert_array_equal(out[outside], src[outside])
    assert np.abs(out[16:48, 16:48] - src[16:48, 16:48]).mean() > 10


def test_the_nine_channel_model_sees_the_masked_source(sd15_inpaint: LoadedModel) -> None:
    assert sd15_inpaint.inpainting
    source = gradient()
    inverted = Image.fromarray(255 - np.asarray(source))
    first = pixels(run(sd15_inpaint, job(image=source, mask=square_mask()))[0])
    second = pixels(run(sd15_inpaint, job(image=inverted, mask=square_mask()))[0])
    # Inside the mask only the extra input channels carry the source: a different source, a different fill.
    assert np.abs(first[16:48, 16:48] - second[16:48, 16:48]).mean() > 1
    (plain,) = run(sd15_inpaint, job())  # no mask: the model repaints everything
    assert plain.size == (SIZE, SIZE)


def test_lora_changes_the_output_and_removing_it_restores_it_exactly(xl: LoadedModel, lora_dir: Path) -> None:
    finder = LoraFinder([lora_dir])
    plain_prompt = "a cat sitting on a red chair"
    before = pixels(run(xl, job(prompt=plain_prompt))[0])

    def with_tag(tag: str) -> np.ndarray:
        prompt = f"{plain_prompt}, {tag}"
        return pixels(run(xl, job(prompt=prompt, loras=tuple(finder.find(prompt))))[0])

    styled = with_tag("<lora:inkstyle:1>")
    assert xl.patcher.patched > 0
    assert np.abs(styled - before).mean() > 1
    text_only = with_tag("<lora:inkstyle:1:0>")  # text encoders only: the prompt encodings must be redone
    assert np.abs(text_only - before).mean() > 0.1
    assert np.abs(text_only - styled).mean() > 0.1
    after = pixels(run(xl, job(prompt=plain_prompt))[0])
    assert xl.patcher.patched == 0
    np.testing.assert_array_equal(after, before)


def test_a_text_encoder_lora_is_not_served_stale_cached_encodings(xl: LoadedModel, lora_dir: Path) -> None:
    finder = LoraFinder([lora_dir])
    prompt = "a dog, <lora:inkstyle:1:0>"
    run(xl, job(prompt="a dog"))  # caches the negative's encoding without the LoRA
    after_cached = pixels(run(xl, job(prompt=prompt, loras=tuple(finder.find(prompt))))[0])
    xl.encoders.cache.clear()
    fresh = pixels(run(xl, job(prompt=prompt, loras=tuple(finder.find(prompt))))[0])
    np.testing.assert_array_equal(after_cached, fresh)
    run(xl, job(prompt="a dog"))


def test_a_lora_that_does_not_fit_leaves_model_and_encodings_clean(
    xl: LoadedModel, lora_dir: Path, tmp_path: Path
) -> None:
    key = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    bad = {f"{key}.lora_down.weight": torch.ones(2, 5), f"{key}.lora_up.weight": torch.ones(768, 2)}
    write_safetensors(tmp_path / "broken.safetensors", bad)
    finder = LoraFinder([lora_dir, tmp_path])
    plain = pixels(run(xl, job())[0])
    good = "a cat sitting on a red chair, <lora:inkstyle:1>"
    run(xl, job(prompt=good, loras=tuple(finder.find(good))))  # the negative is now cached with the LoRA in
    broken = "a cat sitting on a red chair, <lora:broken:1>"
    with pytest.raises(LoraError, match=r"broken\.safetensors") as caught:
        run(xl, job(prompt=broken, loras=tuple(finder.find(broken))))
    assert "\n" not in str(caught.value)
    assert xl.patcher.patched == 0
    np.testing.assert_array_equal(pixels(run(xl, job())[0]), plain)


def test_lora_finder_by_stem_alias_and_case(lora_dir: Path) -> None:
    finder = LoraFinder([lora_dir])
    (by_alias,) = finder.find("x <lora:InkStyle:0.7>")
    (by_stem,) = finder.find("x <lora:style_v1:0.5:0.25>")
    (nested,) = finder.find("<lora:other:1>")
    assert by_alias.file is by_stem.file  # loaded once, kept
    assert (by_alias.unet_weight, by_alias.te_weight) == (0.7, 0.7)
    assert (by_stem.te_weight, by_stem.unet_weight) == (0.5, 0.25)
    assert nested.file.path.name == "other.safetensors"


def test_unknown_lora_is_one_line_naming_it(lora_dir: Path) -> None:
    with pytest.raises(LoraNotFoundError, match="'nothing_like_this'") as caught:
        LoraFinder([lora_dir]).find("a cat <lora:nothing_like_this:1>")
    assert "\n" not in str(caught.value)


def test_a_lora_added_later_is_found(xl_tiny: TinyModel, tmp_path: Path) -> None:
    finder = LoraFinder([tmp_path])
    with pytest.raises(LoraNotFoundError):
        finder.find("<lora:late:1>")
    write_kohya_lora(tmp_path / "late.safetensors", xl_tiny, rank=2)
    (found,) = finder.find("<lora:late:1>")
    assert found.file.path == tmp_path / "late.safetensors"


def test_steps_are_reported_in_order_with_previews(xl: LoadedModel) -> None:
    seen: list[tuple[int, int, tuple[int, ...] | None]] = []

    def on_step(step: int, total: int, preview: np.ndarray | None) -> None:
        seen.append((step, total, None if preview is None else preview.shape))

    run(xl, job(steps=4, preview_interval=0.0), on_step=on_step)
    assert [(step, total) for step, total, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [shape for _, _, shape in seen] == [(8, 8, 3)] * 3 + [None]

    seen.clear()
    run(xl, job(steps=3, preview_interval=None), on_step=on_step)
    assert [shape for _, _, shape in seen] == [None] * 3

    seen.clear()
    run(xl, job(steps=3, preview_interval=3600.0), on_step=on_step)
    assert [shape for _, _, shape in seen] == [(8, 8, 3), None, None]  # the first step always shows one


def test_cancel_stops_between_model_calls(xl: LoadedModel) -> None:
    steps: list[int] = []
    with pytest.raises(JobCancelled):
        run(
            xl,
            job(steps=10),
            on_step=lambda step, total, preview: steps.append(step),
            cancelled=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]


def test_v_prediction_marker_changes_the_denoiser(shared: Path, tmp_path: Path) -> None:
    eps_path = tiny_checkpoint(shared, tmp_path / "eps.safetensors", sdxl=False, seed=1)
    eps = LoadedModel.load(eps_path, device=CPU, dtype=torch.float32)
    tensors = tiny_model(sdxl=False, seed=1).checkpoint() | {"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}
    v = LoadedModel.load(write_safetensors(tmp_path / "v.safetensors", tensors), device=CPU, dtype=torch.float32)
    assert eps.prediction is Prediction.EPS and v.prediction is Prediction.V
    assert v.schedule.sigma_max > 1000 > eps.schedule.sigma_max
    a, b = pixels(run(eps, job())[0]), pixels(run(v, job())[0])
    assert np.abs(a - b).mean() > 1


@pytest.mark.parametrize(
    ("settings", "phrase"),
    [
        ({"sampler": "no_such_sampler"}, "unknown sampler 'no_such_sampler'"),
        ({"scheduler": "wobbly"}, "unknown scheduler 'wobbly'"),
        ({"width": 60}, "width 60 is not a positive multiple of 8"),
        ({"mask": Image.new("L", (SIZE, SIZE), 255)}, "mask needs a source image"),
        ({"clip_skip": 40}, "clip skip 40"),
        ({"strength": 0.0, "image": Image.new("RGB", (SIZE, SIZE))}, "strength"),
    ],
)
def test_bad_settings_are_one_line_errors(xl: LoadedModel, settings: dict[str, object], phrase: str) -> None:
    with pytest.raises(LocalEngineError) as caught:
        run(xl, job(**settings))
    message = str(caught.value)
    assert phrase in message
    assert "\n" not in message


def test_checkpoint_without_vae_is_refused_naming_it(tmp_path: Path) -> None:
    checkpoint = tiny_model(sdxl=False, seed=1).checkpoint()
    tensors = {k: v for k, v in checkpoint.items() if not k.startswith("first_stage_model.")}
    path = write_safetensors(tmp_path / "novae.safetensors", tensors)
    with pytest.raises(LocalEngineError, match="VAE") as caught:
        LoadedModel.load(path, device=CPU, dtype=torch.float32)
    assert "\n" not in str(caught.value)


def header_only(context: int, adm: int | None = None, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """Just enough UNet tensors for the file to be recognised (it is refused before anything else is read)."""
    unet = "model.diffusion_model."
    tensors = {
        unet + "input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(32, context),
    }
    if adm is not None:
        tensors[unet + "label_emb.0.0.weight"] = torch.zeros(32, adm)
    return tensors | extra


@pytest.mark.parametrize(
    ("tensors", "phrase"),
    [
        (header_only(1280, 2560), "an SDXL refiner cannot generate on its own"),
        (header_only(768, edm_mean=torch.zeros(1), edm_std=torch.zeros(1)), "EDM (Playground v2.5 style) models"),
        (header_only(2048, 2816, **{"edm_vpred.sigma_max": torch.zeros(1)}), "v-prediction EDM (CosXL style)"),
    ],
)
def test_unsupported_model_kinds_are_refused_in_one_line(
    tmp_path: Path, tensors: dict[str, torch.Tensor], phrase: str
) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(LocalEngineError) as caught:
        LoadedModel.load(path, device=CPU, dtype=torch.float32)
    assert phrase in str(caught.value)
    assert "\n" not in str(caught.value)
