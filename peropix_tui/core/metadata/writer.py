"""Writing NovelAI-compatible metadata into a PNG, and stripping metadata from PNG, WebP and JPEG.

Text chunks are spliced in without touching IDAT. Stealth embedding and stealth removal are the two operations
that must change pixels (alpha LSBs only); they re-encode losslessly and keep RGB values bit for bit.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.metadata.containers import (
    jpeg_exif,
    strip_jpeg,
    strip_webp,
    webp_chunks,
    webp_is_lossless,
)
from peropix_tui.core.metadata.errors import MetadataError
from peropix_tui.core.metadata.exif import orientation_only
from peropix_tui.core.metadata.jsonutil import loads_object
from peropix_tui.core.metadata.model import PEROPIX_KEY, ImageMetadata, to_nai_comment
from peropix_tui.core.metadata.nai_models import source_for
from peropix_tui.core.metadata.pngchunks import (
    TEXT_TYPES,
    Chunk,
    build_png,
    chunk_label,
    decode_text_chunk,
    encode_text_chunk,
    filter_chunks,
    read_all_chunks,
    replace_text_chunks,
)
from peropix_tui.core.metadata.reader import MAX_SCAN_PIXELS, PILLOW_ERRORS
from peropix_tui.core.metadata.stealth import alpha_channel, clear_alpha_lsb, embed_stealth, has_stealth

DEFAULT_TITLE = "AI generated image"

# Ancillary chunks that only say how to display the pixels: a strip keeps them (and every critical chunk).
_RENDERING = frozenset(
    {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"cICP", b"mDCv", b"cLLi"}
)
_APNG = frozenset({b"acTL", b"fcTL", b"fdAT"})


def nai_fields(meta: ImageMetadata) -> dict[str, str]:
    """The text chunks NovelAI writes, in its order; fields with no value are left out."""
    try:
        comment = json.dumps(to_nai_comment(meta), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"metadata cannot be written as JSON: {exc}") from exc
    out = {"Title": meta.title or DEFAULT_TITLE}
    if meta.prompt is not None:
        out["Description"] = meta.prompt
    out["Software"] = meta.software or "NovelAI"
    source = meta.source or (source_for(meta.model, meta.model_hash) if meta.model else None)
    if source:
        out["Source"] = source
    if meta.generation_time is not None:
        out["Generation time"] = meta.generation_time
    out["Comment"] = comment
    return out


def _decode(png: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])
        if image.size[0] * image.size[1] > MAX_SCAN_PIXELS:
            raise MetadataError(f"image {image.size[0]}x{image.size[1]} is too large to re-encode")
        image.load()
    except PILLOW_ERRORS as exc:
        raise MetadataError(f"PNG pixels cannot be decoded ({exc})") from exc
    return image


def _encode_png(image: Image.Image) -> list[Chunk]:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return read_all_chunks(buf.getvalue())


def _with_new_pixels(original: list[Chunk], image: Image.Image) -> list[Chunk]:
    """`original`'s chunks around a fresh IHDR/IDAT for `image` (same colour type as before)."""
    fresh = _encode_png(image)
    idat = [c for c in fresh if c.type == b"IDAT"]
    ancillary = [c for c in original[1:] if c.type not in (b"IDAT", b"IEND")]
    return [fresh[0], *ancillary, *idat, Chunk.make(b"IEND", b"")]


def write_metadata(png_bytes: bytes, meta: ImageMetadata, *, stealth: bool) -> bytes:
    """`png_bytes` with NovelAI-compatible text chunks for `meta` replacing every text chunk it had.

    Without `stealth` the pixel data is copied byte for byte. With it, the same fields are also embedded in
    the alpha LSBs (an RGB image becomes RGBA), which needs an 8-bit PNG and one re-encode.
    """
    texts = nai_fields(meta)
    if not stealth:
        return replace_text_chunks(png_bytes, texts)
    chunks = read_all_chunks(png_bytes)
    if chunks[0].data[8] != 8 or any(c.type in _APNG for c in chunks):
        raise MetadataError("stealth metadata needs a still 8-bit PNG")
    with _decode(png_bytes) as image:
        marked = embed_stealth(image, texts)
    # The image becomes RGBA: palette/transparency/bit-depth chunks no longer apply, and a grey image's
    # colour profile and background colour do not fit RGB.
    rgb_family = chunks[0].data[9] in (2, 6)
    dropped = {b"PLTE", b"tRNS", b"sBIT"} | (set() if rgb_family else {b"iCCP", b"bKGD"})
    kept = [c for c in chunks if c.type not in dropped]
    return replace_text_chunks(build_png(_with_new_pixels(kept, marked)), texts)


def add_peropix_fields(png_bytes: bytes, fields: Mapping[str, Any]) -> bytes:
    """`png_bytes` with `fields` merged into the `peropix` object of its Comment JSON, pixels untouched.

    Every chunk but Comment is copied byte for byte. When the Comment has no `peropix` object yet, the object is
    spliced in before its closing brace, so the text the server wrote is kept verbatim around it; otherwise the
    Comment is re-serialised with the merged object. A PNG without a Comment gets one holding only `peropix`.
    """
    try:
        addition = json.dumps(dict(fields), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"app fields cannot be written as JSON: {exc}") from exc
    chunks = read_all_chunks(png_bytes)
    for index, chunk in enumerate(chunks):
        if chunk.type not in TEXT_TYPES or chunk_label(chunk) != "Comment":
            continue
        text = decode_text_chunk(chunk)[0].text
        comment = loads_object(text)
        if comment is None:
            raise MetadataError("the Comment chunk is not a JSON object; app fields not added")
        if PEROPIX_KEY in comment:
            old = comment[PEROPIX_KEY]
            comment[PEROPIX_KEY] = {**(old if isinstance(old, dict) else {}), **fields}
            merged = json.dumps(comment, allow_nan=False)
        else:
            end = text.rstrip().rfind("}")
            separator = ", " if comment else ""
            merged = f'{text[:end]}{separator}"{PEROPIX_KEY}": {addition}{text[end:]}'
        chunks[index] = encode_text_chunk("Comment", merged)
        return build_png(chunks)
    after_texts = max((i for i, c in enumerate(chunks) if c.type in TEXT_TYPES), default=0) + 1
    chunks.insert(after_texts, encode_text_chunk("Comment", f'{{"{PEROPIX_KEY}": {addition}}}'))
    return build_png(chunks)


@dataclass(slots=True)
class StripResult:
    data: bytes
    removed: list[str] = field(default_factory=list)  # chunk keys / block names, "stealth alpha"
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)


def _strip_png(data: bytes) -> StripResult:
    chunks = read_all_chunks(data)
    kept, removed = filter_chunks(chunks, lambda c: c.type[0] < 0x61 or c.type in _RENDERING | _APNG)
    result = StripResult(build_png(kept), removed)
    header = chunks[0].data
    if len(header) != 13 or header[9] not in (4, 6):
        return result
    if header[8] != 8 or any(c.type in _APNG for c in chunks):
        result.warnings.append("alpha of a 16-bit or animated PNG not checked for stealth metadata")
        return result
    with _decode(data) as image:
        alpha = alpha_channel(image)
        if alpha is None or not has_stealth(alpha):
            return result
        cleared = clear_alpha_lsb(image)
    if cleared is not None:
        result.data = build_png(_with_new_pixels(kept, cleared))
        result.removed.append("stealth alpha")
    return result


def _strip_webp(data: bytes) -> StripResult:
    stripped, removed = strip_webp(data)
    result = StripResult(stripped, removed)
    if not any(c.fourcc in (b"VP8L", b"ALPH") for c in webp_chunks(data)):
        return result
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
            if image.size[0] * image.size[1] > MAX_SCAN_PIXELS or getattr(image, "n_frames", 1) > 1:
                result.warnings.append("alpha of a huge or animated WebP not checked for stealth metadata")
                return result
            image.load()
            alpha = alpha_channel(image)
            if alpha is None or not has_stealth(alpha):
                return result
            if not webp_is_lossless(data):
                result.warnings.append("stealth metadata left in a lossy WebP (removing it would re-encode)")
                return result
            cleared = clear_alpha_lsb(image)
            icc = image.info.get("icc_profile")
    except PILLOW_ERRORS as exc:
        raise MetadataError(f"WebP pixels cannot be decoded ({exc})") from exc
    if cleared is not None:
        buf = io.BytesIO()
        extra = {"icc_profile": icc} if icc else {}
        cleared.save(buf, format="WEBP", lossless=True, exact=True, quality=100, method=4, **extra)
        result.data = buf.getvalue()
        result.removed.append("stealth alpha")
    return result


def _strip_jpeg(data: bytes) -> StripResult:
    exif = jpeg_exif(data)
    stripped, removed = strip_jpeg(data, orientation_only(exif) if exif else None)
    return StripResult(stripped, removed)


def strip_metadata(data: bytes) -> StripResult:
    """Remove generation metadata: PNG text/EXIF/private chunks, WebP/JPEG EXIF and XMP, and stealth alpha.

    Rendering information (colour profile, gamma, physical size, JPEG orientation) is kept, so the image looks
    the same afterwards.
    """
    kind = sniff_image_format(data[:16])
    if kind == "png":
        return _strip_png(data)
    if kind == "webp":
        return _strip_webp(data)
    if kind == "jpeg":
        return _strip_jpeg(data)
    raise MetadataError("empty file" if not data else "not a PNG, WebP or JPEG image")
