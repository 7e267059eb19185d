"""write_metadata (chunks, stealth) and strip_metadata on PNG, WebP and JPEG."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peropix_tui.core.metadata import (
    CharacterPrompt,
    ImageMetadata,
    MetadataError,
    nai_fields,
    read_metadata,
    strip_metadata,
    write_metadata,
)
from peropix_tui.core.metadata.pngchunks import TEXT_TYPES, read_all_chunks, replace_text_chunks
from peropix_tui.core.metadata.stealth import alpha_channel, has_stealth

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
NAI_WEBP = FIXTURES / "webp__enslo_sd-metadata__novelai-curated.webp"


def idat(png: bytes) -> bytes:
    return b"".join(c.data for c in read_all_chunks(png) if c.type == b"IDAT")


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def sample_meta() -> ImageMetadata:
    return ImageMetadata(
        prompt="1girl, テスト, <lora:style_a:0.8>",
        negative_prompt="lowres",
        model="nai-diffusion-4-5-full",
        seed=0,
        steps=28,
        cfg=5.0,
        cfg_rescale=0,
        sampler="k_euler_ancestral",
        scheduler="karras",
        width=64,
        height=64,
        characters=[CharacterPrompt("girl, red eyes", "", ((0.3, 0.7),))],
        peropix={"engine": "local"},
    )


def rgb_png(size: tuple[int, int] = (64, 64)) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_nai_fields_shape() -> None:
    fields = nai_fields(sample_meta())
    assert list(fields) == ["Title", "Description", "Software", "Source", "Comment"]
    assert fields["Title"] == "AI generated image"
    assert fields["Source"] == "NovelAI Diffusion V4.5 4BDE2A90"
    comment = json.loads(fields["Comment"])
    assert comment["cfg_rescale"] == 0 and comment["seed"] == 0
    assert comment["peropix"] == {"engine": "local"}
    assert fields["Comment"].isascii()  # \\u escapes, as NovelAI writes, so it always fits a tEXt chunk


def test_write_without_stealth_keeps_pixels_and_reads_back() -> None:
    original = NAI_V3.read_bytes()
    meta = sample_meta()
    out = write_metadata(original, meta, stealth=False)
    assert idat(out) == idat(original)
    back = read_metadata(out)
    assert back.found_in == ["tEXt", "iTXt", "novelai"]
    for name in ("prompt", "negative_prompt", "seed", "steps", "cfg", "cfg_rescale", "sampler", "scheduler"):
        assert getattr(back, name) == getattr(meta, name), name
    assert (back.model, back.characters, back.peropix) == (meta.model, meta.characters, meta.peropix)
    assert back.loras  # taken from the prompt by the prompt module
    assert all("style_a" in tag for tag, _ in back.loras)


def test_rewriting_a_real_file_keeps_its_comment_text() -> None:
    original = NAI_V3.read_bytes()
    out = write_metadata(original, read_metadata(original), stealth=False)
    with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(out)) as b:
        assert b.text == a.text  # type: ignore[attr-defined]


def test_write_with_stealth_survives_losing_the_chunks() -> None:
    meta = sample_meta()
    source = rgb_png()
    out = write_metadata(source, meta, stealth=True)
    assert np.array_equal(pixels(out)[..., :3], pixels(source)[..., :3])
    chunkless = replace_text_chunks(out, {})
    back = read_metadata(chunkless)
    assert back.found_in == ["stealth", "novelai"]
    assert (back.prompt, back.seed, back.cfg_rescale, back.characters) == (
        meta.prompt,
        0,
        0,
        meta.characters,
    )
    assert read_metadata(out).found_in == ["tEXt", "iTXt", "novelai"]


def test_stealth_write_refuses_tiny_images() -> None:
    with pytest.raises(MetadataError, match="too small"):
        write_metadata(rgb_png((4, 4)), sample_meta(), stealth=True)


def test_strip_png_removes_chunks_and_stealth_and_keeps_rgb() -> None:
    original = NAI_V3.read_bytes()
    result = strip_metadata(original)
    assert result.removed == [
        "Title",
        "Description",
        "Software",
        "Source",
        "Generation time",
        "Comment",
        "stealth alpha",
    ]
    assert not any(c.type in TEXT_TYPES for c in read_all_chunks(result.data))
    before, after = pixels(original), pixels(result.data)
    assert np.array_equal(before[..., :3], after[..., :3])
    assert int(after[..., 3].min()) == 255
    back = read_metadata(result.data)
    assert back.is_empty and back.prompt is None


def test_strip_png_without_alpha_does_not_touch_pixels() -> None:
    original = (FIXTURES / "comfy__d3x-at_sd-parsers__img2img_cropped.png").read_bytes()
    result = strip_metadata(original)
    assert result.removed == ["prompt", "workflow"]
    assert idat(result.data) == idat(original)
    assert strip_metadata(result.data).removed == []


def test_strip_keeps_genuine_transparency() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # no stealth magic
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    result = strip_metadata(buf.getvalue())
    assert result.removed == []
    assert result.data == buf.getvalue()


def test_strip_nai_webp_removes_exif_and_stealth_losslessly() -> None:
    original = NAI_WEBP.read_bytes()
    result = strip_metadata(original)
    assert result.removed == ["EXIF", "stealth alpha"]
    before, after = pixels(original), pixels(result.data)
    assert np.array_equal(before[..., :3], after[..., :3])
    with Image.open(io.BytesIO(result.data)) as im:
        alpha = alpha_channel(im)  # the encoder drops an all-opaque alpha channel altogether
    assert alpha is None or not has_stealth(alpha)
    assert int(after[..., 3].min()) == 255
    back = read_metadata(result.data)
    assert back.found_in == [] and back.prompt is None


def test_strip_jpeg() -> None:
    original = (FIXTURES / "other__d3x-at_sd-parsers__automatic1111_cropped.jpg").read_bytes()
    result = strip_metadata(original)
    assert result.removed == ["EXIF"]
    assert read_metadata(result.data).is_empty


@pytest.mark.parametrize("data", [b"", b"hello", NAI_V3.read_bytes()[:100]])
def test_strip_bad_input_is_a_metadata_error(data: bytes) -> None:
    with pytest.raises(MetadataError):
        strip_metadata(data)
