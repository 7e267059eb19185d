"""One generation on a loaded checkpoint: prompt → conditioning → sampling → VAE decode → images.

`LoadedModel` is everything one checkpoint needs resident (UNet, VAE, text encoders, noise schedule, LoRA
patcher); `LoadedModel.load` is the loader a `ModelCache` calls, so one model stays resident and a new file
evicts the old one. `run` takes a `PipelineJob` and returns PIL images. Choices, and why:

- LoRA. The `<lora:name:te:unet>` tags of the prompt are merged into the weights (`LoraPatcher`) before the
  prompt is encoded, because text-encoder LoRAs change the encoding; the merge is kept while the next job asks
  for the same set and restored bit for bit when the set changes. Files are found by `LoraFinder` through the
  LoRA library's names (file stem or kohya `ss_output_name`).
- Noise. `NoiseSource` draws on the CPU per seed, so a seed gives the same image on any device, and sample i
  of a batch equals a single generation with seed i. Sampling runs in float32 latents; the UNet casts to its
  own dtype inside.
- img2img. The source is resized to the target size ("just resize") and VAE-encoded to its posterior mean
  (deterministic), and sampling starts `strength` of the way up the schedule.
- Inpainting. White in the mask means "repaint". A 9-channel inpainting UNet gets the mask and the latent of
  the masked-out source as extra input channels; any other model keeps the unmasked latent by blending it back
  at every step. Either way the decoded image is composited over the source with the full-size mask, so
  unmasked pixels come back exactly as they were (the VAE round trip alone would blur them).
- Previews. Each step reports to `on_step`; a preview (the denoised latent through the latent format's linear
  RGB map, at latent resolution) is made on the first step and then at most every `preview_interval` seconds,
  since it is the one thing in the loop that waits for the device.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image, ImageOps

from peropix_tui.core.jobs import JobCancelled
from peropix_tui.core.lora_library import LoraFile as LibraryEntry
from peropix_tui.core.lora_library import LoraLibrary
from peropix_tui.core.prompt import find_loras
from peropix_tui.engine.local.checkpoint import (
    FAMILY_COMPONENTS,
    CheckpointInfo,
    Family,
    inspect_checkpoint,
    load_components,
)
from peropix_tui.engine.local.clip import ClipTextModel
from peropix_tui.engine.local.conditioning import Conditioning, TextEncoders, encode_prompt
from peropix_tui.engine.local.errors import LocalEngineError
from peropix_tui.engine.local.lora import LoraError, LoraFile, LoraPatcher, LoraReport
from peropix_tui.engine.local.sampling import (
    DenoiseFn,
    Denoiser,
    GuidedDenoiser,
    NoiseSource,
    Prediction,
    build_sigmas,
    run_sampling,
)
from peropix_tui.engine.local.schedules import DiscreteSigmas
from peropix_tui.engine.local.unet import UNet, sdxl_adm
from peropix_tui.engine.local.vae import (
    SD15_LATENT_FORMAT,
    SDXL_LATENT_FORMAT,
    AutoencoderKL,
    LatentFormat,
    preferred_vae_dtype,
)

log = logging.getLogger(__name__)

StepFn = Callable[[int, int, NDArray[np.uint8] | None], None]
"""`on_step(step, total, preview)`: once per finished step (from 1); `preview` is an h×w×3 uint8 array or None."""

ADM_SIZE_DIM = 256  # Fourier width of each of SDXL's six size values
DEFAULT_PREVIEW_INTERVAL = 0.25  # seconds: at most four previews a second
LORA_FILES_KEPT = 8  # LoRA files kept in memory, so switching back and forth does not re-read them


class LoraNotFoundError(LocalEngineError):
    """A `<lora:name>` tag whose name no file in the LoRA folders answers to (or that several answer to)."""


@dataclass(frozen=True, slots=True)
class LoraUse:
    """One LoRA tag of a prompt with its file: `name` as written in the tag, strengths as the tag gives them."""

    name: str
    file: LoraFile
    unet_weight: float
    te_weight: float


class LoraFinder:
    """Finds the files of a prompt's LoRA tags in the LoRA folders, keeping the folder scan and loaded files.

    The scan is redone when a name is not found (a file may have been added since) and files are re-read
    when their size or modification time changed. Not thread-safe: the engine calls it from its one worker.
    """

    def __init__(self, folders: Sequence[Path], *, keep: int = LORA_FILES_KEPT) -> None:
        self.folders = tuple(Path(folder).expanduser() for folder in folders)
        self._keep = keep
        self._library: LoraLibrary | None = None
        self._files: OrderedDict[tuple[Path, int, int], LoraFile] = OrderedDict()

    def find(self, prompt: str) -> list[LoraUse]:
        """The LoRAs `prompt` asks for, in tag order; raises LoraNotFoundError naming an unknown tag."""
        uses: list[LoraUse] = []
        for ref in find_loras(prompt):
            entry = self._entry(ref.name)
            uses.append(LoraUse(ref.name, self._load(entry.path), ref.unet_weight, ref.te_weight))
        return uses

    def clear(self) -> None:
        """Forget the scan and the loaded files (their tensors are freed once no job holds them)."""
        self._library = None
        self._files.clear()

    def _entry(self, name: str) -> LibraryEntry:
        matches = self._matches(name, rescan=self._library is None)
        if not matches:
            matches = self._matches(name, rescan=True)
        if not matches:
            where = ", ".join(str(folder) for folder in self.folders) or "no LoRA folder is configured"
            raise LoraNotFoundError(f"LoRA {name!r} not found in the LoRA folders ({where})")
        if len(matches) > 1:
            by_stem = [entry for entry in matches if entry.stem.casefold() == name.strip().casefold()]
            if len(by_stem) != 1:
                files = ", ".join(str(entry.path) for entry in matches[:3])
                raise LoraNotFoundError(
                    f"LoRA {name!r} is ambiguous: {len(matches)} files answer to it ({files}); rename one"
                )
            return by_stem[0]
        return matches[0]

    def _matches(self, name: str, *, rescan: bool) -> list[LibraryEntry]:
        if rescan or self._library is None:
            self._library = LoraLibrary.scan(list(self.folders))
        return self._library.answering_to(name)

    def _load(self, path: Path) -> LoraFile:
        try:
            st = path.stat()
        except OSError as exc:
            self._library = None  # the scan is stale: look again next time
            raise LoraError(f"cannot read LoRA {path}: {exc.strerror or exc}") from exc
        key = (path, st.st_size, st.st_mtime_ns)
        found = self._files.get(key)
        if found is None:
            found = LoraFile.load(path, device="cpu")
            self._files = OrderedDict((k, v) for k, v in self._files.items() if k[0] != path)
            self._files[key] = found
            while len(self._files) > self._keep:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return found


@dataclass(eq=False)
class LoadedModel:
    """One checkpoint ready to sample: modules on `device`, the schedule and the LoRA patcher that owns
    the merged state of its weights."""

    info: CheckpointInfo
    unet: UNet
    vae: AutoencoderKL
    encoders: TextEncoders
    prediction: Prediction
    schedule: DiscreteSigmas
    latent_format: LatentFormat
    device: torch.device
    dtype: torch.dtype
    patcher: LoraPatcher = field(repr=False)

    @property
    def family(self) -> Family:
        return self.info.family

    @property
    def name(self) -> str:
        """The checkpoint's file name without its suffix, as A1111 names models."""
        return self.info.path.name.removesuffix(self.info.path.suffix)

    @property
    def inpainting(self) -> bool:
        return self.unet.config.in_channels == 9

    @classmethod
    def load(cls, path: Path, *, device: torch.device, dtype: torch.dtype) -> LoadedModel:
        """Load a checkpoint for sampling (a `ModelCache` loader): UNet and text encoders in `dtype`, the VAE in
        the dtype it is safe in (float32 when `dtype` is, else bfloat16 where the GPU has it, else float32)."""
        info = inspect_checkpoint(path)
        if info.family == "sdxl_refiner":
            raise LocalEngineError(f"{path}: an SDXL refiner cannot generate on its own; choose an SDXL base model")
        if info.prediction not in ("eps", "v"):
            label = "EDM (Playground v2.5 style)" if info.prediction == "edm" else "v-prediction EDM (CosXL style)"
            raise LocalEngineError(f"{path}: {label} models are not supported by the local engine")
        for warning in info.warnings:
            log.warning("%s: %s", path.name, warning)
        vae_dtype = dtype if dtype == torch.float32 else preferred_vae_dtype(device)
        # The VAE first: it is small, and a file without one fails before gigabytes are read.
        vae_sd = load_components(path, device=device, dtype=vae_dtype, components=["vae"])["vae"]
        vae = AutoencoderKL.from_state_dict(vae_sd, dtype=vae_dtype, device=device)
        del vae_sd
        names = [name for name in FAMILY_COMPONENTS[info.family] if name != "vae"]
        parts = load_components(path, device=device, dtype=dtype, components=names)
        unet = UNet.from_state_dict(parts.pop("unet"), dtype=dtype, device=device)
        clip_l = ClipTextModel.from_state_dict(
            parts.pop("clip_l"), dtype=dtype, device=device, component=f"{path.name}: CLIP-L text encoder"
        )
        clip_g = None
        if "clip_g" in parts:
            clip_g = ClipTextModel.from_state_dict(
                parts.pop("clip_g"), dtype=dtype, device=device, component=f"{path.name}: CLIP-G text encoder"
            )
        _check_widths(path, unet, clip_l, clip_g)
        targets: dict[str, torch.nn.Module] = {"unet": unet, "clip_l": clip_l}
        if clip_g is not None:
            targets["clip_g"] = clip_g
        return cls(
            info=info,
            unet=unet,
            vae=vae,
            encoders=TextEncoders(clip_l=clip_l, clip_g=clip_g),
            prediction=Prediction.V if info.prediction == "v" else Prediction.EPS,
            schedule=DiscreteSigmas(zsnr=info.ztsnr),
            latent_format=SD15_LATENT_FORMAT if info.family == "sd15" else SDXL_LATENT_FORMAT,
            device=torch.device(device),
            dtype=dtype,
            patcher=LoraPatcher(targets),
        )

    def apply_loras(self, loras: Sequence[LoraUse]) -> tuple[LoraReport, ...]:
        """Merge exactly `loras` into the weights (a no-op when that set is already merged).

        Cached prompt encodings are dropped whenever the weights changed, also when a merge failed half-way
        (the patcher has then restored the original weights, which the cache may not hold).
        """
        before = self.patcher.version
        try:
            return self.patcher.apply([(use.file, use.unet_weight, use.te_weight) for use in loras])
        finally:
            if self.patcher.version != before:
                self.encoders.weights_changed()


def _check_widths(path: Path, unet: UNet, clip_l: ClipTextModel, clip_g: ClipTextModel | None) -> None:
    """The UNet must take what the text encoders give: a mismatch would otherwise fail deep inside a step."""
    context = clip_l.config.width + (clip_g.config.width if clip_g is not None else 0)
    if unet.config.context_dim != context:
        raise LocalEngineError(
            f"{path}: the UNet attends to {unet.config.context_dim}-wide text, the text encoders give {context}"
        )
    adm = unet.config.adm_in_channels
    if clip_g is not None and adm != (clip_g.config.projection or 0) + 6 * ADM_SIZE_DIM:
        raise LocalEngineError(
            f"{path}: the UNet's ADM input is {adm} wide, CLIP-G's pooled output and the size embeddings give "
            f"{(clip_g.config.projection or 0) + 6 * ADM_SIZE_DIM}"
        )


@dataclass(frozen=True)
class PipelineJob:
    """One generation: prompt and settings, the seeds of its batch, and for img2img / inpainting the source
    image (and the mask, white = repaint). Sizes are in pixels; `strength` applies only with a source."""

    prompt: str
    negative: str = ""
    width: int = 1024
    height: int = 1024
    steps: int = 28
    cfg_scale: float = 5.0
    cfg_rescale: float = 0.0
    sampler: str = "euler_ancestral"
    scheduler: str = "karras"
    seeds: tuple[int, ...] = (0,)
    loras: tuple[LoraUse, ...] = ()
    clip_skip: int = 1
    image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float = 1.0
    preview_interval: float | None = DEFAULT_PREVIEW_INTERVAL
    """Seconds between previews (0: every step); None: no previews at all."""


def run(
    model: LoadedModel,
    job: PipelineJob,
    *,
    on_step: StepFn | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[Image.Image]:
    """Generate the images of `job` (one per seed) on `model`; raises JobCancelled when `cancelled()` turns
    true (checked before every model call) and LocalEngineError for settings the model cannot use."""
    factor = model.vae.config.downscale_factor
    for side, value in (("width", job.width), ("height", job.height)):
        if value < factor or value % factor:
            raise LocalEngineError(f"{side} {value} is not a positive multiple of {factor} pixels")
    if job.mask is not None and job.image is None:
        raise LocalEngineError("an inpainting mask needs a source image")
    noise = NoiseSource(job.seeds)
    with torch.inference_mode():
        _stop_if(cancelled)
        model.apply_loras(job.loras)
        batch = len(job.seeds)
        guided_needed = job.cfg_scale != 1.0
        cond = _condition(model, job, encode_prompt(job.prompt, model.encoders, clip_skip=job.clip_skip), batch)
        uncond = None
        if guided_needed:
            negative = encode_prompt(job.negative, model.encoders, clip_skip=job.clip_skip)
            uncond = _condition(model, job, negative, batch)

        shape = (batch, model.vae.config.embed_dim, job.height // factor, job.width // factor)
        latent = torch.zeros(shape, dtype=torch.float32, device=model.device)
        source: torch.Tensor | None = None
        pixel_mask: torch.Tensor | None = None
        latent_mask: torch.Tensor | None = None
        concat: torch.Tensor | None = None
        if job.image is not None:
            source = _image_tensor(job.image, job.width, job.height, model.device)
            latent = _encode(model, source).expand(shape).contiguous()
        if job.mask is not None and source is not None:
            pixel_mask = _mask_tensor(job.mask, job.width, job.height, model.device)
            latent_mask = F.interpolate(pixel_mask, size=shape[-2:], mode="area")
            if model.inpainting:
                masked = source * (pixel_mask < 0.5)
                concat = torch.cat((latent_mask, _encode(model, masked)), dim=1).expand(batch, -1, -1, -1)
                latent_mask = None
        elif model.inpainting:
            # Without a mask an inpainting model repaints everything: mask all ones, masked image all grey.
            ones = torch.ones((1, 1, *shape[-2:]), dtype=torch.float32, device=model.device)
            grey = torch.zeros((1, 3, job.height, job.width), dtype=torch.float32, device=model.device)
            concat = torch.cat((ones, _encode(model, grey)), dim=1).expand(batch, -1, -1, -1)

        sigmas = build_sigmas(
            model.schedule,
            sampler=job.sampler,
            scheduler=job.scheduler,
            steps=job.steps,
            denoise=job.strength if job.image is not None else 1.0,
        )
        denoiser = Denoiser(model.unet, model.schedule, model.prediction)
        guided = GuidedDenoiser(denoiser, cond, uncond, scale=job.cfg_scale, rescale=job.cfg_rescale, concat=concat)
        result = run_sampling(
            _checked(guided, cancelled),
            latent,
            sigmas,
            sampler=job.sampler,
            noise=noise,
            sigma_max=model.schedule.sigma_max,
            mask=latent_mask,
            callback=_progress(model.latent_format, job.preview_interval, on_step),
        )
        _stop_if(cancelled)
        images = model.vae.decode_safely(model.latent_format.process_out(result))
        pixels = ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0)
        if source is not None and pixel_mask is not None:
            pixels = torch.lerp((source + 1.0) * 0.5, pixels, pixel_mask)
        return _to_pil(pixels)


def _stop_if(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise JobCancelled("generation cancelled")


def _checked(denoise: DenoiseFn, cancelled: Callable[[], bool] | None) -> DenoiseFn:
    if cancelled is None:
        return denoise

    def checked(x: torch.Tensor, sigma: float) -> torch.Tensor:
        _stop_if(cancelled)
        return denoise(x, sigma)

    return checked


def _progress(
    latent_format: LatentFormat, interval: float | None, on_step: StepFn | None
) -> Callable[[int, int, torch.Tensor, torch.Tensor], None] | None:
    """The sampler callback: every step to `on_step`, with a preview at most every `interval` seconds (the last
    step gets none: the finished image follows at once)."""
    if on_step is None:
        return None
    last = -math.inf

    def callback(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        nonlocal last
        preview = None
        now = time.monotonic()
        if interval is not None and step < total and now - last >= interval:
            preview = latent_format.latent_to_rgb_preview(denoised)
            last = now
        on_step(step, total, preview)

    return callback


def _condition(model: LoadedModel, job: PipelineJob, encoded: Conditioning, batch: int) -> dict[str, torch.Tensor]:
    """UNet keyword inputs for one prompt, repeated over the batch: the context, and SDXL's ADM vector."""
    cond = {"context": encoded.context.expand(batch, -1, -1)}
    if model.unet.config.adm_in_channels is not None:
        if encoded.pooled is None:
            raise LocalEngineError(f"{model.name}: this SDXL model needs CLIP-G's pooled output")
        adm = sdxl_adm(encoded.pooled, height=job.height, width=job.width, embed_dim=ADM_SIZE_DIM)
        cond["y"] = adm.expand(batch, -1)
    return cond


def _encode(model: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → sampling-space latents (posterior mean, so img2img is deterministic)."""
    latents = model.vae.encode(images).float()
    return model.latent_format.process_in(latents)


def _image_tensor(image: Image.Image, width: int, height: int, device: torch.device) -> torch.Tensor:
    """An RGB [1, 3, height, width] tensor in [-1, 1]: EXIF rotation applied, transparency over white, resized
    to the target size when it differs."""
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        upright = Image.alpha_composite(white, rgba)
    rgb = upright.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(rgb, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).to(device=device, dtype=torch.float32)
    return (tensor.permute(2, 0, 1).unsqueeze(0) / 127.5) - 1.0


def _mask_tensor(mask: Image.Image, width: int, height: int, device: torch.device) -> torch.Tensor:
    """A [1, 1, height, width] repaint weight in [0, 1] (white = 1) from a mask image of any mode."""
    grey = ImageOps.exif_transpose(mask).convert("L")
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(grey, dtype=np.uint8)
    return torch.from_numpy(array.copy()).to(device=device, dtype=torch.float32)[None, None] / 255.0


def _to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] → RGB images (one transfer from the device for the whole batch)."""
    arrays = (pixels * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(array)) for array in arrays]
