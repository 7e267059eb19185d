"""EXIF UserComment (tag 0x9286 in the Exif IFD): where WebP and JPEG generators keep their parameters.

Only the IFD entries needed are read, every offset bounds-checked. The field starts with an 8-byte charset
id: NovelAI WebP uses `ASCII` with a JSON object; A1111 uses `UNICODE` with UTF-16 whose byte order writers
get wrong often enough that it is detected from the text itself, falling back to the TIFF byte order.
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


@dataclass(frozen=True, slots=True)
class _Tiff:
    data: bytes
    order: str  # struct byte order: ">" or "<"

    def ifd(self, offset: int) -> dict[int, tuple[int, bytes]]:
        """Tag -> (type, value bytes) of the IFD at `offset`; out-of-block values are left out."""
        data, order = self.data, self.order
        if offset < 8 or offset + 2 > len(data):
            raise MetadataError("EXIF block is damaged (IFD offset outside the block)")
        (count,) = struct.unpack_from(order + "H", data, offset)
        if offset + 2 + count * 12 > len(data):
            raise MetadataError("EXIF block is damaged (IFD runs past the end)")
        entries: dict[int, tuple[int, bytes]] = {}
        for pos in range(offset + 2, offset + 2 + count * 12, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", data, pos)
            size = _TYPE_SIZES.get(kind, 0) * n
            if size <= 4:
                entries[tag] = (kind, data[pos + 8 : pos + 8 + size])
                continue
            (where,) = struct.unpack_from(order + "I", data, pos + 8)
            if where + size <= len(data):
                entries[tag] = (kind, data[where : where + size])
        return entries

    def number(self, entry: tuple[int, bytes] | None) -> int | None:
        if entry is None:
            return None
        kind, value = entry
        fmt = {3: "H", 4: "I"}.get(kind)
        if fmt is None or len(value) < struct.calcsize(fmt):
            return None
        return int(struct.unpack_from(self.order + fmt, value)[0])


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}  # BYTE, ASCII, SHORT, LONG, UNDEFINED: all this module reads


def _parse(tiff: bytes) -> tuple[_Tiff, dict[int, tuple[int, bytes]]]:
    """The TIFF structure and its first IFD.

    Pillow's reader is not used here: on damaged input it reports through the process-wide `warnings`
    module, which cannot be silenced safely from the worker threads metadata is read in.
    """
    tiff = tiff.removeprefix(b"Exif\0\0")
    order = {b"MM": ">", b"II": "<"}.get(tiff[:2])
    if order is None or len(tiff) < 8 or struct.unpack_from(order + "H", tiff, 2)[0] != 42:
        raise MetadataError("EXIF block is damaged (no TIFF header)")
    parsed = _Tiff(tiff, order)
    return parsed, parsed.ifd(struct.unpack_from(order + "I", tiff, 4)[0])


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


def decode_user_comment(raw: bytes, *, big_endian_hint: bool) -> UserComment:
    """Text of a UserComment value; trailing NULs (padding) are dropped."""
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
        return UserComment(body.decode("latin-1"), "EXIF UserComment is neither ASCII nor UTF-8; read as Latin-1")


def read_user_comment(tiff: bytes) -> UserComment | None:
    """The UserComment of an EXIF block (TIFF bytes, `Exif\\0\\0` prefix allowed), or None when absent."""
    parsed, ifd0 = _parse(tiff)
    exif_offset = parsed.number(ifd0.get(EXIF_IFD))
    if exif_offset is None:
        return None
    entry = parsed.ifd(exif_offset).get(USER_COMMENT)
    if entry is None or not entry[1]:
        return None
    comment = decode_user_comment(entry[1], big_endian_hint=parsed.order == ">")
    return comment if comment.text.strip() else None


def orientation_only(tiff: bytes) -> bytes | None:
    """A minimal EXIF block carrying just the orientation, or None when it is absent or the default (1)."""
    try:
        parsed, ifd0 = _parse(tiff)
    except MetadataError:
        return None
    value = parsed.number(ifd0.get(ORIENTATION))
    if value is None or not 2 <= value <= 8:
        return None
    minimal = Image.Exif()
    minimal[ORIENTATION] = value
    return minimal.tobytes().removeprefix(b"Exif\0\0")
