"""Where collected things go: `<root>/Users/<username>/<ModelName>/`, with names that are safe on any disk.

Names come from strangers (model titles, uploaded file names, usernames), so every one is made into a single
harmless path component: characters Windows or POSIX forbid and control characters become `_`, reserved device
names (`CON`, `LPT1`...) get a `_`, leading dots and trailing dots/spaces go, and the length is cut in UTF-8
bytes (255-byte file systems) without splitting a character. Two different things whose safe names collide,
ignoring case (case-insensitive disks), get their id appended, and the choice is remembered in the download
log so a rerun puts everything back in the same place. A name like `../../x` can never leave its folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from peropix_tui.civitai.errors import CivitaiError

USERS_DIR = "Users"
MAX_NAME_BYTES = 180
"""Leaves room under the usual 255-byte limit for `_<id>` and `.part`."""
MAX_SUFFIX_BYTES = 16
MODEL_JSON = "model.json"
DESCRIPTION_HTML = "description.html"
PART_SUFFIX = ".part"

_FORBIDDEN = frozenset('<>:"/\\|?*')
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
_SUFFIX = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9_-]*")
_SPACES = re.compile(r"\s+")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "avif", "heic", "mp4", "webm", "mov", "mp3")
"""What an image (or video) file of the collection can be called: `<image id>.<one of these>`."""
_IMAGE_FILE = re.compile(rf"(\d+)\.(?:{'|'.join(IMAGE_EXTENSIONS)})", re.IGNORECASE)
# Names the collector writes itself inside a model folder; a model file must never take one of them.
_OWN_FILE = re.compile(
    r"(?:model\.json|description\.html|version_\d+\.json|trigger_words_\d+\.txt"
    rf"|\d+(?:\.(?:txt|{'|'.join(IMAGE_EXTENSIONS)}))?)(?:\.part)?",
    re.IGNORECASE,
)


class LayoutError(CivitaiError):
    """A path that would leave the library root (a bug guard: safe names cannot produce one)."""


def _clean_char(char: str) -> str:
    if char in _FORBIDDEN or char in _BIDI_CONTROLS:
        return "_"
    category = unicodedata.category(char)
    if category in ("Cc", "Cs", "Zl", "Zp"):
        return "_"
    return char


def _truncate(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _tidy(text: str, max_bytes: int) -> str:
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", text))
    text = "".join(_clean_char(c) for c in text).strip().lstrip(".").lstrip()
    text = _truncate(text, max_bytes)
    return text.rstrip(". ")


def _unreserve(name: str) -> str:
    """`CON` -> `CON_`, `con.txt` -> `con_.txt`: Windows refuses device names whatever the extension."""
    head, dot, tail = name.partition(".")
    return f"{head}_{dot}{tail}" if head.rstrip(" ").upper() in _RESERVED else name


def _component(text: str, max_bytes: int) -> str:
    cleaned = _tidy(text, max_bytes)
    marked = _unreserve(cleaned)
    return marked if marked == cleaned else _unreserve(_tidy(text, max_bytes - 1))


def safe_name(name: str, *, fallback: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """`name` as one safe path component; `fallback` (itself made safe) when nothing usable is left."""
    cleaned = _component(name, max_bytes)
    if cleaned:
        return cleaned
    backup = _component(fallback, max_bytes)
    if not backup:
        raise ValueError(f"fallback name {fallback!r} is not usable either")
    return backup


def safe_filename(name: str, *, fallback: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Like `safe_name` but the extension (`.safetensors`) survives truncation."""
    stem, suffix = _split_suffix(name)
    suffix = suffix if len(suffix.encode("utf-8")) <= MAX_SUFFIX_BYTES else ""
    clean_stem = _component(stem, max_bytes - len(suffix.encode("utf-8")))
    if not clean_stem:
        return safe_name(name, fallback=fallback, max_bytes=max_bytes)
    return clean_stem + suffix


def _split_suffix(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    suffix = name[dot:]
    return (name[:dot], suffix) if _SUFFIX.fullmatch(suffix) else (name, "")


def with_id(name: str, ident: int | str, *, keep_suffix: bool, max_bytes: int = MAX_NAME_BYTES) -> str:
    """`name_<id>` (before the extension when `keep_suffix`), cut so the whole stays within `max_bytes`."""
    stem, suffix = _split_suffix(name) if keep_suffix else (name, "")
    tail = f"_{ident}{suffix}"
    room = max_bytes - len(tail.encode("utf-8"))
    return _truncate(stem, max(room, 0)).rstrip(". ") + tail


def inside(root: Path, *parts: str) -> Path:
    """`root/part/...`, refusing any part that is not a single plain component."""
    path = root
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise LayoutError(f"refusing unsafe path component {part!r} under {root}")
        path = path / part
    return path


def user_dir(root: Path, username: str) -> Path:
    """`<root>/Users/<safe username>`."""
    return inside(root, USERS_DIR, user_folder_name(username))


def user_folder_name(username: str) -> str:
    return safe_name(username, fallback="user")


def is_own_file_name(name: str) -> bool:
    """Whether the collector itself writes files of this name in a model folder (JSON, sidecars, images)."""
    return _OWN_FILE.fullmatch(name) is not None


def claim_name(wanted: str, ident: int | str, taken: Iterable[str], *, keep_suffix: bool) -> str:
    """`wanted`, or `wanted_<id>` when another owner already holds the same name ignoring case."""
    held = {name.casefold() for name in taken}
    if wanted.casefold() not in held:
        return wanted
    candidate = with_id(wanted, ident, keep_suffix=keep_suffix)
    counter = 2
    while candidate.casefold() in held:
        candidate = with_id(wanted, f"{ident}_{counter}", keep_suffix=keep_suffix)
        counter += 1
    return candidate


def model_folder_name(model_id: int, model_name: str, assigned: Mapping[int, str]) -> str:
    """The folder of a model: the one the log remembers, else its safe name (id appended on a collision)."""
    if model_id in assigned:
        return assigned[model_id]
    wanted = safe_name(model_name, fallback=f"model_{model_id}")
    others = (name for owner, name in assigned.items() if owner != model_id)
    return claim_name(wanted, model_id, others, keep_suffix=False)


def model_file_name(file_id: int, file_name: str, taken: Iterable[str]) -> str:
    """A model file's name in its model folder; it never takes a name the collector uses for its own files."""
    wanted = safe_filename(file_name, fallback=f"file_{file_id}")
    if is_own_file_name(wanted):
        wanted = with_id(wanted, file_id, keep_suffix=True)
    return claim_name(wanted, file_id, taken, keep_suffix=True)


def image_id_of(name: str) -> int | None:
    """The image id of a collected image's file name (`123.png` -> 123), None for any other name."""
    match = _IMAGE_FILE.fullmatch(name)
    return int(match.group(1)) if match else None


def version_json_name(version_id: int) -> str:
    return f"version_{version_id}.json"


def trigger_words_name(version_id: int) -> str:
    return f"trigger_words_{version_id}.txt"


def sidecar_name(image_id: int) -> str:
    return f"{image_id}.txt"


def image_name(image_id: int, extension: str) -> str:
    return f"{image_id}.{extension}"


def part_path(target: Path) -> Path:
    """Where a download of `target` lives until it is complete and verified."""
    return target.with_name(target.name + PART_SUFFIX)
