"""LoRA / LyCORIS files: reading, key mapping onto SGM / Hugging Face parameter names, the delta formulas of every
adapter kind, and merging with a bit-exact restore.

Expected deltas are computed independently of the module: with numpy in float64, or for convolutions by running
the adapter's factors as the chain of convolutions a trainer runs. The diffusers→SGM name mapping is checked
against diffusers' own checkpoint converter, and the synthetic SGM / CLIP name tables against the engine's real
`UNet` and `ClipTextModel` parameter names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from safetensors_helpers import BOO, PEPPER, kohya_metadata
from torch import Tensor, nn

from local.tiny_unets import SD15_TINY_DIFFUSERS, SDXL_TINY_DIFFUSERS
from peropix_tui.engine.local.clip import ClipTextConfig, ClipTextModel
from peropix_tui.engine.local.lora import (
    DiffAdapter,
    DiffusersUNetNames,
    LoraAdapter,
    LoraError,
    LoraFile,
    LoraPatcher,
    LoraReport,
    delta,
)
from peropix_tui.engine.local.unet import UNet, UNetConfig

Shapes = dict[str, tuple[int, ...]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a shared 2-core box OpenMP spinning makes them 100× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# Name tables: SGM UNet and Hugging Face CLIP parameter names with their shapes (§1.2), built from the rules.


def sgm_unet_shapes(
    *,
    channels: int,
    mult: tuple[int, ...],
    res_blocks: int,
    depths: tuple[int, ...],
    middle_depth: int,
    context: int,
    adm: int | None,
    linear: bool,
) -> Shapes:
    emb = channels * 4
    shapes: Shapes = {}

    def lin(name: str, out: int, inp: int, *, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (out, inp)
        if bias:
            shapes[f"{name}.bias"] = (out,)

    def conv(name: str, out: int, inp: int, kernel: int) -> None:
        shapes[f"{name}.weight"] = (out, inp, kernel, kernel)
        shapes[f"{name}.bias"] = (out,)

    def norm(name: str, width: int) -> None:
        shapes[f"{name}.weight"] = (width,)
        shapes[f"{name}.bias"] = (width,)

    def resblock(prefix: str, cin: int, cout: int) -> None:
        norm(f"{prefix}.in_layers.0", cin)
        conv(f"{prefix}.in_layers.2", cout, cin, 3)
        lin(f"{prefix}.emb_layers.1", cout, emb)
        norm(f"{prefix}.out_layers.0", cout)
        conv(f"{prefix}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.skip_connection", cout, cin, 1)

    def transformer(prefix: str, width: int, depth: int) -> None:
        norm(f"{prefix}.norm", width)
        for proj in ("proj_in", "proj_out"):
            if linear:
                lin(f"{prefix}.{proj}", width, width)
            else:
                conv(f"{prefix}.{proj}", width, width, 1)
        for block in range(depth):
            base = f"{prefix}.transformer_blocks.{block}"
            for name in ("norm1", "norm2", "norm3"):
                norm(f"{base}.{name}", width)
            for attn, source in (("attn1", width), ("attn2", context)):
                lin(f"{base}.{attn}.to_q", width, width, bias=False)
                lin(f"{base}.{attn}.to_k", width, source, bias=False)
                lin(f"{base}.{attn}.to_v", width, source, bias=False)
                lin(f"{base}.{attn}.to_out.0", width, width)
            lin(f"{base}.ff.net.0.proj", 8 * width, width)
            lin(f"{base}.ff.net.2", width, 4 * width)

    lin("time_embed.0", emb, channels)
    lin("time_embed.2", emb, emb)
    if adm is not None:
        lin("label_emb.0.0", emb, adm)
        lin("label_emb.0.2", emb, emb)
    conv("input_blocks.0.0", channels, 4, 3)
    skips = [channels]
    width = channels
    index = 1
    last = len(mult) - 1
    for level, factor in enumerate(mult):
        for _ in range(res_blocks):
            resblock(f"input_blocks.{index}.0", width, factor * channels)
            width = factor * channels
            if depths[level]:
                transformer(f"input_blocks.{index}.1", width, depths[level])
            skips.append(width)
            index += 1
        if level != last:
            conv(f"input_blocks.{index}.0.op", width, width, 3)
            skips.append(width)
            index += 1
    resblock("middle_block.0", width, width)
    transformer("middle_block.1", width, middle_depth)
    resblock("middle_block.2", width, width)
    index = 0
    for level in range(last, -1, -1):
        for number in range(res_blocks + 1):
            resblock(f"output_blocks.{index}.0", width + skips.pop(), mult[level] * channels)
            width = mult[level] * channels
            layer = 1
            if depths[level]:
                transformer(f"output_blocks.{index}.1", width, depths[level])
                layer = 2
            if level and number == res_blocks:
                conv(f"output_blocks.{index}.{layer}.conv", width, width, 3)
            index += 1
    norm("out.0", channels)
    conv("out.2", 4, channels, 3)
    return shapes


def clip_shapes(*, width: int, layers: int, projection: int | None, vocab: int = 49408) -> Shapes:
    shapes: Shapes = {
        "embeddings.token_embedding.weight": (vocab, width),
        "embeddings.position_embedding.weight": (77, width),
        "final_layer_norm.weight": (width,),
        "final_layer_norm.bias": (width,),
    }
    for layer in range(layers):
        base = f"encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{base}.self_attn.{proj}.weight"] = (width, width)
            shapes[f"{base}.self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{base}.{norm}.weight"] = (width,)
            shapes[f"{base}.{norm}.bias"] = (width,)
        shapes[f"{base}.mlp.fc1.weight"] = (4 * width, width)
        shapes[f"{base}.mlp.fc1.bias"] = (4 * width,)
        shapes[f"{base}.mlp.fc2.weight"] = (width, 4 * width)
        shapes[f"{base}.mlp.fc2.bias"] = (width,)
    if projection is not None:
        shapes["text_projection.weight"] = (projection, width)
    return shapes


TINY_XL = {
    "channels": 32,
    "mult": (1, 2, 4),
    "res_blocks": 2,
    "depths": (0, 1, 2),
    "middle_depth": 2,
    "context": 64,
    "adm": 80,
    "linear": True,
}
TINY_SD15 = {
    "channels": 32,
    "mult": (1, 2, 2),
    "res_blocks": 2,
    "depths": (1, 1, 0),
    "middle_depth": 1,
    "context": 48,
    "adm": None,
    "linear": False,
}
SDXL = {
    "channels": 320,
    "mult": (1, 2, 4),
    "res_blocks": 2,
    "depths": (0, 2, 10),
    "middle_depth": 10,
    "context": 2048,
    "adm": 2816,
    "linear": True,
}
SD15 = {
    "channels": 320,
    "mult": (1, 2, 4, 4),
    "res_blocks": 2,
    "depths": (1, 1, 1, 0),
    "middle_depth": 1,
    "context": 768,
    "adm": None,
    "linear": False,
}

DIFFUSERS_SD15 = {"layers_per_block": 2}


class ParamTree(nn.Module):
    """A module holding parameters at exactly the given paths; `meta` builds the big name tables for free."""

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], *, dtype: torch.dtype = torch.float32, meta: bool = False
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(len(shapes))
        for name, shape in shapes.items():
            *path, leaf = name.split(".")
            node: nn.Module = self
            for part in path:
                child = dict(node.named_children()).get(part)
                if child is None:
                    child = nn.Module()
                    node.add_module(part, child)
                node = child
            value = torch.empty(shape, device="meta") if meta else torch.randn(shape, generator=generator).to(dtype)
            node.register_parameter(leaf, nn.Parameter(value, requires_grad=False))


def meta_state(shapes: Shapes) -> dict[str, Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def modules_of(shapes: Shapes) -> list[str]:
    return sorted({name.rpartition(".")[0] for name in shapes if name.endswith(".weight")})


def write(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(path), metadata=metadata)
    return path


def rand(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, generator=generator)


def snapshot(*models: nn.Module) -> list[dict[str, Tensor]]:
    return [{name: p.detach().clone() for name, p in model.named_parameters()} for model in models]


def same(model: nn.Module, saved: Mapping[str, Tensor]) -> bool:
    return all(torch.equal(p, saved[name]) for name, p in model.named_parameters())


def np64(value: Tensor) -> np.ndarray:
    return value.detach().to(torch.float64).numpy()


@pytest.fixture
def xl() -> dict[str, ParamTree]:
    return {
        "unet": ParamTree(sgm_unet_shapes(**TINY_XL)),
        "clip_l": ParamTree(clip_shapes(width=64, layers=2, projection=None, vocab=16)),
        "clip_g": ParamTree(clip_shapes(width=64, layers=2, projection=64, vocab=16)),
    }


def xl_patcher(targets: Mapping[str, nn.Module]) -> LoraPatcher:
    return LoraPatcher(targets, unet_config=UNetConfig.from_state_dict(meta_state(sgm_unet_shapes(**TINY_XL))))


def param(model: nn.Module, name: str) -> Tensor:
    return dict(model.named_parameters())[name]


# ---------------------------------------------------------------------------------------------------------------
# Delta formulas per kind


Q = "input_blocks.4.1.transformer_blocks.0.attn1.to_q"  # Linear 64 → 64
K2 = "input_blocks.4.1.transformer_blocks.0.attn2.to_k"  # Linear 64 (context) → 64
CONV = "input_blocks.1.0.in_layers.2"  # Conv 32 → 32, 3×3
CONV_UP = "input_blocks.4.0.in_layers.2"  # Conv 32 → 64, 3×3


def kohya(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def apply_one(targets: Mapping[str, nn.Module], path: Path, strength: float = 1.0) -> LoraPatcher:
    patcher = xl_patcher(targets)
    patcher.apply([(LoraFile.load(path), strength, strength)])
    return patcher


def test_lora_linear_delta_is_scaled_product(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(1)
    down, up = rand(g, 4, 64), rand(g, 64, 4)
    key = kohya(K2)
    path = write(
        tmp_path / "a.safetensors",
        {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)},
    )
    before = np64(param(xl["unet"], f"{K2}.weight"))
    apply_one(xl, path, strength=0.7)
    expected = before + 0.7 * (2.0 / 4) * (np64(up) @ np64(down))
    np.testing.assert_allclose(np64(param(xl["unet"], f"{K2}.weight")), expected, atol=1e-5)


def test_missing_alpha_means_scale_one(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(2)
    down, up = rand(g, 8, 64), rand(g, 64, 8)
    key = kohya(Q)
    path = write(tmp_path / "a.safetensors", {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up})
    before = np64(param(xl["unet"], f"{Q}.weight"))
    apply_one(xl, path)
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), before + np64(up) @ np64(down), atol=1e-5)


def conv_out(x: Tensor, weight: Tensor) -> Tensor:
    return F.conv2d(x.double(), weight.double(), padding=1)


def test_locon_conv_equals_its_convolution_chain(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(3)
    down, up = rand(g, 4, 32, 3, 3), rand(g, 64, 4, 1, 1)
    key = kohya(CONV_UP)
    path = write(
        tmp_path / "a.safetensors",
        {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(1.0)},
    )
    weight = param(xl["unet"], f"{CONV_UP}.weight")
    before = weight.clone()
    apply_one(xl, path, strength=0.5)
    x = rand(g, 2, 32, 9, 9)
    # A LoCon trains up(down(x)): a 3×3 conv to the rank, then a 1×1 conv back out.
    chain = F.conv2d(F.conv2d(x.double(), down.double(), padding=1), up.double())
    torch.testing.assert_close(conv_out(x, weight), conv_out(x, before) + 0.5 * (1.0 / 4) * chain, atol=1e-4, rtol=1e-6)


def test_locon_tucker_mid_equals_its_convolution_chain(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(4)
    down, mid, up = rand(g, 4, 32, 1, 1), rand(g, 4, 4, 3, 3), rand(g, 64, 4, 1, 1)
    key = kohya(CONV_UP)
    path = write(
        tmp_path / "a.safetensors",
        {
            f"{key}.lora_down.weight": down,
            f"{key}.lora_mid.weight": mid,
            f"{key}.lora_up.weight": up,
            f"{key}.alpha": torch.tensor(8.0),
        },
    )
    weight = param(xl["unet"], f"{CONV_UP}.weight")
    before = weight.clone()
    apply_one(xl, path)
    x = rand(g, 1, 32, 8, 8)
    # Tucker LoCon: 1×1 down to the rank, the 3×3 core rank → rank, 1×1 up.
    chain = F.conv2d(F.conv2d(F.conv2d(x.double(), down.double()), mid.double(), padding=1), up.double())
    torch.testing.assert_close(conv_out(x, weight), conv_out(x, before) + 2.0 * chain, atol=1e-4, rtol=1e-6)


def test_loha_linear(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(5)
    w1a, w1b, w2a, w2b = rand(g, 64, 4), rand(g, 4, 64), rand(g, 64, 4), rand(g, 4, 64)
    key = kohya(Q)
    tensors = {
        f"{key}.hada_w1_a": w1a,
        f"{key}.hada_w1_b": w1b,
        f"{key}.hada_w2_a": w2a,
        f"{key}.hada_w2_b": w2b,
        f"{key}.alpha": torch.tensor(2.0),
    }
    path = write(tmp_path / "a.safetensors", tensors)
    before = np64(param(xl["unet"], f"{Q}.weight"))
    apply_one(xl, path, strength=0.8)
    hadamard = (np64(w1a) @ np64(w1b)) * (np64(w2a) @ np64(w2b))
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), before + 0.8 * 0.5 * hadamard, atol=1e-4)


def tucker_rebuild(a: Tensor, b: Tensor, core: Tensor) -> np.ndarray:
    """Σ_ij core[i, j] ⊗ outer(a[i], b[j]) for a [rank, out], b [rank, in], core [rank, rank, kh, kw]."""
    left, right, middle = np64(a), np64(b), np64(core)
    out = np.zeros((left.shape[1], right.shape[1], *middle.shape[2:]))
    for i in range(left.shape[0]):
        for j in range(right.shape[0]):
            out += np.multiply.outer(np.outer(left[i], right[j]), middle[i, j])
    return out


def test_loha_tucker_conv(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(6)
    rank = 3
    halves = {}
    for half in ("1", "2"):
        halves[half] = (rand(g, rank, 64), rand(g, rank, 32), rand(g, rank, rank, 3, 3))
    key = kohya(CONV_UP)
    tensors: dict[str, Tensor] = {f"{key}.alpha": torch.tensor(6.0)}
    for half, (a, b, t) in halves.items():
        tensors |= {f"{key}.hada_w{half}_a": a, f"{key}.hada_w{half}_b": b, f"{key}.hada_t{half}": t}
    path = write(tmp_path / "a.safetensors", tensors)
    before = np64(param(xl["unet"], f"{CONV_UP}.weight"))
    apply_one(xl, path)
    expected = before + (6.0 / rank) * tucker_rebuild(*halves["1"]) * tucker_rebuild(*halves["2"])
    np.testing.assert_allclose(np64(param(xl["unet"], f"{CONV_UP}.weight")), expected, atol=1e-4)


def kron_by_index(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """W[a·o2 + b, c·i2 + d, ...] = w1[a, c] · w2[b, d, ...], written out index by index."""
    o1, i1 = w1.shape[:2]
    o2, i2 = w2.shape[:2]
    out = np.zeros((o1 * o2, i1 * i2, *w2.shape[2:]))
    for a in range(o1):
        for c in range(i1):
            out[a * o2 : (a + 1) * o2, c * i2 : (c + 1) * i2] = w1[a, c] * w2
    return out


def test_lokr_full_factors_ignore_alpha(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(7)
    w1, w2 = rand(g, 4, 8), rand(g, 16, 8)
    key = kohya(Q)
    path = write(
        tmp_path / "a.safetensors", {f"{key}.lokr_w1": w1, f"{key}.lokr_w2": w2, f"{key}.alpha": torch.tensor(3.0)}
    )
    before = np64(param(xl["unet"], f"{Q}.weight"))
    apply_one(xl, path, strength=0.5)
    expected = before + 0.5 * kron_by_index(np64(w1), np64(w2))
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), expected, atol=1e-5)


def test_lokr_factorised_scales_by_alpha_over_rank(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(8)
    w1, w2a, w2b = rand(g, 8, 4), rand(g, 8, 2), rand(g, 2, 16)
    key = kohya(Q)
    path = write(
        tmp_path / "a.safetensors",
        {f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2a, f"{key}.lokr_w2_b": w2b, f"{key}.alpha": torch.tensor(1.0)},
    )
    before = np64(param(xl["unet"], f"{Q}.weight"))
    apply_one(xl, path)
    expected = before + 0.5 * kron_by_index(np64(w1), np64(w2a) @ np64(w2b))
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), expected, atol=1e-5)


def test_lokr_conv_with_both_factors_decomposed(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(9)
    w1a, w1b = rand(g, 4, 1), rand(g, 1, 4)
    w2a, w2b = rand(g, 16, 2), rand(g, 2, 8 * 9)
    key = kohya(CONV_UP)
    tensors = {f"{key}.lokr_w1_a": w1a, f"{key}.lokr_w1_b": w1b, f"{key}.lokr_w2_a": w2a, f"{key}.lokr_w2_b": w2b}
    path = write(tmp_path / "a.safetensors", tensors | {f"{key}.alpha": torch.tensor(1.0)})
    before = np64(param(xl["unet"], f"{CONV_UP}.weight"))
    apply_one(xl, path)
    w2 = (np64(w2a) @ np64(w2b)).reshape(16, 8, 3, 3)
    # With both factors low-rank, the rank of w2 sets the scale (the trainers write one rank for both).
    expected = before + 0.5 * kron_by_index(np64(w1a) @ np64(w1b), w2)
    np.testing.assert_allclose(np64(param(xl["unet"], f"{CONV_UP}.weight")), expected, atol=1e-4)


def test_lokr_conv_with_a_tucker_w2(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(19)
    w1, w2a, w2b, t2 = rand(g, 4, 4), rand(g, 2, 16), rand(g, 2, 8), rand(g, 2, 2, 3, 3)
    key = kohya(CONV_UP)
    tensors = {f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2a, f"{key}.lokr_w2_b": w2b, f"{key}.lokr_t2": t2}
    path = write(tmp_path / "a.safetensors", tensors | {f"{key}.alpha": torch.tensor(3.0)})
    before = np64(param(xl["unet"], f"{CONV_UP}.weight"))
    apply_one(xl, path, strength=0.5)
    expected = before + 0.5 * 1.5 * kron_by_index(np64(w1)[:, :, None, None], tucker_rebuild(w2a, w2b, t2))
    np.testing.assert_allclose(np64(param(xl["unet"], f"{CONV_UP}.weight")), expected, atol=1e-4)


@pytest.mark.parametrize("axis", ["output", "input"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_dora_renormalises_along_its_axis(tmp_path: Path, xl: dict[str, ParamTree], axis: str, strength: float) -> None:
    g = torch.Generator().manual_seed(10)
    down, up = rand(g, 4, 64), rand(g, 64, 4)
    magnitude = rand(g, 64, 1).abs() + 0.5 if axis == "output" else rand(g, 1, 64).abs() + 0.5
    key = kohya(K2)
    path = write(
        tmp_path / "a.safetensors",
        {
            f"{key}.lora_down.weight": down,
            f"{key}.lora_up.weight": up,
            f"{key}.alpha": torch.tensor(2.0),
            f"{key}.dora_scale": magnitude,
        },
    )
    before = np64(param(xl["unet"], f"{K2}.weight"))
    apply_one(xl, path, strength=strength)
    merged = before + 0.5 * np64(up) @ np64(down)
    norm = np.linalg.norm(merged, axis=1 if axis == "output" else 0, keepdims=True) + np.finfo(np.float32).eps
    decomposed = np64(magnitude) * merged / norm
    expected = before + strength * (decomposed - before)
    np.testing.assert_allclose(np64(param(xl["unet"], f"{K2}.weight")), expected, atol=1e-5)
    if strength == 1.0:
        got = np64(param(xl["unet"], f"{K2}.weight"))
        norms = np.linalg.norm(got, axis=1 if axis == "output" else 0, keepdims=True)
        np.testing.assert_allclose(norms, np64(magnitude), rtol=1e-5)


def test_full_diffs_bias_diffs_norm_diffs_and_set_weight(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(11)
    out_proj = "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0"
    norm = "input_blocks.4.0.out_layers.0"
    proj = "input_blocks.4.1.proj_in"
    diff, diff_b, w_norm, b_norm, value = rand(g, 64, 64), rand(g, 64), rand(g, 64), rand(g, 64), rand(g, 64, 64)
    tensors = {
        f"{kohya(out_proj)}.diff": diff,
        f"{kohya(out_proj)}.diff_b": diff_b,
        f"{kohya(norm)}.w_norm": w_norm,
        f"{kohya(norm)}.b_norm": b_norm,
        f"{kohya(proj)}.set_weight": value,
    }
    path = write(tmp_path / "a.safetensors", tensors)
    unet = xl["unet"]
    before = {
        name: np64(param(unet, name))
        for name in (f"{out_proj}.weight", f"{out_proj}.bias", f"{norm}.weight", f"{norm}.bias", f"{proj}.weight")
    }
    lora = LoraFile.load(path)
    assert lora.modules[kohya(out_proj)].kinds == ("diff", "diff")
    assert lora.modules[kohya(proj)].kinds == ("set",)
    patcher = xl_patcher(xl)
    (report,) = patcher.apply([(lora, 0.5, 1.0)])
    assert report.matched == 5
    assert report.unmatched == ()
    np.testing.assert_allclose(
        np64(param(unet, f"{out_proj}.weight")), before[f"{out_proj}.weight"] + 0.5 * np64(diff), atol=1e-6
    )
    np.testing.assert_allclose(
        np64(param(unet, f"{out_proj}.bias")), before[f"{out_proj}.bias"] + 0.5 * np64(diff_b), atol=1e-6
    )
    np.testing.assert_allclose(
        np64(param(unet, f"{norm}.weight")), before[f"{norm}.weight"] + 0.5 * np64(w_norm), atol=1e-6
    )
    np.testing.assert_allclose(
        np64(param(unet, f"{norm}.bias")), before[f"{norm}.bias"] + 0.5 * np64(b_norm), atol=1e-6
    )
    halfway = before[f"{proj}.weight"] + 0.5 * (np64(value) - before[f"{proj}.weight"])
    np.testing.assert_allclose(np64(param(unet, f"{proj}.weight")), halfway, atol=1e-6)


def test_delta_function_matches_the_formula_and_refuses_a_wrong_shape() -> None:
    g = torch.Generator().manual_seed(12)
    up, down = rand(g, 6, 2), rand(g, 2, 5)
    adapter = LoraAdapter(up, down, alpha=1.0)
    np.testing.assert_allclose(np64(delta(adapter, (6, 5))), 0.5 * np64(up) @ np64(down), atol=1e-6)
    assert delta(adapter, (6, 5)).dtype == torch.float32
    with pytest.raises(LoraError, match=r"\(6, 5\).*\(5, 6\)"):
        delta(adapter, (5, 6))
    assert torch.equal(delta(DiffAdapter(up.half()), (6, 2)), up.half().float())
    with pytest.raises(LoraError, match="lora factors do not fit together") as caught:
        delta(LoraAdapter(up, rand(g, 3, 5)), (6, 5))  # rank 2 up, rank 3 down: a damaged file
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Merging: strengths, idempotence, restore


def several_kinds(tmp_path: Path, name: str, seed: int) -> Path:
    """A file touching UNet linears and convs and both text encoders with several adapter kinds."""
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, Tensor] = {}
    tensors |= {
        f"{kohya(Q)}.lora_down.weight": rand(g, 4, 64),
        f"{kohya(Q)}.lora_up.weight": rand(g, 64, 4),
        f"{kohya(Q)}.alpha": torch.tensor(4.0),
    }
    tensors |= {
        f"{kohya(CONV)}.lora_down.weight": rand(g, 2, 32, 3, 3),
        f"{kohya(CONV)}.lora_up.weight": rand(g, 32, 2, 1, 1),
    }
    tensors |= {f"{kohya(K2)}.lokr_w1": rand(g, 4, 4), f"{kohya(K2)}.lokr_w2": rand(g, 16, 16)}
    te1 = "lora_te1_text_model_encoder_layers_1_mlp_fc1"
    tensors |= {f"{te1}.lora_down.weight": rand(g, 4, 64), f"{te1}.lora_up.weight": rand(g, 256, 4)}
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_v_proj"
    tensors |= {
        f"{te2}.hada_w1_a": rand(g, 64, 2),
        f"{te2}.hada_w1_b": rand(g, 2, 64),
        f"{te2}.hada_w2_a": rand(g, 64, 2),
        f"{te2}.hada_w2_b": rand(g, 2, 64),
    }
    return write(tmp_path / name, {k: v * 0.05 for k, v in tensors.items()})


def test_strength_zero_changes_nothing(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    saved = snapshot(*xl.values())
    patcher = xl_patcher(xl)
    (report,) = patcher.apply([(LoraFile.load(several_kinds(tmp_path, "a.safetensors", 1)), 0.0, 0.0)])
    assert report.matched == 5
    assert all(same(model, state) for model, state in zip(xl.values(), saved, strict=True))
    assert patcher.patched == 0
    assert patcher.version == 0


def test_unet_and_text_encoder_strengths_apply_separately(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    saved = snapshot(*xl.values())
    patcher = xl_patcher(xl)
    patcher.apply([(LoraFile.load(several_kinds(tmp_path, "a.safetensors", 1)), 1.0, 0.0)])
    assert not same(xl["unet"], saved[0])
    assert same(xl["clip_l"], saved[1])
    assert same(xl["clip_g"], saved[2])
    patcher.apply([(LoraFile.load(several_kinds(tmp_path, "a.safetensors", 1)), 0.0, 1.0)])
    assert same(xl["unet"], saved[0])
    assert not same(xl["clip_l"], saved[1])
    assert not same(xl["clip_g"], saved[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_restore_gives_back_the_exact_bits(tmp_path: Path, dtype: torch.dtype) -> None:
    targets = {
        "unet": ParamTree(sgm_unet_shapes(**TINY_XL), dtype=dtype),
        "clip_l": ParamTree(clip_shapes(width=64, layers=2, projection=None, vocab=16), dtype=dtype),
        "clip_g": ParamTree(clip_shapes(width=64, layers=2, projection=64, vocab=16), dtype=dtype),
    }
    saved = snapshot(*targets.values())
    first = LoraFile.load(several_kinds(tmp_path, "a.safetensors", 1))
    second = LoraFile.load(several_kinds(tmp_path, "b.safetensors", 2))
    patcher = xl_patcher(targets)
    for loras in ([(first, 1.0, 1.0)], [(second, 0.7, 0.3)], [(first, 0.9, 1.0), (second, 0.4, 0.8)]):
        patcher.apply(loras)
        assert not same(targets["unet"], saved[0])
        assert all(p.dtype == dtype for p in targets["unet"].parameters())
    patcher.restore()
    assert patcher.patched == 0
    assert all(same(model, state) for model, state in zip(targets.values(), saved, strict=True))


def test_same_set_again_is_a_no_op_and_a_changed_file_is_not(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    path = several_kinds(tmp_path, "a.safetensors", 1)
    patcher = xl_patcher(xl)
    patcher.apply([(LoraFile.load(path), 1.0, 1.0)])
    version = patcher.version
    merged = snapshot(xl["unet"])[0]
    patcher.apply([(LoraFile.load(path), 1.0, 1.0)])  # loaded again: same file, same strengths
    assert patcher.version == version
    assert same(xl["unet"], merged)
    patcher.apply([(LoraFile.load(path), 0.5, 1.0)])
    assert patcher.version > version
    assert not same(xl["unet"], merged)
    version = patcher.version
    several_kinds(tmp_path, "a.safetensors", 3)  # rewritten in place: new contents, new mtime or size
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    patcher.apply([(LoraFile.load(path), 0.5, 1.0)])
    assert patcher.version > version


def test_a_different_set_replaces_the_previous_one(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(13)
    key = kohya(Q)
    files = []
    for name in ("a", "b"):
        down, up = rand(g, 2, 64), rand(g, 64, 2)
        files.append(
            (
                write(tmp_path / f"{name}.safetensors", {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up}),
                np64(up) @ np64(down),
            )
        )
    before = np64(param(xl["unet"], f"{Q}.weight"))
    patcher = xl_patcher(xl)
    patcher.apply([(LoraFile.load(files[0][0]), 1.0, 1.0)])
    patcher.apply([(LoraFile.load(files[1][0]), 1.0, 1.0)])
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), before + files[1][1], atol=1e-5)
    patcher.apply([(LoraFile.load(files[0][0]), 0.5, 1.0), (LoraFile.load(files[1][0]), 2.0, 1.0)])
    expected = before + 0.5 * files[0][1] + 2.0 * files[1][1]
    np.testing.assert_allclose(np64(param(xl["unet"], f"{Q}.weight")), expected, atol=1e-4)
    patcher.apply([])
    assert np.array_equal(np64(param(xl["unet"], f"{Q}.weight")), before)


def test_version_grows_on_every_change(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    lora = LoraFile.load(several_kinds(tmp_path, "a.safetensors", 1))
    patcher = xl_patcher(xl)
    seen = [patcher.version]
    patcher.apply([(lora, 1.0, 1.0)])
    seen.append(patcher.version)
    patcher.apply([(lora, 0.5, 1.0)])
    seen.append(patcher.version)
    patcher.restore()
    seen.append(patcher.version)
    patcher.restore()  # nothing left to restore
    assert seen == sorted(set(seen))
    assert patcher.version == seen[-1]


def test_a_lora_that_does_not_fit_leaves_the_model_untouched(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    saved = snapshot(*xl.values())
    g = torch.Generator().manual_seed(14)
    good = kohya(Q)
    bad = kohya(K2)  # context is 64 wide here; this LoRA was trained for a 2048-wide context
    path = write(
        tmp_path / "sd15_on_xl.safetensors",
        {
            f"{good}.lora_down.weight": rand(g, 2, 64),
            f"{good}.lora_up.weight": rand(g, 64, 2),
            f"{bad}.lora_down.weight": rand(g, 2, 2048),
            f"{bad}.lora_up.weight": rand(g, 64, 2),
        },
    )
    patcher = xl_patcher(xl)
    with pytest.raises(LoraError) as caught:
        patcher.apply([(LoraFile.load(path), 1.0, 1.0)])
    message = str(caught.value)
    assert "\n" not in message
    assert "sd15_on_xl.safetensors" in message
    assert bad in message
    assert f"{K2}.weight" in message
    assert all(same(model, state) for model, state in zip(xl.values(), saved, strict=True))
    assert patcher.patched == 0


def test_unmatched_keys_are_reported_not_fatal(
    tmp_path: Path, xl: dict[str, ParamTree], caplog: pytest.LogCaptureFixture
) -> None:
    g = torch.Generator().manual_seed(15)
    tensors = {f"{kohya(Q)}.lora_down.weight": rand(g, 2, 64), f"{kohya(Q)}.lora_up.weight": rand(g, 64, 2)}
    strays = [f"lora_unet_input_blocks_{n}_9_proj_in" for n in range(6)]
    strays.append("lora_te1_text_model_encoder_layers_7_mlp_fc1")
    for stray in strays:
        tensors |= {f"{stray}.lora_down.weight": rand(g, 1, 4), f"{stray}.lora_up.weight": rand(g, 4, 1)}
    tensors["something_else.weight"] = rand(g, 3)
    path = write(tmp_path / "stray.safetensors", tensors)
    lora = LoraFile.load(path)
    assert lora.unparsed == ("something_else.weight",)
    with caplog.at_level(logging.WARNING, logger="peropix_tui.engine.local.lora"):
        (report,) = xl_patcher(xl).apply([(lora, 1.0, 1.0)])
    assert report.matched == 1
    assert sorted(report.unmatched) == sorted([*strays, "something_else.weight"])
    summary = report.summary()
    assert summary is not None
    assert "\n" not in summary
    assert summary.startswith("LoRA stray.safetensors: 8 keys matched no weight")
    assert summary.endswith("and 3 more")
    assert summary in caplog.text
    assert LoraReport(path, 1, ()).summary() is None


# ---------------------------------------------------------------------------------------------------------------
# Key spellings


def test_every_sgm_module_is_found_under_its_kohya_name(xl: dict[str, ParamTree]) -> None:
    patcher = xl_patcher(xl)
    for module in modules_of(sgm_unet_shapes(**TINY_XL)):
        assert patcher.locate(kohya(module)) == ("unet", module)
        assert patcher.locate(f"diffusion_model.{module}") == ("unet", module)
    assert patcher.locate("lora_unet_input_blocks_4_1_transformer_blocks_0") is None  # a container, no weight


def test_text_encoder_spellings(xl: dict[str, ParamTree]) -> None:
    patcher = xl_patcher(xl)
    assert patcher.locate("lora_te1_text_model_encoder_layers_1_self_attn_q_proj") == (
        "clip_l",
        "encoder.layers.1.self_attn.q_proj",
    )
    assert patcher.locate("lora_te2_text_model_encoder_layers_0_mlp_fc2") == ("clip_g", "encoder.layers.0.mlp.fc2")
    assert patcher.locate("lora_te2_text_projection") == ("clip_g", "text_projection")
    assert patcher.locate("text_encoder.text_model.encoder.layers.1.self_attn.out_proj") == (
        "clip_l",
        "encoder.layers.1.self_attn.out_proj",
    )
    assert patcher.locate("text_encoder_2.text_model.encoder.layers.1.mlp.fc1") == (
        "clip_g",
        "encoder.layers.1.mlp.fc1",
    )
    assert patcher.locate("lora_te1_text_model_encoder_layers_2_mlp_fc1") is None  # only 2 layers here
    assert patcher.locate("lora_te3_text_model_encoder_layers_0_mlp_fc1") is None
    sd15 = LoraPatcher({"unet": xl["unet"], "clip_l": xl["clip_l"]})
    assert sd15.locate("lora_te_text_model_encoder_layers_0_mlp_fc1") == ("clip_l", "encoder.layers.0.mlp.fc1")
    refiner = LoraPatcher({"unet": xl["unet"], "clip_g": xl["clip_g"]})
    assert refiner.locate("lora_te_text_model_encoder_layers_0_mlp_fc1") == ("clip_g", "encoder.layers.0.mlp.fc1")


def test_text_encoder_loras_land_on_the_right_encoder(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(16)
    te1 = "lora_te1_text_model_encoder_layers_0_self_attn_k_proj"
    peft = "text_encoder_2.text_model.encoder.layers.1.mlp.fc2"
    d1, u1, d2, u2, dp, up_ = (
        rand(g, 2, 64),
        rand(g, 64, 2),
        rand(g, 2, 256),
        rand(g, 64, 2),
        rand(g, 2, 64),
        rand(g, 64, 2),
    )
    path = write(
        tmp_path / "te.safetensors",
        {
            f"{te1}.lora_down.weight": d1,
            f"{te1}.lora_up.weight": u1,
            f"{peft}.lora_A.weight": d2,
            f"{peft}.lora_B.weight": u2,
            "lora_te2_text_projection.lora_down.weight": dp,
            "lora_te2_text_projection.lora_up.weight": up_,
        },
    )
    before = {
        ("clip_l", "encoder.layers.0.self_attn.k_proj.weight"): np64(u1) @ np64(d1),
        ("clip_g", "encoder.layers.1.mlp.fc2.weight"): np64(u2) @ np64(d2),
        ("clip_g", "text_projection.weight"): np64(up_) @ np64(dp),
    }
    originals = {place: np64(param(xl[place[0]], place[1])) for place in before}
    saved = snapshot(xl["unet"])[0]
    (report,) = xl_patcher(xl).apply([(LoraFile.load(path), 1.0, 0.25)])
    assert report.matched == 3
    for place, change in before.items():
        np.testing.assert_allclose(np64(param(xl[place[0]], place[1])), originals[place] + 0.25 * change, atol=1e-5)
    assert same(xl["unet"], saved)


def converter_modules(shapes: Shapes, config: Mapping[str, object]) -> dict[str, str]:
    """diffusers module → SGM module, from diffusers' own LDM→diffusers checkpoint converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    names = list(shapes)
    marked = {f"model.diffusion_model.{name}": torch.tensor([float(i)]) for i, name in enumerate(names)}
    converted = convert_ldm_unet_checkpoint(marked, dict(config))
    mapping: dict[str, str] = {}
    for name, value in converted.items():
        sgm = names[int(value.item())]
        leaf, sgm_leaf = name.rpartition(".")[2], sgm.rpartition(".")[2]
        assert leaf == sgm_leaf
        mapping[name.rpartition(".")[0]] = sgm.rpartition(".")[0]
    return mapping


@pytest.mark.parametrize(
    ("layout", "config"), [(TINY_XL, SDXL_TINY_DIFFUSERS), (TINY_SD15, SD15_TINY_DIFFUSERS)], ids=["xl", "sd15"]
)
def test_diffusers_names_map_as_diffusers_converts_checkpoints(layout: dict, config: dict) -> None:
    from diffusers import UNet2DConditionModel

    shapes = sgm_unet_shapes(**layout)
    oracle = converter_modules(shapes, config)
    # The synthetic SGM table converts to exactly the parameters of a real diffusers UNet of that config.
    real = UNet2DConditionModel(**config).state_dict()
    assert {f"{module}.weight" for module in oracle} <= set(real)
    assert len(oracle) == len({name.rpartition(".")[0] for name in real})
    names = DiffusersUNetNames(UNetConfig.from_state_dict(meta_state(shapes)).num_res_blocks)
    assert {sgm: names.name(sgm) for sgm in oracle.values()} == {sgm: d for d, sgm in oracle.items()}
    patcher = LoraPatcher(
        {"unet": ParamTree(shapes, meta=True)}, unet_config=UNetConfig.from_state_dict(meta_state(shapes))
    )
    for diffusers_module, sgm in oracle.items():
        assert patcher.locate("lora_unet_" + diffusers_module.replace(".", "_")) == ("unet", sgm)
        assert patcher.locate("unet." + diffusers_module) == ("unet", sgm)
        assert patcher.locate("lycoris_" + diffusers_module.replace(".", "_")) == ("unet", sgm)


OUT2 = "output_blocks.2.1.transformer_blocks.1"
MID = "middle_block.1.transformer_blocks.0"


def test_diffusers_names_follow_uneven_res_block_counts() -> None:
    names = DiffusersUNetNames((1, 2))  # level 0: one ResBlock, level 1: two
    expected = {
        "input_blocks.1.0.in_layers.2": "down_blocks.0.resnets.0.conv1",
        "input_blocks.2.0.op": "down_blocks.0.downsamplers.0.conv",
        "input_blocks.3.1.proj_in": "down_blocks.1.attentions.0.proj_in",
        "input_blocks.4.0.skip_connection": "down_blocks.1.resnets.1.conv_shortcut",
        "output_blocks.0.0.emb_layers.1": "up_blocks.0.resnets.0.time_emb_proj",
        "output_blocks.2.1.conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks.2.2.conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks.3.0.out_layers.3": "up_blocks.1.resnets.0.conv2",
        "output_blocks.4.1.transformer_blocks.0.ff.net.2": "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2",
        "middle_block.2.in_layers.0": "mid_block.resnets.1.norm1",
        "label_emb.0.2": "add_embedding.linear_2",
    }
    assert {sgm: names.name(sgm) for sgm in expected} == expected
    for stray in (
        "output_blocks.5.0.in_layers.2",
        "input_blocks.2.1.proj_in",
        "input_blocks.1.0.in_layers.1",
        "middle_block.3.proj_in",
        "out.1",
        "input_blocks.x.0.op",
    ):
        assert names.name(stray) is None


def test_diffusers_and_peft_spellings_merge_onto_sgm_parameters(tmp_path: Path, xl: dict[str, ParamTree]) -> None:
    g = torch.Generator().manual_seed(17)
    cases = {
        # kohya with diffusers names, PEFT, old diffusers attention processors
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": Q,
        "unet.up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2": f"{OUT2}.ff.net.2",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k": f"{MID}.attn2.to_k",
        "lora_unet_up_blocks_1_resnets_2_conv1": "output_blocks.5.0.in_layers.2",
        "lora_unet_down_blocks_0_downsamplers_0_conv": "input_blocks.3.0.op",
        "lora_unet_up_blocks_1_upsamplers_0_conv": "output_blocks.5.2.conv",
    }
    suffixes = [
        (".lora_down.weight", ".lora_up.weight"),
        (".lora_A.weight", ".lora_B.weight"),
        ("_lora.down.weight", "_lora.up.weight"),
        (".lora_down.weight", ".lora_up.weight"),
        (".lora.down.weight", ".lora.up.weight"),
        (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
    ]
    unet = xl["unet"]
    tensors: dict[str, Tensor] = {}
    expected: dict[str, np.ndarray] = {}
    for (key, sgm), (down_end, up_end) in zip(cases.items(), suffixes, strict=True):
        weight = param(unet, f"{sgm}.weight")
        down, up = rand(g, 2, *weight.shape[1:]), rand(g, weight.shape[0], 2, *([1, 1] if weight.dim() == 4 else []))
        tensors |= {f"{key}{down_end}": down, f"{key}{up_end}": up}
        change = np64(up).reshape(weight.shape[0], 2) @ np64(down).reshape(2, -1)
        expected[sgm] = np64(weight) + change.reshape(weight.shape)
    (report,) = xl_patcher(xl).apply([(LoraFile.load(write(tmp_path / "d.safetensors", tensors)), 1.0, 1.0)])
    assert report.unmatched == ()
    for sgm, value in expected.items():
        np.testing.assert_allclose(np64(param(unet, f"{sgm}.weight")), value, atol=1e-4)


def test_diffusers_names_are_unmatched_without_a_unet_config(xl: dict[str, ParamTree]) -> None:
    patcher = LoraPatcher(xl)  # a bare module tree, no UNet config to lay out the blocks
    assert patcher.locate(kohya(Q)) == ("unet", Q)
    assert patcher.locate("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q") is None


def test_name_tables_are_the_engine_modules_names() -> None:
    shapes = sgm_unet_shapes(**TINY_XL)
    with torch.device("meta"):
        unet = UNet(UNetConfig.from_state_dict(meta_state(shapes)))
    assert {name: tuple(p.shape) for name, p in unet.named_parameters()} == shapes
    clip = clip_shapes(width=64, layers=2, projection=64, vocab=49408)
    with torch.device("meta"):
        text = ClipTextModel(ClipTextConfig.from_state_dict(meta_state(clip)))
    assert {name: tuple(p.shape) for name, p in text.named_parameters()} == clip


def test_merging_into_the_engine_unet_changes_its_output_and_restore_undoes_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = UNet(UNetConfig.from_state_dict(meta_state(sgm_unet_shapes(**TINY_XL)))).eval().requires_grad_(False)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.05)
    g = torch.Generator().manual_seed(18)
    x, t, context, y = rand(g, 1, 4, 8, 8), torch.tensor([500.0]), rand(g, 1, 5, 64), rand(g, 1, 80)
    key = kohya("middle_block.1.transformer_blocks.1.attn2.to_v")
    path = write(
        tmp_path / "m.safetensors",
        {f"{key}.lora_down.weight": rand(g, 4, 64), f"{key}.lora_up.weight": rand(g, 128, 4)},
    )
    patcher = LoraPatcher({"unet": unet})  # the diffusers layout comes from the UNet's own config
    assert patcher.locate("lora_unet_mid_block_attentions_0_transformer_blocks_1_attn2_to_v") == (
        "unet",
        "middle_block.1.transformer_blocks.1.attn2.to_v",
    )
    with torch.inference_mode():
        before = unet(x, t, context, y)
        patcher.apply([(LoraFile.load(path), 1.0, 1.0)])
        merged = unet(x, t, context, y)
        patcher.restore()
        after = unet(x, t, context, y)
    assert not torch.allclose(before, merged)
    assert torch.equal(before, after)


# ---------------------------------------------------------------------------------------------------------------
# Real kohya metadata on the full SDXL / SD1.5 name tables


def kohya_sdxl_modules() -> dict[str, tuple[str, str]]:
    """Every module kohya's LoRA/LoCon network wraps in SDXL: Linear/Conv layers of the transformers and
    ResBlocks, down/upsamplers, and the text encoders' attention and MLP layers."""
    shapes = sgm_unet_shapes(**SDXL)
    wrapped: dict[str, tuple[str, str]] = {}
    for module in modules_of(shapes):
        weight = shapes[f"{module}.weight"]
        in_transformer = ".transformer_blocks." in module or module.endswith(("proj_in", "proj_out"))
        in_resnet = module.endswith(("in_layers.2", "out_layers.3", "skip_connection", "emb_layers.1", ".op", ".conv"))
        if len(weight) >= 2 and (in_transformer or in_resnet) and module.startswith(("input", "middle", "output")):
            wrapped[kohya(module)] = ("unet", module)
    for prefix, target, layers in (("lora_te1_", "clip_l", 12), ("lora_te2_", "clip_g", 32)):
        for layer in range(layers):
            for name in (
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "mlp.fc1",
                "mlp.fc2",
            ):
                module = f"encoder.layers.{layer}.{name}"
                wrapped[prefix + "text_model_" + module.replace(".", "_")] = (target, module)
    return wrapped


def tiny_kohya_file(path: Path, keys: Iterable[str], metadata: dict[str, str], alpha: float) -> Path:
    tensors: dict[str, Tensor] = {}
    for key in keys:
        tensors |= {
            f"{key}.lora_down.weight": torch.zeros(1, 1, dtype=torch.float16),
            f"{key}.lora_up.weight": torch.zeros(1, 1, dtype=torch.float16),
            f"{key}.alpha": torch.tensor(alpha, dtype=torch.float16),
        }
    return write(path, tensors, metadata)


def test_real_sdxl_kohya_lora_keys_all_map() -> None:
    metadata = kohya_metadata(PEPPER)
    assert metadata["ss_base_model_version"].startswith("sdxl")
    wrapped = kohya_sdxl_modules()
    attention = [key for key in wrapped if "transformer_blocks" in key or key.endswith(("proj_in", "proj_out"))]
    assert len(attention) == 722  # the module count of every full SDXL kohya LoRA
    shapes = sgm_unet_shapes(**SDXL)
    targets = {
        "unet": ParamTree(shapes, meta=True),
        "clip_l": ParamTree(clip_shapes(width=768, layers=12, projection=None), meta=True),
        "clip_g": ParamTree(clip_shapes(width=1280, layers=32, projection=1280), meta=True),
    }
    patcher = LoraPatcher(targets, unet_config=UNetConfig.from_state_dict(meta_state(shapes)))
    assert {key: patcher.locate(key) for key in wrapped} == wrapped


def test_real_metadata_survives_loading(tmp_path: Path) -> None:
    for name, alpha in ((PEPPER, 32.0), (BOO, 4.0)):
        metadata = kohya_metadata(name)
        assert float(metadata["ss_network_alpha"]) == alpha
        keys = ["lora_unet_middle_block_1_proj_in", "lora_te1_text_model_encoder_layers_0_mlp_fc1"]
        lora = LoraFile.load(tiny_kohya_file(tmp_path / f"{alpha}.safetensors", keys, metadata, alpha))
        assert dict(lora.metadata) == metadata
        assert set(lora.modules) == set(keys)
        adapter = lora.modules[keys[0]].patches[0].adapter
        assert isinstance(adapter, LoraAdapter)
        assert adapter.alpha == alpha
        assert adapter.up.dtype == torch.float16


def test_real_sd15_kohya_lora_keys_all_map(tmp_path: Path) -> None:
    metadata = kohya_metadata(BOO)
    assert metadata["ss_sd_model_name"].startswith("v1-5")
    shapes = sgm_unet_shapes(**SD15)
    oracle = converter_modules(shapes, DIFFUSERS_SD15)
    # SD1.5 kohya files name the diffusers UNet's modules: transformers' Linear/Conv layers, ResNet convs and
    # time projections, down/upsamplers; and the single text encoder as lora_te_.
    wrapped = {
        "lora_unet_" + module.replace(".", "_"): ("unet", sgm)
        for module, sgm in oracle.items()
        if len(shapes[f"{sgm}.weight"]) >= 2 and module.startswith(("down_blocks", "mid_block", "up_blocks"))
    }
    assert "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2" in wrapped
    for layer in range(12):
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        ):
            module = f"encoder.layers.{layer}.{name}"
            wrapped["lora_te_text_model_" + module.replace(".", "_")] = ("clip_l", module)
    targets = {
        "unet": ParamTree(shapes, meta=True),
        "clip_l": ParamTree(clip_shapes(width=768, layers=12, projection=None), meta=True),
    }
    patcher = LoraPatcher(targets, unet_config=UNetConfig.from_state_dict(meta_state(shapes)))
    lora = LoraFile.load(tiny_kohya_file(tmp_path / "boo.safetensors", wrapped, metadata, 4.0))
    assert {key: patcher.locate(key) for key in lora.modules} == wrapped


# ---------------------------------------------------------------------------------------------------------------
# Files that are not LoRAs


def one_line_error(path: Path) -> str:
    with pytest.raises(LoraError) as caught:
        LoraFile.load(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_checkpoint_is_not_a_lora(tmp_path: Path) -> None:
    path = write(tmp_path / "model.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)})
    message = one_line_error(path)
    assert "not a LoRA" in message
    assert "model.diffusion_model.input_blocks.0.0.weight" in message


def test_a_truncated_file(tmp_path: Path) -> None:
    path = several_kinds(tmp_path, "cut.safetensors", 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert str(path) in one_line_error(path)


def test_pickles_missing_files_and_broken_modules(tmp_path: Path) -> None:
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"\x80\x04\x95")
    assert "pickle" in one_line_error(pickle)
    assert "cannot read LoRA" in one_line_error(tmp_path / "absent.safetensors")
    half = write(tmp_path / "half.safetensors", {"lora_unet_middle_block_1_proj_in.lora_up.weight": torch.zeros(4, 1)})
    assert "has no lora_down" in one_line_error(half)
    mixed = write(
        tmp_path / "mixed.safetensors",
        {
            "lora_unet_x.lora_up.weight": torch.zeros(4, 1),
            "lora_unet_x.lora_down.weight": torch.zeros(1, 4),
            "lora_unet_x.lokr_w1": torch.zeros(2, 2),
            "lora_unet_x.lokr_w2": torch.zeros(2, 2),
        },
    )
    assert "mixes lora and lokr" in one_line_error(mixed)
    alpha = write(
        tmp_path / "alpha.safetensors",
        {
            "lora_unet_x.lora_up.weight": torch.zeros(4, 1),
            "lora_unet_x.lora_down.weight": torch.zeros(1, 4),
            "lora_unet_x.alpha": torch.zeros(3),
        },
    )
    assert "alpha" in one_line_error(alpha)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert str(garbage) in one_line_error(garbage)
