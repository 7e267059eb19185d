"""Single-file SDXL / SD 1.5 checkpoints: what a file is (from its header alone), its tensors per component,
and a cache that keeps loaded models until the file changes.

Everything about a checkpoint is decided from the safetensors header: the family from the UNet's tensor
shapes (ADM input width and cross-attention context width), inpainting from the UNet's input channels, the
prediction type from marker keys (`v_pred`, `ztsnr`, `edm_*`) or, failing those, from the file's metadata.
That keeps a scan of a folder of 7 GB files at a few milliseconds per file. Pickle checkpoints (`.ckpt`,
`.pt`, ...) are refused by name and by content: unpickling runs whatever code the file holds.

Loading reads one tensor at a time and casts it to the working dtype straight away, so at most one tensor
exists in two dtypes at once. Tensors outside the known component prefixes (EMA copies, schedule buffers,
marker keys) are never read.
"""

from __future__ import annotations

import gc
import logging
import os
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Generic, Literal, Protocol, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from peropix_tui.core.folder_walk import FolderWalk
from peropix_tui.core.safetensors import SafetensorsError, SafetensorsHeader, TensorInfo, read_header
from peropix_tui.engine.local.clip import openclip_to_hf
from peropix_tui.engine.local.errors import LocalEngineError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)

Family = Literal["sdxl_base", "sdxl_refiner", "sd15"]
Component = Literal["unet", "vae", "clip_l", "clip_g"]
Prediction = Literal["eps", "v", "edm", "v_edm"]
PredictionSource = Literal["keys", "metadata", "default"]

SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
METADATA_VALUE_LIMIT = 1024  # longer values (modelspec.thumbnail data URLs) stay in the file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
SD15_CLIP_L_PREFIX = "cond_stage_model.transformer.text_model."
SD15_CLIP_L_OLD_PREFIX = "cond_stage_model.transformer."  # written by old transformers: no `text_model.` level

FAMILY_COMPONENTS: Mapping[Family, tuple[Component, ...]] = MappingProxyType(
    {
        "sdxl_base": ("unet", "vae", "clip_l", "clip_g"),
        "sdxl_refiner": ("unet", "vae", "clip_g"),
        "sd15": ("unet", "vae", "clip_l"),
    }
)

_LABELS: Mapping[Component, str] = MappingProxyType(
    {"unet": "UNet", "vae": "VAE", "clip_l": "CLIP-L text encoder", "clip_g": "CLIP-G text encoder"}
)
# (ADM input width, cross-attention context width) of the UNet -> family; None = no `label_emb`.
_FAMILY_BY_DIMS: Mapping[tuple[int | None, int], Family] = MappingProxyType(
    {(2816, 2048): "sdxl_base", (2560, 1280): "sdxl_refiner", (None, 768): "sd15"}
)
_IN_CHANNELS = {4: False, 9: True}  # UNet input channels -> inpainting
_V_VALUES = frozenset({"v", "v_prediction", "v-prediction", "vpred", "v_pred"})
_EPS_VALUES = frozenset({"eps", "epsilon"})
_PREDICTION_META_KEYS = ("modelspec.prediction_type", "prediction_type")


class CheckpointError(LocalEngineError):
    """A file that is not a usable SDXL / SD 1.5 checkpoint, or whose tensors cannot be read."""


class MissingComponentError(CheckpointError):
    """A component the caller needs (often the VAE or the text encoders) is not in the file."""


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """One component as the header describes it; `dtype` is the safetensors dtype holding most of its bytes."""

    name: Component
    prefix: str
    tensors: int
    parameters: int
    nbytes: int
    dtype: str


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What a checkpoint file is, read from its header only.

    `missing` names the components of the family the file lacks (a separate VAE or text encoder file is
    then needed); `warnings` are one-line notes for the user. `metadata` holds `title` and the `modelspec.*`
    entries of at most METADATA_VALUE_LIMIT characters.
    """

    path: Path
    size: int
    mtime_ns: int
    family: Family
    inpainting: bool
    prediction: Prediction
    ztsnr: bool
    prediction_source: PredictionSource
    dtype: str
    components: Mapping[Component, ComponentInfo]
    missing: tuple[Component, ...]
    metadata: Mapping[str, str]
    warnings: tuple[str, ...]

    @property
    def title(self) -> str:
        return self.metadata.get("modelspec.title") or self.metadata.get("title") or ""

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components.values())


@dataclass(frozen=True, slots=True)
class CheckpointProblem:
    """A file or folder a checkpoint scan could not use, with the one-line reason."""

    path: Path
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a file is, plus the `(name in the file, name in the component)` pairs of each present component."""

    info: CheckpointInfo
    names: Mapping[Component, tuple[tuple[str, str], ...]]


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Describe the checkpoint at `path` from its header; raises CheckpointError for anything unusable."""
    return _layout(Path(path)).info


def load_components(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    components: Sequence[Component] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors per component, prefixes removed, floating tensors cast to `dtype` on `device`.

    `components` defaults to every component of the file's family; asking for one the file lacks raises
    MissingComponentError. "clip_g" comes back in Hugging Face names, converted from its OpenCLIP layout.
    """
    target = Path(path)
    layout = _layout(target)
    wanted = FAMILY_COMPONENTS[layout.info.family] if components is None else tuple(components)
    for name in wanted:
        if name not in layout.names:
            raise MissingComponentError(
                f"{target}: no {_LABELS[name]} ({_component_prefix(layout.info.family, name)}*) in this checkpoint"
            )
    where = str(torch.device(device))
    started = time.perf_counter()
    result: dict[str, dict[str, torch.Tensor]] = {}
    current = ""
    try:
        with safe_open(str(target), framework="pt", device=where) as handle:
            for name in wanted:
                tensors: dict[str, torch.Tensor] = {}
                for current, short in layout.names[name]:
                    tensor: torch.Tensor = handle.get_tensor(current)
                    if tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    tensors[short] = tensor
                result[name] = openclip_to_hf(tensors) if name == "clip_g" else tensors
    except (SafetensorError, OSError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{target}: cannot read tensor {current or '(header)'}: {detail}") from exc
    log.info("loaded %s from %s in %.2f s", ", ".join(wanted), target, time.perf_counter() - started)
    return result


def list_checkpoints(folders: Sequence[str | os.PathLike[str]]) -> list[CheckpointInfo | CheckpointProblem]:
    """Every checkpoint under `folders` (recursive, following links, each real file once), in a stable order.

    Unusable `.safetensors` files, `.ckpt` pickles, missing folders and folders holding no checkpoint at all
    become CheckpointProblem entries, so one bad file never hides the rest.
    """
    walk = FolderWalk()
    results: list[CheckpointInfo | CheckpointProblem] = []
    for raw in folders:
        folder = Path(raw).expanduser()
        if not folder.is_dir():
            reason = "is not a folder" if folder.exists() else "does not exist"
            results.append(CheckpointProblem(folder, f"{folder}: checkpoint folder {reason}"))
            continue
        if walk.seen(folder):
            continue  # the same folder configured twice, or one inside another already walked
        before = len(results)
        for item in _walk(walk, folder):
            if isinstance(item, CheckpointProblem):
                results.append(item)
                continue
            try:
                results.append(inspect_checkpoint(item))
            except CheckpointError as exc:
                results.append(CheckpointProblem(item, str(exc)))
        if len(results) == before:
            results.append(CheckpointProblem(folder, f"{folder}: no {SUFFIX} checkpoints in this folder"))
    return results


class Loader(Protocol[_T_co]):
    """Loads a model set from a file for one device and dtype; `load_components` is one."""

    def __call__(self, path: Path, *, device: torch.device, dtype: torch.dtype) -> _T_co: ...


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Which file (by its resolved path, size and modification time) loaded for which device and dtype."""

    path: Path
    size: int
    mtime_ns: int
    dtype: torch.dtype
    device: torch.device


class ModelCache(Generic[_T]):
    """Loaded model sets, kept until their file changes or room is needed (least recently used goes first).

    A miss drops what it replaces BEFORE loading, so two versions of a multi-gigabyte model never share
    the GPU. Access is serialised, so two callers asking for the same file load it once.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"ModelCache capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[CacheKey, _T] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def loaded(self) -> list[CacheKey]:
        """What is loaded, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(
        self, path: str | os.PathLike[str], loader: Loader[_T], *, device: torch.device | str, dtype: torch.dtype
    ) -> _T:
        """The cached model set for `path`, loaded with `loader` when absent or when the file changed."""
        key = _cache_key(Path(path), torch.device(device), dtype)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            stale = [
                k for k in self._entries if k.path == key.path and (k.size, k.mtime_ns) != (key.size, key.mtime_ns)
            ]
            for old in stale:
                del self._entries[old]
            released = bool(stale) or len(self._entries) >= self.capacity
            while len(self._entries) >= self.capacity:
                self._entries.popitem(last=False)
            if released:
                _release_memory()
            value = loader(key.path, device=key.device, dtype=key.dtype)
            self._entries[key] = value
            return value

    def evict(self) -> None:
        """Drop every cached model set and hand the freed memory back to the driver.

        Memory only comes back when nothing else holds the tensors: callers must also drop their own
        references (modules, LoRA backups, cached embeddings, compiled graphs) before or after this call.
        """
        with self._lock:
            self._entries.clear()
            _release_memory()


def _release_memory() -> None:
    """Collect reference cycles, then return cached CUDA blocks (and IPC handles) to the driver."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()  # type: ignore[no-untyped-call]


def _cache_key(path: Path, device: torch.device, dtype: torch.dtype) -> CacheKey:
    resolved = path.expanduser().resolve()
    try:
        st = resolved.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if str(device) == "cuda":  # no index: the current device, named so that both spellings share entries
        device = torch.device("cuda", torch.cuda.current_device())
    return CacheKey(resolved, st.st_size, st.st_mtime_ns, dtype, device)


def _walk(walk: FolderWalk, folder: Path) -> Iterator[Path | CheckpointProblem]:
    """The checkpoint files under `folder`, with what cannot be one (a pickle, a FIFO, an unreadable file)."""
    problems: list[CheckpointProblem] = []

    def failed(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        problems.append(CheckpointProblem(where, f"cannot read folder {where}: {exc.strerror or exc}"))

    for path, st in walk.files(folder, (SUFFIX, ".ckpt"), failed):
        yield from problems
        problems.clear()
        if path.suffix.lower() == ".ckpt":
            yield CheckpointProblem(path, _pickle_message(path))
        elif isinstance(st, OSError):
            yield CheckpointProblem(path, f"cannot read {path}: {st.strerror or st}")
        elif not stat.S_ISREG(st.st_mode):
            yield CheckpointProblem(path, f"{path}: not a regular file")
        else:
            yield path
    yield from problems


def _layout(path: Path) -> _Layout:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(_pickle_message(path))
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    try:
        header = read_header(path)
    except SafetensorsError as exc:
        if _starts_like_pickle(path):
            raise CheckpointError(_pickle_message(path)) from exc
        raise CheckpointError(str(exc)) from exc
    family, inpainting = _family(header, path)
    names = _component_names(header, family)
    components = {name: _component_info(name, prefix, header.tensors, pairs) for name, (prefix, pairs) in names.items()}
    missing = tuple(c for c in FAMILY_COMPONENTS[family] if c not in components)
    prediction, ztsnr, source, note = _prediction(header)
    warnings = [
        f"no {_LABELS[c]} in this file ({_component_prefix(family, c)}*): a separate one is needed" for c in missing
    ]
    if note:
        warnings.append(note)
    metadata = {
        k: v
        for k, v in header.metadata.items()
        if (k == "title" or k.startswith("modelspec.")) and len(v) <= METADATA_VALUE_LIMIT
    }
    info = CheckpointInfo(
        path=path,
        size=header.file_size,
        mtime_ns=st.st_mtime_ns,
        family=family,
        inpainting=inpainting,
        prediction=prediction,
        ztsnr=ztsnr,
        prediction_source=source,
        dtype=components["unet"].dtype,
        components=MappingProxyType(components),
        missing=missing,
        metadata=MappingProxyType(metadata),
        warnings=tuple(warnings),
    )
    return _Layout(info, MappingProxyType({name: pairs for name, (_, pairs) in names.items()}))


def _family(header: SafetensorsHeader, path: Path) -> tuple[Family, bool]:
    """Family from the UNet's ADM and context widths; inpainting from its input channels."""
    tensors = header.tensors
    first = tensors.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if first is None:
        raise CheckpointError(f"{path}: {_not_a_checkpoint(tensors)}")
    to_k = next(
        (
            info
            for name, info in tensors.items()
            if name.startswith(UNET_PREFIX) and name.endswith(".attn2.to_k.weight")
        ),
        None,
    )
    context = _dim(to_k, 1)
    label = tensors.get(UNET_PREFIX + "label_emb.0.0.weight")
    adm = None if label is None else _dim(label, 1)
    if context == 1024 or any(name.startswith("cond_stage_model.model.") for name in tensors):
        raise CheckpointError(f"{path}: Stable Diffusion 2.x checkpoints are not supported (only SDXL and SD 1.5)")
    family = None if context is None else _FAMILY_BY_DIMS.get((adm, context))
    if family is None:
        raise CheckpointError(
            f"{path}: unsupported UNet (ADM input {adm or 'none'}, cross-attention context {context or 'none'}): "
            "only SDXL base, SDXL refiner and SD 1.5 checkpoints are supported"
        )
    channels = _dim(first, 1)
    if channels not in _IN_CHANNELS:
        raise CheckpointError(
            f"{path}: the UNet takes {channels} input channels: only 4 (text-to-image) and 9 (inpainting) are supported"
        )
    return family, _IN_CHANNELS[channels]


def _dim(info: TensorInfo | None, axis: int) -> int | None:
    return info.shape[axis] if info is not None and len(info.shape) > axis else None


def _not_a_checkpoint(tensors: Mapping[str, TensorInfo]) -> str:
    """Why a file without an SGM UNet is not a checkpoint, named as precisely as its keys allow."""
    names = tensors.keys()
    if any(n.startswith(("lora_", "lycoris_")) or ".lora_down." in n or ".lora_A." in n for n in names):
        return "this is a LoRA, not a checkpoint: put it in a LoRA folder"
    if any("double_blocks." in n for n in names):
        return "Flux models are not supported (only SDXL and SD 1.5)"
    if any("joint_blocks." in n for n in names):
        return "Stable Diffusion 3 models are not supported (only SDXL and SD 1.5)"
    if any(n.startswith(("down_blocks.", "conv_in.")) for n in names):
        return "a UNet in diffusers layout: only single-file checkpoints are supported"
    if any(n.startswith((VAE_PREFIX, "encoder.", "decoder.")) for n in names):
        return "this is a VAE alone, not a checkpoint"
    return f"no SDXL / SD 1.5 UNet ({UNET_PREFIX}input_blocks.*) in this file"


def _component_prefix(family: Family, name: Component) -> str:
    if name == "unet":
        return UNET_PREFIX
    if name == "vae":
        return VAE_PREFIX
    if name == "clip_l":
        return SD15_CLIP_L_PREFIX if family == "sd15" else SDXL_CLIP_L_PREFIX
    return REFINER_CLIP_G_PREFIX if family == "sdxl_refiner" else SDXL_CLIP_G_PREFIX


def _component_names(
    header: SafetensorsHeader, family: Family
) -> dict[Component, tuple[str, tuple[tuple[str, str], ...]]]:
    """Per present component: its prefix and the `(file name, name without prefix)` pairs to load."""
    prefixes = {name: _component_prefix(family, name) for name in FAMILY_COMPONENTS[family]}
    if family == "sd15" and not any(n.startswith(SD15_CLIP_L_PREFIX) for n in header.tensors):
        prefixes["clip_l"] = SD15_CLIP_L_OLD_PREFIX
    found: dict[Component, list[tuple[str, str]]] = {name: [] for name in prefixes}
    for full in header.tensors:
        for name, prefix in prefixes.items():
            if full.startswith(prefix):
                short = full[len(prefix) :]
                if not short.endswith("position_ids") and short != "logit_scale":
                    found[name].append((full, short))
                break
    return {name: (prefixes[name], tuple(pairs)) for name, pairs in found.items() if pairs}


def _component_info(
    name: Component, prefix: str, tensors: Mapping[str, TensorInfo], pairs: tuple[tuple[str, str], ...]
) -> ComponentInfo:
    parameters = 0
    nbytes = 0
    by_dtype: Counter[str] = Counter()
    for full, _ in pairs:
        info = tensors[full]
        count = 1
        for dim in info.shape:
            count *= dim
        parameters += count
        nbytes += info.nbytes
        by_dtype[info.dtype] += info.nbytes
    dtype = max(sorted(by_dtype), key=by_dtype.__getitem__)
    return ComponentInfo(name, prefix, len(pairs), parameters, nbytes, dtype)


def _prediction(header: SafetensorsHeader) -> tuple[Prediction, bool, PredictionSource, str | None]:
    """Prediction type and zero-terminal-SNR flag: marker keys first, then the metadata, else epsilon."""
    names = header.tensors
    if "edm_mean" in names and "edm_std" in names:
        return "edm", False, "keys", None
    if "edm_vpred.sigma_max" in names:
        return "v_edm", False, "keys", None
    if "v_pred" in names:
        return "v", "ztsnr" in names, "keys", None
    for key in _PREDICTION_META_KEYS:
        raw = header.metadata.get(key, "").strip()
        if not raw:
            continue
        value = raw.lower()
        if value in _V_VALUES:
            return "v", "ztsnr" in names, "metadata", None
        if value in _EPS_VALUES:
            return "eps", False, "metadata", None
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        return "eps", False, "default", f"unknown {key} {shown!r} in the metadata: assuming epsilon prediction"
    return "eps", False, "default", None


def _starts_like_pickle(path: Path) -> bool:
    """A torch zip archive or a raw pickle (protocol 2 to 5) saved under another name."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _pickle_message(path: Path) -> str:
    return (
        f"{path}: pickle checkpoint refused: loading it could run code hidden in the file; "
        "use a .safetensors version of this model"
    )
