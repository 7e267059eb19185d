"""`read_metadata`: every place generators hide settings, tried in order, merged into one `ImageMetadata`.

Order: NovelAI text chunks (Comment JSON), A1111 `parameters`, ComfyUI graph, EXIF UserComment, and only
when none of those gave settings, the alpha-channel stealth payload (which costs a full pixel decode).
Damage anywhere gives a warning and whatever could still be read; only a file that is not an image at all,
or cannot be opened, raises `MetadataError`.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from peropix_tui.core.image_format import PNG_SIGNATURE, sniff_image_format
from peropix_tui.core.metadata import comfy
from peropix_tui.core.metadata.a1111 import parse_parameters
from peropix_tui.core.metadata.containers import jpeg_exif, webp_exif
from peropix_tui.core.metadata.errors import MetadataError
from peropix_tui.core.metadata.exif import read_user_comment
from peropix_tui.core.metadata.inflate import TEXT_LIMIT, TEXT_TOTAL_LIMIT
from peropix_tui.core.metadata.jsonutil import loads_object
from peropix_tui.core.metadata.model import ImageMetadata, from_a1111, from_nai_comment, lora_refs
from peropix_tui.core.metadata.nai_models import model_from_source
from peropix_tui.core.metadata.pngchunks import (
    TEXT_TYPES,
    PngHeader,
    decode_text_chunk,
    scan_png,
)
from peropix_tui.core.metadata.stealth import alpha_channel, read_stealth

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024 * 1024
"""WebP/JPEG files are read whole; PNGs are walked chunk by chunk whatever their size."""

MAX_SCAN_PIXELS = 64 * 1024 * 1024
"""Largest image decoded to look for stealth metadata (NovelAI output is at most a few megapixels)."""

# Everything Pillow raises on a hostile or damaged image while decoding.
PILLOW_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    zlib.error,
    Image.DecompressionBombError,
)

_NAI_KEYS = ("Title", "Description", "Software", "Source", "Generation time", "Generation_time", "Comment")
_SUFFIXES = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}


def read_metadata(source: Path | str | bytes) -> ImageMetadata:
    """Read the generation metadata of a PNG, WebP or JPEG given as a path or as the file's bytes.

    Raises `MetadataError` (one line, naming the file for paths) when the file cannot be read as an image.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _read_stream(io.BytesIO(bytes(source)))
    path = Path(source)
    try:
        with path.open("rb") as fh:
            meta = _read_stream(fh)
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return meta


def _read_stream(fh: BinaryIO) -> ImageMetadata:
    head = fh.read(16)
    fh.seek(0)
    kind = sniff_image_format(head)
    if kind is None:
        if not head:
            raise MetadataError("empty file")
        if PNG_SIGNATURE.startswith(head):
            raise MetadataError("PNG file truncated inside its signature")
        raise MetadataError("not a PNG, WebP or JPEG image")
    meta = _read_png(fh) if kind == "png" else _read_whole(fh, kind)
    name = getattr(fh, "name", None)
    if isinstance(name, str):
        expected = _SUFFIXES.get(Path(name).suffix.lower())
        if expected is not None and expected != kind:
            meta.warnings.append(f"file is a {kind.upper()} image despite its {expected.upper()} name")
    return meta


def _read_whole(fh: BinaryIO, kind: str) -> ImageMetadata:
    data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise MetadataError(f"file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit")
    tiff = webp_exif(data) if kind == "webp" else jpeg_exif(data)
    meta = ImageMetadata()
    if tiff is not None:
        _apply_exif(meta, tiff)
    if kind == "webp" and not _has_settings(meta):
        _apply_stealth(meta, lambda: Image.open(io.BytesIO(data)), None)
    return meta


def _read_png(fh: BinaryIO) -> ImageMetadata:
    scan = scan_png(fh, want=lambda t: t in TEXT_TYPES or t == b"eXIf", max_data=TEXT_TOTAL_LIMIT)
    meta = ImageMetadata(warnings=list(scan.warnings))
    exif: bytes | None = None
    budget = TEXT_TOTAL_LIMIT
    for chunk in scan.chunks:
        if chunk.type == b"eXIf":
            exif = exif or chunk.data
            continue
        if budget <= 0:
            meta.warnings.append(f"more than {TEXT_TOTAL_LIMIT >> 20} MiB of text chunks; the rest is ignored")
            break
        try:
            text, warning = decode_text_chunk(chunk, min(TEXT_LIMIT, budget))
        except MetadataError as exc:
            meta.warnings.append(str(exc))
            continue
        budget -= max(len(text.text), len(chunk.data))
        if warning:
            meta.warnings.append(warning)
        if text.key in meta.raw:
            meta.warnings.append(f"duplicate text chunk {text.key!r}; the first one is used")
            continue
        meta.raw[text.key] = text.text
        if text.kind not in meta.found_in:
            meta.found_in.append(text.kind)
    _apply_text_chunks(meta, meta.raw)
    if exif is not None and not _has_settings(meta):
        _apply_exif(meta, exif)
    if not _has_settings(meta) and scan.header is not None and scan.header.has_alpha:

        def open_image() -> Image.Image:
            fh.seek(0)
            return Image.open(fh, formats=["PNG"])

        _apply_stealth(meta, open_image, scan.header)
    if not _has_settings(meta) and meta.raw:
        meta.warnings.append(
            "no recognised generation settings in text chunks: " + ", ".join(repr(k) for k in meta.raw)
        )
    return meta


def _has_settings(meta: ImageMetadata) -> bool:
    return any(tag in meta.found_in for tag in ("novelai", "a1111", "comfyui", "stealth"))


def _merge(into: ImageMetadata, other: ImageMetadata) -> None:
    """Fill the fields `into` lacks from `other`; lists and dicts are combined, `into` wins on conflicts."""
    for f in fields(ImageMetadata):
        mine, theirs = getattr(into, f.name), getattr(other, f.name)
        if f.name in ("found_in", "warnings"):
            mine.extend(x for x in theirs if x not in mine)
        elif isinstance(mine, dict):
            for key, value in theirs.items():
                mine.setdefault(key, value)
        elif isinstance(mine, list):
            if not mine:
                mine.extend(theirs)
        elif mine is None:
            setattr(into, f.name, theirs)


def _nai(fields_: Mapping[str, Any], warnings_: list[str]) -> ImageMetadata | None:
    """NovelAI's chunk set (Title, Description, Software, Source, Generation time, Comment)."""
    raw_comment = fields_.get("Comment")
    comment = raw_comment if isinstance(raw_comment, dict) else None
    if isinstance(raw_comment, str):
        comment = loads_object(raw_comment)
        if comment is None:
            warnings_.append("'Comment' text is not a NovelAI JSON object; ignored")
    if comment is None and fields_.get("Software") != "NovelAI":
        return None
    meta = from_nai_comment(comment) if comment is not None else ImageMetadata()
    text = {k: v for k, v in fields_.items() if isinstance(v, str)}
    meta.title = text.get("Title")
    meta.software = text.get("Software")
    meta.source = text.get("Source")
    meta.generation_time = text.get("Generation time", text.get("Generation_time"))
    if meta.prompt is None and "Description" in text:
        meta.prompt = text["Description"]
        meta.loras = lora_refs(meta.prompt, meta.warnings)
    if meta.source:
        model, digest = model_from_source(meta.source)
        meta.model = meta.model if meta.model is not None else model
        meta.model_hash = meta.model_hash if meta.model_hash is not None else digest
    meta.found_in.append("novelai")
    return meta


def _a1111(text: str, warnings_: list[str], where: str) -> ImageMetadata | None:
    if text.lstrip().startswith("{") and loads_object(text) is not None:
        warnings_.append(f"{where} holds JSON, not A1111 parameters; kept raw")
        return None
    meta = from_a1111(parse_parameters(text))
    meta.found_in.append("a1111")
    return meta


def _comfy(raw: Mapping[str, str], warnings_: list[str]) -> ImageMetadata | None:
    graph = comfy.parse_graph(raw["prompt"]) if "prompt" in raw else None
    if graph is None:
        if "workflow" in raw or "prompt" in raw:
            warnings_.append("ComfyUI chunks without a readable API graph; kept raw")
        return None
    settings = comfy.extract_settings(graph)
    if settings is None:
        warnings_.append("ComfyUI graph has no recognisable sampler node; kept raw")
        return None
    strength = settings.denoise if settings.denoise is not None and settings.denoise < 1 else None
    meta = ImageMetadata(
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        model=settings.model,
        seed=settings.seed,
        steps=settings.steps,
        cfg=settings.cfg,
        sampler=None if settings.sampler is None else comfy.sampler_to_nai(settings.sampler),
        scheduler=settings.scheduler,
        width=settings.width,
        height=settings.height,
        strength=strength,
        found_in=["comfyui"],
    )
    loader_loras = [(f"<lora:{name}:{weight:g}>", name) for name, weight in settings.loras]
    meta.loras = lora_refs(meta.prompt, meta.warnings) + loader_loras
    return meta


def _apply_text_chunks(meta: ImageMetadata, raw: Mapping[str, str]) -> None:
    found: list[ImageMetadata | None] = []
    if any(key in raw for key in _NAI_KEYS):
        found.append(_nai({k: raw[k] for k in _NAI_KEYS if k in raw}, meta.warnings))
    if "parameters" in raw:
        found.append(_a1111(raw["parameters"], meta.warnings, "'parameters' chunk"))
    if "prompt" in raw or "workflow" in raw:
        found.append(_comfy(raw, meta.warnings))
    for part in found:
        if part is not None:
            _merge(meta, part)


def _apply_payload(meta: ImageMetadata, text: str, where: str) -> None:
    """A UserComment or stealth payload: NovelAI's chunk dict as JSON, or A1111 parameters text."""
    obj = loads_object(text) if text.lstrip().startswith("{") else None
    if obj is not None and ("Comment" in obj or obj.get("Software") == "NovelAI"):
        part = _nai(obj, meta.warnings)
        for key, value in obj.items():
            if isinstance(value, str):
                meta.raw.setdefault(key, value)
    else:
        part = _a1111(text, meta.warnings, where)
    if part is not None:
        _merge(meta, part)


def _apply_exif(meta: ImageMetadata, tiff: bytes) -> None:
    try:
        comment = read_user_comment(tiff)
    except MetadataError as exc:
        meta.warnings.append(str(exc))
        return
    if comment is None:
        return
    meta.found_in.append("exif")
    if comment.warning:
        meta.warnings.append(comment.warning)
    _apply_payload(meta, comment.text, "EXIF UserComment")


def _apply_stealth(meta: ImageMetadata, open_image: Callable[[], Image.Image], header: PngHeader | None) -> None:
    if header is not None and header.width * header.height > MAX_SCAN_PIXELS:
        meta.warnings.append(f"image {header.width}x{header.height} too large to scan for stealth metadata")
        return
    try:
        with open_image() as image:
            width, height = image.size
            if width * height > MAX_SCAN_PIXELS:
                meta.warnings.append(f"image {width}x{height} too large to scan for stealth metadata")
                return
            alpha = alpha_channel(image)
    except PILLOW_ERRORS as exc:
        meta.warnings.append(f"pixels could not be decoded to look for stealth metadata ({exc})")
        return
    if alpha is None:
        return
    try:
        payload = read_stealth(alpha)
    except MetadataError as exc:
        meta.warnings.append(str(exc))
        return
    if payload is None:
        return
    meta.found_in.append("stealth")
    _apply_payload(meta, payload.text, "stealth payload")
    log.debug("stealth metadata read (%d characters)", len(payload.text))
