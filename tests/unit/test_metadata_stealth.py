"""Alpha-LSB stealth metadata: read real NovelAI/A1111 payloads, write, and clear it."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.metadata import MetadataError
from peropix_tui.core.metadata.inflate import STEALTH_LIMIT
from peropix_tui.core.metadata.stealth import (
    MAGIC_COMPRESSED,
    MAGIC_PLAIN,
    alpha_channel,
    clear_alpha_lsb,
    embed_stealth,
    has_stealth,
    read_stealth,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
NAI_V3 = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
A1111_STEALTH = FIXTURES / "a1111__d3x-at_sd-parsers__automatic1111_stealth.png"


def reference_bits(image: Image.Image, count: int) -> list[int]:
    """Plain-loop reader: x outer, y inner, LSB of alpha; independent of the numpy code under test."""
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    bits = []
    for x in range(width):
        for y in range(height):
            bits.append(pixels[x, y][3] & 1)  # type: ignore[index]
            if len(bits) == count:
                return bits
    return bits


def bits_to_bytes(bits: list[int]) -> bytes:
    return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits) - 7, 8))


def alpha_with(stream: bytes, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """An opaque alpha plane carrying `stream` column-major, MSB first, set by a plain loop."""
    width, height = size
    alpha = np.full((height, width), 255, dtype=np.uint8)
    bits = [(byte >> (7 - i)) & 1 for byte in stream for i in range(8)]
    assert len(bits) <= width * height
    for n, bit in enumerate(bits):
        x, y = divmod(n, height)
        alpha[y, x] = 254 | bit
    return alpha


def test_nai_fixture_payload_equals_its_text_chunks() -> None:
    with Image.open(NAI_V3) as im:
        im.load()
        text = dict(im.text)  # type: ignore[attr-defined]
        alpha = alpha_channel(im)
        header = bits_to_bytes(reference_bits(im, 152))
        nbits = int.from_bytes(header[15:19], "big")
        payload = bits_to_bytes(reference_bits(im, 152 + nbits))[19:]
    assert alpha is not None
    result = read_stealth(alpha)
    assert result is not None and result.compressed
    assert header[:15] == MAGIC_COMPRESSED
    assert result.text == gzip.decompress(payload).decode()
    fields = json.loads(result.text)
    assert set(fields) == {"Description", "Software", "Source", "Generation time", "Comment"}
    assert json.loads(fields["Comment"]) == json.loads(text["Comment"])
    assert fields["Source"] == text["Source"] == "Stable Diffusion XL C1E1DE52"


def test_a1111_stealth_fixture_holds_parameters_text() -> None:
    with Image.open(A1111_STEALTH) as im:
        alpha = alpha_channel(im)
    assert alpha is not None
    result = read_stealth(alpha)
    assert result is not None
    assert result.text.startswith("a circle\nNegative prompt: a square\nSteps: 20, Sampler: Euler")


def test_no_alpha_and_no_magic() -> None:
    assert alpha_channel(Image.new("RGB", (4, 4))) is None
    assert read_stealth(np.full((8, 8), 255, dtype=np.uint8)) is None
    assert read_stealth(np.full((2, 2), 254, dtype=np.uint8)) is None  # smaller than a header


def test_plain_variant_is_read() -> None:
    payload = b"prompt\nSteps: 5"
    alpha = alpha_with(MAGIC_PLAIN + (len(payload) * 8).to_bytes(4, "big") + payload)
    result = read_stealth(alpha)
    assert result is not None
    assert (result.compressed, result.text) == (False, "prompt\nSteps: 5")


@pytest.mark.parametrize("nbits", [2**32 - 1, 64 * 64, 12])
def test_absurd_bit_length_is_an_error(nbits: int) -> None:
    alpha = alpha_with(MAGIC_COMPRESSED + nbits.to_bytes(4, "big"))
    with pytest.raises(MetadataError, match="stealth header declares"):
        read_stealth(alpha)


def test_stealth_gzip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"\0" * (STEALTH_LIMIT + 4096), 9)
    side = int(np.ceil(np.sqrt((len(bomb) + 19) * 8))) + 1
    alpha = alpha_with(MAGIC_COMPRESSED + (len(bomb) * 8).to_bytes(4, "big") + bomb, (side, side))
    with pytest.raises(MetadataError, match="limit"):
        read_stealth(alpha)


def test_corrupt_gzip_and_bad_utf8_are_errors() -> None:
    junk = b"\x1f\x8b not really gzip"
    with pytest.raises(MetadataError):
        read_stealth(alpha_with(MAGIC_COMPRESSED + (len(junk) * 8).to_bytes(4, "big") + junk))
    bad = zlib.compress(b"\xff\xfe\xfd")
    with pytest.raises(MetadataError, match="UTF-8"):
        read_stealth(alpha_with(MAGIC_COMPRESSED + (len(bad) * 8).to_bytes(4, "big") + bad))


@settings(max_examples=30, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(["Title", "Description", "Comment", "Source"]), st.text(max_size=80)),
    size=st.tuples(st.integers(100, 160), st.integers(100, 140)),
)
def test_embed_then_read_round_trip(fields: dict[str, str], size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (12, 34, 56))
    marked = embed_stealth(image, fields)
    alpha = alpha_channel(marked)
    assert alpha is not None
    result = read_stealth(alpha)
    assert result is not None
    assert json.loads(result.text) == {k: v for k, v in fields.items() if k != "Title"}
    assert set(np.unique(alpha)) <= {254, 255}
    assert marked.convert("RGB").tobytes() == image.tobytes()


def test_embed_matches_reference_placement() -> None:
    image = Image.new("RGBA", (50, 30), (1, 2, 3, 255))
    marked = embed_stealth(image, {"Comment": "{}"})
    bits = reference_bits(marked, 152)
    assert bits_to_bytes(bits)[:15] == MAGIC_COMPRESSED


def test_embed_refuses_too_small_image() -> None:
    with pytest.raises(MetadataError, match="too small"):
        embed_stealth(Image.new("RGB", (8, 8)), {"Comment": "x" * 100})


def test_clear_alpha_lsb_removes_payload_and_keeps_rgb() -> None:
    with Image.open(NAI_V3) as im:
        im.load()
        cleared = clear_alpha_lsb(im)
        rgb = im.convert("RGB").tobytes()
    assert cleared is not None
    alpha = alpha_channel(cleared)
    assert alpha is not None
    assert not has_stealth(alpha)
    assert int(alpha.min()) == 255  # NovelAI alpha is 254/255, so this is "alpha set to 255"
    assert cleared.convert("RGB").tobytes() == rgb
    assert clear_alpha_lsb(cleared) is None


def test_clear_alpha_lsb_keeps_real_transparency() -> None:
    image = Image.fromarray(np.array([[[10, 0], [20, 128], [30, 254]]], dtype=np.uint8), mode="LA")
    cleared = clear_alpha_lsb(image)
    assert cleared is not None and cleared.mode == "LA"
    assert np.asarray(cleared).tolist() == [[[10, 1], [20, 129], [30, 255]]]


def test_embed_keeps_transparency_within_one_step() -> None:
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent
    marked = embed_stealth(Image.fromarray(rgba), {"Comment": "{}"})
    alpha = alpha_channel(marked)
    assert alpha is not None and int(alpha.max()) <= 1
    assert read_stealth(alpha) is not None
