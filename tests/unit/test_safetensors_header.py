from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from safetensors_helpers import BOO, PEPPER, kohya_metadata, raw_file, split

from peropix_tui.core.safetensors import (
    DTYPE_BITS,
    SafetensorsError,
    output_name,
    read_header,
    read_metadata,
)


def lora_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    block = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
    return {
        f"{block}.lora_down.weight": rng.standard_normal((4, 64)).astype(np.float16),
        f"{block}.lora_up.weight": rng.standard_normal((64, 4)).astype(np.float16),
        f"{block}.alpha": np.array(4.0, dtype=np.float16),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": rng.standard_normal((4, 32)).astype(
            np.float32
        ),
        "scale_ids": rng.integers(-100, 100, size=(3, 5)).astype(np.int8),
        "flags": rng.integers(0, 2, size=(7,)).astype(bool),
    }


def reference_rejects(path: Path) -> bool:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as reader:
            reader.metadata()
    except safetensors.SafetensorError:
        return True
    return False


def test_reads_real_kohya_header(tmp_path: Path) -> None:
    path = tmp_path / "pepper.safetensors"
    metadata = kohya_metadata(PEPPER)
    tensors = lora_tensors()
    save_file(tensors, str(path), metadata=metadata)
    blob = path.read_bytes()
    n, _, _ = split(path)

    header = read_header(path)

    assert header.metadata == metadata
    assert header.header_len == n
    assert header.data_start == 8 + n
    assert header.file_size == len(blob)
    assert header.data_len == sum(array.nbytes for array in tensors.values())
    with safetensors.safe_open(str(path), framework="numpy") as reader:
        assert set(header.tensors) == set(reader.keys())
        for name, info in header.tensors.items():
            assert list(info.shape) == reader.get_slice(name).get_shape()
            assert info.dtype == reader.get_slice(name).get_dtype()
            start, end = (header.data_start + off for off in info.data_offsets)
            assert info.nbytes == tensors[name].nbytes
            assert blob[start:end] == tensors[name].tobytes()
    assert read_metadata(path) == metadata
    assert output_name(path) == "Pepper__Carrot"


def test_output_name_missing_or_blank(tmp_path: Path) -> None:
    boo = tmp_path / "boo.safetensors"
    save_file(lora_tensors(), str(boo), metadata=kohya_metadata(BOO))
    assert read_metadata(boo)["ss_network_module"] == "kohya-ss/lora"
    assert output_name(boo) is None
    blank = tmp_path / "blank.safetensors"
    save_file(lora_tensors(), str(blank), metadata={"ss_output_name": "  "})
    assert output_name(blank) is None
    bare = tmp_path / "bare.safetensors"
    save_file(lora_tensors(), str(bare))
    assert read_metadata(bare) == {}
    assert output_name(bare) is None


def test_trailing_spaces_and_empty_file_accepted(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "pad.safetensors", '{"__metadata__":{"a":"b"}}' + " " * 13)
    assert read_metadata(path) == {"a": "b"}
    empty = raw_file(tmp_path / "empty.safetensors", "{}")
    header = read_header(empty)
    assert header.tensors == {}
    assert header.metadata == {}


def test_null_metadata_and_unknown_tensor_fields_accepted(tmp_path: Path) -> None:
    doc = {"__metadata__": None, "t": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2], "note": [1.5]}}
    path = raw_file(tmp_path / "x.safetensors", json.dumps(doc), b"\x01\x02")
    header = read_header(path)
    assert header.metadata == {}
    assert header.tensors["t"].shape == (2,)
    assert not reference_rejects(path)


@pytest.mark.parametrize("dtype", sorted(DTYPE_BITS))
def test_every_dtype_agrees_with_reference(tmp_path: Path, dtype: str) -> None:
    count = 16
    nbytes = count * DTYPE_BITS[dtype] // 8
    doc = {"w": {"dtype": dtype, "shape": [2, 8], "data_offsets": [0, nbytes]}}
    path = raw_file(tmp_path / "d.safetensors", json.dumps(doc), bytes(nbytes))
    assert read_header(path).tensors["w"].nbytes == nbytes
    assert not reference_rejects(path)


T = '{"dtype":"U8","shape":[2],"data_offsets":[0,2]}'

HOSTILE: list[tuple[str, bytes | str, bytes, int | None, str]] = [
    ("absurd length", "{}", b"", 2**63, "over the 100000000-byte limit"),
    ("length past eof", "{}", b"", 4096, "runs past the end of the file"),
    ("length just past eof", "{}", b"", 3, "runs past the end of the file"),
    ("zero length", "", b"x", None, "does not start with '{'"),
    ("leading space", " {}", b"", None, "does not start with '{'"),
    ("not json", "{not json", b"", None, "not valid JSON"),
    ("nul padding", "{}\x00\x00", b"", None, "not valid JSON"),
    ("bad utf8", b'{"__metadata__":{"a":"\xff"}}', b"", None, "not valid UTF-8"),
    ("lone surrogate", '{"__metadata__":{"a":"\\udc00"}}', b"", None, "surrogate"),
    ("deep nesting", '{"t":' + "[" * 100_000 + "]" * 100_000 + "}", b"", None, "nested too deeply"),
    ("nan", '{"t":NaN}', b"", None, "NaN is not valid JSON"),
    ("metadata not object", '{"__metadata__":["a"]}', b"", None, "__metadata__ must be a JSON object"),
    ("metadata int value", '{"__metadata__":{"a":1}}', b"", None, "value of 'a' must be a string"),
    ("metadata nested", '{"__metadata__":{"a":{"b":"c"}}}', b"", None, "must be a string, not an object"),
    (
        "duplicate metadata",
        '{"__metadata__":{},"__metadata__":{}}',
        b"",
        None,
        "duplicate key '__metadata__'",
    ),
    ("duplicate tensor", '{"t":' + T + ',"t":' + T + "}", b"ab", None, "duplicate key 't'"),
    ("duplicate metadata key", '{"__metadata__":{"k":"1","k":"2"}}', b"", None, "duplicate key 'k'"),
    ("tensor not object", '{"t":[1,2]}', b"", None, "tensor 't' must be a JSON object, not an array"),
    (
        "unknown dtype",
        '{"t":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}',
        b"x",
        None,
        "unknown dtype 'Q7'",
    ),
    ("missing dtype", '{"t":{"shape":[1],"data_offsets":[0,1]}}', b"x", None, "unknown dtype None"),
    ("negative dim", '{"t":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}', b"ab", None, "non-negative"),
    ("float dim", '{"t":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}', b"ab", None, "non-negative"),
    ("bool dim", '{"t":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"a", None, "non-negative"),
    (
        "huge dim",
        '{"t":{"dtype":"U8","shape":[' + "9" * 1_000_000 + '],"data_offsets":[0,1]}}',
        b"a",
        None,
        "shape must be a list of non-negative integers",
    ),
    (
        "dim over u64",
        '{"t":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,0]}}',
        b"",
        None,
        "shape",
    ),
    (
        "shape overflow",
        '{"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}',
        b"",
        None,
        "overflows",
    ),
    (
        "three offsets",
        '{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}',
        b"ab",
        None,
        "two non-negative",
    ),
    (
        "offsets reversed",
        '{"t":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}}',
        b"ab",
        None,
        "before begin",
    ),
    ("size mismatch", '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"abcd", None, "needs 8"),
    (
        "half byte",
        '{"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}',
        b"ab",
        None,
        "whole number of bytes",
    ),
    (
        "overlap",
        '{"a":' + T + ',"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}',
        b"abc",
        None,
        "tensor 'b' overlaps",
    ),
    (
        "hole",
        '{"a":' + T + ',"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}',
        b"abcde",
        None,
        "1-byte hole",
    ),
    ("trailing bytes", '{"t":' + T + "}", b"abc", None, "tensors cover 2 bytes but the file holds 3"),
    ("missing bytes", '{"t":' + T + "}", b"a", None, "tensors cover 2 bytes but the file holds 1"),
]


@pytest.mark.parametrize(
    ("header", "buffer", "length", "expected"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_headers_give_one_line_error(
    tmp_path: Path, header: bytes | str, buffer: bytes, length: int | None, expected: str
) -> None:
    path = raw_file(tmp_path / "bad.safetensors", header, buffer, length)
    with pytest.raises(SafetensorsError) as caught:
        read_header(path)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message
    assert len(message) < 400


def test_too_short_and_unreadable_files(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x02\x00\x00")
    with pytest.raises(SafetensorsError, match="only 3 bytes long"):
        read_header(short)
    with pytest.raises(SafetensorsError, match=r"cannot read .*missing"):
        read_header(tmp_path / "missing.safetensors")
    with pytest.raises(SafetensorsError, match="cannot read"):
        read_header(tmp_path)


def test_claimed_length_is_not_allocated_before_checking(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "liar.safetensors", "{}", b" " * 1000, length=90_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(SafetensorsError, match="runs past the end"):
            read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_never_crash_and_agree_with_reference(tmp_path: Path, data: st.DataObject) -> None:
    doc = {
        "__metadata__": {"ss_output_name": "x", "k": "v"},
        "a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
    }
    header = bytearray(json.dumps(doc, separators=(",", ":")).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(header) - 1))
        action = data.draw(st.sampled_from(["set", "delete", "insert"]))
        byte = data.draw(st.sampled_from([*b'{}[]",:0123456789-.eE \\u', 0x80, 0xFF]))
        if action == "set":
            header[pos] = byte
        elif action == "delete" and len(header) > 1:
            del header[pos]
        else:
            header.insert(pos, byte)
    buffer = bytes(data.draw(st.one_of(st.just(11), st.integers(0, 14))))
    path = raw_file(tmp_path / "m.safetensors", bytes(header), buffer)
    try:
        ours = read_header(path)
    except SafetensorsError as exc:
        assert str(path) in str(exc)
        return
    with safetensors.safe_open(str(path), framework="numpy") as reader:
        assert (reader.metadata() or {}) == ours.metadata
        assert set(reader.keys()) == set(ours.tensors)
