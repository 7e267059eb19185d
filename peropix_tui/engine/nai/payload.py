"""The exact JSON body of `/ai/generate-image` for a `GenerationRequest`, in the shape the NovelAI web sends.

Every per-model difference comes from the capability table in `models`; the prompt text is composed by
`presets` (comma rule, dataset prefix, quality tags, undesired-content preset), so `input` always equals
`v4_prompt.caption.base_caption` and `negative_prompt` its negative twin. Requests the server would refuse
(or answer with a 500) are refused here first, with a message naming the setting.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from peropix_tui.core.prompt import normalize_commas_nai
from peropix_tui.engine.nai.charref import prepare_character_reference
from peropix_tui.engine.nai.imageprep import (
    image_size,
    letterbox_v3_vibe,
    prepare_mask,
    prepare_source_image,
)
from peropix_tui.engine.nai.models import (
    MAX_PIXELS,
    MAX_SEED,
    MAX_STEPS,
    MAX_VIBES,
    SAMPLERS_WITHOUT_SCHEDULE,
    ModelSpec,
    VibeSupport,
    infill_model,
    max_samples,
    model_spec,
    position_center,
    same_encoding_family,
)
from peropix_tui.engine.nai.presets import UC_PRESET_NUMBER, compose_prompts, dataset_prefix, uc_preset_text
from peropix_tui.engine.nai.wire import b64, json_number
from peropix_tui.engine.types import (
    GRID,
    Action,
    CharacterPrompt,
    GenerationRequest,
    RequestError,
    UcPreset,
    VibeRef,
    read_image_input,
)

PARAMS_VERSION: Final = 3
MAX_SCALE: Final = 10.0
PLACEHOLDER_CENTER: Final = (0.5, 0.5)
ACTION_NAMES: Final[Mapping[Action, str]] = {
    Action.GENERATE: "generate",
    Action.IMG2IMG: "img2img",
    Action.INPAINT: "infill",
}
IMAGE_FIELDS: Final = frozenset(
    {"image", "mask", "reference_image", "reference_image_multiple", "director_reference_images"}
)
# Parameters computed from the request's own fields; `extra` may not override them.
RESERVED_PARAMETERS: Final = frozenset(
    {
        "width",
        "height",
        "scale",
        "sampler",
        "steps",
        "n_samples",
        "seed",
        "extra_noise_seed",
        "sm",
        "sm_dyn",
        "cfg_rescale",
        "noise_schedule",
        "skip_cfg_above_sigma",
        "use_coords",
        "characterPrompts",
        "v4_prompt",
        "v4_negative_prompt",
        "negative_prompt",
        "strength",
        "noise",
        "inpaintImg2ImgStrength",
        "img2img",
        "ucPreset",
        "qualityToggle",
        "reference_information_extracted_multiple",
        "reference_strength_multiple",
        "director_reference_descriptions",
        "director_reference_information_extracted",
        "director_reference_strength_values",
        "director_reference_secondary_strength_values",
        *IMAGE_FIELDS,
    }
)
# Enhance = img2img of a finished image, magnitude 1..5 -> (strength, noise).
ENHANCE_MAGNITUDES: Final[Mapping[int, tuple[float, float]]] = {
    1: (0.2, 0.0),
    2: (0.4, 0.0),
    3: (0.5, 0.0),
    4: (0.6, 0.0),
    5: (0.7, 0.1),
}
PENDING_ENCODING: Final = b"<encoded when sent>"
"""The stand-in for a vibe encoding not made yet, in checks and in `--dry-run` bodies."""
ENHANCE_SUFFIX: Final = ", very aesthetic, masterpiece, no text, -2::upscaled, blurry::,"


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampler settings actually sent, after the model's aliases and rules."""

    sampler: str
    schedule: str | None
    smea: bool
    smea_dyn: bool


def effective_sampling(request: GenerationRequest, spec: ModelSpec) -> Sampling:
    sampler, smea, smea_dyn = request.sampler, request.smea, request.smea_dyn
    if spec.smea:
        if sampler == "ddim":
            sampler = "ddim_v3"
        elif sampler in ("nai_smea", "nai_smea_dyn"):
            smea, smea_dyn = True, smea_dyn or sampler == "nai_smea_dyn"
            sampler = "k_euler_ancestral"
    if sampler not in spec.samplers:
        raise RequestError("sampler", f"{sampler!r} is not offered by {spec.label} ({', '.join(spec.samplers)})")
    if smea and not spec.smea:
        raise RequestError("smea", f"SMEA exists only on V3 models, not on {spec.label}")
    if smea and sampler == "ddim_v3":
        raise RequestError("smea", "SMEA does not work with the DDIM sampler")
    if request.action is not Action.GENERATE:
        smea = smea_dyn = False
    schedule = None if sampler in SAMPLERS_WITHOUT_SCHEDULE else request.scheduler
    if schedule is not None and schedule not in spec.schedules:
        raise RequestError("scheduler", f"{schedule!r} is not offered by {spec.label} ({', '.join(spec.schedules)})")
    return Sampling(sampler, schedule, smea, smea_dyn)


def enabled_characters(request: GenerationRequest) -> list[CharacterPrompt]:
    return [character for character in request.characters if character.enabled]


def check_request(request: GenerationRequest) -> ModelSpec:
    """Refuse what NovelAI would refuse for this model; returns the model's capabilities."""
    spec = model_spec(request.model)
    action = request.action
    if request.width * request.height > MAX_PIXELS:
        raise RequestError(
            "size", f"{request.width}x{request.height} is more than {MAX_PIXELS} pixels (2048x1536 at most)"
        )
    if request.steps > MAX_STEPS:
        raise RequestError("steps", f"NovelAI allows at most {MAX_STEPS} steps, not {request.steps}")
    if request.scale > MAX_SCALE:
        raise RequestError("scale", f"NovelAI allows a prompt guidance of at most {MAX_SCALE:g}")
    if request.seed is None:
        raise RequestError("seed", "is not resolved yet; call resolved() before building the payload")
    if not 1 <= request.seed <= MAX_SEED:
        raise RequestError(
            "seed", f"NovelAI seeds go from 1 to {MAX_SEED} (0 would be a random, unrecorded seed), not {request.seed}"
        )
    if request.n > max_samples(request.width, request.height):
        raise RequestError(
            "n",
            f"at most {max_samples(request.width, request.height)} images per request at "
            f"{request.width}x{request.height}",
        )
    effective_sampling(request, spec)
    if request.variety and spec.variety_sigma is None:
        raise RequestError("variety", f"Variety+ is not offered by {spec.label}")
    if request.dataset is not None:
        dataset_prefix(spec.id, request.dataset)
    if request.uc_preset is not None:
        uc_preset_text(spec.id, request.uc_preset)
    characters = enabled_characters(request)
    if characters and spec.max_characters == 0:
        raise RequestError("characters", f"{spec.label} has no character prompts; write them in the prompt")
    if len(characters) > spec.max_characters:
        raise RequestError(
            "characters", f"{spec.label} takes at most {spec.max_characters} characters, not {len(characters)}"
        )
    if action is Action.INPAINT:
        infill_model(spec.id)
    _check_vibes(request, spec)
    _check_character_reference(request, spec)
    reserved = sorted(RESERVED_PARAMETERS.intersection(request.extra))
    if reserved:
        raise RequestError("extra", f"{', '.join(reserved)} come from the request's own settings")
    return spec


def needs_encoding(vibe: VibeRef, model: str) -> bool:
    """Whether `vibe` must be encoded for `model` before it can be sent (and the encoding paid for)."""
    if vibe.image is None:
        return False
    return vibe.encoding is None or (
        vibe.encoding_model is not None and not same_encoding_family(vibe.encoding_model, model)
    )


def check_request_before_encoding(request: GenerationRequest) -> ModelSpec:
    """`check_request` for a request whose vibes are not all encoded yet: those still to encode count as
    encoded, so what NovelAI would refuse is refused before any encoding is paid for."""
    vibes = tuple(
        replace(vibe, encoding=PENDING_ENCODING, encoding_model=None) if needs_encoding(vibe, request.model) else vibe
        for vibe in request.vibes
    )
    return check_request(replace(request, vibes=vibes))


def _check_vibes(request: GenerationRequest, spec: ModelSpec) -> None:
    if not request.vibes:
        return
    if spec.vibes is VibeSupport.NONE:
        raise RequestError("vibes", f"{spec.label} has no vibe transfer")
    if request.action is Action.INPAINT:
        raise RequestError("vibes", "vibe transfer cannot be combined with inpainting")
    if request.character_reference is not None:
        raise RequestError("vibes", "vibe transfer and character reference cannot be used together")
    if len(request.vibes) > MAX_VIBES:
        raise RequestError("vibes", f"at most {MAX_VIBES} vibes, not {len(request.vibes)}")
    for number, vibe in enumerate(request.vibes, start=1):
        if spec.vibes is VibeSupport.RAW and vibe.image is None:
            raise RequestError("vibes", f"vibe {number}: {spec.label} needs the reference image itself")
        if spec.vibes is VibeSupport.ENCODED:
            if vibe.encoding is None:
                raise RequestError("vibes", f"vibe {number} is not encoded for {spec.label} yet")
            if vibe.encoding_model is not None and not same_encoding_family(vibe.encoding_model, spec.id):
                raise RequestError("vibes", f"vibe {number} was encoded for {vibe.encoding_model}, not for {spec.id}")


def _check_character_reference(request: GenerationRequest, spec: ModelSpec) -> None:
    if request.character_reference is None:
        return
    if not spec.character_reference:
        raise RequestError("character_reference", f"only V4.5 models take a character reference, not {spec.label}")
    if request.action is Action.INPAINT:
        raise RequestError("character_reference", "a character reference cannot be combined with inpainting")


def _center(character: CharacterPrompt) -> dict[str, float]:
    x, y = position_center(character.position) if character.position else PLACEHOLDER_CENTER
    return {"x": x, "y": y}


def _extra_noise_seed(seed: int, action: Action) -> int:
    """txt2img mirrors the seed; img2img and inpaint use the web's seed - 1."""
    return seed if action is Action.GENERATE else seed - 1


def _v4_fields(positive: str, negative: str, characters: list[CharacterPrompt]) -> dict[str, Any]:
    prompts = [normalize_commas_nai(c.prompt) for c in characters]
    negatives = [normalize_commas_nai(c.negative) for c in characters]
    centers = [_center(c) for c in characters]
    use_coords = any(c.position is not None for c in characters)
    return {
        "use_coords": use_coords,
        "legacy_uc": False,
        "normalize_reference_strength_multiple": True,
        "inpaintImg2ImgStrength": 1,
        "characterPrompts": [
            {"prompt": p, "uc": uc, "center": center, "enabled": True}
            for p, uc, center in zip(prompts, negatives, centers, strict=True)
        ],
        "v4_prompt": {
            "caption": {
                "base_caption": positive,
                "char_captions": [
                    {"char_caption": p, "centers": [center]} for p, center in zip(prompts, centers, strict=True)
                ],
            },
            "use_coords": use_coords,
            "use_order": True,
        },
        "v4_negative_prompt": {
            "caption": {
                "base_caption": negative,
                "char_captions": [
                    {"char_caption": uc, "centers": [center]} for uc, center in zip(negatives, centers, strict=True)
                ],
            },
            "legacy_uc": False,
        },
    }


def _vibe_fields(request: GenerationRequest, spec: ModelSpec) -> dict[str, Any]:
    images: list[str] = []
    for vibe in request.vibes:
        if spec.vibes is VibeSupport.ENCODED:
            assert vibe.encoding is not None  # checked by check_request
            images.append(b64(vibe.encoding))
        else:
            assert vibe.image is not None  # checked by check_request
            images.append(b64(letterbox_v3_vibe(read_image_input(vibe.image, "vibe image"))))
    return {
        "reference_image_multiple": images,
        "reference_information_extracted_multiple": [json_number(v.information_extracted) for v in request.vibes],
        "reference_strength_multiple": [json_number(v.strength) for v in request.vibes],
    }


def _character_reference_fields(request: GenerationRequest) -> dict[str, Any]:
    reference = request.character_reference
    assert reference is not None
    jpeg = prepare_character_reference(read_image_input(reference.image, "character_reference"))
    caption = "character&style" if reference.style_aware else "character"
    return {
        "director_reference_images": [b64(jpeg)],
        "director_reference_descriptions": [
            {"caption": {"base_caption": caption, "char_captions": []}, "legacy_uc": False}
        ],
        "director_reference_information_extracted": [1],
        "director_reference_strength_values": [json_number(reference.strength)],
        "director_reference_secondary_strength_values": [json_number(1 - reference.fidelity)],
    }


def build_payload(request: GenerationRequest) -> dict[str, Any]:
    """The request body for `/ai/generate-image` (and, with `stream` added, the streaming endpoint)."""
    spec = check_request(request)
    sampling = effective_sampling(request, spec)
    action = request.action
    assert request.seed is not None  # checked by check_request
    positive, negative = compose_prompts(
        request.prompt,
        request.negative,
        spec.id,
        quality_tags=request.quality_tags,
        uc_preset=request.uc_preset,
        dataset=request.dataset,
    )
    params: dict[str, Any] = {
        "params_version": PARAMS_VERSION,
        "width": request.width,
        "height": request.height,
        "scale": json_number(request.scale),
        "sampler": sampling.sampler,
        "steps": request.steps,
        "n_samples": request.n,
        "seed": request.seed,
        "extra_noise_seed": _extra_noise_seed(request.seed, action),
        "ucPreset": UC_PRESET_NUMBER[request.uc_preset or UcPreset.NONE],
        "qualityToggle": request.quality_tags,
    }
    if spec.v4_prompt:
        params["autoSmea"] = False
    if not spec.legacy:
        params["sm"] = sampling.smea
        params["sm_dyn"] = sampling.smea_dyn
    params |= {
        "dynamic_thresholding": False,
        "controlnet_strength": 1,
        "legacy": False,
        "add_original_image": action is not Action.INPAINT,
        "cfg_rescale": json_number(request.cfg_rescale),
    }
    if sampling.schedule is not None:
        params["noise_schedule"] = sampling.schedule
    params["legacy_v3_extend"] = False
    if not spec.legacy:
        params["skip_cfg_above_sigma"] = (
            spec.variety_sigma_for(request.width, request.height) if request.variety else None
        )
    if spec.v4_prompt:
        params |= _v4_fields(positive, negative, enabled_characters(request))
    params["negative_prompt"] = negative
    if spec.vibes is not VibeSupport.NONE and action is not Action.INPAINT:
        params |= _vibe_fields(request, spec)
    if request.character_reference is not None:
        params |= _character_reference_fields(request)
    if sampling.sampler == "k_euler_ancestral" and sampling.schedule not in (None, "native"):
        params["deliberate_euler_ancestral_bug"] = False
        params["prefer_brownian"] = True
    params["image_format"] = "png"
    if action is not Action.GENERATE:
        params |= _source_fields(request)
    params |= dict(request.extra)
    model = infill_model(spec.id) if action is Action.INPAINT else spec.id
    return {
        "input": positive,
        "model": model,
        "action": ACTION_NAMES[action],
        "parameters": params,
        "use_new_shared_trial": True,
    }


def _source_fields(request: GenerationRequest) -> dict[str, Any]:
    assert request.image is not None
    source = prepare_source_image(read_image_input(request.image, "image"), request.width, request.height)
    strength, noise = json_number(request.strength), json_number(request.noise)
    fields: dict[str, Any] = {"image": b64(source), "strength": strength, "noise": noise}
    if request.mask is None:
        fields["color_correct"] = False
        return fields
    mask = prepare_mask(read_image_input(request.mask, "mask"), request.width, request.height)
    fields["mask"] = b64(mask)
    fields["inpaintImg2ImgStrength"] = strength
    fields["img2img"] = {"strength": strength, "color_correct": True}
    return fields


def redacted_payload(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` with image data replaced by a short note, for `--dry-run` and logs."""

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            size = len(value) * 3 // 4 - value[-2:].count("=")
            return f"<image data, {size} bytes>"
        if isinstance(value, list):
            return [redact(item) for item in value]
        return value

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {key: redact(value) if key in IMAGE_FIELDS else walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return copy.deepcopy(node)

    result: dict[str, Any] = walk(body)
    return result


def snap_size(width: float, height: float) -> tuple[int, int]:
    """The nearest size on the 64-pixel grid (halves round up), shrunk keeping the aspect to fit NovelAI's
    pixel limit."""
    w = max(GRID, math.floor(width / GRID + 0.5) * GRID)
    h = max(GRID, math.floor(height / GRID + 0.5) * GRID)
    if w * h > MAX_PIXELS:
        shrink = math.sqrt(MAX_PIXELS / (width * height))
        w = max(GRID, math.floor(width * shrink / GRID) * GRID)
        h = max(GRID, math.floor(height * shrink / GRID) * GRID)
    return w, h


def enhance_request(request: GenerationRequest, *, upscale: bool = True, magnitude: int = 3) -> GenerationRequest:
    """The web's Enhance: img2img of `request.image` at 1x or 1.5x its size with a magnitude preset."""
    if request.image is None:
        raise RequestError("image", "Enhance needs the image to enhance")
    if magnitude not in ENHANCE_MAGNITUDES:
        raise RequestError("magnitude", f"must be 1 to 5, not {magnitude}")
    width, height = image_size(read_image_input(request.image, "image"), "image")
    factor = 1.5 if upscale else 1.0
    new_width, new_height = snap_size(width * factor, height * factor)
    strength, noise = ENHANCE_MAGNITUDES[magnitude]
    return replace(
        request,
        prompt=request.prompt + ENHANCE_SUFFIX,
        quality_tags=False,
        width=new_width,
        height=new_height,
        strength=strength,
        noise=noise,
        mask=None,
    )
