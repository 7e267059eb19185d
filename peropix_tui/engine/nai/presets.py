"""Quality tags and undesired-content presets, applied to the prompt text on the client as the web does.

The server does not expand `qualityToggle` or `ucPreset`: the web edits the strings before sending, so an
image's metadata holds the expanded text. Re-using that metadata must therefore recognise and remove the
preset text (every variant the web has used), or the tags would double on each round trip.

Tables are versioned: `TABLE_VERSION` changes whenever a text changes, and the old text moves into the
variants so images made with it are still recognised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from peropix_tui.core.prompt import normalize_commas_nai, split_tags
from peropix_tui.engine.nai.models import Family, model_spec
from peropix_tui.engine.types import RequestError, UcPreset

TABLE_VERSION: Final = 1
SEPARATOR: Final = ", "


@dataclass(frozen=True, slots=True)
class QualityPreset:
    tags: str
    """The text the web adds today, without its separator."""
    prepend: bool = False
    """Legacy models put the tags in front of the prompt instead of after it."""
    text_marker: str | None = None
    """The text-rendering section marker; quality tags go before it, closed with a full stop."""
    variants: tuple[str, ...] = ()
    """Texts used by other web versions, recognised when stripping."""

    @property
    def all_texts(self) -> tuple[str, ...]:
        return (self.tags, *self.variants)


_V4_TEXT: Final = " Text:"
_V5_QUALITY: Final = QualityPreset(
    "very aesthetic, masterpiece, no text",
    text_marker=" teXt:",
    variants=("very aesthetic, amazing quality, no text",),
)

QUALITY: Final[Mapping[Family, QualityPreset]] = MappingProxyType(
    {
        Family.V5: _V5_QUALITY,
        Family.V5_CURATED: _V5_QUALITY,
        Family.V4_5: QualityPreset(
            "very aesthetic, masterpiece, no text",
            text_marker=_V4_TEXT,
            variants=("location, very aesthetic, masterpiece, no text",),
        ),
        Family.V4_5_CURATED: QualityPreset(
            "very aesthetic, location, masterpiece, no text, -0.8::feet::, rating:general",
            text_marker=_V4_TEXT,
            variants=(
                "location, masterpiece, no text, -0.8::feet::, rating:general",
                "very aesthetic, masterpiece, no text, -0.8::feet::, rating:general",
            ),
        ),
        Family.V4: QualityPreset("no text, best quality, very aesthetic, absurdres", text_marker=_V4_TEXT),
        Family.V4_CURATED: QualityPreset(
            "rating:general, amazing quality, very aesthetic, absurdres",
            text_marker=_V4_TEXT,
            variants=("rating:general, best quality, very aesthetic, absurdres",),
        ),
        Family.V3: QualityPreset("best quality, amazing quality, very aesthetic, absurdres"),
        Family.V3_FURRY: QualityPreset("{best quality}, {amazing quality}"),
        Family.V2: QualityPreset("very aesthetic, best quality, absurdres", prepend=True),
        Family.V1: QualityPreset("masterpiece, best quality", prepend=True),
    }
)

_V45_HEAVY: Final = (
    "nsfw, lowres, artistic error, film grain, scan artifacts, worst quality, bad quality, jpeg artifacts, "
    "very displeasing, chromatic aberration, dithering, halftone, screentone, multiple views, logo, "
    "too many watermarks, negative space, blank page"
)
_FOCUS_EYES: Final = ", @_@, mismatched pupils, glowing eyes, bad anatomy"
_FURRY_FOCUS: Final = (
    "nsfw, {worst quality}, distracting watermark, unfinished, bad quality, {widescreen}, upscale, {sequence}, "
    "{{grandfathered content}}, blurred foreground, chromatic aberration, sketch, everyone, [sketch background], "
    "simple, [flat colors], ych (character), outline, multiple scenes, [[horror (theme)]], comic"
)
_V5_HEAVY: Final = _V45_HEAVY.removeprefix("nsfw, ")
_V5_PRESETS: Final = {
    UcPreset.HEAVY: _V5_HEAVY,
    UcPreset.LIGHT: (
        "lowres, bad hands, bad anatomy, artistic error, sepia, white haze, worst quality, very displeasing, "
        "jpeg artifacts, 0::ai-generated::"
    ),
    UcPreset.HUMAN_FOCUS: _V5_HEAVY + _FOCUS_EYES,
    UcPreset.FURRY_FOCUS: _FURRY_FOCUS,
    UcPreset.NONE: "",
}
_V3_HEAVY: Final = (
    "nsfw, lowres, {bad}, error, fewer, extra, missing, worst quality, jpeg artifacts, bad quality, watermark, "
    "unfinished, displeasing, chromatic aberration, signature, extra digits, artistic error, username, scan, "
    "[abstract]"
)
_V4_CURATED_HEAVY: Final = (
    "blurry, lowres, error, film grain, scan artifacts, worst quality, bad quality, jpeg artifacts, "
    "very displeasing, chromatic aberration, logo, dated, signature, multiple views, gigantic breasts"
)

UC_PRESETS: Final[Mapping[Family, Mapping[UcPreset, str]]] = MappingProxyType(
    {
        Family.V5: _V5_PRESETS,
        Family.V5_CURATED: _V5_PRESETS,
        Family.V4_5: {
            UcPreset.HEAVY: _V45_HEAVY,
            UcPreset.LIGHT: (
                "nsfw, lowres, artistic error, scan artifacts, worst quality, bad quality, jpeg artifacts, "
                "multiple views, very displeasing, too many watermarks, negative space, blank page"
            ),
            UcPreset.HUMAN_FOCUS: _V45_HEAVY + _FOCUS_EYES,
            UcPreset.FURRY_FOCUS: _FURRY_FOCUS,
            UcPreset.NONE: "",
        },
        Family.V4_5_CURATED: {
            UcPreset.HEAVY: (
                "blurry, lowres, upscaled, artistic error, film grain, scan artifacts, worst quality, "
                "bad quality, jpeg artifacts, very displeasing, chromatic aberration, halftone, multiple views, "
                "logo, too many watermarks, negative space, blank page"
            ),
            UcPreset.LIGHT: (
                "blurry, lowres, upscaled, artistic error, scan artifacts, jpeg artifacts, logo, "
                "too many watermarks, negative space, blank page"
            ),
            UcPreset.HUMAN_FOCUS: (
                "blurry, lowres, upscaled, artistic error, film grain, scan artifacts, bad anatomy, bad hands, "
                "worst quality, bad quality, jpeg artifacts, very displeasing, chromatic aberration, halftone, "
                "multiple views, logo, too many watermarks, @_@, mismatched pupils, glowing eyes, "
                "negative space, blank page"
            ),
            UcPreset.NONE: "",
        },
        Family.V4: {
            UcPreset.HEAVY: (
                "nsfw, blurry, lowres, error, film grain, scan artifacts, worst quality, bad quality, "
                "jpeg artifacts, very displeasing, chromatic aberration, multiple views, logo, "
                "too many watermarks, white blank page, blank page"
            ),
            UcPreset.LIGHT: (
                "nsfw, blurry, lowres, error, worst quality, bad quality, jpeg artifacts, very displeasing, "
                "white blank page, blank page"
            ),
            UcPreset.NONE: "",
        },
        Family.V4_CURATED: {
            UcPreset.HEAVY: _V4_CURATED_HEAVY,
            UcPreset.LIGHT: (
                "blurry, lowres, error, worst quality, bad quality, jpeg artifacts, very displeasing, logo, "
                "dated, signature"
            ),
            UcPreset.NONE: "",
        },
        Family.V3: {
            UcPreset.HEAVY: _V3_HEAVY,
            UcPreset.LIGHT: "nsfw, lowres, jpeg artifacts, worst quality, watermark, blurry, very displeasing",
            UcPreset.HUMAN_FOCUS: _V3_HEAVY
            + ", bad anatomy, bad hands, @_@, mismatched pupils, heart-shaped pupils, glowing eyes",
            UcPreset.NONE: "lowres",
        },
        Family.V3_FURRY: {
            UcPreset.HEAVY: (
                "nsfw, {{worst quality}}, [displeasing], {unusual pupils}, guide lines, {{unfinished}}, {bad}, "
                "url, artist name, {{tall image}}, mosaic, {sketch page}, comic panel, impact (font), [dated], "
                "{logo}, ych, {what}, {where is your god now}, {distorted text}, repeated text, "
                "{floating head}, {1994}, {widescreen}, absolutely everyone, sequence, "
                "{compression artifacts}, hard translated, {cropped}, {commissioner name}, unknown text, "
                "high contrast"
            ),
            UcPreset.LIGHT: (
                "nsfw, {worst quality}, guide lines, unfinished, bad, url, tall image, widescreen, "
                "compression artifacts, unknown text"
            ),
            UcPreset.NONE: "lowres",
        },
        Family.V2: {UcPreset.NONE: ""},
        Family.V1: {UcPreset.NONE: ""},
    }
)

# Texts other web versions used for a preset, recognised when stripping.
UC_VARIANTS: Final[Mapping[Family, tuple[tuple[UcPreset, str], ...]]] = MappingProxyType(
    {Family.V4_CURATED: ((UcPreset.HEAVY, _V4_CURATED_HEAVY + ", white blank page, blank page"),)}
)

# The `ucPreset` number stored in request metadata; the server ignores it.
UC_PRESET_NUMBER: Final[Mapping[UcPreset, int]] = MappingProxyType(
    {UcPreset.HEAVY: 0, UcPreset.LIGHT: 1, UcPreset.HUMAN_FOCUS: 2, UcPreset.NONE: 3, UcPreset.FURRY_FOCUS: 4}
)

DATASET_PREFIXES: Final[Mapping[str, str]] = MappingProxyType(
    {"fur": "fur dataset", "background": "background dataset"}
)


def _family(model_or_family: str | Family) -> Family:
    return model_or_family if isinstance(model_or_family, Family) else model_spec(model_or_family).family


def _join(first: str, second: str) -> str:
    if not first:
        return second
    return first + SEPARATOR + second if second else first


def _after_prefix(text: str, prefix: str) -> str | None:
    """What `_join(prefix, rest)` had as `rest`, or None when `text` does not start with `prefix`."""
    if text == prefix:
        return ""
    if text.startswith(prefix + SEPARATOR):
        return text[len(prefix) + len(SEPARATOR) :]
    return None


# --- quality tags ----------------------------------------------------------------------------------------


def apply_quality_tags(prompt: str, model: str | Family) -> str:
    """`prompt` with the model's quality tags where the web puts them."""
    preset = QUALITY[_family(model)]
    if preset.prepend:
        return _join(preset.tags, prompt)
    if preset.text_marker is not None:
        at = prompt.find(preset.text_marker)
        if at >= 0:
            return _join(prompt[:at], preset.tags) + "." + prompt[at:]
    return _join(prompt, preset.tags)


def _strip_quality(prompt: str, tags: str, preset: QualityPreset) -> str | None:
    if prompt == tags:
        return ""
    if preset.prepend:
        return _after_prefix(prompt, tags)
    if preset.text_marker is not None:
        for inserted in (SEPARATOR + tags + ".", tags + "."):
            at = prompt.find(inserted + preset.text_marker)
            if at >= 0 and (inserted.startswith(SEPARATOR) or at == 0):
                return prompt[:at] + prompt[at + len(inserted) :]
    if prompt.endswith(SEPARATOR + tags):
        return prompt[: -len(SEPARATOR + tags)]
    return None


def strip_quality_tags(prompt: str, model: str | Family | None = None) -> tuple[str, bool]:
    """`prompt` without quality tags (any known variant; every model's when `model` is None) and whether
    some were found. The longest matching text wins, so a variant that extends another is removed whole."""
    presets: Iterable[QualityPreset] = QUALITY.values() if model is None else (QUALITY[_family(model)],)
    candidates = [(tags, preset) for preset in presets for tags in preset.all_texts]
    for tags, preset in sorted(candidates, key=lambda pair: len(pair[0]), reverse=True):
        stripped = _strip_quality(prompt, tags, preset)
        if stripped is not None:
            return stripped, True
    return prompt, False


# --- undesired-content presets ---------------------------------------------------------------------------


def available_uc_presets(model: str | Family) -> tuple[UcPreset, ...]:
    return tuple(UC_PRESETS[_family(model)])


def _has_nsfw(prompt: str) -> bool:
    return any(tag.normalized == "nsfw" and tag.weight > 0 for tag in split_tags(prompt))


def uc_preset_text(model: str | Family, preset: UcPreset, prompt: str = "") -> str:
    """The preset's text for this model; a positive prompt asking for `nsfw` drops `nsfw` from it."""
    family = _family(model)
    table = UC_PRESETS[family]
    if preset not in table:
        names = ", ".join(p.value for p in table)
        raise RequestError("uc_preset", f"{preset.value!r} is not offered for {family.value} models ({names})")
    return _without_nsfw(table[preset]) if _has_nsfw(prompt) else table[preset]


def _without_nsfw(text: str) -> str:
    if text == "nsfw":
        return ""
    return text.removeprefix("nsfw" + SEPARATOR)


def apply_uc_preset(negative: str, model: str | Family, preset: UcPreset | None, prompt: str = "") -> str:
    """`negative` with the preset text in front, as the web sends it; None leaves it untouched."""
    if preset is None:
        return negative
    return _join(uc_preset_text(model, preset, prompt), negative)


def strip_uc_preset(negative: str, model: str | Family | None = None, prompt: str = "") -> tuple[str, UcPreset | None]:
    """`negative` without the preset text it starts with, and which preset that was (None when none).

    Only the exact text `apply_uc_preset` would produce for this positive prompt is recognised, so
    re-applying the result gives back the same negative byte for byte. The longest match wins (Human Focus
    extends Heavy).
    """
    families: Iterable[Family] = UC_PRESETS if model is None else (_family(model),)
    nsfw = _has_nsfw(prompt)
    candidates: list[tuple[str, UcPreset]] = []
    for family in families:
        pairs = [(text, preset) for preset, text in UC_PRESETS[family].items()]
        pairs += [(text, preset) for preset, text in UC_VARIANTS.get(family, ())]
        # "None" means different text per model (V3's is "lowres"): without the model it says nothing.
        pairs = [(text, preset) for text, preset in pairs if model is not None or preset is not UcPreset.NONE]
        candidates += [(_without_nsfw(text) if nsfw else text, preset) for text, preset in pairs]
    for text, preset in sorted(candidates, key=lambda pair: len(pair[0]), reverse=True):
        rest = _after_prefix(negative, text) if text else None
        if rest is not None:
            return rest, preset
    return negative, None


# --- dataset prefixes -------------------------------------------------------------------------------------


def dataset_prefix(model: str, dataset: str) -> str:
    """The prompt prefix for a dataset the model offers ("fur" -> "fur dataset")."""
    spec = model_spec(model)
    if dataset not in spec.dataset_prefixes or dataset not in DATASET_PREFIXES:
        offered = ", ".join(spec.dataset_prefixes) or "none"
        raise RequestError("dataset", f"{dataset!r} is not offered by {spec.label} (offered: {offered})")
    return DATASET_PREFIXES[dataset]


def apply_dataset_prefix(prompt: str, model: str, dataset: str | None) -> str:
    return prompt if dataset is None else _join(dataset_prefix(model, dataset), prompt)


def strip_dataset_prefix(prompt: str, model: str | None = None) -> tuple[str, str | None]:
    """`prompt` without a leading dataset prefix (only those `model` offers, when given) and which it was."""
    offered = DATASET_PREFIXES if model is None else model_spec(model).dataset_prefixes
    for dataset, prefix in DATASET_PREFIXES.items():
        rest = _after_prefix(prompt, prefix) if dataset in offered else None
        if rest is not None:
            return rest, dataset
    return prompt, None


# --- both ways at once ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptParts:
    """A prompt pair split into what the user wrote and the presets that were added to it."""

    prompt: str
    negative: str
    quality_tags: bool
    uc_preset: UcPreset | None
    dataset: str | None


def compose_prompts(
    prompt: str,
    negative: str,
    model: str,
    *,
    quality_tags: bool,
    uc_preset: UcPreset | None,
    dataset: str | None = None,
) -> tuple[str, str]:
    """The (positive, negative) text the web sends: commas normalised, dataset prefix, quality tags, preset."""
    positive = apply_dataset_prefix(normalize_commas_nai(prompt), model, dataset)
    if quality_tags:
        positive = apply_quality_tags(positive, model)
    return positive, apply_uc_preset(normalize_commas_nai(negative), model, uc_preset, positive)


def split_prompts(prompt: str, negative: str, model: str | None) -> PromptParts:
    """Undo `compose_prompts` on text read from an image, so its settings can be applied without doubling.

    With `model` None, or a model this table does not know (older images name it loosely), every model's
    tables are tried.
    """
    try:
        family = None if model is None else model_spec(model).family
    except RequestError:
        family = model = None
    user_uc, preset = strip_uc_preset(negative, family, prompt)
    user_prompt, quality = strip_quality_tags(prompt, family)
    user_prompt, dataset = strip_dataset_prefix(user_prompt, model)
    return PromptParts(user_prompt, user_uc, quality, preset, dataset)
