"""The KL autoencoder (VAE) of SD1.5/SDXL checkpoints: encode images to latents, decode latents to images.

Parameter names are the checkpoint's own (`encoder.down.0.block.0.norm1.weight`, `decoder.up.3...`,
`quant_conv`, `post_quant_conv`, with the `first_stage_model.` prefix removed), so a checkpoint's VAE section
loads with `load_state_dict(strict=True, assign=True)` and no renaming.

Precision: the stock SDXL VAE overflows in float16 (NaN, black images). `preferred_vae_dtype` picks bfloat16
where the GPU has it and float32 otherwise; `AutoencoderKL.decode_safely` checks the decoded images once and,
when they hold NaN/inf, upcasts the VAE for good and decodes again. It also falls back to a tiled decode when
the full-size decode runs out of device memory, the usual failure at large sizes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from peropix_tui.engine.local.errors import LocalEngineError

logger = logging.getLogger(__name__)

GROUPS = 32
EPS = 1e-6
# Top-level parameter groups of the autoencoder; a standalone VAE file may carry others (training leftovers
# such as the loss network), which are not part of the model and are ignored.
_COMPONENTS = ("encoder", "decoder", "quant_conv", "post_quant_conv")


@dataclass(frozen=True)
class VaeConfig:
    """Shape of a KL autoencoder, read off its tensors (SD1.5 and SDXL share ch=128, ch_mult=(1, 2, 4, 4))."""

    in_channels: int
    out_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    embed_dim: int
    mid_attention: bool

    @property
    def downscale_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for SD1.5/SDXL)."""
        return 1 << (len(self.ch_mult) - 1)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor]) -> VaeConfig:
        """Detect the configuration from key names and shapes of a VAE state dict (prefix removed)."""
        conv_in = _require(sd, "encoder.conv_in.weight")
        ch, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
        mults: list[int] = []
        while f"encoder.down.{len(mults)}.block.0.conv1.weight" in sd:
            width = int(sd[f"encoder.down.{len(mults)}.block.0.conv1.weight"].shape[0])
            if width % ch:
                raise LocalEngineError(
                    f"VAE: encoder.down.{len(mults)} has {width} channels, not a multiple of conv_in's {ch}"
                )
            mults.append(width // ch)
        if not mults:
            raise LocalEngineError("VAE: missing key encoder.down.0.block.0.conv1.weight")
        num_res_blocks = 0
        while f"encoder.down.0.block.{num_res_blocks}.conv1.weight" in sd:
            num_res_blocks += 1
        config = cls(
            in_channels=in_channels,
            out_channels=int(_require(sd, "decoder.conv_out.weight").shape[0]),
            ch=ch,
            ch_mult=tuple(mults),
            num_res_blocks=num_res_blocks,
            z_channels=int(_require(sd, "decoder.conv_in.weight").shape[1]),
            embed_dim=int(_require(sd, "post_quant_conv.weight").shape[1]),
            mid_attention="encoder.mid.attn_1.q.weight" in sd,
        )
        for width in sorted({ch, *(ch * m for m in config.ch_mult)}):
            if width % GROUPS:
                raise LocalEngineError(f"VAE: {width} channels cannot be split into {GROUPS} normalisation groups")
        return config


def _require(sd: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise LocalEngineError(f"VAE: missing key {key}")
    return sd[key]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=EPS)


class _ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        shortcut: Tensor = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(shortcut)


class _AttnBlock(nn.Module):
    """Single-head self-attention over all H×W positions; q/k/v/proj_out are 1×1 convs in the checkpoint.

    At 1024² the decoder's mid block sees 128×128 = 16384 tokens, so the attention goes through SDPA (a 1 GiB
    score matrix is never built); the 1×1 convs are applied as matmuls on the token layout to avoid transposes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q = F.linear(tokens, self.q.weight.flatten(1), self.q.bias).unsqueeze(1)
        k = F.linear(tokens, self.k.weight.flatten(1), self.k.bias).unsqueeze(1)
        v = F.linear(tokens, self.v.weight.flatten(1), self.v.bias).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = F.linear(out, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class _Downsample(nn.Module):
    """Stride-2 conv after padding one row/column on the bottom/right only, as the checkpoints were trained."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.pad(x, (0, 1, 0, 1)))
        return out


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class _DownLevel(nn.Module):
    """One encoder resolution level: `block.N` resnets, then a `downsample` on all but the deepest level."""

    def __init__(self, in_channels: int, width: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(_ResnetBlock(in_channels if j == 0 else width, width) for j in range(depth))
        self.downsample = _Downsample(width) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class _UpLevel(nn.Module):
    """One decoder resolution level: `block.N` resnets, then an `upsample` on all but the full-size level."""

    def __init__(self, in_channels: int, width: int, depth: int, upsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(_ResnetBlock(in_channels if j == 0 else width, width) for j in range(depth))
        self.upsample = _Upsample(width) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class _Mid(nn.Module):
    def __init__(self, channels: int, attention: bool) -> None:
        super().__init__()
        self.block_1 = _ResnetBlock(channels, channels)
        self.attn_1 = _AttnBlock(channels) if attention else None
        self.block_2 = _ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        out: Tensor = self.block_2(x)
        return out


class _Encoder(nn.Module):
    def __init__(self, config: VaeConfig) -> None:
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        levels: list[_DownLevel] = []
        block_in = config.ch
        for i, width in enumerate(widths):
            levels.append(_DownLevel(block_in, width, config.num_res_blocks, downsample=i < len(widths) - 1))
            block_in = width
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(block_in, config.mid_attention)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        out: Tensor = self.conv_out(F.silu(self.norm_out(h), inplace=True))
        return out


class _Decoder(nn.Module):
    """`up.N` is stored by resolution level (index 0 = full size) and run from the deepest level up."""

    def __init__(self, config: VaeConfig) -> None:
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        block_in = widths[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, config.mid_attention)
        levels: list[_UpLevel] = []
        for i in reversed(range(len(widths))):
            levels.insert(0, _UpLevel(block_in, widths[i], config.num_res_blocks + 1, upsample=i > 0))
            block_in = widths[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        out: Tensor = self.conv_out(F.silu(self.norm_out(h), inplace=True))
        return out


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 runs natively on `device` (CUDA GPUs from Ampere on); CPU bfloat16 is too slow to pick."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def preferred_vae_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU has it (float16's range overflows in the SDXL VAE), float32 elsewhere."""
    return torch.bfloat16 if bf16_supported(device) else torch.float32


def _upcast_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The wider dtype to retry a non-finite decode in, or None when already at float32."""
    if dtype == torch.float16 and bf16_supported(device):
        return torch.bfloat16
    return None if dtype == torch.float32 else torch.float32


class AutoencoderKL(nn.Module):
    """The VAE. `encode`/`decode` work on raw VAE latents; `LatentFormat` converts to and from sampling space."""

    def __init__(self, config: VaeConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @classmethod
    def from_state_dict(
        cls, sd: Mapping[str, Tensor], *, dtype: torch.dtype, device: torch.device | str
    ) -> AutoencoderKL:
        """Build on the meta device and adopt the checkpoint's tensors (converted once), never random-initialising."""
        config = VaeConfig.from_state_dict(sd)
        with torch.device("meta"):
            model = cls(config)
        wanted = {k: v for k, v in sd.items() if k.split(".", 1)[0] in _COMPONENTS}
        _check_keys(model.state_dict(), wanted)
        target = torch.device(device)
        model.load_state_dict(
            {k: v.to(device=target, dtype=dtype) for k, v in wanted.items()}, strict=True, assign=True
        )
        return model.requires_grad_(False).eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Images [B, C, H, W] in [-1, 1] → latents: the posterior mean, or a sample drawn from `generator`.

        The noise is drawn in float32 on the generator's own device, so a seed gives the same latents whatever
        the VAE's dtype; an unseeded sample is never taken, which keeps img2img reproducible.
        """
        factor = self.config.downscale_factor
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise LocalEngineError(
                f"VAE encode: expected images [B, {self.config.in_channels}, H, W], got {list(images.shape)}"
            )
        if images.shape[2] % factor or images.shape[3] % factor:
            raise LocalEngineError(
                f"VAE encode: image size {images.shape[3]}×{images.shape[2]} is not a multiple of {factor}"
            )
        moments: Tensor = self.quant_conv(self.encoder(images.to(device=self.device, dtype=self.dtype)))
        mean, logvar = moments.chunk(2, dim=1)
        if generator is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return mean + std * noise.to(device=mean.device, dtype=mean.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents [B, z, h, w] → images [B, C, h·f, w·f] in about [-1, 1], in the VAE's dtype."""
        self._check_latents(latents)
        images: Tensor = self.decoder(self.post_quant_conv(latents.to(device=self.device, dtype=self.dtype)))
        return images

    def decode_tiled(self, latents: Tensor, tile: int = 64, overlap: int = 16) -> Tensor:
        """Decode `tile`×`tile` latent windows overlapping by `overlap` and blend them with linear ramps.

        Peak memory follows the tile, not the image. Tiles see only their own window (normalisation statistics
        and attention differ slightly from a full decode); the feathered overlaps hide the resulting seams.
        """
        self._check_latents(latents)
        return tiled_map(self.decode, latents, tile=tile, overlap=overlap, scale=self.config.downscale_factor)

    def decode_safely(self, latents: Tensor, *, tile: int = 64, overlap: int = 16) -> Tensor:
        """Decode with the fallbacks a generation run needs: tiled (`tile`, `overlap`) on out-of-memory, upcast
        on NaN/inf.

        The finiteness check runs once per decode (one device sync). A VAE that overflowed stays upcast, so
        later decodes do not pay for a failed attempt first.
        """
        images = self._decode_fitting(latents, tile, overlap)
        if bool(torch.isfinite(images).all()):
            return images
        wider = _upcast_dtype(self.dtype, self.device)
        if wider is None:
            raise LocalEngineError("VAE decode produced NaN/inf in float32: the latents or the VAE weights are broken")
        logger.warning("VAE decode overflowed in %s; decoding again in %s from now on", self.dtype, wider)
        self.to(dtype=wider)
        images = self._decode_fitting(latents, tile, overlap)
        if not bool(torch.isfinite(images).all()):
            raise LocalEngineError(f"VAE decode produced NaN/inf even in {wider}: the latents hold NaN/inf")
        return images

    def _decode_fitting(self, latents: Tensor, tile: int, overlap: int) -> Tensor:
        try:
            return self.decode(latents)
        except torch.OutOfMemoryError:
            logger.warning("out of memory in a full-size VAE decode; decoding in %d×%d latent tiles", tile, tile)
        # Retried outside the handler, so the failed attempt's frames and their tensors are already released.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            return self.decode_tiled(latents, tile, overlap)
        except torch.OutOfMemoryError:
            pass
        raise LocalEngineError(
            f"VAE decode ran out of device memory even in {tile}×{tile} latent tiles: use a smaller image or batch"
        )

    def _check_latents(self, latents: Tensor) -> None:
        if latents.ndim != 4 or latents.shape[1] != self.config.embed_dim:
            raise LocalEngineError(
                f"VAE decode: expected latents [B, {self.config.embed_dim}, h, w], got {list(latents.shape)}"
            )


def _check_keys(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> None:
    """Name the first missing, unexpected or mis-shaped tensor instead of torch's multi-line report."""
    for key, tensor in expected.items():
        if key not in given:
            raise LocalEngineError(f"VAE: missing key {key}")
        if tuple(given[key].shape) != tuple(tensor.shape):
            raise LocalEngineError(f"VAE: {key} has shape {list(given[key].shape)}, expected {list(tensor.shape)}")
    for key in given:
        if key not in expected:
            raise LocalEngineError(f"VAE: unexpected key {key}")


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of the fewest windows that cover [0, length) overlapping by at least `overlap`, spread evenly
    (first flush with the start, last flush with the end) so no window is a near-duplicate of its neighbour."""
    if length <= tile:
        return [0]
    gaps = -(-(length - tile) // (tile - overlap))
    return [(i * (length - tile) + gaps // 2) // gaps for i in range(gaps + 1)]


def _ramp(start: int, size: int, length: int, feather: int) -> Tensor:
    """1-D blend weights of one window, in output pixels: a linear rise over `feather` pixels on each side that
    borders another window, flat 1 elsewhere (image borders included, so the edges keep full weight).

    Where two windows overlap by exactly `feather` pixels their weights sum to 1.
    """
    weights = torch.ones(size, dtype=torch.float32)
    rise = torch.arange(1, feather + 1, dtype=torch.float32) / (feather + 1)
    if feather and start > 0:
        weights[:feather] = rise
    if feather and start + size < length:
        weights[-feather:] = rise.flip(0)
    return weights


def tiled_map(fn: Callable[[Tensor], Tensor], latents: Tensor, *, tile: int, overlap: int, scale: int) -> Tensor:
    """Apply `fn` (latents → images `scale`× larger) window by window and blend the windows' outputs.

    Each output pixel is the weighted mean of the windows covering it, weights from `_ramp`; a window's weight
    falls towards zero at its inner edges, so the blend is continuous across seams. For an `fn` that acts on
    each position independently of the rest of the window the result equals `fn(latents)`. Windows are at
    least twice the overlap, so a window's two ramps never meet.
    """
    if tile < 1 or not 0 <= overlap <= tile // 2:
        raise LocalEngineError(f"VAE tiles: need tile ≥ 1 and 0 ≤ overlap ≤ tile/2, got tile={tile}, overlap={overlap}")
    height, width = latents.shape[-2:]
    tile_h, tile_w = min(tile, height), min(tile, width)
    windows = [(y, x) for y in _tile_starts(height, tile, overlap) for x in _tile_starts(width, tile, overlap)]
    pieces = (fn(latents[..., y : y + tile_h, x : x + tile_w]) for y, x in windows)
    first = next(pieces)
    out = first.new_zeros((*first.shape[:-2], height * scale, width * scale), dtype=torch.float32)
    total = torch.zeros((height * scale, width * scale), dtype=torch.float32, device=first.device)
    feather = overlap * scale
    for (y, x), piece in zip(windows, itertools.chain([first], pieces), strict=True):
        wy = _ramp(y * scale, tile_h * scale, height * scale, feather)
        wx = _ramp(x * scale, tile_w * scale, width * scale, feather)
        mask = (wy[:, None] * wx[None, :]).to(piece.device)
        rows = slice(y * scale, (y + tile_h) * scale)
        cols = slice(x * scale, (x + tile_w) * scale)
        out[..., rows, cols] += piece.float() * mask
        total[rows, cols] += mask
    return (out / total).to(first.dtype)


@dataclass(frozen=True)
class LatentFormat:
    """How a model family's sampler sees VAE latents: a scale factor, and a linear latent→RGB approximation.

    `rgb_factors` (one RGB row per latent channel) are published least-squares fits of decoded colours on
    sampling-space latents; they give a blurry but faithful live preview at latent resolution for the cost of
    one small matmul instead of a VAE decode.
    """

    name: str
    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]

    def process_in(self, latents: Tensor) -> Tensor:
        """VAE latents → sampling space."""
        return latents * self.scale_factor

    def process_out(self, latents: Tensor) -> Tensor:
        """Sampling space → VAE latents, ready for `AutoencoderKL.decode`."""
        return latents / self.scale_factor

    def latent_to_rgb_preview(self, latents: Tensor) -> NDArray[np.uint8]:
        """Sampling-space latents [C, h, w] (or the first of a batch [B, C, h, w]) → an h×w×3 uint8 preview."""
        sample = latents[0] if latents.ndim == 4 else latents
        if sample.ndim != 3 or sample.shape[0] != len(self.rgb_factors):
            raise LocalEngineError(
                f"{self.name} preview: expected latents [{len(self.rgb_factors)}, h, w], got {list(latents.shape)}"
            )
        factors = torch.tensor(self.rgb_factors, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", sample.detach().to(device="cpu", dtype=torch.float32), factors)
        return ((rgb + 1.0) * 127.5).clamp(0.0, 255.0).round().to(torch.uint8).numpy()


SDXL_LATENT_FORMAT = LatentFormat(
    name="SDXL",
    scale_factor=0.13025,
    rgb_factors=(
        (0.3816, 0.4930, 0.5320),
        (-0.3753, 0.1631, 0.1739),
        (0.1770, 0.3588, -0.2048),
        (-0.4350, -0.2644, -0.4289),
    ),
)

SD15_LATENT_FORMAT = LatentFormat(
    name="SD1.5",
    scale_factor=0.18215,
    rgb_factors=(
        (0.3444, 0.1385, 0.0670),
        (0.1247, 0.4027, 0.1494),
        (-0.3192, 0.2513, 0.2103),
        (-0.1307, -0.1874, -0.7445),
    ),
)
