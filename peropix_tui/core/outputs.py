"""Saving generated images: where they go (a file-name pattern), in which format, with which metadata.

Names come from a pattern of folders and a file name with fields in braces, relative to the outputs folder; the
default `{date}/{counter}_{seed}` gives `outputs/YYYY-MM-DD/NNNNN_<seed>.png`. Fields: `{date}` (YYYY-MM-DD) and
`{time}` (HHMMSS) of the generation, `{counter}` (the next free number in the folder, 00001 on), `{seed}`,
`{index}` (the image's place in its batch, from 0), `{model}` (the model id), `{prompt}` (the start of the prompt as
letters, digits, `-` and `_`, cut at 48 bytes) and `{provider}` (nai, sandbox or local). A pattern must make every
name unique, with `{counter}`, or with `{seed}` and `{time}` (a name already taken then gets `-2`, `-3`...); it
cannot leave the outputs folder, and `{{`/`}}` write a brace.

The counter is the highest one in the folder plus one, among the files the pattern's file name matches. Two savers
(threads or processes) never share a counter: each claims it with an exclusively created `.NNNNN.reserved` marker,
checks that no finished file already uses it, writes the image atomically and only then drops the marker, so at
every moment a used counter is visible to the others. A crash can leave a marker behind; that counter is then
skipped, which the numbering tolerates like any gap. Names without a counter are claimed the same way.

Formats: the server's PNG is the source. Saved as PNG it keeps every chunk byte for byte, with the app's fields
added to its Comment. Saved as WebP or JPEG its pixels are encoded by Pillow and its text fields go where NovelAI's
own WebP files and A1111-style readers look, the EXIF UserComment: NovelAI's fields as one ASCII JSON object,
A1111 `parameters` as UTF-16 text. A JPEG's EXIF is limited to 64 KiB, so the largest values of a Comment that
does not fit (vibe data) are left out of the file with a warning; the history keeps the full settings. When a
conversion fails, the server's image is saved as it came rather than lost.

Pillow and the metadata codec are imported when an image is saved, not with this module: the settings check the
name pattern at start-up and must not wait for the image libraries.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import re
import string
import struct
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import DiskFullError, PeropixError
from peropix_tui.core.image_format import sniff_image_format

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SaveFormat = Literal["png", "webp", "jpeg"]
"""Formats an image can be saved in."""
SourceFormat = Literal["png", "webp"]
"""Formats a backend hands images over in."""

SAVE_FORMATS: Final[tuple[str, ...]] = get_args(SaveFormat)
SOURCE_FORMATS: Final[tuple[str, ...]] = get_args(SourceFormat)
EXTENSIONS: Final[Mapping[str, str]] = {"png": "png", "webp": "webp", "jpeg": "jpg"}
DEFAULT_NAME_PATTERN: Final = "{date}/{counter}_{seed}"
DEFAULT_QUALITY: Final = 92
HIGH_QUALITY: Final = 90
"""From this JPEG quality up, colour is kept at full resolution (no chroma subsampling): line art stays crisp."""

COUNTER_DIGITS: Final = 5
MAX_CLAIM_ATTEMPTS: Final = 10_000
"""Names tried in one save before giving up (only reachable with a folder full of stale markers)."""

FIELDS: Final = ("date", "time", "counter", "seed", "index", "model", "prompt", "provider")
_FIELD_BYTES: Final[Mapping[str, int]] = {
    "date": 10,
    "time": 6,
    "counter": 10,
    "seed": 20,
    "index": 3,
    "model": 40,
    "prompt": 48,
    "provider": 16,
}
"""The most bytes each field can put into a name; the prompt and the model are cut to fit."""
MAX_NAME_BYTES: Final = 200
"""Longest folder or file name a pattern may produce: 255 is the usual limit, the rest is for temp-file names."""

# How a field looks inside a finished file name, for finding the counters already used in a folder.
_FIELD_RE: Final[Mapping[str, str]] = {
    "date": r"\d{4}-\d{2}-\d{2}",
    "time": r"\d{6}",
    "counter": rf"(\d{{{COUNTER_DIGITS},}})",
    "seed": r"\d+",
    "index": r"\d+",
}
_ANY_TEXT = r".*?"
_EXTENSION_RE = r"\.[A-Za-z0-9]+"
_MARKER_NAME = re.compile(r"\.(\d{5,})\.reserved")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_FORBIDDEN = frozenset('\\:*?"<>|')
"""Characters some filesystems refuse in names (outputs are often copied to other machines)."""
_SLUG_SEPARATORS = re.compile(r"[^\w-]+")


class OutputError(PeropixError):
    """An image that cannot be saved into the outputs folder, or a name pattern that cannot be used."""


# --- name patterns -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatternField:
    name: str


Part = str | PatternField


@dataclass(frozen=True, slots=True)
class NamePattern:
    """A parsed, checked file-name pattern: folder segments and the file name, each literal text and fields."""

    text: str
    folders: tuple[tuple[Part, ...], ...]
    file: tuple[Part, ...]
    counter_re: re.Pattern[str] | None
    """Matches the finished files this pattern names in one folder, the counter as group 1; None without one."""

    @property
    def has_counter(self) -> bool:
        return self.counter_re is not None


def _segment_parts(segment: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    try:
        parsed = list(string.Formatter().parse(segment))
    except ValueError:
        raise OutputError("has an unmatched { or } (write {{ or }} for a brace in a name)") from None
    for literal, name, spec, conversion in parsed:
        if literal:
            bad = sorted({ch for ch in literal if ch in _FORBIDDEN or unicodedata.category(ch) == "Cc"})
            if bad:
                raise OutputError(f"may not contain {' '.join(repr(ch) for ch in bad)} in a name")
            parts.append(literal)
        if name is None:
            continue
        if name not in FIELDS:
            shown = "{}" if not name else "{" + name + "}"
            known = ", ".join("{" + f + "}" for f in FIELDS)
            raise OutputError(f"has an unknown field {shown}; known: {known}")
        if spec or conversion:
            raise OutputError(f"field {{{name}}} takes no format or conversion")
        parts.append(PatternField(name))
    return tuple(parts)


def _segment_bytes(parts: tuple[Part, ...]) -> int:
    return sum(_FIELD_BYTES[p.name] if isinstance(p, PatternField) else len(p.encode()) for p in parts)


def _file_regex(parts: tuple[Part, ...]) -> re.Pattern[str]:
    body = "".join(_FIELD_RE.get(p.name, _ANY_TEXT) if isinstance(p, PatternField) else re.escape(p) for p in parts)
    return re.compile(body + _EXTENSION_RE)


def parse_name_pattern(text: str) -> NamePattern:
    """Check and parse a name pattern; raises `OutputError` with what is wrong (the text does not repeat it)."""
    if not text.strip():
        raise OutputError("must not be empty")
    if text.startswith("/"):
        raise OutputError("must be relative to the outputs folder (no leading /)")
    segments = text.split("/")
    parsed: list[tuple[Part, ...]] = []
    for segment in segments:
        if not segment:
            raise OutputError("has an empty folder name (// or a trailing /)")
        parts = _segment_parts(segment)
        first, last = parts[0], parts[-1]
        if isinstance(first, str) and first.startswith((".", " ")):
            raise OutputError("may not have a name starting with '.' or a space ('..' would leave the folder)")
        if isinstance(last, str) and last.endswith((" ", ".")):
            raise OutputError("may not have a name ending in a space or a dot")
        if _segment_bytes(parts) > MAX_NAME_BYTES:
            raise OutputError(f"can make names longer than {MAX_NAME_BYTES} bytes; shorten the text between the /")
        parsed.append(parts)
    *folders, file = parsed
    used = [p.name for parts in parsed for p in parts if isinstance(p, PatternField)]
    if any(isinstance(p, PatternField) and p.name == "counter" for parts in folders for p in parts):
        raise OutputError("has {counter} in a folder name; it belongs in the file name")
    if used.count("counter") > 1:
        raise OutputError("has {counter} more than once")
    if "counter" not in used and not ("seed" in used and "time" in used):
        raise OutputError("needs {counter}, or {seed} with {time}, so that no two images get the same name")
    counter_re = _file_regex(file) if "counter" in used else None
    return NamePattern(text, tuple(folders), file, counter_re)


def name_pattern_problem(text: str) -> str | None:
    """Why `text` cannot be a name pattern, or None when it can (the settings' check)."""
    try:
        parse_name_pattern(text)
    except OutputError as exc:
        return str(exc)
    return None


DEFAULT_PATTERN: Final = parse_name_pattern(DEFAULT_NAME_PATTERN)


def slug(text: str, limit: int) -> str:
    """`text` as a name part: letters, digits, `_` and `-` only, separators as one `_`, at most `limit` bytes
    (cut between words where that keeps most of it)."""
    flat = _SLUG_SEPARATORS.sub("_", unicodedata.normalize("NFC", text)).strip("_-")
    encoded = flat.encode()
    if len(encoded) <= limit:
        return flat
    cut = encoded[:limit].decode(errors="ignore")
    if flat[len(cut)] not in "_-":
        # The cut fell inside a word: end at the word before it, unless that leaves less than half.
        word_start = max(cut.rfind("_"), cut.rfind("-"))
        if word_start > len(cut) // 2:
            cut = cut[:word_start]
    return cut.rstrip("_-")


@dataclass(frozen=True, slots=True)
class NameFields:
    """What the pattern's fields are made of, besides the seed, the date and the counter."""

    index: int = 0
    prompt: str = ""
    model: str = ""
    provider: str = ""


def _field_values(seed: int, names: NameFields, moment: datetime) -> dict[str, str]:
    return {
        "date": moment.strftime("%Y-%m-%d"),
        "time": moment.strftime("%H%M%S"),
        "seed": str(seed),
        "index": str(max(0, names.index)),
        "model": slug(names.model, _FIELD_BYTES["model"]) or "unknown",
        "prompt": slug(names.prompt, _FIELD_BYTES["prompt"]) or "untitled",
        "provider": slug(names.provider, _FIELD_BYTES["provider"]) or "unknown",
    }


def _render(parts: tuple[Part, ...], values: Mapping[str, str]) -> str:
    return "".join(values[p.name] if isinstance(p, PatternField) else p for p in parts)


# --- folders and counters ------------------------------------------------------------------------------------


def _counters(folder: Path, image_name: re.Pattern[str]) -> tuple[set[int], set[int]]:
    """Counters used by finished images and counters claimed by markers in `folder`."""
    images: set[int] = set()
    markers: set[int] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if match := image_name.fullmatch(entry.name):
                    images.add(int(match[1]))
                elif match := _MARKER_NAME.fullmatch(entry.name):
                    markers.add(int(match[1]))
    except FileNotFoundError:
        pass
    return images, markers


def next_counter(folder: Path, pattern: NamePattern = DEFAULT_PATTERN) -> int:
    """One more than the highest counter in use in `folder` (1 for an empty or missing folder)."""
    if pattern.counter_re is None:
        raise OutputError(f"the name pattern {pattern.text!r} has no {{counter}}")
    images, markers = _counters(folder, pattern.counter_re)
    return max(images | markers, default=0) + 1


def _reserve(marker: Path) -> bool:
    """Create `marker` exclusively; False when another saver holds it."""
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(f"disk full while saving an image into {marker.parent}; nothing was written") from exc
        raise OutputError(f"cannot save an image into {marker.parent}: {exc.strerror or exc}") from exc
    return True


def _claim_counter(folder: Path, pattern: NamePattern, name_of: Callable[[int], str], start: int) -> tuple[Path, Path]:
    assert pattern.counter_re is not None
    counter = start
    for _ in range(MAX_CLAIM_ATTEMPTS):
        marker = folder / f".{counter:0{COUNTER_DIGITS}d}.reserved"
        if not _reserve(marker):
            counter += 1
            continue
        path = folder / name_of(counter)
        # Holding the marker, a finished image with this counter can only be an earlier saver's: move past it.
        if counter in _counters(folder, pattern.counter_re)[0] or path.exists():
            marker.unlink()
            counter += 1
            continue
        return path, marker
    raise OutputError(f"no free image number in {folder} after {MAX_CLAIM_ATTEMPTS} tries (stale .reserved files?)")


def _claim_name(folder: Path, stem: str, ext: str) -> tuple[Path, Path]:
    for n in range(1, MAX_CLAIM_ATTEMPTS + 1):
        candidate = stem if n == 1 else f"{stem}-{n}"
        marker = folder / f".{candidate}.{ext}.reserved"
        if not _reserve(marker):
            continue
        path = folder / f"{candidate}.{ext}"
        if path.exists():
            marker.unlink()
            continue
        return path, marker
    raise OutputError(f"no free name for {stem}.{ext} in {folder} after {MAX_CLAIM_ATTEMPTS} tries")


def _claim(outputs_dir: Path, pattern: NamePattern, values: Mapping[str, str], ext: str) -> tuple[Path, Path]:
    """Create the folder and reserve a free name in it; returns the image path and the marker that holds it."""
    folder = outputs_dir.joinpath(*(_render(parts, values) for parts in pattern.folders))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(f"disk full while creating {folder}; nothing was written") from exc
        raise OutputError(f"cannot create the outputs folder {folder}: {exc.strerror or exc}") from exc
    if not pattern.has_counter:
        return _claim_name(folder, _render(pattern.file, values), ext)

    def name_of(counter: int) -> str:
        return f"{_render(pattern.file, {**values, 'counter': f'{counter:0{COUNTER_DIGITS}d}'})}.{ext}"

    return _claim_counter(folder, pattern, name_of, next_counter(folder, pattern))


# --- formats and metadata ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveOptions:
    """How images are written: the format, its quality (1-100; WebP lossless reads it as effort) and the names."""

    format: SaveFormat = "png"
    quality: int = DEFAULT_QUALITY
    webp_lossless: bool = False
    pattern: NamePattern = DEFAULT_PATTERN

    def __post_init__(self) -> None:
        if self.format not in SAVE_FORMATS:
            raise OutputError(f"cannot save images as {self.format!r}; use one of {', '.join(SAVE_FORMATS)}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise OutputError(f"image quality must be a whole number from 1 to 100, not {self.quality!r}")


_TIFF_HEAD = struct.Struct(">2sHI")  # byte order, 42, offset of IFD0
_IFD_ONE = struct.Struct(">HHHII")  # entry count 1, then tag, type, count, value or offset
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_LONG, _UNDEFINED = 4, 7
_EXIF_PREFIX = b"Exif\0\0"
_JPEG_APP1_MAX = 65533
"""Bytes an APP1 segment can carry after its length field."""


def exif_user_comment(comment: bytes) -> bytes:
    """A minimal big-endian EXIF block (TIFF bytes) holding only `comment` as the UserComment (type UNDEFINED)."""
    exif_ifd = _TIFF_HEAD.size + _IFD_ONE.size + 4
    value_at = exif_ifd + _IFD_ONE.size + 4
    return b"".join(
        (
            _TIFF_HEAD.pack(b"MM", 42, _TIFF_HEAD.size),
            _IFD_ONE.pack(1, _EXIF_IFD, _LONG, 1, exif_ifd),
            b"\0\0\0\0",
            _IFD_ONE.pack(1, _USER_COMMENT, _UNDEFINED, len(comment), value_at),
            b"\0\0\0\0",
            comment,
        )
    )


def user_comment_for(fields: Mapping[str, str]) -> bytes | None:
    """The UserComment value carrying a PNG's text fields, as NovelAI and A1111 write it; None for no fields."""
    if not fields:
        return None
    if "parameters" in fields:
        return b"UNICODE\0" + fields["parameters"].encode("utf-16-be")
    return b"ASCII\0\0\0" + json.dumps(dict(fields), ensure_ascii=True).encode("ascii")


def _exif_size(comment: bytes | None) -> int:
    return 0 if comment is None else len(_EXIF_PREFIX) + len(exif_user_comment(comment))


def _fit_jpeg(fields: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """`fields` small enough for a JPEG's EXIF: the largest Comment values dropped first; and what was dropped."""
    if _exif_size(user_comment_for(fields)) <= _JPEG_APP1_MAX:
        return fields, []
    from peropix_tui.core.metadata.jsonutil import loads_object

    comment = loads_object(fields.get("Comment", ""))
    dropped: list[str] = []
    if comment is not None:
        by_size = sorted(comment, key=lambda key: len(json.dumps(comment[key])), reverse=True)
        for key in by_size:
            del comment[key]
            dropped.append(key)
            trial = {**fields, "Comment": json.dumps(comment, ensure_ascii=False)}
            if _exif_size(user_comment_for(trial)) <= _JPEG_APP1_MAX:
                return trial, dropped
    return {}, [*dropped, *fields]


def _text_fields(data: bytes, source: SourceFormat) -> dict[str, str]:
    """The generation text of a server image: a PNG's text chunks, or a WebP's EXIF UserComment fields."""
    from peropix_tui.core.metadata.containers import webp_exif
    from peropix_tui.core.metadata.errors import MetadataError
    from peropix_tui.core.metadata.exif import read_user_comment
    from peropix_tui.core.metadata.jsonutil import loads_object
    from peropix_tui.core.metadata.pngchunks import TEXT_TYPES, decode_text_chunk, read_all_chunks

    fields: dict[str, str] = {}
    if source == "png":
        for chunk in read_all_chunks(data):
            if chunk.type not in TEXT_TYPES:
                continue
            try:
                text = decode_text_chunk(chunk)[0]
            except MetadataError as exc:
                log.warning("a text chunk of the image is unreadable and not carried over: %s", exc)
                continue
            fields.setdefault(text.key, text.text)
        return fields
    tiff = webp_exif(data)
    comment = read_user_comment(tiff) if tiff is not None else None
    if comment is None:
        return fields
    obj = loads_object(comment.text)
    if obj is None:
        return {"parameters": comment.text}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in obj.items()}


def _with_peropix(fields: dict[str, str], extra_peropix: Mapping[str, Any] | None) -> dict[str, str]:
    """`fields` with the app's fields merged into the Comment's `peropix` object (a Comment is made if need be)."""
    if not extra_peropix:
        return fields
    from peropix_tui.core.metadata.jsonutil import loads_object
    from peropix_tui.core.metadata.model import PEROPIX_KEY

    comment = loads_object(fields["Comment"]) if "Comment" in fields else {}
    if comment is None:
        log.warning("the Comment field is not a JSON object; app fields not added")
        return fields
    old = comment.get(PEROPIX_KEY)
    comment[PEROPIX_KEY] = {**(old if isinstance(old, dict) else {}), **extra_peropix}
    return {**fields, "Comment": json.dumps(comment, ensure_ascii=False, allow_nan=False)}


def _open_pixels(data: bytes, source: SourceFormat) -> Image.Image:
    from PIL import Image

    from peropix_tui.core.metadata.errors import MetadataError
    from peropix_tui.core.metadata.reader import MAX_SCAN_PIXELS

    image = Image.open(io.BytesIO(data), formats=[source.upper()])
    if image.size[0] * image.size[1] > MAX_SCAN_PIXELS:
        raise MetadataError(f"image {image.size[0]}x{image.size[1]} is too large to convert")
    image.load()
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _for_lossy(image: Image.Image, *, keep_alpha: bool) -> Image.Image:
    """RGB or RGBA pixels for a lossy encoder. An alpha that is opaque to the eye (NovelAI's 254/255, whose low
    bit may hold a copy of the metadata) is dropped; real transparency is kept when `keep_alpha`, else it is
    composited on white."""
    from PIL import Image

    if not _has_alpha(image):
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    lowest = alpha.getextrema()[0]
    if isinstance(lowest, int | float) and lowest >= 254:
        return rgba.convert("RGB")
    if keep_alpha:
        return rgba
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=alpha)
    return flat


def _encode(image: Image.Image, options: SaveOptions, exif: bytes | None, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra: dict[str, Any] = {}
    if exif is not None:
        extra["exif"] = _EXIF_PREFIX + exif
    if icc:
        extra["icc_profile"] = icc
    if options.format == "jpeg":
        subsampling = 0 if options.quality >= HIGH_QUALITY else 2
        _for_lossy(image, keep_alpha=False).save(
            buf, format="JPEG", quality=options.quality, subsampling=subsampling, optimize=True, **extra
        )
    elif options.webp_lossless:
        # Pixels bit for bit, alpha included (and with it any stealth copy of the metadata).
        pixels = image.convert("RGBA" if _has_alpha(image) else "RGB")
        pixels.save(buf, format="WEBP", lossless=True, exact=True, quality=options.quality, method=4, **extra)
    else:
        _for_lossy(image, keep_alpha=True).save(buf, format="WEBP", quality=options.quality, method=4, **extra)
    return buf.getvalue()


def convert_image(
    data: bytes, source: SourceFormat, options: SaveOptions, extra_peropix: Mapping[str, Any] | None = None
) -> bytes:
    """The bytes to write for a server image saved with `options`, its metadata carried into the new format.

    Raises `MetadataError` (or Pillow's errors) when the image cannot be converted; `save_image` then keeps the
    server's bytes.
    """
    from peropix_tui.core.metadata.pngchunks import replace_text_chunks

    if source == "png":
        # Added to the PNG first, so the Comment carried over keeps the server's JSON text verbatim.
        fields = _text_fields(_with_app_fields(data, source, extra_peropix), source)
    else:
        fields = _with_peropix(_text_fields(data, source), extra_peropix)
    with _open_pixels(data, source) as image:
        icc = image.info.get("icc_profile")
        if options.format == "png":
            buf = io.BytesIO()
            image.save(buf, format="PNG", **({"icc_profile": icc} if icc else {}))
            return replace_text_chunks(buf.getvalue(), fields)
        if options.format == "jpeg":
            fields, dropped = _fit_jpeg(fields)
            if dropped:
                log.warning(
                    "metadata too large for a JPEG's 64 KiB EXIF: %s left out of the file (the history keeps it)",
                    ", ".join(dropped),
                )
        comment = user_comment_for(fields)
        return _encode(image, options, None if comment is None else exif_user_comment(comment), icc)


def _check_bytes(image_bytes: bytes, fmt: str) -> None:
    if fmt not in SOURCE_FORMATS:
        raise OutputError(f"cannot save images as {fmt!r}; use one of {', '.join(SOURCE_FORMATS)}")
    if not image_bytes:
        raise OutputError("cannot save an empty image")
    if sniff_image_format(image_bytes) != fmt:
        raise OutputError(f"the image bytes are not a {fmt.upper()} file")


def _with_app_fields(image_bytes: bytes, fmt: str, extra_peropix: Mapping[str, Any] | None) -> bytes:
    """PNG bytes with the app's fields added; any other case keeps the bytes exactly as the backend sent them."""
    if not extra_peropix or fmt != "png":
        return image_bytes
    from peropix_tui.core.metadata import MetadataError, add_peropix_fields

    try:
        return add_peropix_fields(image_bytes, extra_peropix)
    except MetadataError as exc:
        # A paid image is never lost over its metadata: keep the server's bytes and say why.
        log.warning("saving the image without app fields: %s", exc)
        return image_bytes


def _encoded(
    image_bytes: bytes, fmt: SourceFormat, options: SaveOptions | None, extra_peropix: Mapping[str, Any] | None
) -> tuple[bytes, str]:
    """The file's bytes and its format: as sent (app fields added to a PNG) without options or when the format
    matches, else converted; a conversion that fails falls back to the server's image."""
    if options is None or options.format == fmt:
        return _with_app_fields(image_bytes, fmt, extra_peropix), fmt
    from peropix_tui.core.metadata.errors import MetadataError
    from peropix_tui.core.metadata.reader import PILLOW_ERRORS

    failures: tuple[type[BaseException], ...] = (MetadataError, *PILLOW_ERRORS)
    try:
        return convert_image(image_bytes, fmt, options, extra_peropix), options.format
    except failures as exc:
        log.warning("cannot save the image as %s (%s); saving the %s as received", options.format, exc, fmt)
        return _with_app_fields(image_bytes, fmt, extra_peropix), fmt


def save_image(
    image_bytes: bytes,
    *,
    seed: int,
    outputs_dir: Path,
    when: datetime | None = None,
    extra_peropix: Mapping[str, Any] | None = None,
    fmt: SourceFormat = "png",
    options: SaveOptions | None = None,
    names: NameFields | None = None,
) -> Path:
    """Write one generated image (`fmt` is the format it came in) under `outputs_dir` and return its path.

    The name follows `options.pattern` (`names` fills its prompt, model, provider and index fields; `when`, now
    by default, its date and time) and the file is written in `options.format`, see the module docstring;
    without `options` the image keeps the format it came in and gets the default name.
    `extra_peropix` (provider, job id, wildcard choices...) is added under `peropix` in the Comment JSON. A WebP
    that is saved as WebP is kept exactly as received. The file appears complete or not at all; a full disk
    raises `DiskFullError`.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OutputError(f"seed must be a whole number of 0 or more, not {seed!r}")
    _check_bytes(image_bytes, fmt)
    data, written_format = _encoded(image_bytes, fmt, options, extra_peropix)
    moment = (when or datetime.now()).astimezone()
    values = _field_values(seed, names or NameFields(), moment)
    pattern = DEFAULT_PATTERN if options is None else options.pattern
    path, marker = _claim(outputs_dir, pattern, values, EXTENSIONS[written_format])
    try:
        atomic_write_bytes(path, data)
    except DiskFullError as exc:
        raise DiskFullError(f"disk full while saving {path}; nothing was written") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    log.info("saved %s (%d bytes)", path, len(data))
    return path


# --- images not saved yet ------------------------------------------------------------------------------------


def _unsaved_files(folder: Path) -> Iterator[tuple[float, int, Path]]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith((".png", ".webp", ".jpg", ".jpeg")):
                continue
            path = Path(dirpath, name)
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            yield info.st_mtime, info.st_size, path


def prune_unsaved(folder: Path, *, keep_days: int, max_bytes: int, now: float | None = None) -> list[Path]:
    """Delete the images in the unsaved folder older than `keep_days`, then the oldest ones until the rest fit in
    `max_bytes`; returns the paths deleted. Empty folders left behind go too; hidden files are not touched."""
    files = sorted(_unsaved_files(folder))
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    total = sum(size for _, size, _ in files)
    removed: list[Path] = []
    for mtime, size, path in files:
        if mtime >= cutoff and total <= max_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete the unsaved image %s: %s", path, exc.strerror or exc)
            continue
        removed.append(path)
        total -= size
    for dirpath, _, _ in sorted(os.walk(folder), reverse=True):
        if Path(dirpath) != folder:
            with contextlib.suppress(OSError):
                Path(dirpath).rmdir()
    return removed
