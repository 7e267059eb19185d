"""Tiny UNet layouts shared by the engine's tests, each with the diffusers config of the same model (the oracle).

SDXL-like: linear projections, the text_time ADM (pooled 32 + six Fourier embeddings of 8); SD1.5-like: conv
projections, 8 heads, attention on the upper levels only, no ADM. Channels are multiples of 32 (GroupNorm(32)).
"""

from __future__ import annotations

from typing import Any

from peropix_tui.engine.local.unet import UNetConfig

FOURIER = 8
POOLED = 32

SDXL_TINY = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 1, 1, 2, 2),
    transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0),
    transformer_depth_middle=2,
    context_dim=64,
    adm_in_channels=POOLED + 6 * FOURIER,
    use_linear_in_transformer=True,
    num_head_channels=16,
)
SDXL_TINY_DIFFUSERS: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 2,
    "attention_head_dim": (2, 4, 8),
    "transformer_layers_per_block": (1, 1, 2),
    "use_linear_projection": True,
    "cross_attention_dim": 64,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": FOURIER,
    "projection_class_embeddings_input_dim": POOLED + 6 * FOURIER,
    "norm_num_groups": 32,
}

# SD1.5 shape: conv projections, 8 heads everywhere, attention on the upper levels only, no ADM.
SD15_TINY = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2, 2),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(1, 1, 1, 1, 0, 0),
    transformer_depth_output=(0, 0, 0, 1, 1, 1, 1, 1, 1),
    transformer_depth_middle=1,
    context_dim=48,
    adm_in_channels=None,
    use_linear_in_transformer=False,
    num_head_channels=None,
    num_heads=8,
)
SD15_TINY_DIFFUSERS: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "use_linear_projection": False,
    "cross_attention_dim": 48,
    "norm_num_groups": 32,
}
