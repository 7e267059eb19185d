"""read_metadata on every fixture family, checked against values read independently with Pillow/json."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from peropix_tui.core.metadata import MetadataError, read_metadata

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"


def pillow_text(name: str) -> dict[str, str]:
    with Image.open(FIXTURES / name) as im:
        return dict(im.text)  # type: ignore[attr-defined]


def pillow_comment(name: str) -> dict[str, object]:
    comment = json.loads(pillow_text(name)["Comment"])
    assert isinstance(comment, dict)
    return comment


def test_nai_v3() -> None:
    name = "nai__LlmKira_novelai-python__sample-0316.png"
    meta = read_metadata(FIXTURES / name)
    comment = pillow_comment(name)
    assert meta.found_in == ["tEXt", "novelai"]
    assert meta.warnings == []
    assert meta.prompt == comment["prompt"] == pillow_text(name)["Description"]
    assert meta.negative_prompt == comment["uc"]
    assert (meta.seed, meta.steps, meta.cfg, meta.cfg_rescale) == (1148692016, 28, 10.0, 0.38)
    assert (meta.sampler, meta.scheduler, meta.smea, meta.smea_dyn) == ("k_euler", "native", True, True)
    assert (meta.model, meta.model_hash) == ("nai-diffusion-3", "C1E1DE52")
    assert (meta.width, meta.height, meta.n_samples) == (128, 128, 1)
    assert (meta.title, meta.software, meta.generation_time) == (
        "AI generated image",
        "NovelAI",
        "6.492950826010201",
    )
    assert meta.raw == pillow_text(name)


def test_nai_v45_with_characters_and_itxt() -> None:
    name = "nai__enslo_sd-metadata__novelai-full-3char.png"
    meta = read_metadata(FIXTURES / name)
    comment = pillow_comment(name)
    assert meta.found_in == ["tEXt", "iTXt", "novelai"]
    assert meta.prompt == pillow_text(name)["Description"]  # the iTXt chunk, non-Latin-1
    assert "#テスト" in (meta.prompt or "")
    assert (meta.model, meta.model_hash) == ("nai-diffusion-4-5-full", "4BDE2A90")
    assert meta.cfg_rescale == 0.0 and meta.seed == comment["seed"]
    assert len(meta.characters) == 3
    assert meta.characters[1].prompt == "girl, kagamine rin, hand up, "
    assert meta.characters[1].centers == ((0.7, 0.7),)


def test_legacy_nai_img2img_without_prompt_key() -> None:
    name = "nai__d3x-at_sd-parsers__novelai1_cropped.png"
    meta = read_metadata(FIXTURES / name)
    assert meta.prompt == pillow_text(name)["Description"] == "masterpiece, best quality,  cat, space, icon"
    assert (meta.strength, meta.noise, meta.seed) == (0.4, 0.0, 2253955223)  # noise 0.0 is kept
    assert (meta.model, meta.model_hash) == ("Stable Diffusion", "1D44365E")


def test_a1111_png() -> None:
    meta = read_metadata(FIXTURES / "a1111__d3x-at_sd-parsers__automatic1111_cropped.png")
    assert meta.found_in == ["tEXt", "a1111"]
    assert (meta.prompt, meta.negative_prompt) == ("photo of a duck", "monochrome")
    assert (meta.steps, meta.sampler, meta.cfg, meta.seed) == (15, "UniPC", 5.0, 235284042)
    assert (meta.width, meta.height, meta.model) == (512, 400, "realistic_realisticVisionV20_v20")


def test_forge_png_uses_itxt_and_skips_stealth_scan() -> None:
    meta = read_metadata(FIXTURES / "a1111__enslo_sd-metadata__forge.png")
    assert meta.found_in == ["iTXt", "a1111"]  # settings found in chunks: no pixel decode
    assert (meta.sampler, meta.scheduler, meta.seed) == ("k_euler", "karras", 747066619)


def test_stealth_only_a1111() -> None:
    meta = read_metadata(FIXTURES / "a1111__d3x-at_sd-parsers__automatic1111_stealth.png")
    assert meta.found_in == ["stealth", "a1111"]
    assert (meta.prompt, meta.negative_prompt, meta.steps, meta.sampler) == (
        "a circle",
        "a square",
        20,
        "k_euler",
    )
    assert meta.raw == {}


def test_comfyui() -> None:
    meta = read_metadata(FIXTURES / "comfy__d3x-at_sd-parsers__unclip_2pass_cropped.png")
    assert meta.found_in == ["tEXt", "comfyui"]
    assert (meta.prompt, meta.steps, meta.cfg, meta.sampler) == (
        "beautiful scenery landscape outdoors mountains",
        8,
        9.0,
        "k_dpmpp_sde",
    )
    assert (meta.width, meta.height) == (1920, 1088)
    assert set(meta.raw) == {"prompt", "workflow"}


def test_nai_webp_from_exif() -> None:
    meta = read_metadata(FIXTURES / "webp__enslo_sd-metadata__novelai-curated.webp")
    assert meta.found_in == ["exif", "novelai"]
    assert (meta.model, meta.model_hash) == ("nai-diffusion-4-5-curated", "C02D4F98")
    assert meta.source == "NovelAI Diffusion V4.5 C02D4F98"
    assert (meta.steps, meta.cfg_rescale, meta.request_type) == (23, 0.0, "PromptGenerateRequest")
    assert meta.raw["Software"] == "NovelAI"


def test_a1111_webp_and_jpeg_from_exif() -> None:
    webp = read_metadata(FIXTURES / "webp__enslo_sd-metadata__sd-webui.webp")
    assert webp.found_in == ["exif", "a1111"]
    assert (webp.sampler, webp.scheduler, webp.cfg) == ("k_dpmpp_2m", "karras", 5.5)
    jpeg = read_metadata(FIXTURES / "other__d3x-at_sd-parsers__automatic1111_cropped.jpg")
    assert jpeg.found_in == ["exif", "a1111"]
    assert (jpeg.prompt, jpeg.seed) == ("photo of a duck", 235284042)


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("other__LlmKira_novelai-python__banner-narrow.png", "not a NovelAI JSON object"),
        ("other__d3x-at_sd-parsers__fooocus1_cropped.png", "holds JSON"),
        ("other__d3x-at_sd-parsers__invokeai_imeta1.png", "invokeai_metadata"),
    ],
)
def test_unrecognised_chunks_are_kept_raw_with_warning(name: str, warning: str) -> None:
    meta = read_metadata(FIXTURES / name)
    assert meta.prompt is None and meta.seed is None
    assert meta.raw == pillow_text(name)
    assert any(warning in w for w in meta.warnings)


def test_bytes_and_path_give_the_same_result() -> None:
    path = FIXTURES / "nai__LlmKira_novelai-python__sample-0317.png"
    assert read_metadata(path.read_bytes()) == read_metadata(path)
    assert read_metadata(str(path)) == read_metadata(path)


def test_jpeg_named_png_is_read_with_a_warning(tmp_path: Path) -> None:
    target = tmp_path / "photo.png"
    target.write_bytes((FIXTURES / "other__d3x-at_sd-parsers__automatic1111_cropped.jpg").read_bytes())
    meta = read_metadata(target)
    assert meta.prompt == "photo of a duck"
    assert any("JPEG image despite its PNG name" in w for w in meta.warnings)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"GIF89a....", "not a PNG, WebP or JPEG"),
        (b"\x89PNG\r\n\x1a", "truncated inside its signature"),
        (b"\x89PNG\r\n\x1a\0", "not a PNG"),
    ],
)
def test_non_images_raise_one_line_errors(tmp_path: Path, data: bytes, message: str) -> None:
    target = tmp_path / "bad.png"
    target.write_bytes(data)
    with pytest.raises(MetadataError, match=message) as info:
        read_metadata(target)
    assert str(info.value).startswith(str(target) + ": ")
    assert "\n" not in str(info.value)


def test_missing_file_is_a_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read"):
        read_metadata(tmp_path / "nope.png")


def _png(width: int, height: int, color_type: int, *chunks: bytes, idat: bytes = b"") -> bytes:
    def chunk(ctype: bytes, data: bytes) -> bytes:
        return struct.pack(">I4s", len(data), ctype) + data + zlib.crc32(ctype + data).to_bytes(4, "big")

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + b"".join(chunk(c[:4], c[4:]) for c in chunks)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", idat or zlib.compress(b"")) + chunk(b"IEND", b"")


def test_huge_image_is_not_decoded() -> None:
    data = _png(100_000, 100_000, 6, b"tEXtTitle\0x")
    meta = read_metadata(data)
    assert meta.raw == {"Title": "x"}
    assert any("too large to scan" in w for w in meta.warnings)


def test_undecodable_pixels_are_a_warning() -> None:
    data = _png(64, 64, 6, idat=b"not zlib")
    meta = read_metadata(data)
    assert meta.found_in == []
    assert any("pixels could not be decoded" in w for w in meta.warnings)


def test_bad_comment_json_with_novelai_software_keeps_the_rest() -> None:
    data = _png(1, 1, 2, b"tEXtSoftware\0NovelAI", b"tEXtDescription\0a cat", b"tEXtComment\0{broken")
    meta = read_metadata(data)
    assert (meta.prompt, meta.software) == ("a cat", "NovelAI")
    assert any("Comment" in w for w in meta.warnings)


def test_bomb_in_ztxt_is_a_warning_not_memory() -> None:
    bomb = zlib.compress(b"a" * (64 * 1024 * 1024), 9)
    data = _png(1, 1, 2, b"zTXtparameters\0\0" + bomb)
    meta = read_metadata(data)
    assert meta.raw == {}
    assert any("limit" in w for w in meta.warnings)


def test_generation_time_underscore_spelling_is_normalised() -> None:
    data = _png(1, 1, 2, b"tEXtGeneration_time\0" + b"1.25", b'tEXtComment\0{"seed": 3}')
    meta = read_metadata(data)
    assert (meta.generation_time, meta.seed) == ("1.25", 3)


def test_exif_in_png_is_read() -> None:
    comment = b"UNICODE\0" + "a dog\nSteps: 3, Sampler: Euler, Seed: 9".encode("utf-16-le")
    tiff = b"II*\0\x08\0\0\0" + b"\x01\0" + struct.pack("<HHII", 0x8769, 4, 1, 26) + b"\0\0\0\0"
    tiff += b"\x01\0" + struct.pack("<HHII", 0x9286, 7, len(comment), 44) + b"\0\0\0\0" + comment
    assert len(tiff) == 44 + len(comment)
    meta = read_metadata(_png(1, 1, 2, b"eXIf" + tiff))
    assert meta.found_in == ["exif", "a1111"]
    assert (meta.prompt, meta.seed, meta.sampler) == ("a dog", 9, "k_euler")


def test_decompression_bomb_webp_is_a_clean_error_or_warning() -> None:
    im = Image.new("RGBA", (16, 16))
    buf = io.BytesIO()
    im.save(buf, format="WEBP", lossless=True)
    data = bytearray(buf.getvalue())
    # VP8L header: width-1 and height-1 in 14-bit fields after the 0x2f signature byte
    pos = data.index(b"VP8L") + 8
    bits = (16383) | (16383 << 14) | (1 << 28)
    data[pos + 1 : pos + 5] = bits.to_bytes(4, "little")
    try:
        meta = read_metadata(bytes(data))
    except MetadataError as exc:
        assert "\n" not in str(exc)
    else:
        assert meta.found_in == []
        assert meta.warnings
