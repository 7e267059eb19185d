"""Settings for a new request from an image's metadata: how `--from-image` and "apply settings" work.

NovelAI adds its quality tags and undesired-content preset to the prompt text on the client, so an image's
metadata holds the expanded text; the presets are recognised and taken off here, so composing a request from
the result gives back the image's prompts exactly instead of doubling them. Character positions come back as
grid cells, vibe encodings are reused when the target model shares their family, and settings the target
model cannot take (an image from another tool or model) are dropped with a warning each, leaving its defaults.

Source images, masks and character-reference pictures are not stored in metadata; `img2img` and
`character_reference` say when they were used so the caller can ask for them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.metadata import ImageMetadata
from peropix_tui.engine.nai.models import (
    DEFAULT_MODEL,
    MAX_SEED,
    MAX_STEPS,
    ModelSpec,
    VibeSupport,
    grid_cell,
    model_spec,
    same_encoding_family,
)
from peropix_tui.engine.nai.payload import MAX_SCALE, snap_size
from peropix_tui.engine.nai.presets import available_uc_presets, compose_prompts, split_prompts
from peropix_tui.engine.types import CharacterPrompt, RequestError, VibeRef

VARIETY_KEY: Final = "skip_cfg_above_sigma"
VIBE_KEYS: Final = (
    "reference_image_multiple",
    "reference_information_extracted_multiple",
    "reference_strength_multiple",
)


class ImageSettingsError(PeropixError):
    """An image whose metadata holds nothing to make a request from."""


@dataclass(slots=True)
class ImageSettings:
    """What an image's metadata says about how to make it again, as `GenerationRequest` fields."""

    fields: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    img2img: tuple[float, float] | None = None
    """(strength, noise) when the image was made from a source image, which the metadata does not hold."""
    character_reference: tuple[float, float, bool] | None = None
    """(fidelity, strength, style aware) when a character reference was used; its picture is not stored."""


def _number_list(value: object) -> list[float] | None:
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def _vibes_from_comment(extra: Mapping[str, Any], made_with: str, target: str, settings: ImageSettings) -> None:
    """The image's vibes: encodings when `made_with` takes encodings (reusable within its family only), else the
    reference images themselves (which a model that takes encodings gets encoded)."""
    images, infos, strengths = (extra.get(key) for key in VIBE_KEYS)
    if not isinstance(images, list) or not images:
        return
    infos_list, strengths_list = _number_list(infos), _number_list(strengths)
    if infos_list is None or strengths_list is None or not len(images) == len(infos_list) == len(strengths_list):
        settings.warnings.append("the image's vibe settings are malformed; its vibes are left out")
        return
    encoded = model_spec(made_with).vibes is VibeSupport.ENCODED
    if encoded and not same_encoding_family(made_with, target):
        settings.warnings.append(f"the image's vibes were encoded for {made_with}, not {target}; they are left out")
        return
    vibes: list[VibeRef] = []
    try:
        for item, info, strength in zip(images, infos_list, strengths_list, strict=True):
            if not isinstance(item, str):
                raise ValueError("not base64 text")
            data = base64.b64decode(item, validate=True)
            if encoded:
                vibe = VibeRef(encoding=data, encoding_model=made_with, strength=strength, information_extracted=info)
            else:
                vibe = VibeRef(image=data, strength=strength, information_extracted=info)
            vibes.append(vibe)
    except (ValueError, binascii.Error, RequestError) as exc:
        settings.warnings.append(f"the image's vibes cannot be reused ({exc}); they are left out")
        return
    settings.fields["vibes"] = tuple(vibes)


def _characters_from_meta(meta: ImageMetadata, settings: ImageSettings) -> None:
    """Characters at their grid cells when the image placed them, else left to the model."""
    block = meta.extra.get("v4_prompt")
    use_coords = isinstance(block, Mapping) and block.get("use_coords") is True
    characters: list[CharacterPrompt] = []
    for number, character in enumerate(meta.characters, start=1):
        position = None
        if use_coords:
            x, y = character.centers[0]
            position, exact = grid_cell(x, y)
            if not exact:
                settings.warnings.append(
                    f"character {number}: position ({x:g}, {y:g}) moved to the grid cell {position}"
                )
        characters.append(CharacterPrompt(character.prompt, character.negative, position))
    settings.fields["characters"] = tuple(characters)


def _character_reference_from_comment(extra: Mapping[str, Any], settings: ImageSettings) -> None:
    strengths = _number_list(extra.get("director_reference_strengths"))
    secondary = _number_list(extra.get("director_reference_secondary_strengths"))
    if not strengths:
        return
    descriptions = extra.get("director_reference_descriptions")
    style_aware = True
    if isinstance(descriptions, list) and descriptions and isinstance(descriptions[0], Mapping):
        caption = descriptions[0].get("caption")
        if isinstance(caption, Mapping):
            style_aware = caption.get("base_caption") != "character"
    fidelity = 1.0 - secondary[0] if secondary else 1.0
    settings.character_reference = (min(1.0, max(0.0, fidelity)), min(1.0, max(0.0, strengths[0])), style_aware)


def _prompt_fields(
    prompt: str, negative: str, image_model: str | None, target: str, warnings: list[str]
) -> dict[str, Any]:
    """The user's own prompts and the presets that were added to them. On the image's own model the presets
    must compose back to the very text the image was made with; preset text of an older web version would
    not, so then the prompt (or negative) is kept exactly as written, the image comes out the same."""
    parts = split_prompts(prompt, negative, image_model)
    fields: dict[str, Any] = {
        "prompt": parts.prompt,
        "negative": parts.negative,
        "quality_tags": parts.quality_tags,
        "uc_preset": parts.uc_preset,
        "dataset": parts.dataset,
    }
    if image_model is None or model_spec(image_model).family is not model_spec(target).family:
        return fields
    try:
        positive, negative_text = compose_prompts(
            parts.prompt,
            parts.negative,
            image_model,
            quality_tags=parts.quality_tags,
            uc_preset=parts.uc_preset,
            dataset=parts.dataset,
        )
    except RequestError:
        positive, negative_text = "", ""
    if positive != prompt:
        fields |= {"prompt": prompt, "quality_tags": False, "dataset": None}
        warnings.append("the prompt's quality tags are not today's; the prompt is kept exactly as written")
    if negative_text != negative:
        fields |= {"negative": negative, "uc_preset": None}
        warnings.append("the undesired content's preset is not today's; it is kept exactly as written")
    return fields


def settings_from_metadata(meta: ImageMetadata, *, model: str | None = None) -> ImageSettings:
    """`GenerationRequest` fields that make the image described by `meta` again (with `model` instead of the
    image's own when given). Preset text the web added is recognised and removed, so composing the request
    gives back the image's prompts exactly rather than doubled."""
    if meta.prompt is None:
        raise ImageSettingsError("the image holds no generation settings to reuse")
    settings = ImageSettings()
    image_model = None
    if meta.model is not None:
        try:
            image_model = model_spec(meta.model).id
        except RequestError:
            fallback = model or DEFAULT_MODEL
            settings.warnings.append(f"the image's model {meta.model!r} is not a NovelAI model; using {fallback}")
    target = model or image_model or DEFAULT_MODEL
    fields = settings.fields
    fields["model"] = target
    fields |= _prompt_fields(meta.prompt, meta.negative_prompt or "", image_model, target, settings.warnings)
    for name, value in (
        ("seed", meta.seed),
        ("steps", meta.steps),
        ("scale", meta.cfg),
        ("cfg_rescale", meta.cfg_rescale),
        ("sampler", meta.sampler),
        ("scheduler", meta.scheduler),
        ("width", meta.width),
        ("height", meta.height),
        ("smea", meta.smea),
        ("smea_dyn", meta.smea_dyn),
    ):
        if value is not None:
            fields[name] = value
    if VARIETY_KEY in meta.extra:
        fields["variety"] = meta.extra[VARIETY_KEY] is not None
    if meta.characters:
        _characters_from_meta(meta, settings)
    _vibes_from_comment(meta.extra, image_model or target, target, settings)
    _character_reference_from_comment(meta.extra, settings)
    # Since V3 a Comment holds a strength only for img2img; the oldest Comments (no request type) always did.
    if meta.strength is not None and meta.request_type is not None:
        settings.img2img = (meta.strength, meta.noise if meta.noise is not None else 0.0)
    settings.warnings += _fit_to_model(fields, model_spec(target))
    return settings


def _fit_to_model(fields: dict[str, Any], spec: ModelSpec) -> list[str]:
    """Drop (or snap) the image settings `spec` cannot take, one warning each, so that an image from another
    tool or model still gives a request NovelAI accepts; the model's defaults fill the gaps."""
    warnings: list[str] = []

    def drop(name: str, why: str) -> None:
        warnings.append(f"{name} '{fields.pop(name)}' {why}; using the default")

    width, height = fields.get("width"), fields.get("height")
    if width is None or height is None or width < 1 or height < 1:
        fields.pop("width", None)
        fields.pop("height", None)
    elif (snapped := snap_size(width, height)) != (width, height):
        fields["width"], fields["height"] = snapped
        warnings.append(f"size {width}x{height} is not a NovelAI size; using {snapped[0]}x{snapped[1]}")
    legacy_aliases = ("ddim", "nai_smea", "nai_smea_dyn") if spec.smea else ()
    if "sampler" in fields and fields["sampler"] not in (*spec.samplers, *legacy_aliases):
        drop("sampler", f"is not offered by {spec.label}")
    if "scheduler" in fields and fields["scheduler"] not in spec.schedules:
        drop("scheduler", f"is not offered by {spec.label}")
    if not 1 <= fields.get("steps", 1) <= MAX_STEPS:
        drop("steps", f"is outside 1-{MAX_STEPS}")
    if not 0 <= fields.get("scale", 0) <= MAX_SCALE:
        drop("scale", f"is outside 0-{MAX_SCALE:g}")
    if not 0 <= fields.get("cfg_rescale", 0) <= 1:
        drop("cfg_rescale", "is outside 0-1")
    if not 1 <= fields.get("seed", 1) <= MAX_SEED:
        warnings.append(f"seed {fields.pop('seed')} is not a NovelAI seed; using a random one")
    if not spec.smea and (fields.get("smea") or fields.get("smea_dyn")):
        warnings.append(f"SMEA is not offered by {spec.label}; left out")
    if not spec.smea or not fields.get("smea"):
        fields.pop("smea", None)
        fields.pop("smea_dyn", None)
    if fields.get("variety") and spec.variety_sigma is None:
        warnings.append(f"Variety+ is not offered by {spec.label}; left out")
        del fields["variety"]
    if fields.get("dataset") is not None and fields["dataset"] not in spec.dataset_prefixes:
        drop("dataset", f"is not offered by {spec.label}")
    if fields.get("uc_preset") is not None and fields["uc_preset"] not in available_uc_presets(spec.id):
        drop("uc_preset", f"is not offered by {spec.label}")
    characters = fields.get("characters", ())
    if len(characters) > spec.max_characters:
        kept = characters[: spec.max_characters]
        warnings.append(
            f"{spec.label} takes {spec.max_characters} character prompts; {len(characters) - len(kept)} left out"
        )
        fields["characters"] = kept
    if fields.get("vibes") and spec.vibes is VibeSupport.NONE:
        warnings.append(f"{spec.label} has no vibe transfer; the image's vibes are left out")
        del fields["vibes"]
    return warnings
