"""Hostile input: mutated real files must give a result or a MetadataError, never anything else."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from peropix_tui.core.metadata import ImageMetadata, MetadataError, read_metadata, strip_metadata
from peropix_tui.core.metadata.a1111 import format_parameters, parse_parameters
from peropix_tui.core.metadata.comfy import extract_settings, parse_graph
from peropix_tui.core.metadata.stealth import MAGIC_COMPRESSED, MAGIC_PLAIN, read_stealth

FIXTURES = Path(__file__).parent.parent / "fixtures" / "images"
SMALL = [
    "nai__LlmKira_novelai-python__sample-0316.png",
    "nai__d3x-at_sd-parsers__novelai1_cropped.png",
    "a1111__d3x-at_sd-parsers__automatic1111_stealth.png",
    "comfy__d3x-at_sd-parsers__img2img_cropped.png",
    "other__d3x-at_sd-parsers__automatic1111_cropped.jpg",
    "other__d3x-at_sd-parsers__invokeai_imeta1.png",
]
BLOBS = {name: (FIXTURES / name).read_bytes() for name in SMALL}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def must_not_crash(data: bytes) -> None:
    try:
        meta = read_metadata(data)
    except MetadataError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(meta, ImageMetadata)
        assert all(isinstance(w, str) for w in meta.warnings)
    try:
        strip_metadata(data)
    except MetadataError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(name=st.sampled_from(SMALL), cut=st.floats(0, 1))
def test_truncated(name: str, cut: float) -> None:
    data = BLOBS[name]
    must_not_crash(data[: int(len(data) * cut)])


@FUZZ
@given(
    name=st.sampled_from(SMALL),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_flipped_bytes(name: str, flips: list[tuple[float, int]]) -> None:
    data = bytearray(BLOBS[name])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    must_not_crash(bytes(data))


_chunk_types = st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"IDAT", b"IHDR", b"IEND", b"abcd", b"\0\0\0\0"])


@FUZZ
@given(
    name=st.sampled_from(SMALL),
    where=st.floats(0, 1),
    ctype=_chunk_types,
    body=st.binary(max_size=300),
    compress=st.booleans(),
    good_crc=st.booleans(),
    length=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
)
def test_spliced_chunks(
    name: str, where: float, ctype: bytes, body: bytes, compress: bool, good_crc: bool, length: int | None
) -> None:
    data = BLOBS[name]
    if compress:
        body = body[:8] + b"\0\0" + zlib.compress(body)
    crc = zlib.crc32(ctype + body) if good_crc else 0
    chunk = struct.pack(">I4s", len(body) if length is None else length, ctype) + body + crc.to_bytes(4, "big")
    offset = 8 + int(where * (len(data) - 8))
    must_not_crash(data[:offset] + chunk + data[offset:])


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_behind_every_magic(tail: bytes) -> None:
    for head in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\xff\xff\x00\x00WEBP", b""):
        must_not_crash(head + tail)


@FUZZ
@given(
    magic=st.sampled_from([MAGIC_COMPRESSED, MAGIC_PLAIN]),
    nbits=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=400),
)
def test_random_stealth_payloads(magic: bytes, nbits: int, body: bytes) -> None:
    stream = magic + nbits.to_bytes(4, "big") + body
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    alpha = np.full((64, 64), 255, dtype=np.uint8)
    columns = alpha.T.copy().reshape(-1)
    columns[: bits.size] = 254 | bits
    alpha = columns.reshape(64, 64).T.copy()
    try:
        read_stealth(alpha)
    except MetadataError:
        pass
    image = Image.new("RGBA", (64, 64))
    image.putalpha(Image.fromarray(alpha))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    must_not_crash(buf.getvalue())


@FUZZ
@given(st.text(max_size=300))
def test_parameters_parser_never_fails(text: str) -> None:
    parsed = parse_parameters(text)
    assert isinstance(format_parameters(parsed), str)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.text(max_size=3), max_size=2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["1", "2", "3", "4"]),
        st.fixed_dictionaries(
            {"class_type": st.sampled_from(["KSampler", "CLIPTextEncode", "X"])},
            optional={
                "inputs": st.dictionaries(
                    st.sampled_from(
                        ["positive", "negative", "steps", "seed", "model", "text", "latent_image", "width"]
                    ),
                    _json_values | st.tuples(st.sampled_from(["1", "2", "3", "4", 1]), st.integers(0, 2)).map(list),
                )
            },
        ),
    )
)
def test_comfy_graphs_never_fail(graph: dict[str, object]) -> None:
    parsed = parse_graph(json.dumps(graph))
    if parsed is not None:
        extract_settings(parsed)


def _png_with(*chunks: tuple[bytes, bytes]) -> bytes:
    def chunk(ctype: bytes, data: bytes) -> bytes:
        return struct.pack(">I4s", len(data), ctype) + data + zlib.crc32(ctype + data).to_bytes(4, "big")

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    body = b"".join(chunk(t, d) for t, d in chunks)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + body
        + chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
        + chunk(b"IEND", b"")
    )


def test_total_text_is_bounded_across_many_chunks() -> None:
    bomb = zlib.compress(b"x" * (8 * 1024 * 1024 - 100), 9)
    data = _png_with(*((b"zTXt", f"k{i}".encode() + b"\0\0" + bomb) for i in range(10)))
    meta = read_metadata(data)
    assert len(meta.raw) < 10
    assert sum(len(v) for v in meta.raw.values()) <= 32 * 1024 * 1024
    assert any("rest is ignored" in w or "limit" in w for w in meta.warnings)


def test_deeply_nested_comment_is_not_json() -> None:
    deep = "[" * 5000 + "]" * 5000
    data = _png_with((b"tEXt", b'Comment\0{"a": ' + deep.encode() + b"}"), (b"tEXt", b"Software\0NovelAI"))
    meta = read_metadata(data)
    assert meta.software == "NovelAI" and meta.extra == {}
    assert any("not a NovelAI JSON object" in w for w in meta.warnings)
    assert strip_metadata(data).removed == ["Comment", "Software"]


def test_huge_prompt_is_not_scanned_for_loras() -> None:
    prompt = "(" * 200_000 + "<lora:a:1>"
    data = _png_with((b"tEXt", b"parameters\0" + prompt.encode() + b"\nSteps: 1, Seed: 2, CFG scale: 3"))
    meta = read_metadata(data)
    assert meta.prompt == prompt and meta.loras == []
    assert any("not scanned for LoRA tags" in w for w in meta.warnings)


def test_comfy_graph_with_many_samplers_stays_cheap() -> None:
    graph = {
        str(i): {
            "class_type": "KSampler",
            "inputs": {"positive": [str(i - 1), 0], "negative": [str(i - 1), 0], "steps": i},
        }
        for i in range(1, 5000)
    }
    graph["0"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "root"}}
    data = _png_with((b"tEXt", b"prompt\0" + json.dumps(graph).encode()))
    meta = read_metadata(data)
    assert meta.found_in == ["tEXt", "comfyui"]
    assert meta.prompt == "root"


def test_oversized_text_chunk_is_skipped_not_loaded() -> None:
    data = _png_with((b"tEXt", b"Comment\0" + b"x" * (33 * 1024 * 1024)), (b"tEXt", b"Title\0ok"))
    meta = read_metadata(data)
    assert meta.raw == {"Title": "ok"}
    assert any("too large" in w for w in meta.warnings)
