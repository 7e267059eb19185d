"""`LocalEngine`: the local SDXL / SD 1.5 generator as the rest of the app sees it, shaped like the NovelAI
client (`generate(request, on_progress=..., stream=...)` → `GeneratedImage`s).

- Threads. All torch work runs in one dedicated worker thread (models are not thread-safe and one GPU runs one
  job at a time); a second `generate` waits for the first. Progress is handed to the caller's event loop with
  `call_soon_threadsafe`. Checkpoint hashes for the metadata are computed on a second thread while the first
  image is generated, once per file (cached by path, size and modification time).
- Cancelling. The `CancelToken` (or cancelling the awaiting task) is checked before every model call; the
  worker then stops and `generate` raises `JobCancelled`.
- Samples. `request.n` images are made one after another with seeds seed, seed + 1, ...; each is what a
  single generation with its seed gives, and reports its steps with its `sample_index`.
- Metadata. Each PNG carries the NovelAI-style chunks the app reads everywhere (Comment JSON, Source =
  "checkpoint hash") and an A1111 `parameters` text (Model hash = AutoV2, Lora hashes = AutoV3) so other
  tools read it too.
- NovelAI-only settings. Vibes, character references, positioned character prompts, a dataset prefix and
  img2img extra noise have no local equivalent and are refused with a one-line error naming the setting.
  SMEA, variety, quality tags and the undesired-content preset are NovelAI sampling and prompt presets: they
  are ignored (with a log note). Character prompts without a position are added to the prompt (and their
  negatives to the negative) as `BREAK`-separated sections, each in its own text-encoder window.
- Request extras. `extra["clip_skip"]` (1 = last layer) sets CLIP skip for SD 1.5 models; other extras are
  NovelAI payload fields and are ignored.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from peropix_tui.core.jobs import CancelToken, JobCancelled
from peropix_tui.core.metadata import ImageMetadata, nai_fields, to_a1111_parameters
from peropix_tui.core.metadata.pngchunks import replace_text_chunks
from peropix_tui.core.prompt import extract_loras
from peropix_tui.core.safetensors import FileHashes, HashingError, compute_hashes
from peropix_tui.engine.local.checkpoint import (
    SUFFIX,
    CheckpointInfo,
    CheckpointProblem,
    ModelCache,
    list_checkpoints,
)
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.pipeline import (
    DEFAULT_PREVIEW_INTERVAL,
    LoadedModel,
    LoraFinder,
    PipelineJob,
    run,
)
from peropix_tui.engine.local.sampling import resolve_sampler
from peropix_tui.engine.local.schedules import SCHEDULER_ALIASES, resolve_scheduler
from peropix_tui.engine.local.vae import bf16_supported
from peropix_tui.engine.types import (
    Action,
    GeneratedImage,
    GenerationRequest,
    ImageInput,
    ProgressEvent,
    RequestError,
    read_image_input,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[ProgressEvent], None]

SOFTWARE: Final = "peropix-tui local engine"
MAX_SOURCE_PIXELS: Final = 8192 * 8192
"""Largest source image or mask decoded (a 64 MB file can hold a far larger picture than any target size)."""
PREVIEW_QUALITY: Final = 80
_REQUEST_TYPES: Final = {
    Action.GENERATE: "PromptGenerateRequest",
    Action.IMG2IMG: "Img2ImgRequest",
    Action.INPAINT: "NativeInfillingRequest",
}
_DTYPES: Final = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

HashKey = tuple[Path, int, int]


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; otherwise a torch device name that must be usable here."""
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise LocalEngineError(
            f"local engine device {name!r} is not a device (use auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LocalEngineError(f"local engine device {name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LocalEngineError(
                f"local engine device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type != "cpu":
        raise LocalEngineError(f"local engine device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` → bfloat16 on GPUs that have it, float16 on other GPUs, float32 on the CPU."""
    text = name.strip().lower()
    if text == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    dtype = _DTYPES.get(text)
    if dtype is None:
        raise LocalEngineError(f"local engine dtype {name!r} is not one of auto, fp32, fp16, bf16")
    return dtype


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What one request asks of the local engine, after the NovelAI-only parts were refused or set aside."""

    prompt: str
    negative: str
    clip_skip: int


def local_settings(request: GenerationRequest) -> LocalSettings:
    """Check `request` for parts only NovelAI has; raises RequestError naming the first one."""
    if request.vibes:
        raise RequestError("vibes", "vibe transfer is a NovelAI feature; the local engine cannot use it")
    if request.character_reference is not None:
        raise RequestError("character_reference", "character reference is a NovelAI feature; not available locally")
    if request.dataset is not None:
        raise RequestError("dataset", "dataset prefixes belong to NovelAI's furry model; not available locally")
    if request.noise > 0.0:
        raise RequestError("noise", "img2img extra noise is a NovelAI setting; set it to 0 for the local engine")
    characters = [c for c in request.characters if c.enabled and c.prompt.strip()]
    for number, character in enumerate(characters, 1):
        if character.position is not None:
            raise RequestError(
                "characters",
                f"character {number} has a position ({character.position}): positions are a NovelAI feature; "
                "clear it to add the character to the prompt",
            )
    ignored = [name for name, on in (("smea", request.smea), ("variety", request.variety)) if on]
    if ignored:
        log.info("the local engine ignores the NovelAI-only settings: %s", ", ".join(ignored))
    clip_skip = request.extra.get("clip_skip", 1)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12:
        raise RequestError("clip_skip", f"must be a whole number from 1 to 12, not {clip_skip!r}")
    prompt = _sections(request.prompt, [c.prompt for c in characters])
    negative = _sections(request.negative, [c.negative for c in characters])
    return LocalSettings(prompt, negative, clip_skip)


def _sections(main: str, extra: Sequence[str]) -> str:
    """`main` followed by the non-empty `extra` texts, each after a BREAK (its own text-encoder window)."""
    parts = [text for text in extra if text.strip()]
    if not parts:
        return main
    return " BREAK ".join([main, *parts] if main.strip() else parts)


class LocalEngine:
    """The local generator: checkpoints from `checkpoint_dirs`, LoRAs from `lora_dirs`.

    One model stays resident (a request for another checkpoint evicts it); `close()` evicts it on demand.
    `device` / `dtype` are "auto" or explicit ("cpu", "cuda:1"; "fp32", "fp16", "bf16").
    """

    def __init__(
        self,
        *,
        checkpoint_dirs: Sequence[Path],
        lora_dirs: Sequence[Path],
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        self.checkpoint_dirs = tuple(Path(folder).expanduser() for folder in checkpoint_dirs)
        self.lora_dirs = tuple(Path(folder).expanduser() for folder in lora_dirs)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device.type == "cuda" and self.dtype == torch.float32:
            torch.backends.cuda.matmul.allow_tf32 = True  # float32 on a GPU: TF32 matmuls, as convolutions do
        self._cache: ModelCache[LoadedModel] = ModelCache(capacity=1)
        self._finder = LoraFinder(self.lora_dirs)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peropix-local-engine")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peropix-local-hash")
        self._hashes: dict[HashKey, Future[FileHashes]] = {}
        self._lock = threading.Lock()
        self._running: set[CancelToken] = set()

    @property
    def loaded(self) -> list[Path]:
        """The checkpoints resident in memory (at most one)."""
        return [key.path for key in self._cache.loaded()]

    # Checkpoints ------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[CheckpointInfo | CheckpointProblem]:
        """Every checkpoint in the checkpoint folders (unusable files as problems, with the reason).

        Reads file headers (milliseconds each, blocking): call it from a worker, not the event loop.
        """
        return list_checkpoints(self.checkpoint_dirs)

    def resolve_model(self, name: str) -> Path:
        """The checkpoint `name` means: an absolute path, a path relative to a checkpoint folder, or a file name
        or stem found anywhere in the folders (case-insensitive). Raises LocalEngineError when none or several
        files match."""
        text = name.strip()
        if not text:
            raise LocalEngineError("no checkpoint chosen for the local engine")
        given = Path(text).expanduser()
        if given.is_absolute():
            if given.is_file():
                return given
            raise LocalEngineError(f"checkpoint {given} does not exist")
        for folder in self.checkpoint_dirs:
            for candidate in (folder / given, folder / (text + SUFFIX)):
                if candidate.is_file():
                    return candidate
        wanted = text.casefold()
        hits: dict[Path, CheckpointInfo | CheckpointProblem] = {}
        for item in self.checkpoints():
            file_name = item.path.name.casefold()
            if wanted in (file_name, file_name.removesuffix(SUFFIX), Path(file_name).stem):
                hits.setdefault(item.path.resolve(), item)
        if not hits:
            where = ", ".join(str(folder) for folder in self.checkpoint_dirs) or "no checkpoint folder is configured"
            raise LocalEngineError(f"no checkpoint named {text!r} in the checkpoint folders ({where})")
        if len(hits) > 1:
            files = ", ".join(str(item.path) for item in list(hits.values())[:3])
            raise LocalEngineError(f"checkpoint name {text!r} is ambiguous: {len(hits)} files match ({files})")
        (item,) = hits.values()
        if isinstance(item, CheckpointProblem):
            raise LocalEngineError(item.message)
        return item.path

    # Generation -------------------------------------------------------------------------------------------

    async def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        stream: bool = True,
        cancel: CancelToken | None = None,
    ) -> list[GeneratedImage]:
        """Generate the images of `request` (its seed resolved first, so every image's seed is known).

        `on_progress` gets one event per step on the caller's event loop; with `stream` each carries a small
        JPEG preview now and then (at most ~4 a second). Raises JobCancelled when cancelled.
        """
        request = request.resolved()
        settings = local_settings(request)
        loop = asyncio.get_running_loop()
        token = CancelToken()

        def cancelled() -> bool:
            return token.cancelled or (cancel is not None and cancel.cancelled)

        def report(event: ProgressEvent) -> None:
            if on_progress is None:
                return
            try:
                loop.call_soon_threadsafe(on_progress, event)
            except RuntimeError:  # the loop closed: nobody is listening any more
                log.debug("progress event dropped: the event loop is closed")

        with self._lock:
            self._running.add(token)
        try:
            return await loop.run_in_executor(
                self._worker, self._generate, request, settings, report, stream, cancelled
            )
        except asyncio.CancelledError:
            token.cancel()  # the worker stops at its next model call
            raise
        finally:
            with self._lock:
                self._running.discard(token)

    def close(self) -> None:
        """Stop running generations, then evict the model and free its memory (waits for the worker).

        Call it before the app exits: the worker thread is joined at interpreter exit, so a generation still
        running would hold the exit until it finished. The engine stays usable; the next job loads again.
        """
        with self._lock:
            for token in self._running:
                token.cancel()
        future = self._worker.submit(self._evict)
        if threading.current_thread().name.startswith("peropix-local-engine"):
            return  # called from the worker itself: the eviction runs right after
        future.result()

    def _evict(self) -> None:
        self._finder.clear()
        self._cache.evict()

    def _generate(
        self,
        request: GenerationRequest,
        settings: LocalSettings,
        report: Callable[[ProgressEvent], None],
        stream: bool,
        cancelled: Callable[[], bool],
    ) -> list[GeneratedImage]:
        if cancelled():
            raise JobCancelled("generation cancelled")
        resolve_sampler(request.sampler)
        resolve_scheduler(request.scheduler)
        path = self.resolve_model(request.model)
        model_hashes = self._hashes_of(path)
        loras = self._finder.find(settings.prompt)
        lora_hashes = [(use.name, self._hashes_of(use.file.path)) for use in loras]
        image = _open_image(request.image, "image") if request.image is not None else None
        mask = _open_image(request.mask, "mask") if request.mask is not None else None
        model = self._cache.get(path, LoadedModel.load, device=self.device, dtype=self.dtype)
        job = PipelineJob(
            prompt=settings.prompt,
            negative=settings.negative,
            width=request.width,
            height=request.height,
            steps=request.steps,
            cfg_scale=request.scale,
            cfg_rescale=request.cfg_rescale,
            sampler=request.sampler,
            scheduler=request.scheduler,
            loras=tuple(loras),
            clip_skip=settings.clip_skip,
            image=image,
            mask=mask,
            strength=request.strength,
            preview_interval=DEFAULT_PREVIEW_INTERVAL if stream else None,
        )
        results: list[GeneratedImage] = []
        for index, seed in enumerate(request.sample_seeds()):

            def on_step(step: int, total: int, preview: NDArray[np.uint8] | None, index: int = index) -> None:
                report(ProgressEvent(step, total, None if preview is None else _preview_jpeg(preview), index))

            (picture,) = run(model, replace(job, seeds=(seed,)), on_step=on_step, cancelled=cancelled)
            meta = _metadata(request, settings, model, seed, _result(model_hashes), lora_hashes)
            results.append(GeneratedImage(_png(picture, meta), "png", seed, meta, request, index))
        return results

    def _hashes_of(self, path: Path) -> Future[FileHashes]:
        """The file's hashes, computed once per (path, size, mtime) on the hashing thread."""
        try:
            st = path.stat()
        except OSError as exc:
            raise LocalEngineError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = (path.resolve(), st.st_size, st.st_mtime_ns)
        with self._lock:
            found = self._hashes.get(key)
            if found is None:
                stale = [k for k in self._hashes if k[0] == key[0]]
                for old in stale:
                    del self._hashes[old]
                found = self._hasher.submit(compute_hashes, key[0])
                self._hashes[key] = found
            return found


def _result(future: Future[FileHashes]) -> FileHashes | None:
    """The hashes, or None (logged) when the file could not be hashed: the image is still worth keeping."""
    try:
        return future.result()
    except HashingError as exc:
        log.warning("no hash in the image metadata: %s", exc)
        return None


def _open_image(source: ImageInput, field: str) -> Image.Image:
    """Decode a request's source image or mask, refusing more than MAX_SOURCE_PIXELS before decoding."""
    data = read_image_input(source, field)
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_SOURCE_PIXELS:
            raise RequestError(field, f"{image.width}x{image.height} pixels is too large (at most 8192x8192)")
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise RequestError(field, f"cannot be read as an image: {detail}") from exc
    return image


def _preview_jpeg(preview: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(preview).save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


def _sampler_id(name: str) -> str:
    """The app's (NovelAI-style) id of a local sampler, which the A1111 name map knows: `k_euler`, ..., `ddim`."""
    spec = resolve_sampler(name).name
    return spec if spec == "ddim" else "k_" + spec


def _scheduler_id(name: str) -> str:
    key = name.strip().lower()
    return SCHEDULER_ALIASES.get(key, key)


def _metadata(
    request: GenerationRequest,
    settings: LocalSettings,
    model: LoadedModel,
    seed: int,
    model_hashes: FileHashes | None,
    lora_hashes: Sequence[tuple[str, Future[FileHashes]]],
) -> ImageMetadata:
    """What made one image, for our reader and (as A1111 `parameters`) for other tools."""
    extra: dict[str, str] = {}
    if settings.clip_skip != 1:
        extra["Clip skip"] = str(settings.clip_skip)
    pairs: list[str] = []
    for name, future in lora_hashes:
        hashes = _result(future)
        if hashes is not None and hashes.autov3_short is not None:
            pairs.append(f"{name}: {hashes.autov3_short.lower()}")
    if pairs:
        extra["Lora hashes"] = ", ".join(dict.fromkeys(pairs))
    action = request.action
    return ImageMetadata(
        prompt=settings.prompt,
        negative_prompt=settings.negative,
        model=model.name,
        model_hash=None if model_hashes is None else model_hashes.autov2.lower(),
        seed=seed,
        steps=request.steps,
        cfg=float(request.scale),
        cfg_rescale=float(request.cfg_rescale) if request.cfg_rescale else None,
        sampler=_sampler_id(request.sampler),
        scheduler=_scheduler_id(request.scheduler),
        width=request.width,
        height=request.height,
        strength=float(request.strength) if action is not Action.GENERATE else None,
        n_samples=request.n,
        request_type=_REQUEST_TYPES[action],
        loras=extract_loras(settings.prompt),
        software=SOFTWARE,
        parameters_extra=extra,
    )


def _png(picture: Image.Image, meta: ImageMetadata) -> bytes:
    """The image as PNG with NovelAI-style chunks (our reader) and A1111 `parameters` (other tools)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    fields = nai_fields(meta)
    fields["parameters"] = to_a1111_parameters(meta)
    return replace_text_chunks(buffer.getvalue(), fields)
