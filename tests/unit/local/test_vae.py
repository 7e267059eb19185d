"""The VAE against diffusers' AutoencoderKL loaded with the same weights, plus tiling, precision fallbacks and
latent formats."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL as ReferenceAutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.vae import (
    SD15_LATENT_FORMAT,
    SDXL_LATENT_FORMAT,
    AutoencoderKL,
    VaeConfig,
    preferred_vae_dtype,
    tiled_map,
)

TINY = VaeConfig(
    in_channels=3,
    out_channels=3,
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=2,
    z_channels=4,
    embed_dim=4,
    mid_attention=True,
)
THREE_LEVELS = VaeConfig(
    in_channels=3,
    out_channels=3,
    ch=32,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    z_channels=4,
    embed_dim=4,
    mid_attention=True,
)
NO_MID_ATTENTION = VaeConfig(
    in_channels=3,
    out_channels=3,
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=1,
    z_channels=4,
    embed_dim=4,
    mid_attention=False,
)
SDXL = VaeConfig(
    in_channels=3,
    out_channels=3,
    ch=128,
    ch_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    z_channels=4,
    embed_dim=4,
    mid_attention=True,
)


def random_state_dict(config: VaeConfig, seed: int = 0) -> dict[str, Tensor]:
    """Checkpoint-named weights with every tensor random, norms included (so an affine mix-up shows)."""
    torch.manual_seed(seed)
    model = AutoencoderKL(config)
    sd: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        if ".norm" in name:
            base = 1.0 if name.endswith("weight") else 0.0
            sd[name] = base + 0.1 * torch.randn_like(tensor)
        else:
            sd[name] = tensor.clone()
    return sd


def reference_config(config: VaeConfig) -> dict[str, Any]:
    levels = len(config.ch_mult)
    return {
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [config.ch * m for m in config.ch_mult],
        "latent_channels": config.z_channels,
        "layers_per_block": config.num_res_blocks,
        "norm_num_groups": 32,
        "mid_block_add_attention": config.mid_attention,
    }


def reference_vae(config: VaeConfig, sd: dict[str, Tensor]) -> ReferenceAutoencoderKL:
    cfg = reference_config(config)
    ref = ReferenceAutoencoderKL(**cfg)
    ref.load_state_dict(
        convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in sd.items()}, cfg), strict=True
    )
    return ref.eval()


def load(sd: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    return AutoencoderKL.from_state_dict(sd, dtype=dtype, device="cpu")


# --- the reference -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY, THREE_LEVELS, NO_MID_ATTENTION], ids=["tiny", "three-levels", "no-mid-attn"])
def test_decode_and_encode_match_diffusers(config: VaeConfig) -> None:
    sd = random_state_dict(config)
    ours, ref = load(sd), reference_vae(config, sd)
    factor = config.downscale_factor
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 6, 5, generator=gen)
    images = torch.rand(2, 3, 6 * factor, 5 * factor, generator=gen) * 2 - 1
    with torch.inference_mode():
        decoded = ours.decode(latents)
        assert decoded.shape == (2, 3, 6 * factor, 5 * factor)
        torch.testing.assert_close(decoded, ref.decode(latents).sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.encode(images), ref.encode(images).latent_dist.mean, atol=1e-5, rtol=1e-5)


def test_seeded_sample_matches_diffusers_and_repeats() -> None:
    sd = random_state_dict(TINY)
    ours, ref = load(sd), reference_vae(TINY, sd)
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        first = ours.encode(images, generator=torch.Generator().manual_seed(42))
        again = ours.encode(images, generator=torch.Generator().manual_seed(42))
        other = ours.encode(images, generator=torch.Generator().manual_seed(43))
        expected = ref.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(42))
        mean = ours.encode(images)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, mean)


def test_sdxl_architecture_has_the_reference_parameter_count_and_checkpoint_shapes() -> None:
    with torch.device("meta"):
        ours = AutoencoderKL(SDXL)
        ref = ReferenceAutoencoderKL(**reference_config(SDXL))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters())
    assert 83_000_000 < count < 84_000_000
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes["decoder.conv_in.weight"] == (512, 4, 3, 3)
    assert shapes["decoder.up.3.block.0.conv1.weight"] == (512, 512, 3, 3)
    assert shapes["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert shapes["decoder.up.0.block.2.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["encoder.conv_out.weight"] == (8, 512, 3, 3)
    assert shapes["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["quant_conv.weight"] == (8, 8, 1, 1)
    assert "encoder.down.2.downsample.conv.weight" in shapes and "encoder.down.3.downsample.conv.weight" not in shapes
    assert "decoder.up.1.upsample.conv.weight" in shapes and "decoder.up.0.upsample.conv.weight" not in shapes
    assert SDXL.downscale_factor == 8


# --- loading -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", [TINY, THREE_LEVELS, NO_MID_ATTENTION, SDXL], ids=["tiny", "three", "noattn", "sdxl"]
)
def test_config_is_detected_from_tensor_names_and_shapes(config: VaeConfig) -> None:
    with torch.device("meta"):
        sd = AutoencoderKL(config).state_dict()
    assert VaeConfig.from_state_dict(sd) == config


def test_from_state_dict_converts_once_and_freezes() -> None:
    sd = random_state_dict(TINY)
    sd["loss.logvar"] = torch.zeros(())  # training leftovers in standalone VAE files are not part of the model
    model = load(sd, torch.float16)
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.float16}
    assert {p.device.type for p in params} == {"cpu"}
    assert not any(p.requires_grad for p in params)
    assert not model.training
    torch.testing.assert_close(model.encoder.conv_in.weight.float(), sd["encoder.conv_in.weight"].half().float())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("decoder.up.1.block.2.norm2.bias"), "VAE: missing key decoder.up.1.block.2.norm2.bias"),
        (lambda sd: sd.pop("encoder.conv_in.weight"), "VAE: missing key encoder.conv_in.weight"),
        (
            lambda sd: sd.__setitem__("decoder.mid.attn_1.k.weight", torch.zeros(64, 64)),
            "VAE: decoder.mid.attn_1.k.weight has shape [64, 64], expected [64, 64, 1, 1]",
        ),
        (
            lambda sd: sd.__setitem__("encoder.down.0.attn.0.q.weight", torch.zeros(32, 32, 1, 1)),
            "VAE: unexpected key encoder.down.0.attn.0.q.weight",
        ),
        (
            lambda sd: sd.__setitem__("encoder.conv_in.weight", torch.zeros(48, 3, 3, 3)),
            "VAE: encoder.down.0 has 32 channels, not a multiple of conv_in's 48",
        ),
        (
            lambda sd: sd.__setitem__("encoder.conv_in.weight", torch.zeros(16, 3, 3, 3)),
            "VAE: 16 channels cannot be split into 32 normalisation groups",
        ),
    ],
    ids=["missing-block", "missing-conv-in", "shape", "unexpected", "widths", "groups"],
)
def test_mismatched_checkpoint_names_the_first_offending_key(edit: Any, message: str) -> None:
    sd = random_state_dict(TINY)
    edit(sd)
    with pytest.raises(LocalEngineError) as info:
        load(sd)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_whole_checkpoint_with_prefixes_is_refused_clearly() -> None:
    sd = {"first_stage_model." + k: v for k, v in random_state_dict(TINY).items()}
    with pytest.raises(LocalEngineError, match=r"^VAE: missing key encoder\.conv_in\.weight$"):
        load(sd)


def test_bad_inputs_are_refused_in_one_line() -> None:
    model = load(random_state_dict(TINY))
    with pytest.raises(LocalEngineError, match="not a multiple of 2"):
        model.encode(torch.zeros(1, 3, 16, 15))
    with pytest.raises(LocalEngineError, match=r"expected images \[B, 3, H, W\]"):
        model.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(LocalEngineError, match=r"expected latents \[B, 4, h, w\]"):
        model.decode(torch.zeros(4, 8, 8))
    with pytest.raises(LocalEngineError, match="overlap"):
        model.decode_tiled(torch.zeros(1, 4, 8, 8), tile=8, overlap=5)


def test_preferred_dtype_on_cpu_is_float32() -> None:
    assert preferred_vae_dtype(torch.device("cpu")) == torch.float32


# --- tiling --------------------------------------------------------------------------------------------------


def local_fn(scale: int) -> Any:
    """A decoder stand-in whose output at a pixel depends only on the latent under it."""

    def fn(latents: Tensor) -> Tensor:
        return F.interpolate(torch.tanh(latents[:, :3] * 1.5 - latents[:, 3:4]), scale_factor=scale, mode="nearest")

    return fn


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    tile=st.integers(1, 20),
    overlap_share=st.floats(0, 0.5),
    scale=st.sampled_from([1, 2, 8]),
)
def test_tiled_map_of_a_local_function_equals_the_whole_map(
    height: int, width: int, tile: int, overlap_share: float, scale: int
) -> None:
    overlap = int(tile * overlap_share)
    latents = torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(height * 41 + width))
    fn = local_fn(scale)
    tiled = tiled_map(fn, latents, tile=tile, overlap=overlap, scale=scale)
    torch.testing.assert_close(tiled, fn(latents), atol=1e-6, rtol=1e-6)


def test_tiled_map_feathers_each_overlap_linearly() -> None:
    """Windows that each output one constant (their start column) blend into exact linear ramps across the
    overlaps: 16-wide windows overlapping by 4 over 40 columns start at 0, 12 and 24; at scale 2 each overlap is
    8 pixels, where the weights rise as (j+1)/9 and fall as (8-j)/9."""

    def window_start(latents: Tensor) -> Tensor:
        b, _, h, w = latents.shape
        return latents[:, :1, :1, :1].expand(b, 3, 2 * h, 2 * w)

    columns = torch.arange(40, dtype=torch.float32).expand(1, 4, 10, 40)
    tiled = tiled_map(window_start, columns, tile=16, overlap=4, scale=2)
    expected = torch.empty(80)
    expected[:24] = 0
    expected[24:32] = torch.tensor([12 * (j + 1) / 9 for j in range(8)])
    expected[32:48] = 12
    expected[48:56] = torch.tensor([12 + 12 * (j + 1) / 9 for j in range(8)])
    expected[56:] = 24
    torch.testing.assert_close(tiled, expected.expand(1, 3, 20, 80), atol=1e-5, rtol=0)


def test_tiled_decode_with_one_window_is_the_full_decode() -> None:
    model = load(random_state_dict(TINY))
    latents = torch.randn(1, 4, 12, 10, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert torch.equal(model.decode_tiled(latents, tile=12, overlap=4), model.decode(latents))


def test_tiled_decode_stays_close_to_the_full_decode() -> None:
    """Windows normalise and attend over their own area only, so a tiled decode is near, not equal; a window
    misplaced or blended wrongly would be off by about the output's own spread."""
    model = load(random_state_dict(TINY))
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        full = model.decode(latents)
        tiled = model.decode_tiled(latents, tile=20, overlap=10)
    error = (tiled - full).abs()
    assert tiled.shape == full.shape
    assert error.mean() < 0.3 * full.std()


# --- precision and memory fallbacks --------------------------------------------------------------------------


def overflowing_state_dict() -> dict[str, Tensor]:
    """Weights whose decoder activations pass float16's 65504 (as the stock SDXL VAE's do) while float32 copes:
    the next GroupNorm normalises the scale away, so the float32 images are ordinary."""
    sd = random_state_dict(TINY)
    sd["decoder.conv_in.weight"] *= 2e5
    sd["decoder.conv_in.bias"] *= 2e5
    return {k: v.half() for k, v in sd.items()}


def test_decode_safely_upcasts_once_when_float16_overflows(caplog: pytest.LogCaptureFixture) -> None:
    sd = overflowing_state_dict()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = load(sd, torch.float32).decode(latents)
        model = load(sd, torch.float16)
        assert not torch.isfinite(model.decode(latents)).all()
        with caplog.at_level(logging.WARNING, logger="peropix_tui.engine.local.vae"):
            images = model.decode_safely(latents)
        assert torch.isfinite(expected).all()
        torch.testing.assert_close(images, expected, atol=1e-6, rtol=1e-6)
        assert images.dtype == torch.float32 and model.dtype == torch.float32
        assert "overflowed in torch.float16" in caplog.text
        caplog.clear()
        torch.testing.assert_close(model.decode_safely(latents), expected, atol=1e-6, rtol=1e-6)
    assert caplog.text == ""


def test_decode_safely_refuses_non_finite_latents_in_float32() -> None:
    model = load(random_state_dict(TINY))
    latents = torch.zeros(1, 4, 4, 4)
    latents[0, 0, 1, 1] = float("nan")
    with torch.inference_mode(), pytest.raises(LocalEngineError, match="NaN/inf in float32"):
        model.decode_safely(latents)


def memory_limit(cells: int) -> Any:
    """A forward pre-hook that fails the way a CUDA allocation does for any input of more than `cells` positions:
    the device's memory limit, played on the CPU."""

    def hook(module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        if args[0].shape[-2] * args[0].shape[-1] > cells:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    return hook


def test_decode_safely_falls_back_to_tiles_when_memory_runs_out(caplog: pytest.LogCaptureFixture) -> None:
    model = load(random_state_dict(TINY))
    model.decoder.mid.register_forward_pre_hook(memory_limit(16 * 16))
    latents = torch.randn(1, 4, 20, 18, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        with pytest.raises(torch.OutOfMemoryError):
            model.decode(latents)
        with caplog.at_level(logging.WARNING, logger="peropix_tui.engine.local.vae"):
            images = model.decode_safely(latents, tile=16, overlap=4)
        assert torch.equal(images, model.decode_tiled(latents, tile=16, overlap=4))
    assert images.shape == (1, 3, 40, 36)
    assert "decoding in 16×16 latent tiles" in caplog.text


def test_decode_safely_reports_memory_too_small_even_for_tiles() -> None:
    model = load(random_state_dict(TINY))
    model.decoder.mid.register_forward_pre_hook(memory_limit(8 * 8))
    with torch.inference_mode(), pytest.raises(LocalEngineError, match="even in 16×16 latent tiles"):
        model.decode_safely(torch.zeros(1, 4, 20, 18), tile=16, overlap=4)


# --- latent formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "scale"), [(SDXL_LATENT_FORMAT, 0.13025), (SD15_LATENT_FORMAT, 0.18215)])
def test_latent_format_scales_to_and_from_sampling_space(fmt: Any, scale: float) -> None:
    latents = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(fmt.process_in(latents), latents * scale)
    torch.testing.assert_close(fmt.process_out(fmt.process_in(latents)), latents)


@pytest.mark.parametrize("fmt", [SDXL_LATENT_FORMAT, SD15_LATENT_FORMAT], ids=["sdxl", "sd15"])
def test_preview_maps_each_latent_channel_through_its_rgb_row(fmt: Any) -> None:
    latents = torch.zeros(2, 4, 6, 5)
    assert (fmt.latent_to_rgb_preview(latents) == 128).all()
    for channel, row in enumerate(fmt.rgb_factors):
        one = torch.zeros(4, 6, 5)
        one[channel, 2, 3] = 1.0
        preview = fmt.latent_to_rgb_preview(one)
        assert preview.shape == (6, 5, 3) and preview.dtype.name == "uint8"
        assert preview[2, 3].tolist() == [round((v + 1) * 127.5) for v in row]
        assert (preview[0, 0] == 128).all()


def test_preview_is_deterministic_clamped_and_uses_the_first_of_a_batch() -> None:
    latents = torch.randn(3, 4, 16, 12, generator=torch.Generator().manual_seed(9)) * 20
    preview = SDXL_LATENT_FORMAT.latent_to_rgb_preview(latents)
    assert preview.shape == (16, 12, 3)
    assert (preview == SDXL_LATENT_FORMAT.latent_to_rgb_preview(latents[0])).all()
    assert (preview == SDXL_LATENT_FORMAT.latent_to_rgb_preview(latents.clone())).all()
    assert {0, 255} <= set(preview.flatten().tolist())
    with pytest.raises(LocalEngineError, match=r"SDXL preview: expected latents \[4, h, w\]"):
        SDXL_LATENT_FORMAT.latent_to_rgb_preview(torch.zeros(1, 16, 8, 8))
