"""PNG chunk walking, text chunk decoding/encoding and chunk-level rewriting.

Metadata lives in ancillary chunks, so reading it never needs the pixels and writing it never re-encodes them:
the walker seeks past IDAT, and the rewriter splices text chunks around the untouched image data. A damaged
file gives warnings and whatever could be read before the damage; only a missing signature is fatal.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from peropix_tui.core.image_format import PNG_SIGNATURE
from peropix_tui.core.metadata.errors import MetadataError
from peropix_tui.core.metadata.inflate import TEXT_LIMIT, inflate_capped

TEXT_TYPES = frozenset({b"tEXt", b"zTXt", b"iTXt"})
MAX_CHUNK_LENGTH = 0x7FFFFFFF  # the PNG limit; anything above is a lying length field
MAX_KEYWORD = 79

_HEAD = struct.Struct(">I4s")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk as stored: `crc` is the stored value, kept so untouched chunks are copied byte for byte."""

    type: bytes
    data: bytes
    crc: int

    @property
    def crc_ok(self) -> bool:
        return zlib.crc32(self.data, zlib.crc32(self.type)) == self.crc

    @classmethod
    def make(cls, ctype: bytes, data: bytes) -> Chunk:
        return cls(ctype, data, zlib.crc32(data, zlib.crc32(ctype)))


@dataclass(frozen=True, slots=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int

    @property
    def has_alpha(self) -> bool:
        return self.color_type in (4, 6)


@dataclass(frozen=True, slots=True)
class TextChunk:
    kind: str  # "tEXt", "zTXt" or "iTXt"
    key: str
    text: str


@dataclass(slots=True)
class PngScan:
    """What a walk found: the chunks whose data was asked for, every chunk type in order, and the problems."""

    chunks: list[Chunk] = field(default_factory=list)
    types: list[bytes] = field(default_factory=list)
    header: PngHeader | None = None
    warnings: list[str] = field(default_factory=list)
    complete: bool = False  # reached IEND without a structural problem (a bad CRC is only a warning)


def _valid_type(ctype: bytes) -> bool:
    return all(65 <= b <= 90 or 97 <= b <= 122 for b in ctype)


def scan_png(fh: BinaryIO, *, want: Callable[[bytes], bool] | None = None, max_data: int | None = None) -> PngScan:
    """Walk the chunks of a seekable PNG stream, reading only the data of chunks `want` accepts (all if None).

    Lengths are checked against the file size before anything is read, so a lying length costs nothing; a
    wanted chunk larger than `max_data` is skipped with a warning instead of being loaded.
    """
    if fh.read(8) != PNG_SIGNATURE:
        raise MetadataError("not a PNG file (bad signature)")
    size = fh.seek(0, io.SEEK_END)
    pos = fh.seek(8)
    scan = PngScan()
    while True:
        head = fh.read(8)
        if not head:
            scan.warnings.append("PNG ends without an IEND chunk (file truncated?)")
            return scan
        if len(head) < 8:
            scan.warnings.append(f"PNG truncated inside a chunk header at offset {pos}")
            return scan
        length, ctype = _HEAD.unpack(head)
        name = ctype.decode("latin-1")
        if not _valid_type(ctype):
            scan.warnings.append(f"invalid chunk type {name!r} at offset {pos}; rest of the file ignored")
            return scan
        if length > MAX_CHUNK_LENGTH:
            scan.warnings.append(f"{name} chunk at offset {pos} declares an impossible length {length}")
            return scan
        end = pos + 12 + length
        if end > size:
            scan.warnings.append(f"{name} chunk at offset {pos} runs past the end of the file (truncated?)")
            return scan
        scan.types.append(ctype)
        wanted = ctype == b"IHDR" or want is None or want(ctype)
        if wanted and max_data is not None and length > max_data:
            scan.warnings.append(f"{name} chunk at offset {pos} is too large ({length} bytes); skipped")
            wanted = False
        if wanted:
            data = fh.read(length)
            crc = int.from_bytes(fh.read(4), "big")
            chunk = Chunk(ctype, data, crc)
            if not chunk.crc_ok:
                scan.warnings.append(f"bad CRC in {name} chunk at offset {pos}")
            if ctype == b"IHDR":
                scan.header = _parse_ihdr(data, scan.warnings)
            if want is None or want(ctype):
                scan.chunks.append(chunk)
        else:
            fh.seek(end)
        pos = end
        if ctype == b"IEND":
            scan.complete = True
            return scan


def scan_png_bytes(data: bytes, *, want: Callable[[bytes], bool] | None = None) -> PngScan:
    return scan_png(io.BytesIO(data), want=want)


def _parse_ihdr(data: bytes, warnings: list[str]) -> PngHeader | None:
    if len(data) != 13:
        warnings.append("IHDR chunk has the wrong size")
        return None
    width, height, depth, color = struct.unpack(">IIBB", data[:10])
    if width == 0 or height == 0:
        warnings.append(f"IHDR declares an empty image ({width}x{height})")
        return None
    return PngHeader(width, height, depth, color)


def _split_keyword(data: bytes, name: str) -> tuple[str, bytes]:
    nul = data.find(b"\0", 0, MAX_KEYWORD + 1)
    if nul < 1:
        raise MetadataError(f"{name} chunk has no valid keyword")
    return data[:nul].decode("latin-1"), data[nul + 1 :]


def decode_text_chunk(chunk: Chunk, limit: int = TEXT_LIMIT) -> tuple[TextChunk, str | None]:
    """Decode a tEXt, zTXt or iTXt chunk; the second value is a warning when the text needed repairing.

    Raises `MetadataError` for a chunk that cannot be decoded at all (no keyword, bad stream, or compressed
    text inflating past `limit` bytes).
    """
    name = chunk.type.decode("latin-1")
    key, rest = _split_keyword(chunk.data, name)
    if chunk.type == b"tEXt":
        return TextChunk(name, key, rest.decode("latin-1")), None
    if chunk.type == b"zTXt":
        if not rest or rest[0] != 0:
            raise MetadataError(f"zTXt chunk {key!r} uses an unknown compression method")
        raw = inflate_capped(rest[1:], limit, what=f"zTXt chunk {key!r}")
        return TextChunk(name, key, raw.decode("latin-1")), None
    if len(rest) < 2:
        raise MetadataError(f"iTXt chunk {key!r} is truncated")
    compressed, method = rest[0], rest[1]
    lang_end = rest.find(b"\0", 2)
    trans_end = rest.find(b"\0", lang_end + 1) if lang_end >= 0 else -1
    if trans_end < 0:
        raise MetadataError(f"iTXt chunk {key!r} is truncated")
    body = rest[trans_end + 1 :]
    if compressed:
        if method != 0:
            raise MetadataError(f"iTXt chunk {key!r} uses an unknown compression method")
        body = inflate_capped(body, limit, what=f"iTXt chunk {key!r}")
    try:
        return TextChunk(name, key, body.decode("utf-8")), None
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
        return TextChunk(name, key, text), f"iTXt chunk {key!r} is not valid UTF-8; bad bytes replaced"


def encode_text_chunk(key: str, text: str) -> Chunk:
    """tEXt when key and text are Latin-1 (what NovelAI writes), otherwise an uncompressed UTF-8 iTXt."""
    try:
        kbytes = key.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise MetadataError(f"PNG text key {key!r} is not Latin-1") from exc
    if not 1 <= len(kbytes) <= MAX_KEYWORD or b"\0" in kbytes:
        raise MetadataError(f"PNG text key {key!r} must be 1-79 characters without NUL")
    try:
        return Chunk.make(b"tEXt", kbytes + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return Chunk.make(b"iTXt", kbytes + b"\0\0\0\0\0" + text.encode("utf-8"))


def build_png(chunks: Iterable[Chunk]) -> bytes:
    out = bytearray(PNG_SIGNATURE)
    for chunk in chunks:
        out += _HEAD.pack(len(chunk.data), chunk.type)
        out += chunk.data
        out += chunk.crc.to_bytes(4, "big")
    return bytes(out)


def read_all_chunks(png: bytes) -> list[Chunk]:
    """Every chunk of a PNG that is about to be rewritten; refuses truncated or mangled files.

    A chunk with a bad CRC keeps its stored CRC, so a rewrite never hides damage it did not fix.
    """
    scan = scan_png_bytes(png)
    if not scan.complete:
        problem = scan.warnings[0] if scan.warnings else "damaged PNG"
        raise MetadataError(f"refusing to rewrite a damaged PNG: {problem}")
    if not scan.chunks or scan.chunks[0].type != b"IHDR":
        raise MetadataError("refusing to rewrite a PNG that does not start with IHDR")
    return scan.chunks


def replace_text_chunks(png: bytes, texts: Mapping[str, str]) -> bytes:
    """Drop every text chunk and insert `texts` right after IHDR; IDAT and all other chunks are untouched."""
    chunks = read_all_chunks(png)
    new = [encode_text_chunk(key, value) for key, value in texts.items()]
    kept = [c for c in chunks[1:] if c.type not in TEXT_TYPES]
    return build_png([chunks[0], *new, *kept])


def chunk_label(chunk: Chunk) -> str:
    """A text chunk's keyword, or the chunk type for any other chunk (used to report what a strip removed)."""
    if chunk.type in TEXT_TYPES:
        nul = chunk.data.find(b"\0", 0, MAX_KEYWORD + 1)
        if nul > 0:
            return chunk.data[:nul].decode("latin-1")
    return chunk.type.decode("latin-1")


def filter_chunks(chunks: list[Chunk], keep: Callable[[Chunk], bool]) -> tuple[list[Chunk], list[str]]:
    kept: list[Chunk] = []
    removed: list[str] = []
    for chunk in chunks:
        if keep(chunk):
            kept.append(chunk)
        else:
            removed.append(chunk_label(chunk))
    return kept, removed
