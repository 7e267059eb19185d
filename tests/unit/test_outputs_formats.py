"""Saving as PNG, WebP or JPEG: the metadata of real NovelAI and A1111 images read back identically from each
format, the EXIF written where readers look, pixels, transparency, and the fallbacks that never lose an image."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sandbox_nai_helpers import MakeClient, small

from peropix_tui.core.metadata import ImageMetadata, read_metadata
from peropix_tui.core.metadata.containers import jpeg_exif, webp_chunks, webp_exif
from peropix_tui.core.metadata.pngchunks import Chunk, build_png, encode_text_chunk, read_all_chunks
from peropix_tui.core.outputs import (
    NameFields,
    SaveFormat,
    SaveOptions,
    convert_image,
    exif_user_comment,
    parse_name_pattern,
    save_image,
)
from peropix_tui.engine.run import save_output

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V45 = FIXTURES / "nai__enslo_sd-metadata__novelai-full-3char.png"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
NAI_WEBP = FIXTURES / "webp__enslo_sd-metadata__novelai-curated.webp"
A1111 = FIXTURES / "a1111__enslo_sd-metadata__forge.png"
APP = {"provider": "nai", "job_id": "j-1"}
# What a reader compares: every setting, not where it was found or the reader's notes.
_NOT_SETTINGS = {"found_in", "raw", "warnings", "peropix", "comment_keys"}


def settings_of(meta: ImageMetadata) -> dict[str, Any]:
    return {f.name: getattr(meta, f.name) for f in dataclasses.fields(meta) if f.name not in _NOT_SETTINGS}


def options(fmt: SaveFormat, **changes: Any) -> SaveOptions:
    return SaveOptions(format=fmt, **changes)


def pixels(data: bytes, mode: str) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert(mode).tobytes()


@pytest.mark.parametrize("source", [NAI_V45, NAI_V3], ids=["v4.5-3char", "v3"])
@pytest.mark.parametrize(("fmt", "lossless"), [("jpeg", False), ("webp", False), ("webp", True), ("png", False)])
def test_novelai_settings_read_back_identically_from_every_format(
    tmp_path: Path, source: Path, fmt: SaveFormat, lossless: bool
) -> None:
    original = source.read_bytes()
    before = read_metadata(original)
    path = save_image(
        original,
        seed=before.seed or 0,
        outputs_dir=tmp_path,
        extra_peropix=APP,
        options=options(fmt, webp_lossless=lossless),
    )
    assert path.suffix == {"jpeg": ".jpg", "webp": ".webp", "png": ".png"}[fmt]
    after = read_metadata(path)
    assert settings_of(after) == settings_of(before)
    assert after.peropix == APP
    assert "novelai" in after.found_in and after.warnings == []
    # The Comment keeps the server's order with the app's object after it, in every format.
    assert after.comment_keys == [*before.comment_keys, "peropix"]


def test_the_exif_is_novelai_shaped_json_with_the_server_text_kept(tmp_path: Path) -> None:
    original = NAI_V45.read_bytes()
    path = save_image(original, seed=1, outputs_dir=tmp_path, extra_peropix=APP, options=options("webp"))
    tiff = webp_exif(path.read_bytes())
    assert tiff is not None
    # big-endian TIFF, IFD0 -> Exif IFD -> UserComment of type UNDEFINED (7), ASCII charset id
    assert tiff[:4] == b"MM\x00*"
    tag, kind, count, offset = struct.unpack_from(">HHII", tiff, 28)
    assert (tag, kind) == (0x9286, 7)
    comment = tiff[offset : offset + count]
    assert comment.startswith(b"ASCII\0\0\0")
    fields = json.loads(comment[8:])
    chunks = read_metadata(original).raw
    assert list(fields) == ["Title", "Description", "Software", "Source", "Generation time", "Comment"]
    # every text chunk verbatim; the Comment is the server's JSON text with the app's object spliced in at the end
    assert {k: v for k, v in fields.items() if k != "Comment"} == {k: v for k, v in chunks.items() if k != "Comment"}
    assert fields["Comment"].startswith(chunks["Comment"][:-1])
    assert fields["Comment"].endswith(', "peropix": {"provider": "nai", "job_id": "j-1"}}')


def test_a1111_parameters_go_into_a_utf16_user_comment(tmp_path: Path) -> None:
    original = A1111.read_bytes()
    before = read_metadata(original)
    for fmt in ("jpeg", "webp"):
        path = save_image(original, seed=1, outputs_dir=tmp_path, options=options(fmt))
        data = path.read_bytes()
        tiff = jpeg_exif(data) if fmt == "jpeg" else webp_exif(data)
        assert tiff is not None and b"UNICODE\0" in tiff
        after = read_metadata(path)
        assert "a1111" in after.found_in
        assert (after.prompt, after.seed, after.steps, after.sampler) == (
            before.prompt,
            before.seed,
            before.steps,
            before.sampler,
        )


def test_a_webp_from_the_server_keeps_its_metadata_in_png_and_jpeg(tmp_path: Path) -> None:
    original = NAI_WEBP.read_bytes()
    before = read_metadata(original)
    png_path = save_image(original, seed=1, outputs_dir=tmp_path, fmt="webp", extra_peropix=APP, options=options("png"))
    chunks = [c.type for c in read_all_chunks(png_path.read_bytes())]
    assert chunks.count(b"tEXt") + chunks.count(b"iTXt") >= 6  # NovelAI's text chunks, written out
    for path in (png_path, save_image(original, seed=1, outputs_dir=tmp_path, fmt="webp", options=options("jpeg"))):
        after = read_metadata(path)
        assert settings_of(after) == settings_of(before)
    assert read_metadata(png_path).peropix == APP
    assert pixels(png_path.read_bytes(), "RGBA") == pixels(original, "RGBA")


def test_lossless_webp_keeps_every_pixel_and_lossy_formats_the_size(tmp_path: Path) -> None:
    original = NAI_V3.read_bytes()
    lossless = save_image(original, seed=1, outputs_dir=tmp_path, options=options("webp", webp_lossless=True))
    assert pixels(lossless.read_bytes(), "RGBA") == pixels(original, "RGBA")
    assert any(c.fourcc == b"VP8L" for c in webp_chunks(lossless.read_bytes()))
    for fmt in ("jpeg", "webp"):
        path = save_image(original, seed=1, outputs_dir=tmp_path, options=options(fmt))
        with Image.open(path) as image:
            # NovelAI's alpha is 254/255 (opaque to the eye): dropped from lossy files
            assert image.size == (128, 128) and image.mode == "RGB"


def test_quality_changes_the_file(tmp_path: Path) -> None:
    original = NAI_V45.read_bytes()
    sizes = {}
    for quality in (40, 95):
        for fmt in ("jpeg", "webp"):
            path = save_image(original, seed=1, outputs_dir=tmp_path, options=options(fmt, quality=quality))
            sizes[fmt, quality] = path.stat().st_size
    assert sizes["jpeg", 40] < sizes["jpeg", 95]
    assert sizes["webp", 40] < sizes["webp", 95]


def test_real_transparency_is_kept_in_webp_and_put_on_white_in_jpeg() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 255, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    jpeg = convert_image(buf.getvalue(), "png", options("jpeg", quality=100))
    with Image.open(io.BytesIO(jpeg)) as decoded:
        r, g, b = decoded.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
        assert min(r, g, b) > 240  # white, not the hidden blue
    webp = convert_image(buf.getvalue(), "png", options("webp", webp_lossless=True))
    with Image.open(io.BytesIO(webp)) as decoded:
        assert decoded.mode == "RGBA" and decoded.getpixel((0, 0)) == (0, 0, 255, 0)


def test_a_comment_too_large_for_a_jpeg_loses_its_largest_values_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = NAI_V45.read_bytes()
    chunks = read_all_chunks(base)
    index = next(i for i, c in enumerate(chunks) if b"Comment" in c.data[:8])
    before = read_metadata(base)
    comment = json.loads(before.raw["Comment"])
    comment["reference_image_multiple"] = ["A" * 90_000]
    chunks[index] = encode_text_chunk("Comment", json.dumps(comment))
    big = build_png(chunks)
    with caplog.at_level(logging.WARNING, logger="peropix_tui.core.outputs"):
        path = save_image(big, seed=1, outputs_dir=tmp_path, extra_peropix=APP, options=options("jpeg"))
    assert "reference_image_multiple left out" in caplog.text
    after = read_metadata(path)
    assert "reference_image_multiple" not in after.extra
    assert (after.prompt, after.seed, after.characters, after.peropix) == (
        before.prompt,
        before.seed,
        before.characters,
        APP,
    )
    # the same image as WebP has no such limit
    webp = read_metadata(save_image(big, seed=1, outputs_dir=tmp_path, options=options("webp")))
    assert webp.extra["reference_image_multiple"] == ["A" * 90_000]


def test_pixels_that_cannot_be_decoded_keep_the_server_png(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chunks = read_all_chunks(NAI_V3.read_bytes())
    broken = build_png([c if c.type != b"IDAT" else Chunk.make(b"IDAT", b"not zlib at all") for c in chunks])
    with caplog.at_level(logging.WARNING, logger="peropix_tui.core.outputs"):
        path = save_image(broken, seed=3, outputs_dir=tmp_path, extra_peropix=APP, options=options("jpeg"))
    assert path.suffix == ".png"
    assert "cannot save the image as jpeg" in caplog.text
    assert read_metadata(path).peropix == APP
    assert read_metadata(path).prompt == read_metadata(NAI_V3).prompt


def test_a_colour_profile_is_carried_over(tmp_path: Path) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG", icc_profile=profile)
    for fmt in ("jpeg", "webp"):
        path = save_image(buf.getvalue(), seed=1, outputs_dir=tmp_path, options=options(fmt))
        with Image.open(path) as image:
            assert image.info.get("icc_profile") == profile


def test_the_exif_block_is_a_valid_tiff_for_pillow_too() -> None:
    tiff = exif_user_comment(b"ASCII\0\0\0{}")
    exif = Image.Exif()
    exif.load(b"Exif\0\0" + tiff)
    assert exif.get_ifd(0x8769)[0x9286] == b"ASCII\0\0\0{}"


async def test_a_generated_image_saved_as_jpeg_has_the_settings_it_was_made_with(
    make_client: MakeClient, tmp_path: Path
) -> None:
    async with make_client() as client:
        [image] = await client.generate(small(seed=777), stream=False)
    pattern = parse_name_pattern("{date}/{model}/{counter}_{prompt}")
    output = save_output(
        image,
        outputs_dir=tmp_path,
        provider="sandbox",
        history=None,
        options=SaveOptions(format="jpeg", quality=90, pattern=pattern),
    )
    assert output.path.suffix == ".jpg"
    assert output.path.parent.name == image.request.model
    assert output.path.name.startswith("00001_1girl_solo_silver_hair")
    saved, sent = read_metadata(output.path), image.metadata
    assert settings_of(saved) == settings_of(sent)
    assert (saved.prompt, saved.seed, saved.steps, saved.width) == (sent.prompt, 777, 4, 256)
    assert saved.peropix == {**sent.peropix, "provider": "sandbox"}


def test_names_come_from_the_fields_given(tmp_path: Path) -> None:
    pattern = parse_name_pattern("{provider}/{index}_{seed}_{counter}")
    path = save_image(
        NAI_V3.read_bytes(),
        seed=9,
        outputs_dir=tmp_path,
        options=SaveOptions(pattern=pattern),
        names=NameFields(index=3, provider="local"),
    )
    assert path.relative_to(tmp_path).as_posix() == "local/3_9_00001.png"
