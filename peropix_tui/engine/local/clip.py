"""CLIP text encoders (OpenAI CLIP-L/14 and OpenCLIP ViT-bigG/14 text towers) in plain torch.

Parameter names follow the Hugging Face layout (`embeddings.token_embedding.weight`,
`encoder.layers.N.self_attn.q_proj.weight`, `final_layer_norm`, `text_projection.weight`) because that is how
SD checkpoints store CLIP-L and how kohya `lora_te*` keys name their targets; the OpenCLIP bigG tower is renamed
to it once at load by `openclip_to_hf`. Everything about the architecture is read from tensor names and shapes,
so any CLIP text tower loads without a table of known models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peropix_tui.core.clip_tokenizer import EOS
from peropix_tui.engine.local.errors import LocalEngineError

Activation = Literal["quick_gelu", "gelu"]

HEAD_WIDTH = 64  # every CLIP text tower splits its width into 64-wide heads
_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.")
_RESBLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
# Tensors a checkpoint may carry that the model does not need: a position-index buffer, the contrastive
# logit scale.
_IGNORED_KEYS = frozenset({"embeddings.position_ids"})
_OPENCLIP_IGNORED = frozenset({"logit_scale"})
_OPENCLIP_BLOCK_NAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


@dataclass(frozen=True)
class ClipTextConfig:
    """The shape of one CLIP text tower; `projection` is None for towers without `text_projection`."""

    vocab: int
    width: int
    layers: int
    heads: int
    intermediate: int
    activation: Activation
    positions: int
    projection: int | None

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor], *, component: str = "CLIP text encoder") -> ClipTextConfig:
        """Read the architecture from an HF-layout state dict.

        The activation cannot be seen in the weights: towers that carry a `text_projection` are OpenCLIP ones
        (bigG, ViT-H), trained with exact GELU; the projection-less one SD uses is OpenAI's CLIP-L, trained
        with quick-GELU.
        """
        token = _tensor(sd, "embeddings.token_embedding.weight", component, ndim=2)
        positions = _tensor(sd, "embeddings.position_embedding.weight", component, ndim=2)
        fc1 = _tensor(sd, "encoder.layers.0.mlp.fc1.weight", component, ndim=2)
        vocab, width = token.shape
        if width % HEAD_WIDTH:
            raise LocalEngineError(f"{component}: width {width} is not a multiple of {HEAD_WIDTH}")
        layers = 1 + max(int(m.group(1)) for key in sd if (m := _LAYER_KEY.match(key)))
        projection = sd.get("text_projection.weight")
        return cls(
            vocab=int(vocab),
            width=int(width),
            layers=layers,
            heads=int(width) // HEAD_WIDTH,
            intermediate=int(fc1.shape[0]),
            activation="gelu" if projection is not None else "quick_gelu",
            positions=int(positions.shape[0]),
            projection=None if projection is None else int(projection.shape[0]),
        )


def _tensor(sd: Mapping[str, Tensor], key: str, component: str, *, ndim: int) -> Tensor:
    value = sd.get(key)
    if value is None:
        raise LocalEngineError(f"{component}: missing tensor {key!r}")
    if value.ndim != ndim:
        raise LocalEngineError(f"{component}: tensor {key!r} has shape {tuple(value.shape)}, expected {ndim} dims")
    return value


class ClipOutput(NamedTuple):
    """`hidden`: the requested layer's output without the final LayerNorm (penultimate by default);
    `last`: the last layer after the final LayerNorm; `pooled`: `last` at each row's first EOS, projected when
    the tower has a `text_projection`."""

    hidden: Tensor
    last: Tensor
    pooled: Tensor


class _Embeddings(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab, config.width)
        self.position_embedding = nn.Embedding(config.positions, config.width)

    def forward(self, tokens: Tensor) -> Tensor:
        out: Tensor = self.token_embedding(tokens) + self.position_embedding.weight[: tokens.shape[1]]
        return out


class _SelfAttention(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.q_proj = nn.Linear(config.width, config.width)
        self.k_proj = nn.Linear(config.width, config.width)
        self.v_proj = nn.Linear(config.width, config.width)
        self.out_proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.heads, -1).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        projected: Tensor = self.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        return projected


class _Mlp(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.quick = config.activation == "quick_gelu"
        self.fc1 = nn.Linear(config.width, config.intermediate)
        self.fc2 = nn.Linear(config.intermediate, config.width)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = x * torch.sigmoid(1.702 * x) if self.quick else F.gelu(x)
        out: Tensor = self.fc2(x)
        return out


class _EncoderLayer(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.width)
        self.self_attn = _SelfAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.width)
        self.mlp = _Mlp(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        out: Tensor = x + self.mlp(self.layer_norm2(x))
        return out


class _Encoder(nn.Module):
    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.layers))


class ClipTextModel(nn.Module):
    """A CLIP text transformer: causal self-attention over all 77 positions, padding included (SD models were
    trained that way, so no padding mask)."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.width)
        self.text_projection = (
            nn.Linear(config.width, config.projection, bias=False) if config.projection is not None else None
        )

    @classmethod
    def from_state_dict(
        cls,
        sd: Mapping[str, Tensor],
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        component: str = "CLIP text encoder",
    ) -> ClipTextModel:
        """Build on the meta device and adopt the checkpoint's tensors (cast once), so nothing is initialised
        randomly; raises `LocalEngineError` naming the first missing, unexpected or misshapen tensor."""
        config = ClipTextConfig.from_state_dict(sd, component=component)
        with torch.device("meta"):
            model = cls(config)
        weights = {key: value for key, value in sd.items() if key not in _IGNORED_KEYS}
        check_state_dict(model, weights, component)
        model.load_state_dict(
            {key: value.to(device=device, dtype=dtype) for key, value in weights.items()}, strict=True, assign=True
        )
        return model.requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return self.embeddings.token_embedding.weight.device

    def forward(self, tokens: Tensor, *, hidden_layer: int = -2) -> ClipOutput:
        """Encode `tokens` [B, T≤positions]; `hidden_layer` indexes the states as HF `hidden_states` does
        (0 = embeddings, -1 = last layer, -2 = penultimate)."""
        count = len(self.encoder.layers)
        index = hidden_layer if hidden_layer >= 0 else count + 1 + hidden_layer
        if not 0 <= index <= count:
            raise LocalEngineError(f"CLIP hidden layer {hidden_layer} is outside this {count}-layer text encoder")
        x = self.embeddings(tokens)
        hidden = x
        for number, layer in enumerate(self.encoder.layers, start=1):
            x = layer(x)
            if number == index:
                hidden = x
        last = self.final_layer_norm(x)
        first_eos = (tokens == EOS).int().argmax(dim=-1)
        pooled = last[torch.arange(tokens.shape[0], device=tokens.device), first_eos]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return ClipOutput(hidden=hidden, last=last, pooled=pooled)


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], component: str) -> None:
    """Raise a one-line `LocalEngineError` for the first key `model` lacks or does not expect, or whose shape
    differs, before `load_state_dict` would raise a multi-line error."""
    expected = model.state_dict()
    for key, param in expected.items():
        value = sd.get(key)
        if value is None:
            raise LocalEngineError(f"{component}: missing tensor {key!r}")
        if value.shape != param.shape:
            raise LocalEngineError(
                f"{component}: tensor {key!r} has shape {tuple(value.shape)}, expected {tuple(param.shape)}"
            )
    for key in sd:
        if key not in expected:
            raise LocalEngineError(f"{component}: unexpected tensor {key!r}")


def openclip_to_hf(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an OpenCLIP text tower (prefix already removed) to the HF layout `ClipTextModel` uses.

    The fused `attn.in_proj_*` is split into q, k, v row slices (views, no copy); `text_projection` is stored
    for `x @ W`, so it becomes the transposed Linear weight. `logit_scale` is dropped; keys this does not
    know pass through unchanged so the strict load names them.
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in _OPENCLIP_IGNORED:
            continue
        if key == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif key == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["final_layer_norm." + key.removeprefix("ln_final.")] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif match := _RESBLOCK_KEY.fullmatch(key):
            out.update(_openclip_block_tensor(key, int(match.group(1)), match.group(2), value))
        else:
            out[key] = value
    return out


def _openclip_block_tensor(key: str, layer: int, name: str, value: Tensor) -> dict[str, Tensor]:
    prefix = f"encoder.layers.{layer}."
    if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
        if value.shape[0] % 3:
            raise LocalEngineError(f"CLIP-G: tensor {key!r} has {value.shape[0]} rows, not three equal q/k/v parts")
        kind = name.removeprefix("attn.in_proj_")
        q, k, v = value.chunk(3, dim=0)
        return {
            f"{prefix}self_attn.q_proj.{kind}": q,
            f"{prefix}self_attn.k_proj.{kind}": k,
            f"{prefix}self_attn.v_proj.{kind}": v,
        }
    module, _, leaf = name.rpartition(".")
    renamed = _OPENCLIP_BLOCK_NAMES.get(module)
    return {prefix + renamed + "." + leaf if renamed else key: value}
