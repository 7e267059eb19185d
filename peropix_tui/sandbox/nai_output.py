"""What the sandbox sends back: image files carrying NovelAI's metadata, and the ZIP that wraps them.

Each image carries the text chunks NovelAI writes (Title, Description, Software, Source with the model's
hash, Generation time, and a Comment JSON of the request's effective parameters with this sample's seed)
plus the same fields as stealth data in the alpha channel. WebP output keeps them in EXIF instead, as
NovelAI's WebP files do. Nothing depends on the clock, so the same request gives the same bytes.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from typing import Any, Final

from PIL import Image

from peropix_tui.core.metadata.nai_models import MODELS as SOURCE_MODELS
from peropix_tui.core.metadata.nai_models import source_for
from peropix_tui.core.metadata.pngchunks import replace_text_chunks
from peropix_tui.core.metadata.stealth import HEADER_BITS, embed_stealth, stealth_payload
from peropix_tui.engine.nai.models import Family
from peropix_tui.sandbox.nai_requests import GenerateJob

TITLE: Final = "NovelAI generated image"
SOFTWARE: Final = "NovelAI"
PNG_COMPRESS_LEVEL: Final = 1
# EXIF tags NovelAI's WebP files use.
EXIF_IFD: Final = 0x8769
USER_COMMENT: Final = 0x9286
DOCUMENT_NAME: Final = 0x010D
SOFTWARE_TAG: Final = 0x0131
_ASCII_PREFIX: Final = b"ASCII\0\0\0"
_DIRECTOR_KEYS: Final = (
    ("director_reference_strengths", "director_reference_strength_values"),
    ("director_reference_descriptions", "director_reference_descriptions"),
    ("director_reference_information_extracted", "director_reference_information_extracted"),
    ("director_reference_secondary_strengths", "director_reference_secondary_strength_values"),
)


def _float(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _v4_blocks(job: GenerateJob) -> dict[str, Any]:
    params = job.params
    legacy_uc = params.get("legacy_uc", False) is True
    positive = copy.deepcopy(params["v4_prompt"])
    positive["legacy_uc"] = legacy_uc
    negative = copy.deepcopy(params["v4_negative_prompt"])
    negative.setdefault("use_coords", False)
    negative.setdefault("use_order", False)
    negative["legacy_uc"] = legacy_uc
    return {"v4_prompt": positive, "v4_negative_prompt": negative}


def comment(job: GenerateJob, index: int) -> dict[str, Any]:
    """The Comment JSON of sample `index`: the parameters the server used, in NovelAI's key order."""
    params = job.params
    directors = bool(job.character_references)
    out: dict[str, Any] = {
        "prompt": job.prompt,
        "steps": job.steps,
        "height": job.height,
        "width": job.width,
        "scale": job.scale,
        "uncond_scale": _float(params.get("uncond_scale"), 0.0 if job.spec.v4_prompt else 1.0),
        "cfg_rescale": _float(params.get("cfg_rescale"), 0.0),
        "seed": job.sample_seed(index),
        "n_samples": job.n_samples,
    }
    if job.action != "generate":
        out["strength"] = job.strength
        out["noise"] = job.noise
    out["noise_schedule"] = params.get("noise_schedule", "native")
    out["legacy_v3_extend"] = params.get("legacy_v3_extend", False) is True
    if job.vibes:
        out["reference_image_multiple"] = list(params["reference_image_multiple"])
    out["reference_information_extracted_multiple"] = list(params.get("reference_information_extracted_multiple") or [])
    out["reference_strength_multiple"] = list(params.get("reference_strength_multiple") or [])
    out["extra_passthrough_testing"] = {
        "prompt": None,
        "uc": None,
        "hide_debug_overlay": False,
        "r": 0.0,
        "eta": 1.0,
        "negative_momentum": 0.0,
    }
    if job.spec.v4_prompt:
        out |= _v4_blocks(job)
    for comment_key, request_key in _DIRECTOR_KEYS:
        out[comment_key] = copy.deepcopy(params.get(request_key)) if directors else None
    out |= {
        "sampler": job.sampler,
        "controlnet_strength": _float(params.get("controlnet_strength"), 1.0),
        "controlnet_model": None,
        "dynamic_thresholding": params.get("dynamic_thresholding", False) is True,
        "dynamic_thresholding_percentile": 0.999,
        "dynamic_thresholding_mimic_scale": 10.0,
        "sm": job.smea,
        "sm_dyn": job.smea_dyn,
        "skip_cfg_above_sigma": params.get("skip_cfg_above_sigma"),
        "skip_cfg_below_sigma": 0.0,
        "lora_unet_weights": None,
        "lora_clip_weights": None,
        "deliberate_euler_ancestral_bug": params.get("deliberate_euler_ancestral_bug", True) is True,
        "prefer_brownian": params.get("prefer_brownian", False) is True,
        "cfg_sched_eligibility": "enable_for_post_summer_samplers",
        "explike_fine_detail": False,
        "minimize_sigma_inf": False,
        "uncond_per_vibe": True,
        "wonky_vibe_correlation": True,
    }
    if job.stream is not None:
        out["stream"] = job.stream
    out |= {"version": 1, "uc": job.negative, "request_type": "PromptGenerateRequest"}
    if job.spec.family in (Family.V5, Family.V5_CURATED):
        out["model_name"] = job.spec.id
        known = SOURCE_MODELS.get(job.spec.id)
        if known is not None:
            out["model_hash"] = known[1][0]
    return out


def generation_time(job: GenerateJob) -> str:
    """A plausible, reproducible render time: proportional to pixels times steps."""
    return repr(round(job.width * job.height * job.steps * 4.5e-8, 4))


def text_fields(job: GenerateJob, index: int) -> dict[str, str]:
    """The text chunks of sample `index`, in the order NovelAI's writer uses."""
    return {
        "Title": TITLE,
        "Description": job.prompt,
        "Software": SOFTWARE,
        "Source": source_for(job.spec.id, None),
        "Generation time": generation_time(job),
        "Comment": json.dumps(comment(job, index)),
    }


def _webp(image: Image.Image, fields: dict[str, str]) -> bytes:
    exif = Image.Exif()
    exif[DOCUMENT_NAME] = fields["Title"]
    exif[SOFTWARE_TAG] = fields["Source"]
    ordered = {key: fields[key] for key in sorted(fields)}
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _ASCII_PREFIX + json.dumps(ordered, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", lossless=True, exact=True, quality=0, method=0, exif=exif.tobytes())
    return buffer.getvalue()


def encode_image(image: Image.Image, fields: dict[str, str], image_format: str) -> bytes:
    """`image` as a PNG (or lossless WebP) with `fields` as metadata and as alpha-channel stealth data
    (left out when the image has too few pixels to hold it)."""
    room = image.width * image.height
    fits = HEADER_BITS + len(stealth_payload(fields)) * 8 <= room
    marked = embed_stealth(image, fields) if fits else image.convert("RGBA")
    if image_format == "webp":
        return _webp(marked, fields)
    buffer = io.BytesIO()
    marked.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return replace_text_chunks(buffer.getvalue(), fields)


def build_zip(images: list[bytes], image_format: str) -> bytes:
    """The generate-image ZIP: `image_0.png`, `image_1.png`... (stored, the images are compressed already)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, data in enumerate(images):
            info = zipfile.ZipInfo(f"image_{index}.{image_format}", date_time=(2024, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    return buffer.getvalue()
