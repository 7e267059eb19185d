"""UNet steps per second: the local engine's SGM UNet against diffusers' UNet2DConditionModel, same weights.

Usage: python bench/bench_local_engine.py [--full] [--size PX] [--iters N] [--rounds N] [--device D] [--dtype T]

One "step" is what a sampler step with classifier-free guidance costs: one UNet call on a batch of 2 (cond and
uncond together). Both models share one set of random weights (ours built on the meta device and given the
tensors, diffusers' loaded through its own single-file converter, so they hold the very same tensors), run on
the same inputs in the same dtype, under `torch.inference_mode()`, and their outputs are compared once.

Default: a small SDXL-shaped UNet (64 channels, 3 levels) at 256x256 in float32 on the CPU, under a minute.
`--full`: the real SDXL base UNet (2.6 B parameters) at 1024x1024, meant for a GPU (bfloat16 where supported,
else float16); peak device memory of each side is printed too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from peropix_tui.engine.local.engine import resolve_device, resolve_dtype
from peropix_tui.engine.local.unet import UNet, UNetConfig, sdxl_adm

PREFIX = "model.diffusion_model."
FOURIER = 256
TOKENS = 77

SMALL = UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=64,
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 1, 1, 2, 2),
    transformer_depth_output=(2, 2, 2, 1, 1, 1, 0, 0, 0),
    transformer_depth_middle=2,
    context_dim=512,
    adm_in_channels=128 + 6 * FOURIER,
    use_linear_in_transformer=True,
    num_head_channels=64,
)
SMALL_DIFFUSERS: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (64, 128, 256),
    "layers_per_block": 2,
    "attention_head_dim": (1, 2, 4),  # diffusers' legacy name: the number of heads (channels / 64)
    "transformer_layers_per_block": (1, 1, 2),
    "use_linear_projection": True,
    "cross_attention_dim": 512,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": FOURIER,
    "projection_class_embeddings_input_dim": 128 + 6 * FOURIER,
    "norm_num_groups": 32,
}
SDXL = UNetConfig(
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
    num_head_channels=64,
)
SDXL_DIFFUSERS: dict[str, Any] = {
    **SMALL_DIFFUSERS,
    "sample_size": 128,
    "block_out_channels": (320, 640, 1280),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "projection_class_embeddings_input_dim": 2816,
}


def random_weights(config: UNetConfig, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Fan-in scaled random weights for every parameter of `config`, drawn on the device (fast even for 2.6 B)."""
    with torch.device("meta"):
        shapes = {name: tuple(param.shape) for name, param in UNet(config).state_dict().items()}
    generator = torch.Generator(device=device).manual_seed(0)
    weights: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        fan_in = 1
        for size in shape[1:]:
            fan_in *= size
        scale = 0.02 if len(shape) == 1 else fan_in**-0.5
        value = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * scale
        if name.endswith(".weight") and len(shape) == 1:  # norm scales
            value += 1.0
        weights[name] = value.to(dtype)
    return weights


def build(
    config: UNetConfig, diffusers_config: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> tuple[UNet, Any]:
    weights = random_weights(config, device, dtype)
    ours = UNet.from_state_dict(weights, dtype=dtype, device=device)
    with torch.device("meta"):  # diffusers is untyped: its objects are Any here
        reference: Any = UNet2DConditionModel(**diffusers_config)  # type: ignore[no-untyped-call]
    prefixed = {PREFIX + k: v for k, v in weights.items()}
    converted = convert_ldm_unet_checkpoint(prefixed, diffusers_config)  # type: ignore[no-untyped-call]
    reference.load_state_dict(converted, strict=True, assign=True)
    reference.requires_grad_(False).eval()
    return ours, reference


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def race(
    sides: dict[str, Callable[[], torch.Tensor]], iters: int, rounds: int, device: torch.device
) -> dict[str, tuple[float, torch.Tensor, int]]:
    """Per side: the best seconds per call over `rounds` rounds of `iters` calls, the last output, and the peak
    device memory in bytes. Sides alternate round by round, so load from other processes hits both alike."""
    results: dict[str, tuple[float, torch.Tensor, int]] = {}
    for fn in sides.values():  # warm-up: kernels chosen, caches filled
        fn()
        sync(device)
    for _ in range(rounds):
        for name, fn in sides.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            for _ in range(iters):
                out = fn()
            sync(device)
            seconds = (time.perf_counter() - start) / iters
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            best = results.get(name)
            if best is None or seconds < best[0]:
                results[name] = (seconds, out, peak)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="the real SDXL base UNet (for a GPU)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 256, or 1024 with --full)")
    parser.add_argument("--iters", type=int, default=None, help="steps per round (default 4, or 20 with --full)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side; the best counts (default 3)")
    parser.add_argument("--device", help="auto, cpu or cuda[:N] (default: cpu, or auto with --full)")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, fp16 or bf16")
    args = parser.parse_args()

    device = resolve_device(args.device or ("auto" if args.full else "cpu"))
    dtype = resolve_dtype(args.dtype, device)
    size = args.size or (1024 if args.full else 256)
    iters = args.iters or (20 if args.full else 4)
    config, diffusers_config = (SDXL, SDXL_DIFFUSERS) if args.full else (SMALL, SMALL_DIFFUSERS)
    pooled_dim = (config.adm_in_channels or 0) - 6 * FOURIER
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = True

    with torch.inference_mode():
        ours, reference = build(config, diffusers_config, device, dtype)
        generator = torch.Generator(device=device).manual_seed(1)
        latent = size // 8
        x = torch.randn((2, 4, latent, latent), generator=generator, device=device).to(dtype)
        t = torch.tensor([500.0, 500.0], device=device)
        context = torch.randn((2, TOKENS, config.context_dim), generator=generator, device=device).to(dtype)
        pooled = torch.randn((2, pooled_dim), generator=generator, device=device).to(dtype)
        y = sdxl_adm(pooled, height=size, width=size)
        time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=dtype)

        results = race(
            {
                "peropix": lambda: ours(x, t, context, y),
                "diffusers": lambda: (
                    reference(
                        x,
                        t,
                        encoder_hidden_states=context,
                        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                    ).sample
                ),
            },
            iters,
            args.rounds,
            device,
        )
    (ours_s, ours_out, _), (ref_s, ref_out, _) = results["peropix"], results["diffusers"]
    difference = (ours_out.float() - ref_out.float()).abs().max().item()
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    name = "SDXL base" if args.full else "small SDXL-shaped"
    print(
        f"{name} UNet ({params:.0f} M parameters), {size}x{size}, batch 2 (CFG), {dtype}, {device}, "
        f"best of {args.rounds} rounds of {iters} steps"
    )
    print(f"{'':12}{'it/s':>10}{'s/step':>10}{'peak MiB':>10}")
    for label, (seconds, _, peak) in results.items():
        peak_text = f"{peak / 2**20:.0f}" if device.type == "cuda" else "-"
        print(f"{label:12}{1 / seconds:10.2f}{seconds:10.4f}{peak_text:>10}")
    print(f"ratio (peropix it/s / diffusers it/s): {ref_s / ours_s:.2f}; max output difference {difference:.2e}")


if __name__ == "__main__":
    main()
