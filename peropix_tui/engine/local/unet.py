"""The denoising UNet of SD1.5 / SDXL checkpoints, with the checkpoint's own (SGM) parameter names.

Parameter names equal the keys under `model.diffusion_model.`, so a checkpoint loads with a strict
`load_state_dict` and LoRA keys map onto parameters by name. The architecture is read from the tensors
(`UNetConfig.from_state_dict`), so SDXL base, SD1.5, SSD-1B, Vega, KOALA and 9-channel inpainting models
all load without a table of known models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from peropix_tui.engine.local.errors import LocalEngineError

_GROUPS = 32
# Head layout is not visible in the weights: SD1.5 checkpoints (conv projections) use 8 heads, SD2/SDXL
# checkpoints (linear projections) use 64 channels per head.
_SD15_NUM_HEADS = 8
_SDXL_HEAD_CHANNELS = 64
_ADM_FOURIER_DIM = 256


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of one UNet.

    `transformer_depth` has one entry per input ResBlock (in `input_blocks` order, downsamplers skipped),
    `transformer_depth_output` one per output block (in `output_blocks` order, deepest level first); 0 means
    that block has no SpatialTransformer. `transformer_depth_middle` is None when the model has no middle block.
    Exactly one of `num_head_channels` (SDXL) and `num_heads` (SD1.5) is set.
    """

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    transformer_depth_output: tuple[int, ...]
    transformer_depth_middle: int | None
    context_dim: int
    adm_in_channels: int | None
    use_linear_in_transformer: bool
    num_head_channels: int | None = _SDXL_HEAD_CHANNELS
    num_heads: int | None = None

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if levels == 0 or len(self.num_res_blocks) != levels:
            raise LocalEngineError(
                f"UNet config: {len(self.num_res_blocks)} res-block counts for {levels} channel levels"
            )
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise LocalEngineError(
                f"UNet config: {len(self.transformer_depth)} input transformer depths for "
                f"{sum(self.num_res_blocks)} input ResBlocks"
            )
        if len(self.transformer_depth_output) != sum(n + 1 for n in self.num_res_blocks):
            raise LocalEngineError(
                f"UNet config: {len(self.transformer_depth_output)} output transformer depths for "
                f"{sum(n + 1 for n in self.num_res_blocks)} output blocks"
            )
        if (self.num_head_channels is None) == (self.num_heads is None):
            raise LocalEngineError("UNet config: set exactly one of num_head_channels and num_heads")
        if self.transformer_depth_middle is not None and self.transformer_depth_middle < 1:
            raise LocalEngineError("UNet config: a middle block needs a transformer depth of at least 1")
        for mult in self.channel_mult:
            channels = self.model_channels * mult
            if mult < 1 or channels % _GROUPS:
                raise LocalEngineError(f"UNet config: {channels} channels is not a multiple of {_GROUPS}")

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def heads(self, channels: int) -> int:
        """Attention heads of a transformer working on `channels` channels."""
        if self.num_heads is not None:
            heads = self.num_heads
        elif self.num_head_channels is not None and channels % self.num_head_channels == 0:
            heads = channels // self.num_head_channels
        else:
            heads = 0
        if heads < 1 or channels % heads:
            raise LocalEngineError(f"UNet config: {channels} channels do not split into attention heads evenly")
        return heads

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> UNetConfig:
        """Read the architecture from a UNet state dict (keys without the `model.diffusion_model.` prefix)."""
        model_channels, in_channels = _shape(sd, "input_blocks.0.0.weight")[:2]
        out_channels = _shape(sd, "out.2.weight")[0]

        level_channels: list[list[int]] = [[]]
        transformer_depth: list[int] = []
        index = 1
        while True:
            if f"input_blocks.{index}.0.op.weight" in sd:
                level_channels.append([])
            elif f"input_blocks.{index}.0.in_layers.0.weight" in sd:
                level_channels[-1].append(_shape(sd, f"input_blocks.{index}.0.out_layers.3.weight")[0])
                transformer_depth.append(_count_transformer_blocks(sd, f"input_blocks.{index}.1"))
            else:
                break
            index += 1
        if not all(level_channels):
            raise LocalEngineError(f"UNet checkpoint: a level without ResBlocks before 'input_blocks.{index}'")
        channel_mult: list[int] = []
        for channels in level_channels:
            if len(set(channels)) != 1 or channels[0] % model_channels:
                raise LocalEngineError(f"UNet checkpoint: unsupported ResBlock channels {channels} in one level")
            channel_mult.append(channels[0] // model_channels)
        num_res_blocks = tuple(len(channels) for channels in level_channels)

        middle_depth: int | None = None
        if "middle_block.0.in_layers.0.weight" in sd:
            middle_depth = _count_transformer_blocks(sd, "middle_block.1")
            if middle_depth == 0:
                raise LocalEngineError(
                    "UNet checkpoint: middle block without a transformer "
                    "('middle_block.1.transformer_blocks.0' missing)"
                )
        output_depth = tuple(
            _count_transformer_blocks(sd, f"output_blocks.{block}.1")
            for block in range(sum(n + 1 for n in num_res_blocks))
        )

        cross_key = next((key for key in sd if key.endswith(".attn2.to_k.weight")), None)
        proj_key = next((key for key in sd if key.endswith(".proj_in.weight")), None)
        if cross_key is None or proj_key is None:
            raise LocalEngineError("UNet checkpoint: no cross-attention layer (no '*.attn2.to_k.weight' key)")
        linear = len(_shape(sd, proj_key)) == 2
        adm = _shape(sd, "label_emb.0.0.weight")[1] if "label_emb.0.0.weight" in sd else None
        return cls(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            transformer_depth=tuple(transformer_depth),
            transformer_depth_output=output_depth,
            transformer_depth_middle=middle_depth,
            context_dim=_shape(sd, cross_key)[1],
            adm_in_channels=adm,
            use_linear_in_transformer=linear,
            num_head_channels=_SDXL_HEAD_CHANNELS if linear else None,
            num_heads=None if linear else _SD15_NUM_HEADS,
        )


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    tensor = sd.get(key)
    if tensor is None:
        raise LocalEngineError(f"UNet checkpoint: missing key '{key}'")
    return tuple(tensor.shape)


def _count_transformer_blocks(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    depth = 0
    while f"{prefix}.transformer_blocks.{depth}.norm1.weight" in sd:
        depth += 1
    return depth


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, computed in fp32."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(10000.0) / half)
    args = timesteps.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sdxl_adm(
    pooled: torch.Tensor,
    *,
    height: int,
    width: int,
    crop: tuple[int, int] = (0, 0),
    target: tuple[int, int] | None = None,
    embed_dim: int = _ADM_FOURIER_DIM,
) -> torch.Tensor:
    """SDXL's ADM vector `y`: the pooled CLIP-G output, then Fourier embeddings of the size conditioning.

    Sizes are in pixels: (height, width), crop = (top, left), target = (height, width) defaulting to the image
    size. `embed_dim` is 256 for every released SDXL model.
    """
    target_h, target_w = (height, width) if target is None else target
    values = torch.tensor(
        [height, width, crop[0], crop[1], target_h, target_w], dtype=torch.float32, device=pooled.device
    )
    sizes = timestep_embedding(values, embed_dim).reshape(1, -1).to(pooled.dtype)
    return torch.cat([pooled, sizes.expand(pooled.shape[0], -1)], dim=1)


class ResBlock(nn.Module):
    """Two 3x3 convs with the time embedding added in between, and a (1x1 conv) skip."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 is the training-time dropout in the checkpoint's layout; keeping the slot keeps `out_layers.3`.
        self.out_layers = nn.Sequential(
            nn.GroupNorm(_GROUPS, out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        out: torch.Tensor = self.skip_connection(x) + self.out_layers(h)
        return out


class Attention(nn.Module):
    """Multi-head attention through SDPA; self-attention when no context is given."""

    def __init__(self, query_dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        batch, tokens, channels = x.shape
        head_dim = channels // self.heads
        q = self.to_q(x).view(batch, -1, self.heads, head_dim).transpose(1, 2)
        k = self.to_k(source).view(batch, -1, self.heads, head_dim).transpose(1, 2)
        v = self.to_v(source).view(batch, -1, self.heads, head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v)
        out: torch.Tensor = self.to_out[0](attended.transpose(1, 2).reshape(batch, tokens, channels))
        return out


class GEGLU(nn.Module):
    """Gated GELU: one projection yields value and gate halves; out = value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.proj(x)
        value, gate = projected.chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        # Index 1 is the training-time dropout in the checkpoint's layout; keeping the slot keeps `net.2`.
        self.net = nn.Sequential(GEGLU(dim, dim * 4), nn.Identity(), nn.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text context, feed-forward; each pre-normed and residual."""

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        out: torch.Tensor = self.ff(self.norm3(x)) + x
        return out


class SpatialTransformer(nn.Module):
    """Transformer blocks over the H*W tokens of a feature map, residual around the whole stack.

    SD1.5 projects in and out with 1x1 convs on the map; SDXL with linears on the tokens.
    """

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int, *, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(_GROUPS, channels, eps=1e-6)
        self.proj_in: nn.Module = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, context_dim) for _ in range(depth)]
        )
        self.proj_out: nn.Module = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h: torch.Tensor = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        if not self.linear:
            h = self.proj_out(h)
        return h + x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.op(x)
        return out


class Upsample(nn.Module):
    """Nearest upsampling to the skip connection's size (x2, or less for odd sizes), then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out: torch.Tensor = self.conv(F.interpolate(x, size=size, mode="nearest"))
        return out


class _Block(nn.ModuleList):
    """One `input_blocks.N` / `middle_block` / `output_blocks.N`: layers fed the inputs each kind needs.

    `size` is the next skip connection's spatial size, used only by an Upsample layer.
    """

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """SGM-layout UNet: `forward(x, timesteps, context, y)` predicts what the checkpoint was trained to (eps/v)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        base = config.model_channels
        emb_dim = config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb: nn.Sequential | None = None
        if config.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(config.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            )

        def transformer(channels: int, depth: int) -> SpatialTransformer:
            return SpatialTransformer(
                channels,
                config.heads(channels),
                depth,
                config.context_dim,
                linear=config.use_linear_in_transformer,
            )

        self.input_blocks = nn.ModuleList([_Block([nn.Conv2d(config.in_channels, base, 3, padding=1)])])
        skip_channels = [base]
        channels = base
        input_depths = iter(config.transformer_depth)
        last_level = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(channels, base * mult, emb_dim)]
                channels = base * mult
                depth = next(input_depths)
                if depth:
                    layers.append(transformer(channels, depth))
                self.input_blocks.append(_Block(layers))
                skip_channels.append(channels)
            if level != last_level:
                self.input_blocks.append(_Block([Downsample(channels)]))
                skip_channels.append(channels)

        self.middle_block: _Block | None = None
        if config.transformer_depth_middle is not None:
            self.middle_block = _Block(
                [
                    ResBlock(channels, channels, emb_dim),
                    transformer(channels, config.transformer_depth_middle),
                    ResBlock(channels, channels, emb_dim),
                ]
            )

        self.output_blocks = nn.ModuleList()
        output_depths = iter(config.transformer_depth_output)
        for level in range(last_level, -1, -1):
            out_channels = base * config.channel_mult[level]
            for index in range(config.num_res_blocks[level] + 1):
                layers = [ResBlock(channels + skip_channels.pop(), out_channels, emb_dim)]
                channels = out_channels
                depth = next(output_depths)
                if depth:
                    layers.append(transformer(channels, depth))
                if level and index == config.num_res_blocks[level]:
                    layers.append(Upsample(channels))
                self.output_blocks.append(_Block(layers))

        self.out = nn.Sequential(
            nn.GroupNorm(_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, config.out_channels, 3, padding=1)
        )

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, in, h, w] latents (any h, w); timesteps: [B] or a scalar; context: [B, tokens, context_dim];
        y: [B, adm_in_channels] for SDXL-type models. Runs in the weights' dtype, returns x's dtype."""
        if (y is None) != (self.label_emb is None):
            raise LocalEngineError(
                "UNet: this model needs the ADM vector y"
                if y is None
                else "UNet: this model takes no ADM vector y (it has no label_emb)"
            )
        dtype = next(self.parameters()).dtype
        t_emb = timestep_embedding(timesteps.reshape(-1).expand(x.shape[0]), self.config.model_channels)
        emb: torch.Tensor = self.time_embed(t_emb.to(dtype))
        if self.label_emb is not None and y is not None:
            emb = emb + self.label_emb(y.to(dtype))
        context = context.to(dtype)

        h = x.to(dtype)
        skips: list[torch.Tensor] = []
        for block in self.input_blocks:
            h = block(h, emb, context, (0, 0))
            skips.append(h)
        if self.middle_block is not None:
            h = self.middle_block(h, emb, context, (0, 0))
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            size = (skips[-1].shape[-2], skips[-1].shape[-1]) if skips else (0, 0)
            h = block(h, emb, context, size)
        out: torch.Tensor = self.out(h)
        return out.to(x.dtype)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: torch.device | str) -> UNet:
        """Build the UNet a state dict describes (keys without `model.diffusion_model.`), without ever
        allocating random weights: the module is made on the meta device and takes the checkpoint's tensors,
        converted once to `dtype` on `device`. Frozen and in eval mode."""
        config = UNetConfig.from_state_dict(sd)
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        for key, param in expected.items():
            if key not in sd:
                raise LocalEngineError(f"UNet checkpoint: missing key '{key}'")
            if sd[key].shape != param.shape:
                raise LocalEngineError(
                    f"UNet checkpoint: '{key}' has shape {list(sd[key].shape)}, expected {list(param.shape)}"
                )
        for key in sd:
            if key not in expected:
                raise LocalEngineError(f"UNet checkpoint: unexpected key '{key}'")
        model.load_state_dict(
            {key: tensor.to(device=device, dtype=dtype) for key, tensor in sd.items()}, strict=True, assign=True
        )
        model.requires_grad_(False)
        return model.eval()
