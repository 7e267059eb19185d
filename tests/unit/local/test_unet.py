"""The SGM-layout UNet against diffusers' UNet2DConditionModel loaded from the same weights.

diffusers converts our state dict (prefixed as in a single-file checkpoint) with its own LDM converter and
loads it strictly, which checks every parameter name; equal outputs check the maths (timestep embedding
order, ADM concat order, GEGLU halves, attention head split, skip concat order, odd-size upsampling).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.tiny_unets import FOURIER, POOLED, SD15_TINY, SD15_TINY_DIFFUSERS, SDXL_TINY, SDXL_TINY_DIFFUSERS
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.unet import UNet, UNetConfig, sdxl_adm

PREFIX = "model.diffusion_model."
# KOALA shape: one ResBlock per level and no middle block.
KOALA_TINY = dataclasses.replace(
    SDXL_TINY,
    num_res_blocks=(1, 1, 1),
    transformer_depth=(0, 1, 2),
    transformer_depth_output=(2, 2, 1, 1, 0, 0),
    transformer_depth_middle=None,
)
KOALA_TINY_DIFFUSERS = {**SDXL_TINY_DIFFUSERS, "layers_per_block": 1, "mid_block_type": None}

SDXL_BASE = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=320,
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 2, 2, 10, 10),
    transformer_depth_output=(10, 10, 10, 2, 2, 2, 0, 0, 0),
    transformer_depth_middle=10,
    context_dim=2048,
    adm_in_channels=2816,
    use_linear_in_transformer=True,
)
SDXL_BASE_DIFFUSERS: dict[str, Any] = {
    **SDXL_TINY_DIFFUSERS,
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_REFINER = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=384,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=(2, 2, 2, 2),
    transformer_depth=(0, 0, 4, 4, 4, 4, 0, 0),
    transformer_depth_output=(0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0),
    transformer_depth_middle=4,
    context_dim=1280,
    adm_in_channels=2560,
    use_linear_in_transformer=True,
)
SDXL_REFINER_DIFFUSERS: dict[str, Any] = {
    **SDXL_BASE_DIFFUSERS,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (384, 768, 1536, 1536),
    "attention_head_dim": (6, 12, 24, 24),
    "transformer_layers_per_block": 4,
    "cross_attention_dim": 1280,
    "projection_class_embeddings_input_dim": 2560,
}
SD15_BASE = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=320,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=(2, 2, 2, 2),
    transformer_depth=(1, 1, 1, 1, 1, 1, 0, 0),
    transformer_depth_output=(0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    transformer_depth_middle=1,
    context_dim=768,
    adm_in_channels=None,
    use_linear_in_transformer=False,
    num_head_channels=None,
    num_heads=8,
)
SD15_BASE_DIFFUSERS: dict[str, Any] = {
    **SD15_TINY_DIFFUSERS,
    "sample_size": 64,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "cross_attention_dim": 768,
}


def _random_unet(config: UNetConfig, seed: int) -> UNet:
    """Seeded weights; norm scales and biases moved off their 1/0 defaults so their use is checked too."""
    torch.manual_seed(seed)
    model = UNet(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model


def _diffusers_twin(model: UNet, diffusers_config: dict[str, Any]) -> UNet2DConditionModel:
    checkpoint = {PREFIX + key: value for key, value in model.state_dict().items()}
    reference = UNet2DConditionModel(**diffusers_config)
    reference.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, diffusers_config), strict=True)
    return reference.eval()


def _inputs(config: UNetConfig, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, config.in_channels, height, width, generator=generator)
    timesteps = torch.tensor([999.0, 17.5])
    context = torch.randn(2, 5, config.context_dim, generator=generator)
    return x, timesteps, context


@pytest.mark.parametrize(
    ("config", "diffusers_config"), [(SDXL_TINY, SDXL_TINY_DIFFUSERS), (KOALA_TINY, KOALA_TINY_DIFFUSERS)]
)
@pytest.mark.parametrize(("height", "width"), [(16, 16), (10, 14)])
def test_sdxl_style_matches_diffusers(
    config: UNetConfig, diffusers_config: dict[str, Any], height: int, width: int
) -> None:
    model = _random_unet(config, seed=1)
    reference = _diffusers_twin(model, diffusers_config)
    x, timesteps, context = _inputs(config, height, width)
    pooled = torch.randn(2, POOLED, generator=torch.Generator().manual_seed(3))
    # Every size value distinct, so a swapped height/width, crop or target changes the result.
    size = (height * 8, width * 8)
    crop, target = (24, 40), (1024, 768)
    y = sdxl_adm(pooled, height=size[0], width=size[1], crop=crop, target=target, embed_dim=FOURIER)
    time_ids = torch.tensor([[*size, *crop, *target]] * 2, dtype=torch.float32)

    with torch.inference_mode():
        ours = model(x, timesteps, context, y)
        theirs = reference(
            x,
            timesteps,
            encoder_hidden_states=context,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample

    assert ours.shape == (2, 4, height, width)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_sd15_style_matches_diffusers(in_channels: int) -> None:
    config = dataclasses.replace(SD15_TINY, in_channels=in_channels)
    model = _random_unet(config, seed=2)
    reference = _diffusers_twin(model, {**SD15_TINY_DIFFUSERS, "in_channels": in_channels})
    x, timesteps, context = _inputs(config, 12, 16)

    with torch.inference_mode():
        ours = model(x, timesteps, context)
        theirs = reference(x, timesteps, encoder_hidden_states=context).sample

    assert ours.shape == (2, 4, 12, 16)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_scalar_timestep_serves_the_whole_batch() -> None:
    model = _random_unet(SD15_TINY, seed=3)
    x, _, context = _inputs(SD15_TINY, 8, 8)
    with torch.inference_mode():
        scalar = model(x, torch.tensor(250.0), context)
        per_sample = model(x, torch.tensor([250.0, 250.0]), context)
    torch.testing.assert_close(scalar, per_sample, atol=0, rtol=0)


def test_adm_vector_layout() -> None:
    pooled = torch.randn(3, POOLED)
    y = sdxl_adm(pooled, height=1216, width=832, embed_dim=FOURIER)
    explicit = sdxl_adm(pooled, height=1216, width=832, crop=(0, 0), target=(1216, 832), embed_dim=FOURIER)

    assert y.shape == (3, POOLED + 6 * FOURIER)
    torch.testing.assert_close(y[:, :POOLED], pooled, atol=0, rtol=0)
    torch.testing.assert_close(y, explicit, atol=0, rtol=0)
    # The crop embeddings of 0 are cos(0)=1 then sin(0)=0 for every frequency.
    crop_h = y[0, POOLED + 2 * FOURIER : POOLED + 3 * FOURIER]
    assert crop_h.tolist() == [1.0] * (FOURIER // 2) + [0.0] * (FOURIER // 2)
    # The size part is shared by the batch.
    torch.testing.assert_close(y[0, POOLED:], y[2, POOLED:], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("config", "diffusers_config", "published_params"),
    [
        (SDXL_BASE, SDXL_BASE_DIFFUSERS, 2_567_463_684),
        (SDXL_REFINER, SDXL_REFINER_DIFFUSERS, None),
        (SD15_BASE, SD15_BASE_DIFFUSERS, 859_520_964),
    ],
)
def test_full_size_key_map_and_detection(
    config: UNetConfig, diffusers_config: dict[str, Any], published_params: int | None
) -> None:
    """Real SDXL base / refiner / SD1.5 shapes, built on the meta device (no memory): every key and shape converts into
    diffusers' model strictly, the parameter counts agree, and the config is read back from the names."""
    with torch.device("meta"):
        model = UNet(config)
        reference = UNet2DConditionModel(**diffusers_config)
    state = model.state_dict()
    checkpoint = {PREFIX + key: value for key, value in state.items()}
    reference.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, diffusers_config), strict=True, assign=True)

    assert all(param.is_meta for param in model.parameters())
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert published_params is None or count == published_params
    assert UNetConfig.from_state_dict(state) == config


@st.composite
def _configs(draw: st.DrawFn) -> UNetConfig:
    levels = draw(st.integers(1, 4))
    per_level = st.lists(st.integers(1, 3), min_size=levels, max_size=levels)
    num_res_blocks = tuple(draw(per_level))
    channel_mult = tuple(draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=levels, max_size=levels)))
    depths = st.integers(0, 3)
    transformer_depth = tuple(draw(depths) for _ in range(sum(num_res_blocks)))
    output_depth = tuple(draw(depths) for _ in range(sum(n + 1 for n in num_res_blocks)))
    middle = draw(st.none() | st.integers(1, 3))
    if middle is None and not any(transformer_depth) and not any(output_depth):
        middle = 1
    linear = draw(st.booleans())
    return UNetConfig(
        in_channels=draw(st.sampled_from([4, 9])),
        out_channels=4,
        model_channels=draw(st.sampled_from([64, 128, 320] if linear else [32, 96, 320])),
        channel_mult=channel_mult,
        num_res_blocks=num_res_blocks,
        transformer_depth=transformer_depth,
        transformer_depth_output=output_depth,
        transformer_depth_middle=middle,
        context_dim=draw(st.sampled_from([48, 768, 2048])),
        adm_in_channels=draw(st.none() | st.sampled_from([80, 2816])),
        use_linear_in_transformer=linear,
        num_head_channels=64 if linear else None,
        num_heads=None if linear else 8,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs())
def test_config_detection_round_trip(config: UNetConfig) -> None:
    with torch.device("meta"):
        model = UNet(config)
    assert UNetConfig.from_state_dict(model.state_dict()) == config


def _checkpoint(config: UNetConfig, seed: int) -> dict[str, torch.Tensor]:
    return dict(_random_unet(config, seed).state_dict())


def test_from_state_dict_takes_the_tensors_without_copying() -> None:
    sd = _checkpoint(SD15_TINY, seed=4)
    model = UNet.from_state_dict(sd, dtype=torch.float32, device="cpu")

    params = dict(model.named_parameters())
    assert params.keys() == sd.keys()
    assert all(params[key].data_ptr() == sd[key].data_ptr() for key in sd)
    assert not any(param.requires_grad for param in params.values())
    assert not model.training
    assert model.config == UNetConfig.from_state_dict(sd)


def test_from_state_dict_converts_dtype_once() -> None:
    sd = _checkpoint(SDXL_TINY, seed=5)
    full = UNet.from_state_dict(sd, dtype=torch.float32, device="cpu")
    half = UNet.from_state_dict(sd, dtype=torch.bfloat16, device=torch.device("cpu"))
    x, timesteps, context = _inputs(SDXL_TINY, 8, 8)
    y = sdxl_adm(torch.randn(2, POOLED), height=64, width=64, embed_dim=FOURIER)

    with torch.inference_mode():
        expected = full(x, timesteps, context, y)
        got = half(x, timesteps, context, y)

    assert all(param.dtype == torch.bfloat16 for param in half.parameters())
    assert got.dtype == torch.float32
    scale = expected.abs().max()
    assert (got - expected).abs().max() < 0.05 * scale


def _one_line(error: pytest.ExceptionInfo[LocalEngineError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_key_is_named() -> None:
    sd = _checkpoint(SD15_TINY, seed=6)
    del sd["output_blocks.4.1.transformer_blocks.0.attn2.to_v.weight"]
    with pytest.raises(LocalEngineError) as error:
        UNet.from_state_dict(sd, dtype=torch.float32, device="cpu")
    assert "output_blocks.4.1.transformer_blocks.0.attn2.to_v.weight" in _one_line(error)


def test_unexpected_key_is_named() -> None:
    sd = _checkpoint(SD15_TINY, seed=6)
    sd["first_stage_model.encoder.conv_in.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(LocalEngineError) as error:
        UNet.from_state_dict(sd, dtype=torch.float32, device="cpu")
    assert "first_stage_model.encoder.conv_in.weight" in _one_line(error)


def test_wrong_shape_is_named() -> None:
    sd = _checkpoint(SDXL_TINY, seed=6)
    sd["middle_block.1.transformer_blocks.1.ff.net.2.weight"] = torch.zeros(128, 256)
    with pytest.raises(LocalEngineError) as error:
        UNet.from_state_dict(sd, dtype=torch.float32, device="cpu")
    message = _one_line(error)
    assert "middle_block.1.transformer_blocks.1.ff.net.2.weight" in message
    assert "[128, 256]" in message and "[128, 512]" in message


def test_a_state_dict_that_is_no_unet_is_refused() -> None:
    with pytest.raises(LocalEngineError) as error:
        UNetConfig.from_state_dict({"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)})
    assert "input_blocks.0.0.weight" in _one_line(error)


def test_adm_vector_must_match_the_model() -> None:
    sdxl = _random_unet(SDXL_TINY, seed=8)
    sd15 = _random_unet(SD15_TINY, seed=8)
    x, timesteps, context = _inputs(SDXL_TINY, 8, 8)
    with torch.inference_mode():
        with pytest.raises(LocalEngineError):
            sdxl(x, timesteps, context)
        with pytest.raises(LocalEngineError):
            sd15(x, timesteps, context[..., : SD15_TINY.context_dim], torch.zeros(2, 80))
