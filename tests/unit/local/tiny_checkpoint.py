"""Tiny synthetic single-file checkpoints and LoRA files with the real key names, for tests of the local engine.

The models are the engine's own modules with tiny widths and depths, initialised from a seed, so every file is
reproducible. What cannot be tiny is what the loader recognises a family by: an SDXL file has a 2048-wide
cross-attention context (CLIP-L 768 + CLIP-G 1280) and a 2816-wide ADM input, an SD 1.5 file a 768-wide
context, and every CLIP tower keeps the real 49408-token vocabulary and 77 positions, so real prompts
tokenize. The text towers have two layers (SDXL reads the penultimate one), the UNet two levels (attention
only on the second, as SDXL has none on its first) and the VAE four levels (8 pixels per latent cell) of 32
channels. Files are written in float16, as released checkpoints are; CLIP-G goes into the OpenCLIP layout
SDXL files use.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from peropix_tui.engine.local.clip import ClipTextConfig, ClipTextModel
from peropix_tui.engine.local.unet import UNet, UNetConfig
from peropix_tui.engine.local.vae import AutoencoderKL, VaeConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
SD15_CLIP_L_PREFIX = "cond_stage_model.transformer.text_model."

VOCAB = 49408
POSITIONS = 77
CLIP_L_WIDTH = 768
CLIP_G_WIDTH = 1280

SDXL_UNET = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    transformer_depth=(0, 1),
    transformer_depth_output=(1, 1, 0, 0),
    transformer_depth_middle=1,
    context_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
    adm_in_channels=CLIP_G_WIDTH + 6 * 256,
    use_linear_in_transformer=True,
    num_head_channels=64,
)
SD15_UNET = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    transformer_depth=(1, 1),
    transformer_depth_output=(1, 1, 1, 1),
    transformer_depth_middle=1,
    context_dim=CLIP_L_WIDTH,
    adm_in_channels=None,
    use_linear_in_transformer=False,
    num_head_channels=None,
    num_heads=8,
)
VAE = VaeConfig(
    in_channels=3, out_channels=3, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4, embed_dim=4,
    mid_attention=True,
)  # fmt: skip
CLIP_L = ClipTextConfig(
    vocab=VOCAB, width=CLIP_L_WIDTH, layers=2, heads=CLIP_L_WIDTH // 64, intermediate=64,
    activation="quick_gelu", positions=POSITIONS, projection=None,
)  # fmt: skip
CLIP_G = ClipTextConfig(
    vocab=VOCAB, width=CLIP_G_WIDTH, layers=2, heads=CLIP_G_WIDTH // 64, intermediate=64,
    activation="gelu", positions=POSITIONS, projection=CLIP_G_WIDTH,
)  # fmt: skip


@dataclass(frozen=True)
class TinyModel:
    """The state dicts of one tiny model, each in the engine's own parameter names (CLIP-G in HF names)."""

    unet: dict[str, Tensor]
    vae: dict[str, Tensor]
    clip_l: dict[str, Tensor]
    clip_g: dict[str, Tensor] | None

    @property
    def sdxl(self) -> bool:
        return self.clip_g is not None

    def checkpoint(self) -> dict[str, Tensor]:
        """The single-file layout: component prefixes, CLIP-G in OpenCLIP names."""
        out = {UNET_PREFIX + key: value for key, value in self.unet.items()}
        out.update({VAE_PREFIX + key: value for key, value in self.vae.items()})
        clip_l_prefix = SDXL_CLIP_L_PREFIX if self.sdxl else SD15_CLIP_L_PREFIX
        out.update({clip_l_prefix + key: value for key, value in self.clip_l.items()})
        if self.clip_g is not None:
            out.update({SDXL_CLIP_G_PREFIX + key: value for key, value in hf_to_openclip(self.clip_g).items()})
        return out


def _state(
    make: Callable[[], nn.Module], generator: torch.Generator, gains: Mapping[str, float] | None = None
) -> dict[str, Tensor]:
    """A module's parameters drawn from `generator`: weights ~ N(0, gain²/fan_in), norms at 1, biases small.

    A fan-in scaled draw keeps activations near unit size through every layer, so a random model still turns
    different noise into visibly different images instead of saturating. `gains` sets the gain of named
    weights (1 otherwise).
    """
    with torch.device("meta"):
        module = make()
    state: dict[str, Tensor] = {}
    for name, param in module.state_dict().items():
        shape = tuple(param.shape)
        if name.endswith("bias"):
            value = torch.randn(shape, generator=generator) * 0.02
        elif len(shape) == 1:  # GroupNorm / LayerNorm scales
            value = 1.0 + torch.randn(shape, generator=generator) * 0.02
        elif name.endswith("token_embedding.weight"):
            value = _token_embedding(shape, generator)
        elif "embedding" in name:
            value = torch.randn(shape, generator=generator) * 0.5
        else:
            fan_in = 1
            for size in shape[1:]:
                fan_in *= size
            gain = (gains or {}).get(name, 1.0)
            value = torch.randn(shape, generator=generator) * (gain / fan_in**0.5)
        state[name] = value
    return state


# Real VAE latents have a spread of about 1 / scale factor, so that sampling-space latents are near unit size
# and the noise levels of a schedule mean what they mean for a real model; a random encoder gives far smaller
# ones. The encoder's last 1x1 conv is scaled up and the decoder's first one down to match.
_VAE_GAINS = {"quant_conv.weight": 8.0, "post_quant_conv.weight": 1 / 8.0}


def _token_embedding(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """A distinct vector per token id, built from two small random tables (id mod 997, id div 997): drawing
    all 49408 × width values would cost seconds per test module for nothing."""
    vocab, width = shape
    low = torch.randn((997, width), generator=generator) * 0.4
    high = torch.randn((-(-vocab // 997), width), generator=generator) * 0.3
    ids = torch.arange(vocab)
    return low[ids % 997] + high[ids // 997]


@functools.cache
def tiny_model(*, sdxl: bool = True, in_channels: int = 4, seed: int = 0) -> TinyModel:
    """A tiny SDXL-shaped (or SD 1.5-shaped) model; `in_channels` 9 makes it an inpainting model.

    Made once per process for each set of arguments: treat the tensors as read-only.
    """
    generator = torch.Generator().manual_seed(seed)
    base = SDXL_UNET if sdxl else SD15_UNET
    unet_config = dataclasses.replace(base, in_channels=in_channels)
    return TinyModel(
        unet=_state(lambda: UNet(unet_config), generator),
        vae=_state(lambda: AutoencoderKL(VAE), generator, _VAE_GAINS),
        clip_l=_state(lambda: ClipTextModel(CLIP_L), generator),
        clip_g=_state(lambda: ClipTextModel(CLIP_G), generator) if sdxl else None,
    )


def hf_to_openclip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The OpenCLIP layout of an HF-named CLIP-G tower: q/k/v fused into `in_proj`, `text_projection` stored
    for `x @ W` (the inverse of the engine's conversion, written independently of it)."""
    renames = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    out: dict[str, Tensor] = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    layers = 1 + max(int(key.split(".")[2]) for key in sd if key.startswith("encoder.layers."))
    for index in range(layers):
        hf = f"encoder.layers.{index}."
        oc = f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat([sd[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in renames.items():
                out[f"{oc}{new}.{kind}"] = sd[f"{hf}{old}.{kind}"]
    return out


def write_safetensors(
    path: Path,
    tensors: Mapping[str, Tensor],
    *,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save floating tensors as `dtype` (others as they are); creates the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, str(path), metadata=metadata)
    return path


def tiny_checkpoint(shared: Path, destination: Path, *, sdxl: bool = True, in_channels: int = 4, seed: int = 0) -> Path:
    """A tiny checkpoint at `destination`, hard-linked from a copy kept in `shared` (written on first use), so
    test modules of one session share the few seconds it takes to write one."""
    kind = "xl" if sdxl else "sd15"
    original = shared / f"tiny_{kind}_{in_channels}ch_{seed}.safetensors"
    if not original.exists():
        model = tiny_model(sdxl=sdxl, in_channels=in_channels, seed=seed)
        write_safetensors(original.with_suffix(".partial"), model.checkpoint()).rename(original)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.link(original, destination)
    return destination


# LoRA -------------------------------------------------------------------------------------------------------

_UNET_LINEARS = (".attn1.to_q", ".attn1.to_k", ".attn1.to_v", ".attn1.to_out.0", ".attn2.to_q", ".attn2.to_k",
                 ".attn2.to_v", ".attn2.to_out.0", ".ff.net.0.proj", ".ff.net.2", ".proj_in", ".proj_out")  # fmt: skip
_CLIP_LINEARS = (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj",
                 ".mlp.fc1", ".mlp.fc2")  # fmt: skip


def _lora_targets(model: TinyModel) -> Iterable[tuple[str, tuple[int, ...]]]:
    """(kohya module key, weight shape) for every linear layer a kohya LoRA of this model trains."""
    for name, value in model.unet.items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module.endswith(_UNET_LINEARS) and value.ndim == 2:
            yield "lora_unet_" + module.replace(".", "_"), tuple(value.shape)
    towers = [("lora_te1_", model.clip_l), ("lora_te2_", model.clip_g)] if model.sdxl else [("lora_te_", model.clip_l)]
    for prefix, sd in towers:
        assert sd is not None
        for name, value in sd.items():
            module = name.removesuffix(".weight")
            if name.endswith(".weight") and module.endswith(_CLIP_LINEARS):
                yield prefix + "text_model_" + module.replace(".", "_"), tuple(value.shape)


def kohya_lora(model: TinyModel, *, rank: int = 4, alpha: float = 2.0, seed: int = 1) -> dict[str, Tensor]:
    """A kohya-style LoRA of every attention / feed-forward linear of `model` (UNet and text encoders)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Tensor] = {}
    for key, (rows, cols) in _lora_targets(model):
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, cols, generator=generator) / cols**0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(rows, rank, generator=generator) * 0.5
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    return tensors


def write_kohya_lora(
    path: Path, model: TinyModel, *, output_name: str | None = None, rank: int = 4, seed: int = 1
) -> Path:
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": "2.0"}
    if output_name is not None:
        metadata["ss_output_name"] = output_name
    return write_safetensors(path, kohya_lora(model, rank=rank, seed=seed), metadata=metadata)
