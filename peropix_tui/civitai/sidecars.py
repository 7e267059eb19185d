"""The `<image_id>.txt` sidecar next to each collected image: its prompt, curated, plus everything known about it.

The format is the collection's long-standing one, a JSON object with `raw_prompt` (as the uploader wrote it),
`prompt` (every word filter applied), `prompt_with_clothes` (all filters but clothes) and `lora` (the LoRA
tags), to which the full generation `meta` and the image, model and version ids and URLs are added.

In `prompt` and `prompt_with_clothes` the LoRA tags come first and the tag of the model being collected leads,
named after the file on disk so the prompt works with the collected LoRA as it is. That tag is recognised by
name, or by the hashes A1111 and CivitAI record (`hashes["lora:<name>"]`, `resources[]`); an image linked to
the version whose prompt has no such tag (CivitAI's own generator writes none) gets one, weighted as its
resource list says, else 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peropix_tui.core.prompt import (
    Dialect,
    LoraRef,
    WordFilter,
    find_loras,
    normalize_prompt,
    remove_loras,
    rename_lora,
)

LORA_TYPES = frozenset({"lora", "locon", "dora", "lycoris"})
CLOTHES = "clothes"
_HASH_KEYS = ("SHA256", "AutoV3", "AutoV2", "AutoV1", "BLAKE3", "CRC32")
_MIN_HASH_LEN = 8
# A trailing version or epoch marker that training tools and uploaders add to a LoRA's name: `-03`, `_v2`,
# `-000010`, ` v1.5`, `_epoch8`; `art_numahana` and `art_numahana-03` are the same LoRA.
_VERSION_TAIL = re.compile(
    r"(?:[-_. ]+(?:v|ver|version|e|ep|epoch)?|(?:v|ver|version|epoch))\d+(?:[._]\d+)*$", re.IGNORECASE
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class ModelFileRef:
    """One file of the version, as the API lists it and as it is named on disk."""

    file_id: int
    api_name: str
    saved_name: str
    hashes: Mapping[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.saved_name.rsplit(".", 1)[0] if "." in self.saved_name else self.saved_name

    @property
    def api_stem(self) -> str:
        """The API's file name without extension or any folder part (`../../x.safetensors` -> `x`)."""
        base = self.api_name.replace("\\", "/").rsplit("/", 1)[-1]
        return base.rsplit(".", 1)[0] if "." in base else base


@dataclass(frozen=True, slots=True)
class SidecarContext:
    """What the sidecar says about where the image belongs."""

    model_id: int
    model_name: str
    model_type: str
    version_id: int
    version_name: str
    base_model: str
    files: Sequence[ModelFileRef]
    site: str = "https://civitai.com"
    creator: str = ""

    @property
    def is_lora(self) -> bool:
        return self.model_type.lower() in LORA_TYPES


def poster(value: Any, creator: str) -> str | None:
    """Who posted the image, as text: an all-digit username can arrive as a JSON number that lost its
    leading zeros (`0123` as 123), so a number that is the creator's name without them is the creator."""
    if value is None:
        return creator or None
    text = str(value)
    if creator and isinstance(value, int) and not isinstance(value, bool) and creator.isdigit():
        return creator if int(creator) == value else text
    return text


def unwrap_meta(meta: Any) -> dict[str, Any] | None:
    """The generation meta as a flat object; the legacy `{"id": …, "meta": {…}}` wrapper is taken off."""
    if not isinstance(meta, dict):
        return None
    inner = meta.get("meta")
    if set(meta) <= {"id", "meta"} and (isinstance(inner, dict) or inner is None):
        return inner
    return meta


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _hash_matches(recorded: Any, files: Iterable[ModelFileRef]) -> bool:
    """A hash from image meta (any CivitAI/A1111 flavour, any case) that starts one of the files' hashes."""
    if not isinstance(recorded, str) or len(recorded.strip()) < _MIN_HASH_LEN:
        return False
    wanted = recorded.strip().upper()
    for ref in files:
        for key in _HASH_KEYS:
            known = ref.hashes.get(key)
            if isinstance(known, str) and known and (known.upper().startswith(wanted) or wanted == known.upper()):
                return True
    return False


def _resource_weight(meta: Mapping[str, Any], version_id: int, names: set[str], files: Sequence[ModelFileRef]) -> Any:
    """The weight the image's resource lists give this version, or None when they do not name it."""
    for entry in _dicts(meta.get("civitaiResources")):
        if _same_id(entry.get("modelVersionId"), version_id):
            return entry.get("weight", entry.get("strength"))
    for entry in _dicts(meta.get("additionalResources")):
        air = _text(entry.get("air")) or _text(entry.get("name"))
        if air.endswith(f"@{version_id}"):
            return entry.get("strength", entry.get("weight"))
    for entry in _dicts(meta.get("resources")):
        name = _text(entry.get("name")).casefold()
        if name in names or _hash_matches(entry.get("hash"), files):
            return entry.get("weight", entry.get("strength"))
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _same_id(value: Any, wanted: int) -> bool:
    try:
        return int(value) == wanted
    except (TypeError, ValueError):
        return False


def _weight_text(weight: Any) -> str:
    try:
        number = float(weight)
    except (TypeError, ValueError):
        return "1"
    if number != number or number in (float("inf"), float("-inf")):
        return "1"
    return f"{number:g}"


def family(name: str) -> str:
    """A LoRA name without case and without a trailing version or epoch number."""
    folded = name.strip().casefold()
    return _VERSION_TAIL.sub("", folded) or folded


def _own_tag(raw: str, meta: Mapping[str, Any], context: SidecarContext) -> LoraRef | None:
    """The prompt's LoRA tag that refers to this version's file: same name, a recorded hash of the file, or
    (last) the same name family (`art_numahana` for `art_numahana-03.safetensors`)."""
    files = context.files
    names = {ref.stem.casefold() for ref in files} | {ref.api_stem.casefold() for ref in files}
    hashes = meta.get("hashes")
    lowered_hashes = {str(k).casefold(): v for k, v in hashes.items()} if isinstance(hashes, dict) else {}
    resources = {_text(r.get("name")).casefold(): r.get("hash") for r in _dicts(meta.get("resources"))}
    tags = find_loras(raw)
    for ref in tags:
        name = ref.name.strip().casefold()
        if name in names:
            return ref
        if _hash_matches(lowered_hashes.get(f"lora:{name}"), files) or _hash_matches(resources.get(name), files):
            return ref
    families = {family(name) for name in names}
    return next((ref for ref in tags if family(ref.name) in families), None)


def lead_lora(raw: str, meta: Mapping[str, Any], context: SidecarContext) -> tuple[str, str | None]:
    """`(prompt, own tag)`: the prompt with this model's tag named after its file on disk, and that tag.

    The tag is None when the model is not a LoRA or the version has no file on disk to name.
    """
    primary = context.files[0] if context.files else None
    if primary is None or not context.is_lora:
        return raw, None
    found = _own_tag(raw, meta, context)
    if found is not None:
        renamed = rename_lora(raw, found.name.strip(), primary.stem) if found.name.strip() != primary.stem else raw
        for ref in find_loras(renamed):
            if ref.start == found.start:
                return renamed, ref.text
        return renamed, None
    names = {ref.stem.casefold() for ref in context.files} | {ref.api_stem.casefold() for ref in context.files}
    weight = _resource_weight(meta, context.version_id, names, context.files)
    return raw, f"<lora:{primary.stem}:{_weight_text(weight)}>"


def loras_first(prompt: str, own: str | None) -> tuple[str, list[str]]:
    """The prompt with every LoRA tag moved to the front, `own` leading, each distinct tag once; and the tags."""
    tags: list[str] = [own] if own else []
    for ref in find_loras(prompt):
        if ref.text not in tags:
            tags.append(ref.text)
    rest = remove_loras(prompt, dialect=Dialect.SD).strip()
    if not tags:
        return prompt, tags
    front = ", ".join(tags)
    return (f"{front}, {rest}" if rest else front), tags


def build_sidecar(
    image: Mapping[str, Any],
    meta: Mapping[str, Any] | None,
    context: SidecarContext,
    filters: WordFilter,
    *,
    image_url: str,
    showcase: bool,
) -> dict[str, Any]:
    """The sidecar object for one image (an item of /api/v1/images or a version's showcase list)."""
    flat = meta or {}
    raw = _text(flat.get("prompt"))
    renamed, own = lead_lora(raw, flat, context)
    front, tags = loras_first(renamed, own)
    front = _CONTROL.sub(" ", front)
    every = filters.categories
    without_clothes = [name for name in every if name != CLOTHES]
    prompt = normalize_prompt(filters.apply(front, Dialect.SD, every).text, dialect=Dialect.SD)
    with_clothes = normalize_prompt(filters.apply(front, Dialect.SD, without_clothes).text, dialect=Dialect.SD)
    image_id = image.get("id")
    return {
        "raw_prompt": raw,
        "prompt": prompt,
        "prompt_with_clothes": with_clothes,
        "lora": tags,
        "negative_prompt": _text(flat.get("negativePrompt")),
        "image_id": image_id,
        "image_url": image_url,
        "image_page": f"{context.site}/images/{image_id}",
        "username": poster(image.get("username"), context.creator),
        "model_id": context.model_id,
        "model_name": context.model_name,
        "model_type": context.model_type,
        "version_id": context.version_id,
        "version_name": context.version_name,
        "base_model": context.base_model,
        "showcase": showcase,
        "width": image.get("width"),
        "height": image.get("height"),
        "nsfw_level": image.get("nsfwLevel"),
        "browsing_level": image.get("browsingLevel"),
        "post_id": image.get("postId"),
        "created_at": image.get("createdAt"),
        "meta": meta,
    }
