"""LoRA / LyCORIS files merged into the local engine's weights, and taken out again bit for bit.

A LoRA file holds, per module key, the factors of a weight change: LoRA / LoCon (`lora_up` × `lora_down`, with
an optional Tucker `lora_mid`), LoHa (Hadamard product of two low-rank products), LoKr (Kronecker product),
DoRA (`dora_scale` on any of those), or plain diffs (`diff`, `diff_b`, `w_norm`, `b_norm`, `set_weight`).
Module keys come in several spellings, all resolved against the parameter names of the models we were given:

- kohya SGM names, `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`: our UNet parameters carry the
  SGM names, so the key is a module path with `.` written as `_`. Paths themselves hold underscores
  (`transformer_blocks`), so the key is never split; it is looked up in a table of every module path with its
  dots replaced.
- diffusers names (`lora_unet_down_blocks_1_attentions_0_…`, `unet.down_blocks.1.attentions.0.…`, `lycoris_…`):
  looked up in a diffusers→SGM table derived from the UNet config's ResBlock count per level (§5.1 rules).
- text encoders: `lora_te1_` / `text_encoder.` → CLIP-L, `lora_te2_` / `text_encoder_2.` → CLIP-G,
  `lora_te_` → the only text encoder (CLIP-L for SD1.5, CLIP-G for a refiner); Hugging Face names, as our CLIP
  modules use.
Keys that match no parameter are reported (count and first names), never fatal: a LoRA trained with extra
modules still applies where it can.

Merging is done in place, once per LoRA set (an un-fused LoRA would add two GEMMs per layer per step). Each
touched parameter is copied to the backup device first; the deltas of every LoRA are summed onto an fp32 copy
of the weight on its own device and the result is rounded once to the storage dtype. `restore()` copies the
backups back, so the original bits return exactly; subtracting the delta again in fp16 would drift a little
on every LoRA switch.

Scales follow the trainers: `alpha / rank` for LoRA and LoHa, `alpha / rank` for LoKr only when a factor is
low-rank (full factors use 1), and a missing or zero alpha means no scaling (kohya and LyCORIS treat alpha 0
as "alpha = rank"). DoRA at strength 1 is LyCORIS's merged weight `dora_scale · W'/‖W'‖` with
`W' = W + ΔW`, the norm taken per output row or per input column as the shape of `dora_scale` says; other
strengths interpolate between the original and that weight, so strength 0 leaves the model untouched.
`set_weight` interpolates the same way towards the stored weight.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from peropix_tui.core.safetensors import SafetensorsError, read_header
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.unet import UNet, UNetConfig

log = logging.getLogger(__name__)

Param = Literal["weight", "bias"]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
REPORTED_NAMES = 5  # unmatched keys named in a report line; the rest are counted

# Tensor-name endings and the factor each one holds. Several trainers spell the same factor differently.
_FACTORS: Mapping[str, str] = MappingProxyType(
    {
        ".lora_down.weight": "lora_down",
        ".lora_up.weight": "lora_up",
        ".lora_mid.weight": "lora_mid",
        ".lora_A.weight": "lora_down",
        ".lora_B.weight": "lora_up",
        "_lora.down.weight": "lora_down",
        "_lora.up.weight": "lora_up",
        ".lora.down.weight": "lora_down",
        ".lora.up.weight": "lora_up",
        ".lora_linear_layer.down.weight": "lora_down",
        ".lora_linear_layer.up.weight": "lora_up",
        ".alpha": "alpha",
        ".dora_scale": "dora_scale",
        ".hada_w1_a": "hada_w1_a",
        ".hada_w1_b": "hada_w1_b",
        ".hada_w2_a": "hada_w2_a",
        ".hada_w2_b": "hada_w2_b",
        ".hada_t1": "hada_t1",
        ".hada_t2": "hada_t2",
        ".lokr_w1": "lokr_w1",
        ".lokr_w1_a": "lokr_w1_a",
        ".lokr_w1_b": "lokr_w1_b",
        ".lokr_w2": "lokr_w2",
        ".lokr_w2_a": "lokr_w2_a",
        ".lokr_w2_b": "lokr_w2_b",
        ".lokr_t2": "lokr_t2",
        ".diff": "diff",
        ".diff_b": "diff_b",
        ".set_weight": "set_weight",
        ".w_norm": "w_norm",
        ".b_norm": "b_norm",
    }
)
# Longest first, so `.lokr_w1_a` is never read as `.lokr_w1` of a module named `..._a`.
_ENDINGS = tuple(sorted(_FACTORS, key=len, reverse=True))

_RESNET_RENAMES: Mapping[str, str] = MappingProxyType(
    {
        "in_layers.0": "norm1",
        "in_layers.2": "conv1",
        "out_layers.0": "norm2",
        "out_layers.3": "conv2",
        "emb_layers.1": "time_emb_proj",
        "skip_connection": "conv_shortcut",
    }
)
_UNET_TOP_LEVEL: Mapping[str, str] = MappingProxyType(
    {
        "input_blocks.0.0": "conv_in",
        "time_embed.0": "time_embedding.linear_1",
        "time_embed.2": "time_embedding.linear_2",
        "label_emb.0.0": "add_embedding.linear_1",
        "label_emb.0.2": "add_embedding.linear_2",
        "out.0": "conv_norm_out",
        "out.2": "conv_out",
    }
)
_CLIP_TARGETS = ("clip_l", "clip_g")
_DIFF_FIELDS: tuple[tuple[str, Param], ...] = (
    ("diff", "weight"),
    ("w_norm", "weight"),
    ("diff_b", "bias"),
    ("b_norm", "bias"),
)


class LoraError(LocalEngineError):
    """A LoRA file that cannot be read, or that does not fit the model it is applied to."""


@dataclass(frozen=True, eq=False)
class LoraAdapter:
    """LoRA / LoCon: ΔW = up · down (through `mid` for Tucker convs), scaled by alpha / rank."""

    up: Tensor
    down: Tensor
    mid: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    @property
    def kind(self) -> str:
        return "lora"


@dataclass(frozen=True, eq=False)
class LohaAdapter:
    """LoHa: ΔW = (w1a · w1b) ⊙ (w2a · w2b), each half optionally Tucker-factorised through t1 / t2."""

    w1a: Tensor
    w1b: Tensor
    w2a: Tensor
    w2b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    @property
    def kind(self) -> str:
        return "loha"


@dataclass(frozen=True, eq=False)
class LokrAdapter:
    """LoKr: ΔW = w1 ⊗ w2, each factor stored whole or as a low-rank pair (a, b) with product a · b (w2's pair
    optionally Tucker-factorised through t2)."""

    w1: Tensor | tuple[Tensor, Tensor]
    w2: Tensor | tuple[Tensor, Tensor]
    t2: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    @property
    def kind(self) -> str:
        return "lokr"


@dataclass(frozen=True, eq=False)
class DiffAdapter:
    """A full difference added to the parameter (`diff`, `diff_b`, `w_norm`, `b_norm`)."""

    diff: Tensor

    @property
    def kind(self) -> str:
        return "diff"


@dataclass(frozen=True, eq=False)
class SetAdapter:
    """A replacement value for the parameter (`set_weight`)."""

    value: Tensor

    @property
    def kind(self) -> str:
        return "set"


LowRankAdapter = LoraAdapter | LohaAdapter | LokrAdapter
Adapter = LoraAdapter | LohaAdapter | LokrAdapter | DiffAdapter | SetAdapter


@dataclass(frozen=True)
class Patch:
    """One change to one parameter (`weight` or `bias`) of the module a key names."""

    param: Param
    adapter: Adapter


@dataclass(frozen=True)
class LoraModule:
    """Everything a file holds for one module key."""

    key: str
    patches: tuple[Patch, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(patch.adapter.kind for patch in self.patches)


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A LoRA / LyCORIS file read into memory, grouped per module key; `unparsed` lists tensor names that fit
    no known adapter."""

    path: Path
    size: int
    mtime_ns: int
    metadata: Mapping[str, str]
    modules: Mapping[str, LoraModule]
    unparsed: tuple[str, ...]

    @property
    def identity(self) -> tuple[str, int, int]:
        """What makes two loads of a file the same: its path, size and modification time."""
        return (str(self.path), self.size, self.mtime_ns)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> LoraFile:
        """Read the file's adapters onto `device` (in their stored dtype); the header is validated first, so a
        checkpoint or a hostile file is refused before any tensor is read."""
        target = Path(path)
        if target.suffix.lower() in PICKLE_SUFFIXES:
            raise LoraError(f"{target}: pickle LoRA files are not loaded (unpickling runs code); use .safetensors")
        try:
            stat = target.stat()
            header = read_header(target)
        except OSError as exc:
            raise LoraError(f"cannot read LoRA {target}: {exc.strerror or exc}") from exc
        except SafetensorsError as exc:
            raise LoraError(str(exc)) from exc
        grouped, unparsed = _group(header.tensors)
        if not any(_has_adapter(fields) for fields in grouped.values()):
            first = next(iter(header.tensors), None)
            what = f"first tensor {first!r}" if first is not None else "no tensors"
            raise LoraError(
                f"{target}: not a LoRA: none of its {len(header.tensors)} tensors is a LoRA/LyCORIS weight ({what})"
            )
        modules: dict[str, LoraModule] = {}
        where = torch.device(device)
        try:
            with safe_open(str(target), framework="pt", device="cpu") as handle:
                for key, fields in grouped.items():
                    tensors = {field: handle.get_tensor(name) for field, name in fields.items()}
                    module = _build_module(target, key, tensors, where)
                    if module is None:
                        unparsed.extend(fields.values())
                    else:
                        modules[key] = module
        except (SafetensorError, OSError) as exc:
            raise LoraError(f"{target}: cannot read LoRA tensors: {exc}") from exc
        return cls(
            path=target,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            metadata=MappingProxyType(dict(header.metadata)),
            modules=MappingProxyType(modules),
            unparsed=tuple(unparsed),
        )


def _group(tensors: Mapping[str, object]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Tensor names → {module key: {factor: tensor name}}, plus the names no ending fits."""
    grouped: dict[str, dict[str, str]] = {}
    unparsed: list[str] = []
    for name in tensors:
        ending = next((end for end in _ENDINGS if name.endswith(end) and len(name) > len(end)), None)
        if ending is None:
            unparsed.append(name)
            continue
        grouped.setdefault(name[: -len(ending)], {})[_FACTORS[ending]] = name
    return grouped, unparsed


def _has_adapter(fields: Mapping[str, str]) -> bool:
    return any(field not in ("alpha", "dora_scale") for field in fields)


def _build_module(path: Path, key: str, tensors: Mapping[str, Tensor], device: torch.device) -> LoraModule | None:
    """The patches of one module key, or None when it holds only an alpha / dora_scale with nothing to scale."""

    def get(field: str) -> Tensor | None:
        value = tensors.get(field)
        return None if value is None else value.to(device)

    def need(field: str, kind: str) -> Tensor:
        value = get(field)
        if value is None:
            raise LoraError(f"{path}: {kind} module {key!r} has no {field}")
        return value

    alpha = _alpha(path, key, tensors.get("alpha"))
    dora_scale = get("dora_scale")
    families = [family for family in ("lora_", "hada_", "lokr_") if any(field.startswith(family) for field in tensors)]
    if len(families) > 1:
        raise LoraError(f"{path}: module {key!r} mixes {' and '.join(f.rstrip('_') for f in families)} factors")
    patches: list[Patch] = []
    if families == ["lora_"]:
        patches.append(
            Patch(
                "weight",
                LoraAdapter(need("lora_up", "LoRA"), need("lora_down", "LoRA"), get("lora_mid"), alpha, dora_scale),
            )
        )
    elif families == ["hada_"]:
        t1, t2 = get("hada_t1"), get("hada_t2")
        if (t1 is None) != (t2 is None):
            raise LoraError(f"{path}: LoHa module {key!r} has only one of hada_t1 / hada_t2")
        adapter: Adapter = LohaAdapter(
            need("hada_w1_a", "LoHa"),
            need("hada_w1_b", "LoHa"),
            need("hada_w2_a", "LoHa"),
            need("hada_w2_b", "LoHa"),
            t1,
            t2,
            alpha,
            dora_scale,
        )
        patches.append(Patch("weight", adapter))
    elif families == ["lokr_"]:
        whole1, whole2, t2 = get("lokr_w1"), get("lokr_w2"), get("lokr_t2")
        w1 = whole1 if whole1 is not None else (need("lokr_w1_a", "LoKr"), need("lokr_w1_b", "LoKr"))
        w2 = whole2 if whole2 is not None else (need("lokr_w2_a", "LoKr"), need("lokr_w2_b", "LoKr"))
        if t2 is not None and whole2 is not None:
            raise LoraError(f"{path}: LoKr module {key!r} has lokr_t2 with a whole lokr_w2")
        patches.append(Patch("weight", LokrAdapter(w1, w2, t2, alpha, dora_scale)))
    for field, param in _DIFF_FIELDS:
        value = get(field)
        if value is not None:
            patches.append(Patch(param, DiffAdapter(value)))
    value = get("set_weight")
    if value is not None:
        patches.append(Patch("weight", SetAdapter(value)))
    return LoraModule(key, tuple(patches)) if patches else None


def _alpha(path: Path, key: str, value: Tensor | None) -> float | None:
    if value is None:
        return None
    if value.numel() != 1:
        raise LoraError(f"{path}: alpha of module {key!r} holds {value.numel()} values, not one")
    return float(value.reshape(()).float())


def delta(
    adapter: LowRankAdapter | DiffAdapter, weight_shape: Sequence[int], *, device: torch.device | None = None
) -> Tensor:
    """ΔW of one adapter in fp32 on `device` (the factors' own device when None), reshaped to `weight_shape`.

    The adapter's own scale (alpha / rank rules) is included; the user's strength and DoRA are not.
    """
    target = device if device is not None else _device_of(adapter)

    def f32(value: Tensor) -> Tensor:
        return value.to(device=target, dtype=torch.float32)

    try:
        result, scale = _product(adapter, f32)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, IndexError) as exc:
        # Factors whose inner dimensions disagree: a damaged or hand-edited file.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoraError(f"{adapter.kind} factors do not fit together ({reason})") from exc
    shape = tuple(weight_shape)
    # Output rows must agree; the rest may be flattened (a conv LoRA's product is [out, in·kh·kw]).
    if result.numel() != _numel(shape) or (result.dim() and shape and result.shape[0] != shape[0]):
        raise LoraError(f"{adapter.kind} delta has {tuple(result.shape)}, the weight is {shape}")
    result = result.reshape(shape)
    return result * scale if scale != 1.0 else result


def _product(adapter: LowRankAdapter | DiffAdapter, f32: Callable[[Tensor], Tensor]) -> tuple[Tensor, float]:
    """The unscaled ΔW of `adapter` (factors cast by `f32`) and the scale the adapter's alpha asks for."""
    if isinstance(adapter, DiffAdapter):
        return f32(adapter.diff), 1.0
    if isinstance(adapter, LoraAdapter):
        up, down = f32(adapter.up).flatten(1), f32(adapter.down).flatten(1)
        # Tucker: ΔW[o, c, k, l] = Σ_ij up[o, i] · mid[i, j, k, l] · down[j, c]
        product = up @ down if adapter.mid is None else torch.einsum("oi,ijkl,jc->ockl", up, f32(adapter.mid), down)
        return product, _scale(adapter.alpha, adapter.down.shape[0])
    if isinstance(adapter, LohaAdapter):
        first = _low_rank(f32(adapter.w1a), f32(adapter.w1b), None if adapter.t1 is None else f32(adapter.t1))
        second = _low_rank(f32(adapter.w2a), f32(adapter.w2b), None if adapter.t2 is None else f32(adapter.t2))
        if first.shape != second.shape:
            raise LoraError(f"LoHa halves differ in shape: {tuple(first.shape)} and {tuple(second.shape)}")
        return first * second, _scale(adapter.alpha, adapter.w1b.shape[0])
    w1 = _lokr_factor(adapter.w1, None, f32)
    w2 = _lokr_factor(adapter.w2, adapter.t2, f32)
    if w2.dim() == 4 and w1.dim() == 2:
        w1 = w1[:, :, None, None]
    product = torch.kron(w1.contiguous(), w2.contiguous())  # kron views its inputs: einsum output may not allow it
    # A low-rank factor's rank scales the product; with both factorised w2's wins (trainers give both one rank).
    rank = next((pair[1].shape[0] for pair in (adapter.w2, adapter.w1) if not isinstance(pair, Tensor)), None)
    return product, _scale(adapter.alpha, rank) if rank is not None else 1.0


def merge_weight(weight: Tensor, adapter: Adapter, strength: float) -> Tensor:
    """The fp32 `weight` with `adapter` applied at `strength` (a new tensor; `weight` is not modified)."""
    if isinstance(adapter, SetAdapter):
        value = adapter.value.to(device=weight.device, dtype=torch.float32)
        if value.numel() != weight.numel():
            raise LoraError(f"set_weight has {tuple(value.shape)}, the weight is {tuple(weight.shape)}")
        return torch.lerp(weight, value.reshape(weight.shape), strength)
    change = delta(adapter, weight.shape, device=weight.device)
    dora_scale = None if isinstance(adapter, DiffAdapter) else adapter.dora_scale
    if dora_scale is None:
        return weight + change * strength
    return torch.lerp(weight, _decompose(weight + change, dora_scale), strength)


def _decompose(merged: Tensor, dora_scale: Tensor) -> Tensor:
    """DoRA: rescale `merged` so its norm per output row (or per input column) equals `dora_scale`."""
    magnitude = dora_scale.to(device=merged.device, dtype=torch.float32)
    ndim = merged.dim()
    per_output = (merged.shape[0],) + (1,) * (ndim - 1)
    per_input = (1, merged.shape[1]) + (1,) * (ndim - 2)
    if tuple(magnitude.shape) == per_output or (magnitude.dim() == 1 and magnitude.numel() == merged.shape[0]):
        dims = tuple(range(1, ndim))
        magnitude = magnitude.reshape(per_output)
    elif tuple(magnitude.shape) == per_input:
        dims = (0, *range(2, ndim))
    else:
        raise LoraError(f"dora_scale {tuple(dora_scale.shape)} fits neither axis of the weight {tuple(merged.shape)}")
    norm: Tensor = torch.linalg.vector_norm(merged, dim=dims, keepdim=True) + torch.finfo(torch.float32).eps
    return merged * (magnitude / norm)


def _lokr_factor(
    factor: Tensor | tuple[Tensor, Tensor], tucker: Tensor | None, f32: Callable[[Tensor], Tensor]
) -> Tensor:
    if isinstance(factor, Tensor):
        return f32(factor)
    return _low_rank(f32(factor[0]), f32(factor[1]), None if tucker is None else f32(tucker))


def _low_rank(a: Tensor, b: Tensor, tucker: Tensor | None) -> Tensor:
    """a · b, or the Tucker form Σ_ij t[i,j,k,l] a[i,p] b[j,r] → [p, r, k, l] (a is then [rank, out])."""
    if tucker is None:
        return a.flatten(1) @ b.flatten(1)
    return torch.einsum("ijkl,jr,ip->prkl", tucker, b.flatten(1), a.flatten(1))


def _scale(alpha: float | None, rank: int) -> float:
    return alpha / rank if alpha else 1.0


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _device_of(adapter: LowRankAdapter | DiffAdapter) -> torch.device:
    if isinstance(adapter, DiffAdapter):
        return adapter.diff.device
    if isinstance(adapter, LoraAdapter):
        return adapter.up.device
    if isinstance(adapter, LohaAdapter):
        return adapter.w1a.device
    return adapter.w1.device if isinstance(adapter.w1, Tensor) else adapter.w1[0].device


class DiffusersUNetNames:
    """diffusers module names of SGM UNet modules, from the ResBlock count of each level (§5.1).

    Input block k (after `input_blocks.0`, the stem conv) walks the levels: `num_res_blocks[level]` ResBlocks
    (each with its transformer at `.1`), then a downsampler except after the last level. Output blocks walk the
    levels deepest first with one ResBlock more per level; the upsampler is the block's last layer (`.1` or `.2`,
    a module whose only child is `conv`).
    """

    def __init__(self, num_res_blocks: Sequence[int]) -> None:
        last = len(num_res_blocks) - 1
        self._input: dict[int, tuple[int, int | None]] = {}
        index = 1
        for level, count in enumerate(num_res_blocks):
            for number in range(count):
                self._input[index] = (level, number)
                index += 1
            if level != last:
                self._input[index] = (level, None)
                index += 1
        self._output: dict[int, tuple[int, int]] = {}
        index = 0
        for up, level in enumerate(range(last, -1, -1)):
            for number in range(num_res_blocks[level] + 1):
                self._output[index] = (up, number)
                index += 1

    def name(self, sgm: str) -> str | None:
        """The diffusers name of the SGM module path `sgm`, or None when diffusers has no such module."""
        top = _UNET_TOP_LEVEL.get(sgm)
        if top is not None:
            return top
        parts = sgm.split(".")
        if parts[0] == "middle_block" and len(parts) >= 3:
            rest = parts[2:]
            if parts[1] == "1":
                return ".".join(["mid_block.attentions.0", *rest])
            if parts[1] in ("0", "2"):
                return _resnet_name(f"mid_block.resnets.{int(parts[1]) // 2}", rest)
            return None
        if len(parts) < 4 or not parts[1].isdigit():
            return None
        layer, rest = parts[2], parts[3:]
        if parts[0] == "input_blocks" and int(parts[1]) in self._input:
            level, number = self._input[int(parts[1])]
            if number is None:
                return f"down_blocks.{level}.downsamplers.0.conv" if layer == "0" and rest == ["op"] else None
            return _block_name(f"down_blocks.{level}", number, layer, rest)
        if parts[0] == "output_blocks" and int(parts[1]) in self._output:
            up, number = self._output[int(parts[1])]
            if layer in ("1", "2") and rest == ["conv"]:
                return f"up_blocks.{up}.upsamplers.0.conv"
            return _block_name(f"up_blocks.{up}", number, layer, rest)
        return None


def _block_name(block: str, number: int, layer: str, rest: list[str]) -> str | None:
    if layer == "0":
        return _resnet_name(f"{block}.resnets.{number}", rest)
    if layer == "1":
        return ".".join([f"{block}.attentions.{number}", *rest])
    return None


def _resnet_name(resnet: str, rest: list[str]) -> str | None:
    inner = _RESNET_RENAMES.get(".".join(rest))
    return None if inner is None else f"{resnet}.{inner}"


@dataclass(frozen=True)
class LoraReport:
    """What one LoRA file matched in the models: `matched` parameters, and the keys that named nothing."""

    path: Path
    matched: int
    unmatched: tuple[str, ...]

    def summary(self) -> str | None:
        """One line about the keys that matched nothing, or None when every key matched."""
        if not self.unmatched:
            return None
        names = ", ".join(self.unmatched[:REPORTED_NAMES])
        more = f" and {len(self.unmatched) - REPORTED_NAMES} more" if len(self.unmatched) > REPORTED_NAMES else ""
        return f"LoRA {self.path.name}: {len(self.unmatched)} keys matched no weight of this model: {names}{more}"


class _Index:
    """Module paths of one target model under each spelling a LoRA key may use."""

    def __init__(self, model: nn.Module, diffusers: DiffusersUNetNames | None) -> None:
        self.params: dict[str, nn.Parameter] = dict(model.named_parameters())
        modules = {name.rpartition(".")[0] for name in self.params}
        self.dotted: dict[str, str] = {}
        self.underscored: dict[str, str] = {}
        for path in modules:
            self.dotted[path] = path
            self.underscored[path.replace(".", "_")] = path
            if diffusers is not None:
                name = diffusers.name(path)
                if name is not None:
                    self.dotted.setdefault(name, path)
                    self.underscored.setdefault(name.replace(".", "_"), path)


class LoraPatcher:
    """Merges LoRA sets into `targets` ({"unet": ..., "clip_l": ..., "clip_g": ...}) and restores them exactly.

    `version` grows on every change of the weights, so caches of text encodings can key on it. The diffusers
    spelling of UNet keys needs the UNet's block layout: taken from `unet_config`, else from the config a
    `UNet` target carries; without either, diffusers-named UNet keys are reported as unmatched.
    """

    def __init__(
        self,
        targets: Mapping[str, nn.Module],
        *,
        unet_config: UNetConfig | None = None,
        backup_device: torch.device | str = "cpu",
    ) -> None:
        unet = targets.get("unet")
        config = unet_config if unet_config is not None else unet.config if isinstance(unet, UNet) else None
        diffusers = DiffusersUNetNames(config.num_res_blocks) if config is not None else None
        self._indexes = {name: _Index(model, diffusers if name == "unet" else None) for name, model in targets.items()}
        self._backup_device = torch.device(backup_device)
        self._backups: dict[tuple[str, str], Tensor] = {}
        self._applied: tuple[tuple[tuple[str, int, int], float, float], ...] = ()
        self._reports: tuple[LoraReport, ...] = ()
        self.version = 0

    @property
    def patched(self) -> int:
        """How many parameters currently differ from the original (hold a backup)."""
        return len(self._backups)

    def locate(self, key: str) -> tuple[str, str] | None:
        """The (target, module path) a LoRA module key names, or None when it names nothing here."""
        route = self._route(key)
        if route is None:
            return None
        target, rest, dotted = route
        index = self._indexes.get(target)
        if index is None:
            return None
        path = index.dotted.get(rest.replace(".processor.", ".")) if dotted else index.underscored.get(rest)
        return None if path is None else (target, path)

    def _route(self, key: str) -> tuple[str, str, bool] | None:
        single_te = "clip_l" if "clip_l" in self._indexes else "clip_g"
        routes = (
            ("lora_unet_", "unet", False),
            ("lycoris_", "unet", False),
            ("lora_te1_", "clip_l", False),
            ("lora_te2_", "clip_g", False),
            ("lora_te_", single_te, False),
            ("unet.", "unet", True),
            ("model.diffusion_model.", "unet", True),
            ("diffusion_model.", "unet", True),
            ("text_encoder.", single_te, True),
            ("text_encoder_2.", "clip_g", True),
        )
        for prefix, target, dotted in routes:
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                if target in _CLIP_TARGETS:
                    rest = rest.removeprefix("text_model." if dotted else "text_model_")
                return target, rest, dotted
        return None

    def apply(self, loras: Sequence[tuple[LoraFile, float, float]]) -> tuple[LoraReport, ...]:
        """Merge `loras` as (file, UNet strength, text-encoder strength), replacing whatever set was merged.

        The same set again is a no-op. On any error the model is restored to its original weights before the
        error propagates, so a LoRA that does not fit never leaves a half-patched model.
        """
        applied = tuple((lora.identity, float(unet), float(clip)) for lora, unet, clip in loras)
        if applied == self._applied:
            return self._reports
        self.restore()
        plan: dict[tuple[str, str], list[tuple[Adapter, float, LoraFile, str]]] = {}
        reports: list[LoraReport] = []
        for lora, unet_strength, clip_strength in loras:
            unmatched = list(lora.unparsed)
            matched = 0
            for key, module in lora.modules.items():
                place = self.locate(key)
                if place is None:
                    unmatched.append(key)
                    continue
                target, path = place
                strength = float(unet_strength if target == "unet" else clip_strength)
                for patch in module.patches:
                    name = f"{path}.{patch.param}"
                    if name not in self._indexes[target].params:
                        unmatched.append(f"{key}.{patch.param}")
                        continue
                    matched += 1
                    if strength != 0.0:
                        plan.setdefault((target, name), []).append((patch.adapter, strength, lora, key))
            report = LoraReport(lora.path, matched, tuple(unmatched))
            summary = report.summary()
            if summary is not None:
                log.warning("%s", summary)
            reports.append(report)
        try:
            self._merge(plan)
        except BaseException:
            self.restore()
            raise
        if plan:
            self.version += 1
        self._applied = applied
        self._reports = tuple(reports)
        return self._reports

    def _merge(self, plan: Mapping[tuple[str, str], list[tuple[Adapter, float, LoraFile, str]]]) -> None:
        with torch.inference_mode():
            for (target, name), patches in plan.items():
                param = self._indexes[target].params[name]
                weight = param.detach().to(torch.float32, copy=True)
                for adapter, strength, lora, key in patches:
                    try:
                        weight = merge_weight(weight, adapter, strength)
                    except LoraError as exc:
                        raise LoraError(f"LoRA {lora.path.name}: {key} does not fit {target} {name}: {exc}") from exc
                self._backups[(target, name)] = param.detach().to(self._backup_device, copy=True)
                param.copy_(weight)

    def restore(self) -> None:
        """Put back the original bits of every patched parameter and forget the merged set."""
        if self._backups:
            with torch.inference_mode():
                for (target, name), original in self._backups.items():
                    self._indexes[target].params[name].copy_(original)
            self._backups.clear()
            self.version += 1
        self._applied = ()
        self._reports = ()
