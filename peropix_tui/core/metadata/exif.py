"""EXIF UserComment (tag 0x9286 in the Exif IFD): where WebP and JPEG generators keep their parameters.

The field starts with an 8-byte charset id. NovelAI WebP uses `ASCII` with a JSON object; A1111 uses `UNICODE`
with UTF-16 whose byte order writers get wrong often enough that it is detected from the text itself, falling
back to the TIFF header's byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from PIL import Image

from peropix_tui.core.metadata.errors import MetadataError

USER_COMMENT = 0x9286
EXIF_IFD = 0x8769
ORIENTATION = 0x0112

_ASCII = b"ASCII\0\0\0"
_UNICODE = b"UNICODE\0"
_JIS = b"JIS\0\0\0\0\0"
_UNDEFINED = b"\0" * 8


@dataclass(frozen=True, slots=True)
class UserComment:
    text: str
    warning: str | None = None


def _load(tiff: bytes) -> Image.Exif:
    exif = Image.Exif()
    try:
        exif.load(tiff)
    except (ValueError, KeyError, IndexError, TypeError, SyntaxError, OSError, struct.error) as exc:
        raise MetadataError(f"EXIF block is damaged ({exc})") from exc
    return exif


def _utf16(body: bytes, big_endian_hint: bool) -> UserComment:
    if body.startswith((b"\xfe\xff", b"\xff\xfe")):
        order = "be" if body[0] == 0xFE else "le"
        body = body[2:]
    else:
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        if even_zeros != odd_zeros:
            order = "be" if even_zeros > odd_zeros else "le"
        else:
            order = "be" if big_endian_hint else "le"
    body = body[: len(body) & ~1]
    for candidate in (order, "le" if order == "be" else "be"):
        try:
            return UserComment(body.decode(f"utf-16-{candidate}"))
        except UnicodeDecodeError:
            continue
    text = body.decode(f"utf-16-{order}", errors="replace")
    return UserComment(text, "EXIF UserComment is not valid UTF-16; bad characters replaced")


def decode_user_comment(raw: bytes | str, *, big_endian_hint: bool) -> UserComment:
    """Text of a UserComment value; trailing NULs (padding) are dropped."""
    if isinstance(raw, str):
        return UserComment(raw.rstrip("\0"))
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        comment = _utf16(body, big_endian_hint)
        return UserComment(comment.text.rstrip("\0"), comment.warning)
    if prefix not in (_ASCII, _UNDEFINED, _JIS):
        body = raw  # no charset id at all: some writers put the text in directly
    body = body.rstrip(b"\0")
    try:
        return UserComment(body.decode("utf-8"))
    except UnicodeDecodeError:
        return UserComment(
            body.decode("latin-1"), "EXIF UserComment is neither ASCII nor UTF-8; read as Latin-1"
        )


def read_user_comment(tiff: bytes) -> UserComment | None:
    """The UserComment of an EXIF block (TIFF bytes, `Exif\\0\\0` prefix allowed), or None when absent."""
    exif = _load(tiff)
    try:
        ifd = exif.get_ifd(EXIF_IFD)
    except (ValueError, KeyError, IndexError, TypeError, SyntaxError, OSError, struct.error) as exc:
        raise MetadataError(f"EXIF block is damaged ({exc})") from exc
    raw = ifd.get(USER_COMMENT)
    if not isinstance(raw, bytes | str) or not raw:
        return None
    comment = decode_user_comment(raw, big_endian_hint=getattr(exif, "endian", ">") == ">")
    return comment if comment.text.strip() else None


def orientation_only(tiff: bytes) -> bytes | None:
    """A minimal EXIF block carrying just the orientation, or None when it is absent or the default (1)."""
    try:
        value = _load(tiff).get(ORIENTATION)
    except MetadataError:
        return None
    if not isinstance(value, int) or value == 1 or not 1 <= value <= 8:
        return None
    minimal = Image.Exif()
    minimal[ORIENTATION] = value
    return minimal.tobytes().removeprefix(b"Exif\0\0")
