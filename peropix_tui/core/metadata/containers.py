"""JPEG segment and WebP RIFF chunk walking: find the EXIF block and drop metadata without touching pixels.

Both formats keep metadata in length-prefixed blocks beside the compressed image, so removing it means
copying every other block verbatim; a re-encode (lossy for JPEG) is never needed for the EXIF part.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from peropix_tui.core.image_format import is_webp
from peropix_tui.core.metadata.errors import MetadataError

JPEG_SOI = b"\xff\xd8"
_SOS = 0xDA
_EOI = 0xD9
_APP0 = 0xE0
_APP1 = 0xE1
_APP13 = 0xED
_COM = 0xFE
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_METADATA_SEGMENTS = {_APP1: "APP1", _APP13: "APP13", _COM: "COM"}
EXIF_PREFIX = b"Exif\0\0"


@dataclass(frozen=True, slots=True)
class Segment:
    marker: int
    start: int  # offset of the 0xFF of the marker
    end: int  # offset just past the segment
    payload: bytes


def jpeg_segments(data: bytes) -> tuple[list[Segment], int]:
    """The header segments up to and including SOS, and the offset where the entropy-coded data starts."""
    if data[:2] != JPEG_SOI:
        raise MetadataError("not a JPEG file (no SOI marker)")
    segments: list[Segment] = []
    pos = 2
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 > len(data) or data[pos] != 0xFF:
            raise MetadataError(f"JPEG structure broken at offset {pos} (truncated or not a JPEG)")
        marker = data[pos + 1]
        if marker in _STANDALONE:
            segments.append(Segment(marker, pos, pos + 2, b""))
            pos += 2
            continue
        if marker == _EOI:
            raise MetadataError("JPEG ends before any image data")
        if pos + 4 > len(data):
            raise MetadataError(f"JPEG truncated in a segment header at offset {pos}")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise MetadataError(f"JPEG segment at offset {pos} has a bad length {length}")
        segments.append(Segment(marker, pos, end, data[pos + 4 : end]))
        pos = end
        if marker == _SOS:
            return segments, pos


def jpeg_exif(data: bytes) -> bytes | None:
    for seg in jpeg_segments(data)[0]:
        if seg.marker == _APP1 and seg.payload.startswith(EXIF_PREFIX):
            return seg.payload[len(EXIF_PREFIX) :]
    return None


def _jpeg_segment_label(seg: Segment) -> str:
    if seg.marker == _APP1:
        if seg.payload.startswith(EXIF_PREFIX):
            return "EXIF"
        if seg.payload.startswith(b"http://ns.adobe.com/xap/"):
            return "XMP"
    return _METADATA_SEGMENTS[seg.marker]


def strip_jpeg(data: bytes, keep_exif: bytes | None = None) -> tuple[bytes, list[str]]:
    """Drop EXIF/XMP (APP1), IPTC (APP13) and comments; `keep_exif` (TIFF bytes) is written back as APP1.

    The caller passes a minimal EXIF holding only the orientation so a rotated photo does not turn sideways.
    """
    segments, scan_start = jpeg_segments(data)
    out = bytearray(JPEG_SOI)
    removed: list[str] = []
    inserted = False  # the kept EXIF goes right after a JFIF APP0, where readers look for it
    for seg in segments:
        if seg.marker in _METADATA_SEGMENTS:
            removed.append(_jpeg_segment_label(seg))
            continue
        if keep_exif is not None and not inserted and seg.marker != _APP0:
            payload = EXIF_PREFIX + keep_exif
            out += struct.pack(">BBH", 0xFF, _APP1, len(payload) + 2) + payload
            inserted = True
        out += data[seg.start : seg.end]
    out += data[scan_start:]
    return bytes(out), removed


@dataclass(frozen=True, slots=True)
class RiffChunk:
    fourcc: bytes
    start: int  # offset of the fourcc
    end: int  # offset past the data and its pad byte
    data: bytes


def webp_chunks(data: bytes) -> list[RiffChunk]:
    if not is_webp(data):
        raise MetadataError("not a WebP file (no RIFF/WEBP header)")
    riff_end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    chunks: list[RiffChunk] = []
    pos = 12
    while pos + 8 <= riff_end:
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body_end = pos + 8 + size
        if body_end > riff_end:
            raise MetadataError(f"WebP chunk {fourcc!r} at offset {pos} runs past the end of the file")
        end = min(body_end + (size & 1), riff_end)
        chunks.append(RiffChunk(fourcc, pos, end, data[pos + 8 : body_end]))
        pos = end
    if not any(c.fourcc in (b"VP8 ", b"VP8L", b"ANMF") for c in chunks):
        raise MetadataError("WebP file has no image data (truncated?)")
    return chunks


def webp_exif(data: bytes) -> bytes | None:
    for chunk in webp_chunks(data):
        if chunk.fourcc == b"EXIF":
            return chunk.data.removeprefix(EXIF_PREFIX)
    return None


def webp_is_lossless(data: bytes) -> bool:
    fourccs = {c.fourcc for c in webp_chunks(data)}
    return b"VP8L" in fourccs and b"VP8 " not in fourccs and b"ANMF" not in fourccs


_VP8X_EXIF = 0x08
_VP8X_XMP = 0x04


def strip_webp(data: bytes) -> tuple[bytes, list[str]]:
    """Drop the EXIF and XMP chunks and clear their VP8X flags; image chunks are copied verbatim."""
    body = bytearray()
    removed: list[str] = []
    for chunk in webp_chunks(data):
        if chunk.fourcc in (b"EXIF", b"XMP "):
            removed.append(chunk.fourcc.decode("latin-1").strip())
            continue
        raw = bytearray(data[chunk.start : chunk.end])
        if chunk.fourcc == b"VP8X" and len(raw) > 8:
            raw[8] &= ~(_VP8X_EXIF | _VP8X_XMP) & 0xFF
        body += raw
    out = b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + bytes(body)
    return out, removed
