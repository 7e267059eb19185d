"""Reading and checking request bodies the way the NovelAI server does, and pricing what it accepts.

Every refusal is an `ApiError` carrying the status and the `{"statusCode", "message"}` body NovelAI would
answer with, so a client is tested against the same messages it meets in production. The sandbox is a
little stricter than the real server where the real one silently misbehaves (SMEA on V4, a wrong-sized
img2img source, a vibe encoded for another model): those are client bugs worth catching here.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from PIL import Image

from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.engine.nai.charref import CANVASES
from peropix_tui.engine.nai.cost import (
    CHARACTER_REFERENCE_COST,
    VIBE_BATCH_COST,
    VIBES_INCLUDED,
    Account,
    CostError,
    inpaint_price_size,
    opus_free,
    per_image_cost,
)
from peropix_tui.engine.nai.imageprep import MASK_CELL, open_image
from peropix_tui.engine.nai.models import (
    ALL_SCHEDULES,
    MAX_PIXELS,
    MAX_SEED,
    MAX_STEPS,
    MAX_VIBES,
    ModelSpec,
    VibeSupport,
    is_inpainting_model,
    max_samples,
    model_spec,
)
from peropix_tui.engine.types import RequestError
from peropix_tui.sandbox.nai_vibe import encoding_family

ACTIONS: Final = ("generate", "img2img", "infill")
STREAM_KINDS: Final = ("msgpack", "sse")
IMAGE_FORMATS: Final = ("png", "webp")
GRID: Final = 64
MAX_SCALE: Final = 10.0
CHARREF_ERROR: Final = "Error encoding v4 director references: non-200 response: 400"


class ApiError(Exception):
    """An error answer: HTTP status plus NovelAI's JSON error body."""

    def __init__(self, status: int, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    @classmethod
    def validation(cls, message: str) -> ApiError:
        return cls(400, f"Validation error: {message}")

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"statusCode": self.status, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


# --- typed field access ----------------------------------------------------------------------------------


def _int(obj: Mapping[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError.validation(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ApiError.validation(f"{key} must be between {low} and {high}, got {value}")
    return value


def _number_value(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError.validation(f"{key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ApiError.validation(f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def _number(obj: Mapping[str, Any], key: str, low: float, high: float, default: float | None = None) -> float:
    return _number_value(obj.get(key, default), key, low, high)


def _text(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ApiError.validation(f"{key} must be a string")
    return value


def _flag(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError.validation(f"{key} must be a boolean, got {value!r}")
    return value


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError.validation(f"{key} must be an array")
    return value


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise ApiError.validation(f"{key} must be an object")
    return value


def _b64(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ApiError.validation(f"{field} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError.validation(f"{field} is not valid base64") from exc


def decode_image(value: object, field: str) -> tuple[bytes, Image.Image]:
    """The bytes and decoded pixels of a base64 image field."""
    data = _b64(value, field)
    try:
        return data, open_image(data, field)
    except RequestError as exc:
        raise ApiError.validation(str(exc)) from exc


def _model(body: Mapping[str, Any]) -> tuple[str, ModelSpec]:
    model = _text(body, "model")
    try:
        return model, model_spec(model)
    except RequestError as exc:
        raise ApiError.validation(f"model {model!r} doesn't exist") from exc


# --- /ai/generate-image ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Character:
    prompt: str
    negative: str
    center: tuple[float, float]


@dataclass(frozen=True, slots=True, eq=False)
class GenerateJob:
    """An accepted generation request, with the values the renderer, the pricer and the metadata need."""

    params: Mapping[str, Any]
    model: str
    spec: ModelSpec
    action: str
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    n_samples: int
    seed: int
    scale: float
    sampler: str
    smea: bool
    smea_dyn: bool
    strength: float
    noise: float
    characters: tuple[Character, ...]
    vibes: int
    character_references: int
    image_format: str
    stream: str | None
    source: Image.Image | None
    mask: Image.Image | None
    """L mode at the request size, 255 where the image is repainted."""

    def sample_seed(self, index: int) -> int:
        """Sample `index` of a batch uses seed + index (wrapping inside the 32-bit range)."""
        return (self.seed + index) % (MAX_SEED + 1)

    @property
    def intermediate_steps(self) -> int:
        """Preview frames a stream sends per image: every step, or the strength's share for img2img/infill."""
        if self.action == "generate":
            return self.steps
        return max(1, math.ceil(self.steps * self.strength))


def _check_size(params: Mapping[str, Any]) -> tuple[int, int]:
    width = _int(params, "width", GRID, MAX_PIXELS // GRID)
    height = _int(params, "height", GRID, MAX_PIXELS // GRID)
    for key, value in (("width", width), ("height", height)):
        if value % GRID:
            raise ApiError.validation(f"{key} must be a multiple of {GRID}, got {value}")
    if width * height > MAX_PIXELS:
        raise ApiError.validation(f"width*height must be at most {MAX_PIXELS}, got {width}x{height}")
    return width, height


def _caption_block(params: Mapping[str, Any], key: str) -> tuple[str, list[Mapping[str, Any]]]:
    block = _mapping(params, key)
    caption = block.get("caption")
    if not isinstance(caption, Mapping):
        raise ApiError.validation(f"{key}.caption must be an object")
    base = caption.get("base_caption")
    if not isinstance(base, str):
        raise ApiError.validation(f"{key}.caption.base_caption must be a string")
    chars = caption.get("char_captions", [])
    if not isinstance(chars, list) or not all(isinstance(c, Mapping) for c in chars):
        raise ApiError.validation(f"{key}.caption.char_captions must be an array of objects")
    return base, chars


def _center(entry: Mapping[str, Any], where: str) -> tuple[float, float]:
    centers = entry.get("centers")
    if not isinstance(centers, list) or not centers:
        raise ApiError.validation(f"{where}.centers must be a non-empty array")
    first = centers[0]
    if not isinstance(first, Mapping):
        raise ApiError.validation(f"{where}.centers[0] must be an object with x and y")
    x = _number_value(first.get("x"), f"{where}.centers[0].x", 0.0, 1.0)
    return x, _number_value(first.get("y"), f"{where}.centers[0].y", 0.0, 1.0)


def _characters(params: Mapping[str, Any], prompt: str, negative: str | None, spec: ModelSpec) -> list[Character]:
    base, positives = _caption_block(params, "v4_prompt")
    base_negative, negatives = _caption_block(params, "v4_negative_prompt")
    if base != prompt:
        raise ApiError.validation("input must equal parameters.v4_prompt.caption.base_caption")
    if negative is not None and negative != base_negative:
        raise ApiError.validation("negative_prompt must equal parameters.v4_negative_prompt.caption.base_caption")
    if len(positives) != len(negatives):
        raise ApiError.validation(
            f"v4_prompt has {len(positives)} char_captions but v4_negative_prompt has {len(negatives)}"
        )
    if len(positives) > spec.max_characters:
        raise ApiError.validation(f"{spec.id} takes at most {spec.max_characters} characters, got {len(positives)}")
    characters = []
    for index, (positive, negative_entry) in enumerate(zip(positives, negatives, strict=True)):
        where = f"char_captions[{index}]"
        text = positive.get("char_caption")
        uc = negative_entry.get("char_caption")
        if not isinstance(text, str) or not isinstance(uc, str):
            raise ApiError.validation(f"{where}.char_caption must be a string")
        center = _center(positive, f"v4_prompt.caption.{where}")
        _center(negative_entry, f"v4_negative_prompt.caption.{where}")
        characters.append(Character(text, uc, center))
    return characters


def _vibes(params: Mapping[str, Any], spec: ModelSpec) -> int:
    images = _list(params, "reference_image_multiple")
    info = _list(params, "reference_information_extracted_multiple")
    strengths = _list(params, "reference_strength_multiple")
    if not (len(images) == len(info) == len(strengths)):
        raise ApiError.validation(
            "reference_image_multiple, reference_information_extracted_multiple and reference_strength_multiple "
            f"must have the same length ({len(images)}, {len(info)}, {len(strengths)})"
        )
    if not images:
        return 0
    if spec.vibes is VibeSupport.NONE:
        raise ApiError.validation(f"model {spec.id} doesn't support vibe transfer")
    if len(images) > MAX_VIBES:
        raise ApiError.validation(f"at most {MAX_VIBES} vibes, got {len(images)}")
    for index, value in enumerate(images):
        field = f"reference_image_multiple[{index}]"
        _number_value(info[index], f"reference_information_extracted_multiple[{index}]", 0.0, 1.0)
        _number_value(strengths[index], f"reference_strength_multiple[{index}]", 0.0, 1.0)
        if spec.vibes is VibeSupport.RAW:
            decode_image(value, field)
            continue
        data = _b64(value, field)
        if sniff_image_format(data) is not None:
            raise ApiError.validation(f"{field} is a raw image; {spec.id} needs an /ai/encode-vibe encoding")
        family = encoding_family(data)
        if family is not None and family != spec.family.value:
            raise ApiError.validation(f"{field} was encoded for model family {family}, not {spec.family.value}")
    return len(images)


def _character_references(params: Mapping[str, Any], spec: ModelSpec, vibes: int) -> int:
    images = _list(params, "director_reference_images")
    if not images:
        return 0
    if not spec.character_reference:
        raise ApiError.validation(f"model {spec.id} doesn't support character reference")
    if vibes:
        raise ApiError.validation("character reference cannot be combined with vibe transfer")
    arrays = [
        "director_reference_descriptions",
        "director_reference_information_extracted",
        "director_reference_strength_values",
        "director_reference_secondary_strength_values",
    ]
    for key in arrays:
        if len(_list(params, key)) != len(images):
            raise ApiError.validation(f"{key} must have one entry per director_reference_images entry")
    for index, value in enumerate(images):
        _, image = decode_image(value, f"director_reference_images[{index}]")
        if image.size not in CANVASES:
            raise ApiError(400, CHARREF_ERROR)
    return len(images)


def _source(params: Mapping[str, Any], width: int, height: int) -> Image.Image:
    if "image" not in params:
        raise ApiError.validation("image is required for img2img and infill")
    _, image = decode_image(params["image"], "image")
    if image.size != (width, height):
        raise ApiError.validation(f"image is {image.width}x{image.height} but the request is {width}x{height}")
    return image


def _mask(params: Mapping[str, Any], width: int, height: int) -> Image.Image:
    if "mask" not in params:
        raise ApiError.validation("mask is required for infill")
    _, image = decode_image(params["mask"], "mask")
    small = (width // MASK_CELL, height // MASK_CELL)
    if image.size not in ((width, height), small):
        raise ApiError.validation(
            f"mask is {image.width}x{image.height}; it must be {width}x{height} or {small[0]}x{small[1]}"
        )
    gray = image.convert("L")
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.NEAREST)
    return gray.point(lambda v: 255 if v >= 128 else 0)


def _sampling(params: Mapping[str, Any], spec: ModelSpec, action: str) -> tuple[str, bool, bool]:
    sampler = _text(params, "sampler", "k_euler_ancestral")
    if sampler not in spec.samplers:
        raise ApiError.validation(f"sampler {sampler!r} is not supported by {spec.id}")
    schedule = params.get("noise_schedule")
    if schedule is not None and schedule not in ALL_SCHEDULES:
        raise ApiError.validation(f"noise_schedule {schedule!r} doesn't exist")
    smea, smea_dyn = _flag(params, "sm"), _flag(params, "sm_dyn")
    if (smea or smea_dyn) and not spec.smea:
        raise ApiError.validation(f"sm/sm_dyn (SMEA) are not supported by {spec.id}")
    if action != "generate":
        smea = smea_dyn = False
    return sampler, smea, smea_dyn


def parse_generate(body: Mapping[str, Any], *, streaming: bool) -> GenerateJob:
    """Check a generate-image body; the refusal is the one NovelAI would give (400 with its message)."""
    prompt = _text(body, "input")
    model, spec = _model(body)
    action = _text(body, "action", "generate")
    if action not in ACTIONS:
        raise ApiError.validation(f"action {action!r} doesn't exist")
    params = _mapping(body, "parameters")
    if action == "infill" and not is_inpainting_model(model):
        raise ApiError(400, f"model {model} doesn't support action infill; use an -inpainting model")
    if action != "infill" and is_inpainting_model(model):
        raise ApiError.validation(f"{model} only supports action infill")
    width, height = _check_size(params)
    steps = _int(params, "steps", 1, MAX_STEPS)
    limit = max_samples(width, height)
    n_samples = _int(params, "n_samples", 1, limit, default=1)
    seed = _int(params, "seed", 0, MAX_SEED, default=0) or secrets.randbelow(MAX_SEED) + 1
    scale = _number(params, "scale", 0.0, MAX_SCALE, default=spec.default_scale)
    if "cfg_rescale" in params:
        _number(params, "cfg_rescale", 0.0, 1.0)
    sampler, smea, smea_dyn = _sampling(params, spec, action)
    negative = params.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ApiError.validation("negative_prompt must be a string")
    characters = _characters(params, prompt, negative, spec) if spec.v4_prompt else []
    vibes = _vibes(params, spec)
    references = _character_references(params, spec, vibes)
    strength = noise = 1.0
    source = mask = None
    if action != "generate":
        source = _source(params, width, height)
        strength = _number(params, "strength", 0.01, 1.0, default=0.7)
        noise = _number(params, "noise", 0.0, 1.0, default=0.0)
    if action == "infill":
        if vibes or references:
            raise ApiError.validation("vibe transfer and character reference are not available with infill")
        mask = _mask(params, width, height)
        strength = _number(params, "inpaintImg2ImgStrength", 0.01, 1.0, default=strength)
    image_format = _text(params, "image_format", "png")
    if image_format not in IMAGE_FORMATS:
        raise ApiError.validation(f"image_format {image_format!r} doesn't exist")
    stream = None
    if streaming:
        stream = _text(params, "stream", "msgpack")
        if stream not in STREAM_KINDS:
            raise ApiError.validation(f"stream {stream!r} doesn't exist (msgpack or sse)")
    return GenerateJob(
        params=params,
        model=model,
        spec=spec,
        action=action,
        prompt=prompt,
        negative=negative if isinstance(negative, str) else "",
        width=width,
        height=height,
        steps=steps,
        n_samples=n_samples,
        seed=seed,
        scale=scale,
        sampler=sampler,
        smea=smea,
        smea_dyn=smea_dyn,
        strength=strength,
        noise=noise,
        characters=tuple(characters),
        vibes=vibes,
        character_references=references,
        image_format=image_format,
        stream=stream,
        source=source,
        mask=mask,
    )


def generation_cost(job: GenerateJob, account: Account) -> int:
    """The Anlas NovelAI charges for `job` (the §5.1 web formula): per image, minus the Opus free image,
    plus more than four vibes and each character reference per image."""
    width, height = job.width, job.height
    if job.action == "infill":
        width, height = inpaint_price_size(width, height)
    try:
        per_image = per_image_cost(
            width,
            height,
            job.steps,
            smea=job.smea,
            smea_dyn=job.smea_dyn,
            strength=1.0 if job.action == "generate" else job.strength,
            multiplier=job.spec.cost_multiplier,
        )
    except CostError as exc:
        raise ApiError.validation(str(exc)) from exc
    free = opus_free(job.spec, account, job.width, job.height, job.steps, job.character_references)
    extra = 0
    if job.vibes and job.spec.vibes is VibeSupport.ENCODED and not job.character_references:
        extra += VIBE_BATCH_COST * max(0, job.vibes - VIBES_INCLUDED)
    extra += CHARACTER_REFERENCE_COST * job.character_references * job.n_samples
    return per_image * (job.n_samples - int(free)) + extra


# --- /ai/encode-vibe -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodeJob:
    image: bytes
    model: str
    family: str
    information_extracted: float
    mask: bytes | None


def parse_encode_vibe(body: Mapping[str, Any]) -> EncodeJob:
    model, spec = _model(body)
    if spec.vibes is not VibeSupport.ENCODED:
        raise ApiError.validation(f"model {model} doesn't support vibe encoding")
    if "image" not in body:
        raise ApiError.validation("image is required")
    image, _ = decode_image(body["image"], "image")
    info = _number(body, "information_extracted", 0.0, 1.0, default=1.0)
    mask = None
    if body.get("mask") is not None:
        mask, _ = decode_image(body["mask"], "mask")
    return EncodeJob(image, model, spec.family.value, round(info, 2), mask)
