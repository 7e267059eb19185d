"""Checkpoint detection, listing, loading and caching, on small synthetic files with the real key names."""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from peropix_tui.engine.local.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    CheckpointProblem,
    MissingComponentError,
    ModelCache,
    inspect_checkpoint,
    list_checkpoints,
    load_components,
)
from peropix_tui.engine.local.errors import LocalEngineError

Tensors = dict[str, torch.Tensor]

UNET = "model.diffusion_model."
VAE = "first_stage_model."
XL_CLIP_L = "conditioner.embedders.0.transformer.text_model."
XL_CLIP_G = "conditioner.embedders.1.model."
REFINER_CLIP_G = "conditioner.embedders.0.model."
SD15_CLIP_L = "cond_stage_model.transformer.text_model."

_counter = iter(range(1_000_000))


def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor whose values differ from every other one made here, so a swapped key shows up."""
    start = next(_counter) * 1000
    count = 1
    for dim in shape:
        count *= dim
    return (torch.arange(count, dtype=torch.float64).reshape(shape) / 7 + start).to(dtype)


def unet(*, adm: int | None, context: int, in_channels: int = 4) -> Tensors:
    block = UNET + "input_blocks.4.1.transformer_blocks.0."
    sd = {
        UNET + "input_blocks.0.0.weight": t(8, in_channels, 3, 3),
        UNET + "input_blocks.0.0.bias": t(8),
        UNET + "time_embed.0.weight": t(16, 8),
        UNET + "time_embed.2.weight": t(16, 16),
        block + "attn1.to_q.weight": t(8, 8),
        block + "attn2.to_k.weight": t(8, context),
        block + "attn2.to_v.weight": t(8, context),
        UNET + "out.2.weight": t(4, 8, 3, 3),
    }
    if adm is not None:
        sd[UNET + "label_emb.0.0.weight"] = t(16, adm)
        sd[UNET + "label_emb.0.2.weight"] = t(16, 16)
    return sd


def vae() -> Tensors:
    return {
        VAE + "encoder.conv_in.weight": t(8, 3, 3, 3),
        VAE + "encoder.conv_in.bias": t(8),
        VAE + "decoder.conv_out.weight": t(3, 8, 3, 3),
        VAE + "quant_conv.weight": t(8, 8, 1, 1),
        VAE + "post_quant_conv.weight": t(4, 4, 1, 1),
    }


def clip_l(prefix: str) -> Tensors:
    return {
        prefix + "embeddings.token_embedding.weight": t(16, 8),
        prefix + "embeddings.position_embedding.weight": t(77, 8),
        prefix + "embeddings.position_ids": torch.arange(77, dtype=torch.int64)[None],
        prefix + "encoder.layers.0.self_attn.q_proj.weight": t(8, 8),
        prefix + "encoder.layers.0.mlp.fc1.weight": t(32, 8),
        prefix + "final_layer_norm.weight": t(8),
    }


def openclip(prefix: str, width: int = 8) -> Tensors:
    """A complete one-layer OpenCLIP text tower, as SDXL files store CLIP-G."""
    layer = prefix + "transformer.resblocks.0."
    return {
        prefix + "token_embedding.weight": t(16, width),
        prefix + "positional_embedding": t(77, width),
        layer + "ln_1.weight": t(width),
        layer + "ln_1.bias": t(width),
        layer + "attn.in_proj_weight": t(3 * width, width),
        layer + "attn.in_proj_bias": t(3 * width),
        layer + "attn.out_proj.weight": t(width, width),
        layer + "attn.out_proj.bias": t(width),
        layer + "ln_2.weight": t(width),
        layer + "ln_2.bias": t(width),
        layer + "mlp.c_fc.weight": t(4 * width, width),
        layer + "mlp.c_fc.bias": t(4 * width),
        layer + "mlp.c_proj.weight": t(width, 4 * width),
        layer + "mlp.c_proj.bias": t(width),
        prefix + "ln_final.weight": t(width),
        prefix + "ln_final.bias": t(width),
        prefix + "text_projection": t(width, width),
        prefix + "logit_scale": torch.tensor(4.6),
    }


def sdxl(*, in_channels: int = 4) -> Tensors:
    return unet(adm=2816, context=2048, in_channels=in_channels) | vae() | clip_l(XL_CLIP_L) | openclip(XL_CLIP_G)


def refiner() -> Tensors:
    return unet(adm=2560, context=1280) | vae() | openclip(REFINER_CLIP_G)


def sd15(*, in_channels: int = 4, clip_prefix: str = SD15_CLIP_L) -> Tensors:
    extras = {"model_ema.decay": torch.tensor(0.9999), "alphas_cumprod": t(1000), "betas": t(1000)}
    return unet(adm=None, context=768, in_channels=in_channels) | vae() | clip_l(clip_prefix) | extras


def write(path: Path, tensors: Tensors, metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text
    assert "\n" not in text
    return text


def raw_safetensors(path: Path, header: Mapping[str, object], data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


# ---- detection ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "family", "inpainting", "components"),
    [
        (sdxl, "sdxl_base", False, {"unet", "vae", "clip_l", "clip_g"}),
        (lambda: sdxl(in_channels=9), "sdxl_base", True, {"unet", "vae", "clip_l", "clip_g"}),
        (refiner, "sdxl_refiner", False, {"unet", "vae", "clip_g"}),
        (sd15, "sd15", False, {"unet", "vae", "clip_l"}),
        (lambda: sd15(in_channels=9), "sd15", True, {"unet", "vae", "clip_l"}),
        (lambda: sd15(clip_prefix="cond_stage_model.transformer."), "sd15", False, {"unet", "vae", "clip_l"}),
    ],
    ids=["sdxl", "sdxl-inpaint", "refiner", "sd15", "sd15-inpaint", "sd15-old-clip-layout"],
)
def test_family_inpainting_and_components(
    tmp_path: Path, build: Callable[[], Tensors], family: str, inpainting: bool, components: set[str]
) -> None:
    info = inspect_checkpoint(write(tmp_path / "m.safetensors", build()))
    assert info.family == family
    assert info.inpainting is inpainting
    assert set(info.components) == components
    assert info.missing == ()
    assert info.warnings == ()
    assert (info.prediction, info.ztsnr, info.prediction_source) == ("eps", False, "default")


def test_component_counts_and_dtypes_come_from_the_header(tmp_path: Path) -> None:
    sd = {k: v.half() for k, v in sdxl().items()}
    sd |= {k: v.float() for k, v in vae().items()}  # the usual fp32 VAE in an fp16 file
    path = write(tmp_path / "m.safetensors", sd)
    info = inspect_checkpoint(path)
    assert info.dtype == "F16"
    assert info.components["vae"].dtype == "F32"
    assert info.components["clip_g"].dtype == "F16"
    assert info.size == path.stat().st_size
    assert info.mtime_ns == path.stat().st_mtime_ns

    def expected(prefix: str) -> tuple[int, int, int]:
        kept = {
            k: v
            for k, v in sd.items()
            if k.startswith(prefix) and not k.endswith("position_ids") and not k.endswith("logit_scale")
        }
        return (
            len(kept),
            sum(v.numel() for v in kept.values()),
            sum(v.numel() * v.element_size() for v in kept.values()),
        )

    for name, prefix in [("unet", UNET), ("vae", VAE), ("clip_l", XL_CLIP_L), ("clip_g", XL_CLIP_G)]:
        component = info.components[name]  # type: ignore[index]
        assert component.prefix == prefix
        assert (component.tensors, component.parameters, component.nbytes) == expected(prefix)
    assert info.parameters == sum(expected(p)[1] for p in (UNET, VAE, XL_CLIP_L, XL_CLIP_G))


@pytest.mark.parametrize(
    ("markers", "prediction", "ztsnr"),
    [
        ({"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, "v", True),
        ({"v_pred": torch.tensor([])}, "v", False),
        ({"edm_mean": t(1, 4, 1, 1), "edm_std": t(1, 4, 1, 1)}, "edm", False),
        ({"edm_vpred.sigma_max": torch.tensor(500.0), "edm_vpred.sigma_min": torch.tensor(0.002)}, "v_edm", False),
    ],
    ids=["v-ztsnr", "v", "edm", "v-edm"],
)
def test_prediction_from_marker_keys(tmp_path: Path, markers: Tensors, prediction: str, ztsnr: bool) -> None:
    # metadata saying otherwise must lose against the keys
    path = write(tmp_path / "m.safetensors", sdxl() | markers, {"modelspec.prediction_type": "epsilon"})
    info = inspect_checkpoint(path)
    assert (info.prediction, info.ztsnr, info.prediction_source) == (prediction, ztsnr, "keys")


@pytest.mark.parametrize(
    ("metadata", "prediction", "source"),
    [
        ({"modelspec.prediction_type": "v"}, "v", "metadata"),
        ({"prediction_type": "v_prediction"}, "v", "metadata"),
        ({"modelspec.prediction_type": " V-Prediction "}, "v", "metadata"),
        ({"modelspec.prediction_type": "epsilon"}, "eps", "metadata"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "eps", "default"),
    ],
)
def test_prediction_from_metadata(tmp_path: Path, metadata: dict[str, str], prediction: str, source: str) -> None:
    info = inspect_checkpoint(write(tmp_path / "m.safetensors", sdxl(), metadata))
    assert (info.prediction, info.ztsnr, info.prediction_source) == (prediction, False, source)
    assert info.warnings == ()


def test_unknown_prediction_metadata_falls_back_to_eps_with_a_warning(tmp_path: Path) -> None:
    info = inspect_checkpoint(write(tmp_path / "m.safetensors", sd15(), {"prediction_type": "flow" * 30}))
    assert (info.prediction, info.prediction_source) == ("eps", "default")
    (warning,) = info.warnings
    assert "prediction_type" in warning
    assert len(warning) < 160


def test_metadata_keeps_title_and_short_modelspec_entries(tmp_path: Path) -> None:
    metadata = {
        "modelspec.title": "Anime XL",
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "modelspec.thumbnail": "data:image/png;base64," + "A" * 5000,
        "ss_tag_frequency": "{}",
        "title": "fallback",
    }
    info = inspect_checkpoint(write(tmp_path / "m.safetensors", sdxl(), metadata))
    assert dict(info.metadata) == {
        "modelspec.title": "Anime XL",
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "title": "fallback",
    }
    assert info.title == "Anime XL"
    info = inspect_checkpoint(write(tmp_path / "n.safetensors", sdxl(), {"title": "Plain"}))
    assert info.title == "Plain"


def test_a_file_without_vae_is_reported_and_loads_without_it(tmp_path: Path) -> None:
    sd = {k: v for k, v in sdxl().items() if not k.startswith(VAE)}
    path = write(tmp_path / "novae.safetensors", sd)
    info = inspect_checkpoint(path)
    assert info.missing == ("vae",)
    (warning,) = info.warnings
    assert "VAE" in warning
    assert VAE in warning
    with pytest.raises(MissingComponentError) as caught:
        load_components(path, device="cpu", dtype=torch.float32)
    message = one_line(caught.value)
    assert str(path) in message
    assert VAE in message
    loaded = load_components(path, device="cpu", dtype=torch.float32, components=["unet", "clip_l"])
    assert set(loaded) == {"unet", "clip_l"}


def test_a_file_without_text_encoders_is_still_an_sdxl_checkpoint(tmp_path: Path) -> None:
    info = inspect_checkpoint(write(tmp_path / "m.safetensors", unet(adm=2816, context=2048) | vae()))
    assert info.family == "sdxl_base"
    assert info.missing == ("clip_l", "clip_g")
    assert len(info.warnings) == 2


@pytest.mark.parametrize(
    ("tensors", "phrase"),
    [
        (unet(adm=None, context=1024) | {"cond_stage_model.model.token_embedding.weight": t(4, 4)}, "2.x"),
        (unet(adm=None, context=1024), "2.x"),
        (unet(adm=2816, context=768), "unsupported UNet (ADM input 2816, cross-attention context 768)"),
        (unet(adm=2816, context=2048, in_channels=8), "8 input channels"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": t(4, 8)}, "LoRA"),
        ({"first_stage_model.decoder.conv_out.weight": t(3, 8, 3, 3)}, "VAE alone"),
        ({"encoder.conv_in.weight": t(8, 3, 3, 3), "decoder.conv_out.weight": t(3, 8, 3, 3)}, "VAE alone"),
        ({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": t(12, 4)}, "Flux"),
        ({"conv_in.weight": t(8, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": t(8, 8, 3, 3)}, "diffusers"),
        ({"something.else": t(2)}, "no SDXL / SD 1.5 UNet"),
    ],
    ids=[
        "sd2",
        "sd2-no-te",
        "odd-dims",
        "8-channels",
        "lora",
        "vae-prefixed",
        "vae-bare",
        "flux",
        "diffusers",
        "other",
    ],
)
def test_unsupported_files_are_refused_in_one_line(tmp_path: Path, tensors: Tensors, phrase: str) -> None:
    path = write(tmp_path / "x.safetensors", tensors)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    message = one_line(caught.value)
    assert phrase in message
    assert str(path) in message
    assert isinstance(caught.value, LocalEngineError)


def test_inspect_reads_only_the_header_of_a_seven_gigabyte_file(tmp_path: Path) -> None:
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("needs /proc/self/io to count bytes read")
    shapes: dict[str, list[int]] = {
        UNET + "input_blocks.0.0.weight": [320, 4, 3, 3],
        UNET + "label_emb.0.0.weight": [1280, 2816],
        UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [640, 2048],
        VAE + "decoder.conv_out.weight": [3, 128, 3, 3],
    }
    for k in range(264):
        shapes[UNET + f"output_blocks.{k % 3}.1.transformer_blocks.{k}.ff.net.0.proj.weight"] = [10240, 1280]
    header: dict[str, object] = {"__metadata__": {"modelspec.title": "big"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    path = tmp_path / "big.safetensors"
    with path.open("wb") as fh:
        fh.write(len(encoded).to_bytes(8, "little") + encoded)
        fh.truncate(8 + len(encoded) + offset)  # sparse: the tensor data takes no disk
    assert path.stat().st_size > 6.9e9

    def read_so_far() -> int:
        fields = dict(line.split(": ") for line in io.read_text().splitlines())
        return int(fields["rchar"])

    before = read_so_far()
    info = inspect_checkpoint(path)
    after = read_so_far()
    assert after - before < len(encoded) + 64 * 1024
    assert info.family == "sdxl_base"
    assert info.components["unet"].nbytes == offset - 2 * 3 * 128 * 9
    assert info.missing == ("clip_l", "clip_g")


# ---- hostile and foreign files --------------------------------------------------------------------------


def test_hostile_header_length_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}" + b"\0" * 64)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    assert "header length" in one_line(caught.value)


def test_overlapping_offsets_are_refused(tmp_path: Path) -> None:
    header = {
        UNET + "input_blocks.0.0.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        UNET + "out.2.weight": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = raw_safetensors(tmp_path / "overlap.safetensors", header, b"\0" * 12)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    assert "overlaps" in one_line(caught.value)
    with pytest.raises(CheckpointError):
        load_components(path, device="cpu", dtype=torch.float32)


def test_truncated_file_is_refused_by_inspect_and_load(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.safetensors", sdxl())
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    for action in (inspect_checkpoint, lambda p: load_components(p, device="cpu", dtype=torch.float32)):
        with pytest.raises(CheckpointError) as caught:
            action(path)
        message = one_line(caught.value)
        assert str(path) in message
        assert "bytes" in message


def test_non_json_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{nope" + b"\0" * 10)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    assert "JSON" in one_line(caught.value)


class _Trap:
    """Unpickling this makes a folder: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "disguised.safetensors"])
def test_pickles_are_refused_and_never_unpickled(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Trap(marker), protocol=4))
    for action in (inspect_checkpoint, lambda p: load_components(p, device="cpu", dtype=torch.float32)):
        with pytest.raises(CheckpointError) as caught:
            action(path)
        assert "pickle checkpoint refused" in one_line(caught.value)
    list_checkpoints([tmp_path])
    assert not marker.exists()


def test_a_torch_zip_checkpoint_under_a_safetensors_name_is_named_as_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "renamed.safetensors"
    torch.save({"state_dict": {"x": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    assert "pickle" in one_line(caught.value)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(path)
    assert "not a regular file" in one_line(caught.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        inspect_checkpoint(tmp_path / "gone.safetensors")
    assert "cannot read" in one_line(caught.value)


# ---- listing --------------------------------------------------------------------------------------------


def test_list_checkpoints_walks_folders_safely(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    write(root / "a.safetensors", sdxl())
    write(root / "sub" / "b.safetensors", sd15())
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "link.safetensors").symlink_to(root / "a.safetensors")
    (root / "broken.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    (root / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    (root / "old.ckpt").write_bytes(b"\x80\x04junk")
    (root / "notes.txt").write_text("ignored")
    (root / "preview.png").write_bytes(b"\x89PNG")
    os.mkfifo(root / "pipe.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()

    results = list_checkpoints([root, tmp_path / "missing", empty, root])
    infos = [r for r in results if isinstance(r, CheckpointInfo)]
    problems = {r.path.name: r.message for r in results if isinstance(r, CheckpointProblem)}

    assert [(i.path.name, i.family) for i in infos] == [("a.safetensors", "sdxl_base"), ("b.safetensors", "sd15")]
    assert set(problems) == {
        "bad.safetensors",
        "broken.safetensors",
        "old.ckpt",
        "pipe.safetensors",
        "missing",
        "empty",
    }
    assert "cannot read" in problems["broken.safetensors"]
    assert "pickle checkpoint refused" in problems["old.ckpt"]
    assert "not a regular file" in problems["pipe.safetensors"]
    assert "does not exist" in problems["missing"]
    assert "no .safetensors checkpoints" in problems["empty"]
    assert all("\n" not in m and m for m in problems.values())
    assert list_checkpoints([root]) == [r for r in results if r.path.is_relative_to(root)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_folder_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    write(tmp_path / "ok.safetensors", sd15())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        results = list_checkpoints([tmp_path])
    finally:
        locked.chmod(0o755)
    assert any(isinstance(r, CheckpointInfo) for r in results)
    assert any(isinstance(r, CheckpointProblem) and "locked" in r.message for r in results)


def test_a_file_given_as_a_folder_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "a.safetensors", sd15())
    (problem,) = list_checkpoints([path])
    assert isinstance(problem, CheckpointProblem)
    assert "is not a folder" in problem.message


# ---- loading --------------------------------------------------------------------------------------------


def _without(prefix: str, sd: Tensors) -> Tensors:
    return {
        k[len(prefix) :]: v
        for k, v in sd.items()
        if k.startswith(prefix) and not k.endswith("position_ids") and not k.endswith("logit_scale")
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_load_splits_prefixes_and_casts(tmp_path: Path, dtype: torch.dtype) -> None:
    sd = sdxl() | {"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}
    path = write(tmp_path / "m.safetensors", sd)
    loaded = load_components(path, device="cpu", dtype=dtype)
    assert set(loaded) == {"unet", "vae", "clip_l", "clip_g"}
    for name, prefix in [("unet", UNET), ("vae", VAE), ("clip_l", XL_CLIP_L)]:
        expected = _without(prefix, sd)
        assert set(loaded[name]) == set(expected), name
        for key, value in expected.items():
            got = loaded[name][key]
            assert got.dtype == dtype
            assert torch.equal(got, value.to(dtype)), key
    assert "encoder.layers.0.self_attn.q_proj.weight" in loaded["clip_l"]
    assert_hf_clip_g(loaded["clip_g"], sd, XL_CLIP_G, dtype)


def assert_hf_clip_g(got: Tensors, sd: Tensors, prefix: str, dtype: torch.dtype) -> None:
    """CLIP-G arrives in HF names: in_proj split q, k, v in that order, text_projection transposed."""
    assert all(v.dtype == dtype for v in got.values())
    in_proj = sd[prefix + "transformer.resblocks.0.attn.in_proj_weight"].to(dtype)
    width = in_proj.shape[1]
    for index, part in enumerate("qkv"):
        rows = in_proj[index * width : (index + 1) * width]
        assert torch.equal(got[f"encoder.layers.0.self_attn.{part}_proj.weight"], rows)
    assert torch.equal(got["text_projection.weight"], sd[prefix + "text_projection"].to(dtype).T)
    assert torch.equal(got["embeddings.position_embedding.weight"], sd[prefix + "positional_embedding"].to(dtype))
    assert torch.equal(got["final_layer_norm.weight"], sd[prefix + "ln_final.weight"].to(dtype))
    assert torch.equal(
        got["encoder.layers.0.mlp.fc2.weight"], sd[prefix + "transformer.resblocks.0.mlp.c_proj.weight"].to(dtype)
    )
    assert "logit_scale" not in got
    assert not any(k.startswith(("transformer.", "ln_final", "positional")) for k in got)


def test_load_refiner_and_old_sd15_layout(tmp_path: Path) -> None:
    sd = refiner()
    loaded = load_components(write(tmp_path / "r.safetensors", sd), device="cpu", dtype=torch.float32)
    assert set(loaded) == {"unet", "vae", "clip_g"}
    assert_hf_clip_g(loaded["clip_g"], sd, REFINER_CLIP_G, torch.float32)

    old = sd15(clip_prefix="cond_stage_model.transformer.")
    loaded = load_components(write(tmp_path / "o.safetensors", old), device="cpu", dtype=torch.float32)
    assert set(loaded) == {"unet", "vae", "clip_l"}
    assert set(loaded["clip_l"]) == set(_without(SD15_CLIP_L, sd15()))
    for key, value in _without("cond_stage_model.transformer.", old).items():
        assert torch.equal(loaded["clip_l"][key], value)
    assert all(not k.startswith(("model_ema", "alphas")) for part in loaded.values() for k in part)


def test_load_keeps_file_precision_when_asked_for_it(tmp_path: Path) -> None:
    sd = {k: v.half() for k, v in sd15().items()}
    loaded = load_components(write(tmp_path / "m.safetensors", sd), device="cpu", dtype=torch.float16)
    assert torch.equal(loaded["unet"]["out.2.weight"], sd[UNET + "out.2.weight"])


# ---- cache ----------------------------------------------------------------------------------------------


class CountingLoader:
    """`load_components` plus a record of each call (our code, not a stand-in for it)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[Path, torch.device, torch.dtype]] = []
        self.delay_s = delay_s

    def __call__(self, path: Path, *, device: torch.device, dtype: torch.dtype) -> dict[str, Tensors]:
        self.calls.append((path, device, dtype))
        time.sleep(self.delay_s)
        return load_components(path, device=device, dtype=dtype)


def test_cache_returns_the_same_object_until_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", sd15())
    cache: ModelCache[dict[str, Tensors]] = ModelCache(capacity=2)
    loader = CountingLoader()
    first = cache.get(path, loader, device="cpu", dtype=torch.float32)
    assert cache.get(path, loader, device=torch.device("cpu"), dtype=torch.float32) is first
    assert len(loader.calls) == 1
    (key,) = cache.loaded()
    assert (key.path, key.size, key.mtime_ns) == (path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)

    # the same file through a symlink and a relative spelling is the same entry
    (tmp_path / "alias.safetensors").symlink_to(path)
    assert cache.get(tmp_path / "alias.safetensors", loader, device="cpu", dtype=torch.float32) is first
    assert len(loader.calls) == 1

    tensor_ref = weakref.ref(first["unet"]["out.2.weight"])
    del first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = cache.get(path, loader, device="cpu", dtype=torch.float32)
    assert len(loader.calls) == 2
    assert tensor_ref() is None  # the stale set was dropped, not kept beside the new one
    assert len(cache) == 1
    assert cache.get(path, loader, device="cpu", dtype=torch.float32) is second

    half = cache.get(path, loader, device="cpu", dtype=torch.float16)
    assert half is not second
    assert half["unet"]["out.2.weight"].dtype == torch.float16
    assert len(cache) == 2


def test_cache_drops_the_old_model_before_loading_the_next(tmp_path: Path) -> None:
    a = write(tmp_path / "a.safetensors", sd15())
    b = write(tmp_path / "b.safetensors", refiner())
    cache: ModelCache[dict[str, Tensors]] = ModelCache()
    ref = weakref.ref(cache.get(a, load_components, device="cpu", dtype=torch.float32)["unet"]["out.2.weight"])
    alive_during_load: list[bool] = []

    def loader(path: Path, *, device: torch.device, dtype: torch.dtype) -> dict[str, Tensors]:
        alive_during_load.append(ref() is not None)
        return load_components(path, device=device, dtype=dtype)

    cache.get(b, loader, device="cpu", dtype=torch.float32)
    assert alive_during_load == [False]
    assert [k.path.name for k in cache.loaded()] == ["b.safetensors"]


def test_cache_evicts_the_least_recently_used(tmp_path: Path) -> None:
    a, b, c = (write(tmp_path / f"{n}.safetensors", sd15()) for n in "abc")
    cache: ModelCache[dict[str, Tensors]] = ModelCache(capacity=2)
    loader = CountingLoader()
    kept = cache.get(a, loader, device="cpu", dtype=torch.float32)
    cache.get(b, loader, device="cpu", dtype=torch.float32)
    assert cache.get(a, loader, device="cpu", dtype=torch.float32) is kept  # a is now the most recent
    cache.get(c, loader, device="cpu", dtype=torch.float32)
    assert [k.path.name for k in cache.loaded()] == ["a.safetensors", "c.safetensors"]
    assert cache.get(a, loader, device="cpu", dtype=torch.float32) is kept
    assert len(loader.calls) == 3


def test_evict_releases_everything(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", sdxl())
    cache: ModelCache[dict[str, Tensors]] = ModelCache()
    refs = [
        weakref.ref(t)
        for part in cache.get(path, load_components, device="cpu", dtype=torch.float32).values()
        for t in part.values()
    ]
    assert all(r() is not None for r in refs)
    cache.evict()
    assert len(cache) == 0
    assert all(r() is None for r in refs)
    loader = CountingLoader()
    cache.get(path, loader, device="cpu", dtype=torch.float32)
    assert len(loader.calls) == 1


def test_a_failed_load_caches_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "novae.safetensors", unet(adm=None, context=768) | clip_l(SD15_CLIP_L))
    cache: ModelCache[dict[str, Tensors]] = ModelCache()
    with pytest.raises(MissingComponentError):
        cache.get(path, load_components, device="cpu", dtype=torch.float32)
    assert len(cache) == 0
    with pytest.raises(CheckpointError) as caught:
        cache.get(tmp_path / "gone.safetensors", load_components, device="cpu", dtype=torch.float32)
    assert "cannot read" in one_line(caught.value)


def test_concurrent_gets_load_once(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", sd15())
    cache: ModelCache[dict[str, Tensors]] = ModelCache()
    loader = CountingLoader(delay_s=0.2)  # a slow load: the other callers arrive while it runs
    results: list[dict[str, Tensors]] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        results.append(cache.get(path, loader, device="cpu", dtype=torch.float32))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loader.calls) == 1
    assert len(results) == 4
    assert all(r is results[0] for r in results)


def test_cache_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ModelCache(capacity=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evict_returns_gpu_memory(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", sdxl() | {UNET + "big.weight": torch.zeros(4096, 4096)})
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    cache: ModelCache[dict[str, Tensors]] = ModelCache()
    loaded = cache.get(path, load_components, device="cuda", dtype=torch.float16)
    assert loaded["unet"]["big.weight"].device.type == "cuda"
    assert loaded["unet"]["big.weight"].dtype == torch.float16
    assert cache.loaded()[0].device == torch.device("cuda", torch.cuda.current_device())
    del loaded
    assert torch.cuda.memory_allocated() > baseline
    cache.evict()
    assert torch.cuda.memory_allocated() == baseline
    assert torch.cuda.memory_reserved() < 4096 * 4096 * 2
