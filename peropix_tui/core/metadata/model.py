"""`ImageMetadata`, the one shape every source is read into, and its NovelAI Comment / A1111 mappings.

A value of 0 (cfg_rescale 0, noise 0) is a present value: every test here is `is None`, never truthiness.
Comment keys the app does not map are kept verbatim in `extra`, in their original order, so reading and
re-writing a NovelAI Comment gives back the same JSON text (which keeps NovelAI's signature checkable).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peropix_tui.core.metadata.a1111 import (
    A1111Parameters,
    format_parameters,
    sampler_to_a1111,
    sampler_to_nai,
    schedule_to_a1111,
    schedule_to_nai,
    split_legacy_sampler,
)
from peropix_tui.core.prompt import extract_loras

PEROPIX_KEY = "peropix"


@dataclass(frozen=True, slots=True)
class CharacterPrompt:
    """One V4+ character: its prompt, its own negative, and where it sits (x, y in 0..1)."""

    prompt: str
    negative: str = ""
    centers: tuple[tuple[float, float], ...] = ((0.5, 0.5),)


@dataclass(slots=True)
class ImageMetadata:
    """Generation settings of one image, whatever tool wrote them; None means "not recorded"."""

    prompt: str | None = None
    negative_prompt: str | None = None
    model: str | None = None
    model_hash: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    cfg_rescale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    smea: bool | None = None
    smea_dyn: bool | None = None
    strength: float | None = None
    noise: float | None = None
    n_samples: int | None = None
    request_type: str | None = None
    characters: list[CharacterPrompt] = field(default_factory=list)
    loras: list[tuple[str, str]] = field(default_factory=list)
    software: str | None = None
    source: str | None = None
    title: str | None = None
    generation_time: str | None = None
    found_in: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Comment keys the model does not map (and mapped keys whose value had the wrong type), verbatim."""
    parameters_extra: dict[str, str] = field(default_factory=dict)
    """A1111 settings the model does not map (`Clip skip`, `Version`, `Lora hashes`...), verbatim."""
    peropix: dict[str, Any] = field(default_factory=dict)
    """App-only fields, stored under a `peropix` key inside the Comment JSON."""
    warnings: list[str] = field(default_factory=list)
    comment_keys: list[str] = field(default_factory=list, repr=False)
    """Key order of the Comment this was read from, reused when writing it back."""

    @property
    def is_empty(self) -> bool:
        return not self.found_in and not self.raw


# Comment key, ImageMetadata attribute, accepted type.
_COMMENT_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("prompt", "prompt", str),
    ("steps", "steps", int),
    ("height", "height", int),
    ("width", "width", int),
    ("scale", "cfg", float),
    ("cfg_rescale", "cfg_rescale", float),
    ("seed", "seed", int),
    ("n_samples", "n_samples", int),
    ("strength", "strength", float),
    ("noise", "noise", float),
    ("noise_schedule", "scheduler", str),
    ("sampler", "sampler", str),
    ("sm", "smea", bool),
    ("sm_dyn", "smea_dyn", bool),
    ("uc", "negative_prompt", str),
    ("request_type", "request_type", str),
    ("model_name", "model", str),
    ("model_hash", "model_hash", str),
)
# The model travels in `Source`; these keys are written only when the Comment being rewritten had them (V5).
_ONLY_IF_PRESENT = frozenset({"model_name", "model_hash"})


def _coerce(value: object, kind: type) -> tuple[bool, Any]:
    if isinstance(value, bool):
        return kind is bool, value
    if kind is int:
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return True, int(value)
        return False, None
    if kind is float:
        ok = isinstance(value, int | float) and math.isfinite(value)
        return ok, value if ok else None
    return isinstance(value, kind), value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _captions(block: object) -> list[dict[str, Any]]:
    if isinstance(block, dict):
        caption = block.get("caption")
        if isinstance(caption, dict) and isinstance(caption.get("char_captions"), list):
            return [c for c in caption["char_captions"] if isinstance(c, dict)]
    return []


def _base_caption(block: object) -> str | None:
    if isinstance(block, dict) and isinstance(block.get("caption"), dict):
        base = block["caption"].get("base_caption")
        if isinstance(base, str):
            return base
    return None


def _centers(caption: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    centers: list[tuple[float, float]] = []
    raw = caption.get("centers")
    for center in raw if isinstance(raw, list) else []:
        if isinstance(center, dict):
            x, y = center.get("x"), center.get("y")
            if _coerce(x, float)[0] and _coerce(y, float)[0]:
                centers.append((x, y))  # type: ignore[arg-type]  # checked numeric just above
    return tuple(centers) or ((0.5, 0.5),)


def _characters(comment: Mapping[str, Any]) -> list[CharacterPrompt]:
    positives = _captions(comment.get("v4_prompt"))
    negatives = _captions(comment.get("v4_negative_prompt"))
    characters = []
    for index, caption in enumerate(positives):
        text = caption.get("char_caption")
        negative = negatives[index].get("char_caption") if index < len(negatives) else ""
        characters.append(
            CharacterPrompt(
                text if isinstance(text, str) else "",
                negative if isinstance(negative, str) else "",
                _centers(caption),
            )
        )
    return characters


# Every LoRA tag the prompt language knows starts like this; checking first skips a full tokenisation of the
# (usually LoRA-free) prompt, which would otherwise dominate the cost of reading a file.
_LORA_HINT = re.compile(r"<(?:lora|lyco):", re.IGNORECASE)


MAX_LORA_SCAN = 64 * 1024
"""Longest prompt scanned for LoRA tags (real prompts are a few kilobytes; a hostile one must stay cheap)."""


def lora_refs(text: str | None, warnings: list[str]) -> list[tuple[str, str]]:
    """`(full tag, name)` for every LoRA tag in a prompt, as the prompt module reads them."""
    if not text or _LORA_HINT.search(text) is None:
        return []
    if len(text) > MAX_LORA_SCAN:
        warnings.append(f"prompt of {len(text)} characters not scanned for LoRA tags")
        return []
    return extract_loras(text)


def from_nai_comment(comment: Mapping[str, Any]) -> ImageMetadata:
    """Map a decoded NovelAI Comment; values of the wrong type are kept in `extra` with a warning."""
    meta = ImageMetadata(comment_keys=list(comment))
    mapped = {key: (attr, kind) for key, attr, kind in _COMMENT_FIELDS}
    for key, value in comment.items():
        if key in mapped:
            attr, kind = mapped[key]
            ok, coerced = _coerce(value, kind)
            if ok:
                setattr(meta, attr, coerced)
                continue
            if value is not None:
                meta.warnings.append(f"Comment field {key!r} has an unexpected value {_short(value)}; kept as is")
        elif key == PEROPIX_KEY and isinstance(value, dict):
            meta.peropix = copy.deepcopy(value)
            continue
        meta.extra[key] = copy.deepcopy(value)
    if meta.prompt is None:
        meta.prompt = _base_caption(comment.get("v4_prompt"))
    if meta.negative_prompt is None:
        meta.negative_prompt = _base_caption(comment.get("v4_negative_prompt"))
    meta.characters = _characters(comment)
    meta.loras = lora_refs(meta.prompt, meta.warnings)
    return meta


def _caption_list(texts: list[str], characters: list[CharacterPrompt]) -> list[dict[str, Any]]:
    return [
        {"char_caption": text, "centers": [{"x": x, "y": y} for x, y in character.centers]}
        for text, character in zip(texts, characters, strict=True)
    ]


def _v4_block(existing: object, base: str | None, texts: list[str], meta: ImageMetadata, negative: bool) -> Any:
    """The v4 prompt structure with base caption and characters taken from `meta`, other keys kept."""
    if existing is not None and not isinstance(existing, dict):
        return existing
    block: dict[str, Any] = copy.deepcopy(existing) if isinstance(existing, dict) else {}
    if not block:
        block = {"caption": {"base_caption": "", "char_captions": []}}
        if negative:
            block["legacy_uc"] = False
        else:
            block["use_coords"] = any(c.centers != ((0.5, 0.5),) for c in meta.characters)
            block["use_order"] = True
    caption = block.get("caption")
    if not isinstance(caption, dict):
        caption = block["caption"] = {}
    if base is not None:
        caption["base_caption"] = base
    caption["char_captions"] = _caption_list(texts, meta.characters)
    return block


def to_nai_comment(meta: ImageMetadata) -> dict[str, Any]:
    """The Comment dict for `meta`: mapped fields, `extra` verbatim, v4 captions rebuilt, `peropix` added."""
    out: dict[str, Any] = {}
    for key, attr, _kind in _COMMENT_FIELDS:
        value = getattr(meta, attr)
        if value is not None and (key not in _ONLY_IF_PRESENT or key in meta.comment_keys):
            out[key] = value
    for key, value in meta.extra.items():
        out.setdefault(key, copy.deepcopy(value))
    if "v4_prompt" in out or meta.characters:
        texts = [c.prompt for c in meta.characters]
        out["v4_prompt"] = _v4_block(out.get("v4_prompt"), meta.prompt, texts, meta, negative=False)
    if "v4_negative_prompt" in out or meta.characters:
        texts = [c.negative for c in meta.characters]
        out["v4_negative_prompt"] = _v4_block(
            out.get("v4_negative_prompt"), meta.negative_prompt, texts, meta, negative=True
        )
    if meta.peropix:
        out[PEROPIX_KEY] = copy.deepcopy(meta.peropix)
    first = [key for key in meta.comment_keys if key in out]
    seen = set(first)
    return {key: out[key] for key in [*first, *(k for k in out if k not in seen)]}


# --- A1111 ---------------------------------------------------------------------------------------------

_UINT64 = 1 << 64


def _number(text: str, kind: type) -> int | float | None:
    try:
        value: int | float = int(text) if kind is int else float(text)
    except ValueError:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not 0 <= value < _UINT64:
        return None
    return value


def from_a1111(params: A1111Parameters) -> ImageMetadata:
    """Map A1111 parameters; settings that do not parse stay in `parameters_extra` with a warning."""
    meta = ImageMetadata(prompt=params.prompt, negative_prompt=params.negative_prompt or None)
    numeric = {"Steps": ("steps", int), "Seed": ("seed", int), "CFG scale": ("cfg", float)}
    numeric |= {"CFG rescale": ("cfg_rescale", float), "Denoising strength": ("strength", float)}
    legacy_schedule: str | None = None
    for key, value in params.settings.items():
        if key in numeric:
            attr, kind = numeric[key]
            number = _number(value, kind)
            if number is not None:
                setattr(meta, attr, number)
                continue
            meta.warnings.append(f"A1111 setting {key!r} is not a valid number: {_short(value)}")
        elif key == "Size":
            width, sep, height = value.partition("x")
            w, h = _number(width, int), _number(height, int)
            if sep and isinstance(w, int) and isinstance(h, int):
                meta.width, meta.height = w, h
                continue
            meta.warnings.append(f"A1111 setting 'Size' is not WIDTHxHEIGHT: {_short(value)}")
        elif key == "Sampler":
            name, legacy_schedule = split_legacy_sampler(value)
            meta.sampler = sampler_to_nai(name)
            continue
        elif key == "Schedule type":
            meta.scheduler = schedule_to_nai(value)
            continue
        elif key == "Model":
            meta.model = value
            continue
        elif key == "Model hash":
            meta.model_hash = value
            continue
        meta.parameters_extra[key] = value
    if meta.scheduler is None and legacy_schedule is not None:
        meta.scheduler = schedule_to_nai(legacy_schedule)
    meta.loras = lora_refs(meta.prompt, meta.warnings)
    return meta


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_a1111(meta: ImageMetadata) -> A1111Parameters:
    """A1111 parameters for `meta` (character prompts have no A1111 form and are left out)."""
    settings: dict[str, str] = {}
    if meta.steps is not None:
        settings["Steps"] = str(meta.steps)
    if meta.sampler is not None:
        settings["Sampler"] = sampler_to_a1111(meta.sampler)
    if meta.scheduler is not None:
        settings["Schedule type"] = schedule_to_a1111(meta.scheduler)
    if meta.cfg is not None:
        settings["CFG scale"] = _num(meta.cfg)
    if meta.seed is not None:
        settings["Seed"] = str(meta.seed)
    if meta.width is not None and meta.height is not None:
        settings["Size"] = f"{meta.width}x{meta.height}"
    if meta.model_hash is not None:
        settings["Model hash"] = meta.model_hash
    if meta.model is not None:
        settings["Model"] = meta.model
    if meta.cfg_rescale is not None:
        settings["CFG rescale"] = _num(meta.cfg_rescale)
    if meta.strength is not None:
        settings["Denoising strength"] = _num(meta.strength)
    for key, value in meta.parameters_extra.items():
        settings.setdefault(key, value)
    return A1111Parameters(meta.prompt or "", meta.negative_prompt or "", settings)


def to_a1111_parameters(meta: ImageMetadata) -> str:
    """`meta` as the A1111 `parameters` text other tools read."""
    return format_parameters(to_a1111(meta))
