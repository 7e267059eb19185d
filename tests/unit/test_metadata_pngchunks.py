"""PNG chunk walking and text chunk reading/writing, checked against Pillow and hand-built files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from peropix_tui.core.image_format import PNG_SIGNATURE
from peropix_tui.core.metadata import MetadataError
from peropix_tui.core.metadata.inflate import TEXT_LIMIT
from peropix_tui.core.metadata.pngchunks import (
    Chunk,
    build_png,
    decode_text_chunk,
    encode_text_chunk,
    filter_chunks,
    read_all_chunks,
    replace_text_chunks,
    scan_png_bytes,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
BANNER = FIXTURES / "other__LlmKira_novelai-python__banner-narrow.png"


def raw_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I4s", len(data), ctype) + data + zlib.crc32(ctype + data).to_bytes(4, "big")


def tiny_png(*extra: bytes, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (4, 3), (10, 20, 30, 255)[: len(mode)]).save(buf, format="PNG")
    data = buf.getvalue()
    # insert extra chunks right after IHDR (8 signature + 25 IHDR)
    return data[:33] + b"".join(extra) + data[33:]


def idat_bytes(png: bytes) -> bytes:
    return b"".join(c.data for c in read_all_chunks(png) if c.type == b"IDAT")


def test_scan_lists_fixture_chunks_in_order() -> None:
    scan = scan_png_bytes(NAI_V3.read_bytes())
    assert scan.complete and not scan.warnings
    assert [t.decode() for t in scan.types] == ["IHDR", *["tEXt"] * 6, "IDAT", "IEND"]
    assert scan.header is not None
    assert (scan.header.width, scan.header.height, scan.header.has_alpha) == (128, 128, True)


def test_text_chunks_match_pillow_for_every_kind() -> None:
    # banner holds a zTXt and an iTXt; the NAI file six tEXt
    for path in (NAI_V3, BANNER):
        scan = scan_png_bytes(path.read_bytes(), want=lambda t: t in {b"tEXt", b"zTXt", b"iTXt"})
        ours = {}
        for chunk in scan.chunks:
            text, warning = decode_text_chunk(chunk)
            assert warning is None
            ours[text.key] = text.text
        with Image.open(path) as im:
            assert ours == dict(im.text)  # type: ignore[attr-defined]


def test_walk_skips_unwanted_data() -> None:
    scan = scan_png_bytes(NAI_V3.read_bytes(), want=lambda t: t == b"tEXt")
    assert {c.type for c in scan.chunks} == {b"tEXt"}
    assert b"IDAT" in scan.types


def test_itxt_compressed_and_plain_and_ztxt_decode() -> None:
    text = "1girl, テスト, ♥"
    plain = Chunk.make(b"iTXt", b"Description\0\0\0en\0\0" + text.encode())
    packed = Chunk.make(b"iTXt", b"Description\0\x01\0\0\0" + zlib.compress(text.encode()))
    ztxt = Chunk.make(b"zTXt", b"Comment\0\0" + zlib.compress("café".encode("latin-1")))
    assert decode_text_chunk(plain)[0].text == text
    assert decode_text_chunk(packed)[0].text == text
    assert decode_text_chunk(ztxt)[0].text == "café"
    assert decode_text_chunk(ztxt)[0].kind == "zTXt"


def test_invalid_utf8_itxt_is_repaired_with_warning() -> None:
    chunk = Chunk.make(b"iTXt", b"Description\0\0\0\0\0abc\xff\xfedef")
    text, warning = decode_text_chunk(chunk)
    assert text.text == "abc\ufffd\ufffddef"
    assert warning is not None and "UTF-8" in warning


@pytest.mark.parametrize("ctype", [b"zTXt", b"iTXt"])
def test_decompression_bomb_is_refused(ctype: bytes) -> None:
    bomb = zlib.compress(b"\0" * (TEXT_LIMIT + 1024), 9)
    assert len(bomb) < 20_000
    head = b"Comment\0\0" if ctype == b"zTXt" else b"Comment\0\x01\0\0\0"
    with pytest.raises(MetadataError, match="limit"):
        decode_text_chunk(Chunk.make(ctype, head + bomb))


@pytest.mark.parametrize(
    "data",
    [b"no keyword at all", b"\0starts with NUL", b"x" * 100 + b"\0too long keyword"],
)
def test_bad_keyword_is_an_error(data: bytes) -> None:
    with pytest.raises(MetadataError):
        decode_text_chunk(Chunk.make(b"tEXt", data))


def test_bad_crc_is_a_warning_and_text_still_read() -> None:
    bad = struct.pack(">I4s", 6, b"tEXt") + b"k\0text" + b"\0\0\0\0"
    scan = scan_png_bytes(tiny_png(bad))
    assert scan.complete
    assert any("bad CRC in tEXt" in w for w in scan.warnings)
    assert decode_text_chunk(scan.chunks[1])[0].text == "text"


def test_truncated_file_keeps_earlier_chunks() -> None:
    data = tiny_png(raw_chunk(b"tEXt", b"Title\0hello"))
    scan = scan_png_bytes(data[:-20])
    assert not scan.complete
    assert any("past the end" in w or "truncated" in w for w in scan.warnings)
    assert any(c.type == b"tEXt" for c in scan.chunks)


@pytest.mark.parametrize("length", [2**31, 2**32 - 1, 10_000_000])
def test_lying_length_stops_the_walk(length: int) -> None:
    liar = struct.pack(">I4s", length, b"tEXt") + b"Title\0x"
    scan = scan_png_bytes(tiny_png(liar))
    assert not scan.complete
    assert scan.warnings
    assert len(scan.warnings) == 1


def test_bad_signature_is_an_error() -> None:
    with pytest.raises(MetadataError, match="signature"):
        scan_png_bytes(b"\xff\xd8\xff\xe0 not a png")


def test_encode_chooses_text_or_itxt() -> None:
    assert encode_text_chunk("Title", "AI generated image").type == b"tEXt"
    assert encode_text_chunk("Description", "café").type == b"tEXt"
    assert encode_text_chunk("Description", "テスト").type == b"iTXt"
    for bad_key in ("", "k" * 80, "ключ", "a\0b"):
        with pytest.raises(MetadataError):
            encode_text_chunk(bad_key, "x")


def test_replace_text_chunks_keeps_idat_and_pillow_reads_result() -> None:
    original = NAI_V3.read_bytes()
    texts = {"Title": "T", "Description": "1girl, テスト", "Comment": '{"seed": 0}'}
    out = replace_text_chunks(original, texts)
    assert idat_bytes(out) == idat_bytes(original)
    with Image.open(io.BytesIO(out)) as im:
        assert dict(im.text) == texts  # type: ignore[attr-defined]
        im.load()
    scan = scan_png_bytes(out)
    assert scan.complete and not scan.warnings
    kinds = [c.type for c in scan.chunks if c.type in {b"tEXt", b"iTXt"}]
    assert kinds == [b"tEXt", b"iTXt", b"tEXt"]


@given(
    st.dictionaries(
        st.text(st.characters(min_codepoint=32, max_codepoint=255), min_size=1, max_size=79),
        st.text(max_size=200),
        max_size=5,
    )
)
def test_text_round_trip(texts: dict[str, str]) -> None:
    out = replace_text_chunks(tiny_png(), texts)
    scan = scan_png_bytes(out)
    decoded = {}
    for chunk in scan.chunks:
        if chunk.type in {b"tEXt", b"iTXt"}:
            text, warning = decode_text_chunk(chunk)
            assert warning is None
            decoded[text.key] = text.text
    assert decoded == texts


def test_rewrite_refuses_damaged_png() -> None:
    with pytest.raises(MetadataError, match="damaged"):
        replace_text_chunks(NAI_V3.read_bytes()[:-30], {"Title": "x"})


def test_filter_chunks_reports_keys_and_types() -> None:
    chunks = read_all_chunks(tiny_png(raw_chunk(b"tEXt", b"Comment\0{}"), raw_chunk(b"tIME", b"\0" * 7)))
    kept, removed = filter_chunks(chunks, lambda c: c.type[0] < 0x61)
    assert removed == ["Comment", "tIME"]
    assert build_png(kept).startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(build_png(kept))) as im:
        im.load()
        assert im.size == (4, 3)


def test_untouched_chunk_keeps_its_stored_crc() -> None:
    bad = struct.pack(">I4s", 6, b"zzZz") + b"abcdef" + b"\x01\x02\x03\x04"
    out = replace_text_chunks(tiny_png(bad), {"Title": "x"})
    assert bad in out


def test_pillow_written_text_is_read() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a\nSteps: 1", zip=True)
    info.add_itxt("Description", "テスト", zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG", pnginfo=info)
    scan = scan_png_bytes(buf.getvalue())
    texts = dict(
        (decode_text_chunk(c)[0].key, decode_text_chunk(c)[0].text)
        for c in scan.chunks
        if c.type in {b"tEXt", b"zTXt", b"iTXt"}
    )
    assert texts.get("parameters") == "a\nSteps: 1"
    assert texts.get("Description") == "テスト"
