"""EXIF UserComment decoding and the JPEG/WebP container walkers (read and strip)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.metadata import MetadataError
from peropix_tui.core.metadata.containers import (
    jpeg_exif,
    jpeg_segments,
    strip_jpeg,
    strip_webp,
    webp_chunks,
    webp_exif,
)
from peropix_tui.core.metadata.exif import decode_user_comment, orientation_only, read_user_comment

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
JPEG = FIXTURES / "other__d3x-at_sd-parsers__automatic1111_cropped.jpg"
NAI_WEBP = FIXTURES / "webp__enslo_sd-metadata__novelai-curated.webp"
A1111_WEBP = FIXTURES / "webp__enslo_sd-metadata__sd-webui.webp"


def pillow_user_comment(path: Path) -> bytes:
    with Image.open(path) as im:
        value = im.getexif().get_ifd(0x8769)[0x9286]
    assert isinstance(value, bytes)
    return value


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
@pytest.mark.parametrize("hint", [True, False])
def test_unicode_byte_order_detected_from_text(encoding: str, hint: bool) -> None:
    text = "photo of a duck\nNegative prompt: テスト\nSteps: 15"
    raw = b"UNICODE\0" + text.encode(encoding)
    assert decode_user_comment(raw, big_endian_hint=hint).text == text


def test_unicode_bom_and_cjk_only_text() -> None:
    assert (
        decode_user_comment(b"UNICODE\0\xff\xfe" + "テスト".encode("utf-16-le"), big_endian_hint=True).text == "テスト"
    )
    # no ASCII to tell the order by: the TIFF byte order decides
    assert decode_user_comment(b"UNICODE\0" + "テスト".encode("utf-16-be"), big_endian_hint=True).text == "テスト"
    assert decode_user_comment(b"UNICODE\0" + "テスト".encode("utf-16-le"), big_endian_hint=False).text == "テスト"


def test_ascii_undefined_and_broken_charsets() -> None:
    assert decode_user_comment(b'ASCII\0\0\0{"a": 1}\0\0', big_endian_hint=True).text == '{"a": 1}'
    assert decode_user_comment(b"\0" * 8 + "café".encode(), big_endian_hint=True).text == "café"
    latin = decode_user_comment(b"ASCII\0\0\0caf\xe9", big_endian_hint=True)
    assert latin.text == "café" and latin.warning is not None
    odd = decode_user_comment(b"UNICODE\0\xdc\x00\xdc\xdc", big_endian_hint=True)  # lone surrogates
    assert odd.warning is not None


def test_jpeg_fixture_user_comment() -> None:
    data = JPEG.read_bytes()
    tiff = jpeg_exif(data)
    assert tiff is not None
    comment = read_user_comment(tiff)
    assert comment is not None
    expected = pillow_user_comment(JPEG)[8:].decode("utf-16-be")
    assert comment.text == expected
    assert comment.text.startswith("photo of a duck\nNegative prompt: monochr")


def test_webp_fixtures_user_comment() -> None:
    comment = read_user_comment(webp_exif(NAI_WEBP.read_bytes()) or b"")
    assert comment is not None
    fields = json.loads(comment.text)
    assert fields["Source"] == "NovelAI Diffusion V4.5 C02D4F98"
    assert json.loads(fields["Comment"])["request_type"] == "PromptGenerateRequest"
    a1111 = read_user_comment(webp_exif(A1111_WEBP.read_bytes()) or b"")
    assert a1111 is not None
    assert a1111.text == pillow_user_comment(A1111_WEBP)[8:].decode("utf-16-be")


def test_damaged_exif_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError):
        read_user_comment(b"MM\0*\0\0\0\x08\xff\xff")


def test_format_sniffing() -> None:
    assert sniff_image_format(JPEG.read_bytes()[:16]) == "jpeg"
    assert sniff_image_format(NAI_WEBP.read_bytes()[:16]) == "webp"
    assert sniff_image_format(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_image_format(b"GIF89a") is None


def test_strip_jpeg_keeps_image_data_and_decodes_the_same() -> None:
    data = JPEG.read_bytes()
    out, removed = strip_jpeg(data)
    assert removed == ["EXIF"]
    assert jpeg_exif(out) is None
    _segments, scan_start = jpeg_segments(data)
    assert out.endswith(data[scan_start:])
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(out)) as b:
        assert a.tobytes() == b.tobytes()


def test_strip_jpeg_keeps_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "secret description"
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 10, 10)).save(buf, format="JPEG", exif=exif, comment=b"hello")
    tiff = jpeg_exif(buf.getvalue())
    assert tiff is not None
    out, removed = strip_jpeg(buf.getvalue(), orientation_only(tiff))
    assert set(removed) == {"EXIF", "COM"}
    with Image.open(io.BytesIO(out)) as im:
        kept = im.getexif()
        assert dict(kept) == {0x0112: 6}
        assert "comment" not in im.info


def test_strip_webp_drops_exif_and_flag() -> None:
    data = A1111_WEBP.read_bytes()
    out, removed = strip_webp(data)
    assert removed == ["EXIF"]
    assert webp_exif(out) is None
    vp8x = next(c for c in webp_chunks(out) if c.fourcc == b"VP8X")
    assert not vp8x.data[0] & 0x08
    assert int.from_bytes(out[4:8], "little") == len(out) - 8
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(out)) as b:
        assert a.tobytes() == b.tobytes()
        assert "exif" not in b.info


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe1\x00",  # truncated header
        b"\xff\xd8\xff\xe1\xff\xff" + b"\0" * 10,  # length past EOF
        b"\xff\xd8\xff\xe1\x00\x01",  # length < 2
        b"\xff\xd8\xff\xd9",  # EOI before image
        b"\xff\xd8garbage",
    ],
)
def test_broken_jpeg_is_a_metadata_error(data: bytes) -> None:
    with pytest.raises(MetadataError):
        jpeg_exif(data)


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\x10\0\0\0WEBPEXIF\xff\xff\xff\x7f",
        b"RIFF\x04\0\0\0WEBP",
    ],
)
def test_broken_webp_is_a_metadata_error(data: bytes) -> None:
    with pytest.raises(MetadataError):
        webp_exif(data)
