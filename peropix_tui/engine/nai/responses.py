"""Reading the images out of a successful `/ai/generate-image` answer, whatever its shape.

NovelAI's Content-Type headers vary by host and era, so the body is sniffed by its magic bytes: a ZIP of
`image_<i>.png|webp` entries, a bare PNG or WebP, or the JSON `images[]` list that `Accept: application/json`
asks for. A proxy's HTML page is recognised and named as such. ZIP archives are checked before anything is
inflated (entry count, declared sizes, compression ratio) and every entry is read with a hard cap, so a
hostile or broken archive costs bounded memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Final

import orjson

from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.engine.nai.errors import NaiResponseError
from peropix_tui.engine.types import ImageFormat

MAX_ZIP_ENTRIES: Final = 10
MAX_ENTRY_BYTES: Final = 50 * 1024 * 1024
MAX_COMPRESSION_RATIO: Final = 100
MAX_TOTAL_BYTES: Final = MAX_ZIP_ENTRIES * MAX_ENTRY_BYTES
MAX_JSON_IMAGES: Final = MAX_ZIP_ENTRIES
_ENTRY_INDEX: Final = re.compile(r"(?:^|/)image_(\d{1,4})\.[A-Za-z]+$")
_HTML_STARTS: Final = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")


@dataclass(frozen=True, slots=True)
class ReturnedImage:
    """One image as the server sent it: encoded bytes, their format, its place in the batch and, when the
    answer says so, its seed."""

    data: bytes
    format: ImageFormat
    index: int
    seed: int | None = None


def looks_like_html(data: bytes) -> bool:
    return data[:200].lstrip().lower().startswith(_HTML_STARTS)


def image_format(data: bytes, what: str, *, correlation_id: str | None = None) -> ImageFormat:
    """The format of an image NovelAI returned; only PNG and WebP are images it makes."""
    kind = sniff_image_format(data)
    if kind == "png" or kind == "webp":
        return kind
    found = "a JPEG" if kind == "jpeg" else "not an image"
    raise NaiResponseError(f"{what} is {found}, not a PNG or WebP", correlation_id=correlation_id)


def read_zip(data: bytes, *, correlation_id: str | None = None) -> list[ReturnedImage]:
    """The images of a ZIP answer in batch order, after the archive passed the size and ratio checks."""

    def fail(message: str) -> NaiResponseError:
        return NaiResponseError(message, correlation_id=correlation_id)

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise fail(f"the ZIP archive is damaged or incomplete ({exc})") from exc
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if not entries:
            raise fail("the ZIP archive holds no images")
        if len(entries) > MAX_ZIP_ENTRIES:
            raise fail(f"the ZIP archive holds {len(entries)} files; at most {MAX_ZIP_ENTRIES} are accepted")
        total = 0
        for info in entries:
            if info.file_size > MAX_ENTRY_BYTES:
                raise fail(f"{info.filename} in the ZIP is {info.file_size} bytes, more than {MAX_ENTRY_BYTES}")
            if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                raise fail(f"{info.filename} in the ZIP is compressed more than {MAX_COMPRESSION_RATIO}:1")
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise fail(f"the ZIP archive unpacks to {total} bytes, more than {MAX_TOTAL_BYTES}")
        images: list[tuple[int, str, bytes]] = []
        for position, info in enumerate(entries):
            try:
                with archive.open(info) as member:
                    content = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
                raise fail(f"{info.filename} in the ZIP cannot be unpacked ({exc})") from exc
            if len(content) != info.file_size:
                raise fail(f"{info.filename} in the ZIP is not the size its header declares")
            match = _ENTRY_INDEX.search(info.filename)
            images.append((int(match.group(1)) if match else position, info.filename, content))
    images.sort(key=lambda item: (item[0], item[1]))
    return [
        ReturnedImage(content, image_format(content, name, correlation_id=correlation_id), index)
        for index, (_number, name, content) in enumerate(images)
    ]


def _decode_b64(value: object, what: str, correlation_id: str | None) -> bytes:
    if not isinstance(value, str) or not value:
        raise NaiResponseError(f"{what} is not base64 text", correlation_id=correlation_id)
    text = value.partition(",")[2] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NaiResponseError(f"{what} is not valid base64", correlation_id=correlation_id) from exc


def read_json_images(data: bytes, *, correlation_id: str | None = None) -> list[ReturnedImage]:
    """The images of a JSON answer: `{"images": [{"image": <base64>, "index": i, "seed": s}, ...]}`."""
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NaiResponseError(f"the JSON answer cannot be parsed ({exc})", correlation_id=correlation_id) from exc
    items = parsed.get("images") if isinstance(parsed, dict) else None
    if not isinstance(items, list) or not items:
        raise NaiResponseError("the JSON answer has no images[] list", correlation_id=correlation_id)
    if len(items) > MAX_JSON_IMAGES:
        raise NaiResponseError(
            f"the JSON answer holds {len(items)} images; at most {MAX_JSON_IMAGES} are accepted",
            correlation_id=correlation_id,
        )
    found: list[tuple[int, int | None, bytes]] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise NaiResponseError(f"images[{position}] is not an object", correlation_id=correlation_id)
        content = _decode_b64(item.get("image"), f"images[{position}].image", correlation_id)
        index, seed = item.get("index"), item.get("seed")
        found.append(
            (
                index if isinstance(index, int) and not isinstance(index, bool) else position,
                seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None,
                content,
            )
        )
    found.sort(key=lambda item: item[0])
    return [
        ReturnedImage(content, image_format(content, f"image {index}", correlation_id=correlation_id), index, seed)
        for index, (_number, seed, content) in enumerate(found)
    ]


def parse_image_response(data: bytes, *, correlation_id: str | None = None) -> list[ReturnedImage]:
    """The images in a 2xx answer body, in batch order."""
    if not data:
        raise NaiResponseError("the answer was empty", correlation_id=correlation_id)
    if data.startswith(b"PK"):
        return read_zip(data, correlation_id=correlation_id)
    kind = sniff_image_format(data)
    if kind is not None:
        return [ReturnedImage(data, image_format(data, "the image", correlation_id=correlation_id), 0)]
    if data.lstrip()[:1] == b"{":
        return read_json_images(data, correlation_id=correlation_id)
    if looks_like_html(data):
        raise NaiResponseError(
            "the answer was an HTML page, not images (a proxy or Cloudflare block?)", correlation_id=correlation_id
        )
    raise NaiResponseError(
        f"the answer is neither a ZIP, an image nor JSON (starts with {data[:8]!r})", correlation_id=correlation_id
    )
