from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file
from safetensors_helpers import BOO, PEPPER, kohya_metadata, raw_file, split

from peropix_tui.core.safetensors import (
    SafetensorsError,
    compute_hashes,
    output_name,
    read_header,
    read_metadata,
    update_metadata,
)


def lora_file(path: Path, metadata: dict[str, str] | None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    block = "lora_unet_output_blocks_1_1_transformer_blocks_0_attn2_to_v"
    tensors: dict[str, np.ndarray] = {
        f"{block}.lora_down.weight": rng.standard_normal((8, 320)).astype(np.float16),
        f"{block}.lora_up.weight": rng.standard_normal((320, 8)).astype(np.float16),
        f"{block}.alpha": np.array(8.0, dtype=np.float32),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def library_metadata(path: Path) -> dict[str, str]:
    with safetensors.safe_open(str(path), framework="numpy") as reader:
        return reader.metadata() or {}


def assert_same_tensors(before: dict[str, np.ndarray], path: Path) -> None:
    after = load_file(str(path))
    assert set(after) == set(before)
    for name, array in before.items():
        assert after[name].dtype == array.dtype
        assert after[name].tobytes() == array.tobytes()


def test_small_change_is_written_in_place(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "pepper.safetensors", kohya_metadata(PEPPER))
    n_before, _, buffer_before = split(path)
    tensors_before = load_file(str(path))
    order_before = list(read_metadata(path))
    inode = path.stat().st_ino

    result = update_metadata(path, {"ss_output_name": "pepper"})

    assert result.in_place and not result.rewritten
    assert result.header_len == n_before
    assert result.sha256_before is None
    n_after, raw_after, buffer_after = split(path)
    assert n_after == n_before
    assert raw_after.rstrip(b" ") != raw_after  # padded with spaces to the old length
    assert buffer_after == buffer_before
    assert path.stat().st_ino == inode
    expected = kohya_metadata(PEPPER) | {"ss_output_name": "pepper"}
    assert library_metadata(path) == expected
    assert read_metadata(path) == expected
    assert list(read_metadata(path)) == order_before
    assert output_name(path) == "pepper"
    assert_same_tensors(tensors_before, path)


def test_big_change_rewrites_with_slack_then_fits_in_place(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "boo.safetensors", kohya_metadata(BOO))
    original = path.read_bytes()
    n_before, _, buffer_before = split(path)
    tensors_before = load_file(str(path))
    tags = {"10_pepper": {f"tag number {i}": i for i in range(2500)}}
    frequency = json.dumps(tags)
    assert len(frequency) > 50_000

    result = update_metadata(path, {"ss_tag_frequency": frequency, "ss_output_name": "boo"}, slack=4096)

    assert result.rewritten
    assert result.sha256_before == hashlib.sha256(original).hexdigest().upper()
    n_after, raw_after, buffer_after = split(path)
    assert n_after == result.header_len
    assert n_after % 8 == 0
    assert n_after >= len(raw_after.rstrip(b" ")) + 4096
    assert buffer_after == buffer_before
    expected = kohya_metadata(BOO) | {"ss_tag_frequency": frequency, "ss_output_name": "boo"}
    assert library_metadata(path) == expected
    assert json.loads(read_metadata(path)["ss_tag_frequency"]) == tags
    assert_same_tensors(tensors_before, path)
    assert n_before < n_after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boo.safetensors"]

    again = update_metadata(path, {"ss_training_comment": "x" * 2000})
    assert again.in_place
    assert split(path)[0] == n_after
    assert library_metadata(path)["ss_training_comment"] == "x" * 2000


def test_edit_keeps_tensor_hash_and_changes_file_hash(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "h.safetensors", kohya_metadata(PEPPER))
    before = compute_hashes(path)
    update_metadata(path, {"ss_output_name": "p"})
    in_place = compute_hashes(path)
    update_metadata(path, {"ss_tag_frequency": "y" * 60_000})
    rewritten = compute_hashes(path)
    assert before.autov3 is not None
    assert before.autov3 == in_place.autov3 == rewritten.autov3
    assert len({before.sha256, in_place.sha256, rewritten.sha256}) == 3


def test_delete_keys_and_missing_key(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "d.safetensors", kohya_metadata(BOO))
    result = update_metadata(path, {"ss_seed": None, "ss_clip_skip": None, "not_there": None})
    assert result.in_place
    expected = kohya_metadata(BOO)
    del expected["ss_seed"], expected["ss_clip_skip"]
    assert library_metadata(path) == expected
    assert read_metadata(path) == expected


def test_delete_all_metadata_drops_the_key(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "d.safetensors", {"a": "1", "b": "2"})
    update_metadata(path, {"a": None, "b": None})
    _, raw, _ = split(path)
    assert b"__metadata__" not in raw
    assert read_metadata(path) == {}
    with safetensors.safe_open(str(path), framework="numpy") as reader:
        assert reader.metadata() is None


def test_add_metadata_to_file_without_any(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "bare.safetensors", None)
    result = update_metadata(path, {"ss_output_name": "fresh"})
    assert result.rewritten
    _, raw, _ = split(path)
    assert next(iter(json.loads(raw))) == "__metadata__"
    assert library_metadata(path) == {"ss_output_name": "fresh"}


def test_unicode_and_control_characters_round_trip(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "u.safetensors", kohya_metadata(BOO))
    values = {
        "ss_output_name": "ペロ・ピクス ✨ 猫耳",
        "ss_training_comment": 'quotes " and \\ backslash, tab\t newline\n nul\x00 and \x7f',
        "キー": "emoji 😺👍🏽",
    }
    update_metadata(path, values)
    assert library_metadata(path) == kohya_metadata(BOO) | values
    assert read_metadata(path) == kohya_metadata(BOO) | values


def test_unknown_tensor_fields_survive(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "__metadata__": {"a": "b"},
        "t": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4], "quant": {"scale": 0.5}},
    }
    path = raw_file(tmp_path / "x.safetensors", json.dumps(doc), b"\x01\x02\x03\x04")
    update_metadata(path, {"a": "c" * 5000})
    _, raw, buffer = split(path)
    assert json.loads(raw)["t"]["quant"] == {"scale": 0.5}
    assert buffer == b"\x01\x02\x03\x04"
    assert library_metadata(path) == {"a": "c" * 5000}


def test_rewrite_keeps_file_mode(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "m.safetensors", {"a": "b"})
    path.chmod(0o640)
    assert update_metadata(path, {"a": "z" * 10_000}).rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ss_output_name": "ok", "ss_epoch": 7}, "value of 'ss_epoch' must be a string or None, not int"),
        ({"ss_output_name": "ok", "x": b"bytes"}, "must be a string or None, not bytes"),
        ({"ss_output_name": "ok", 3: "three"}, "metadata key 3 is not a string"),
        ({"ss_output_name": "ok", "s": "bad \udc80 text"}, "not valid Unicode"),
    ],
)
def test_refused_edit_leaves_file_byte_identical(tmp_path: Path, changes: Any, expected: str) -> None:
    path = lora_file(tmp_path / "keep.safetensors", kohya_metadata(PEPPER))
    original = path.read_bytes()
    with pytest.raises(SafetensorsError) as caught:
        update_metadata(path, changes)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_negative_slack_is_a_programming_error(tmp_path: Path) -> None:
    path = lora_file(tmp_path / "s.safetensors", {"a": "b"})
    original = path.read_bytes()
    with pytest.raises(ValueError, match="slack"):
        update_metadata(path, {"a": "c"}, slack=-1)
    assert path.read_bytes() == original


def test_invalid_file_is_not_edited(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "broken.safetensors", '{"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"abc")
    original = path.read_bytes()
    with pytest.raises(SafetensorsError, match="tensors cover 2 bytes"):
        update_metadata(path, {"a": "b"})
    assert path.read_bytes() == original
    with pytest.raises(SafetensorsError, match=r"cannot edit .*missing"):
        update_metadata(tmp_path / "missing.safetensors", {"a": "b"})


metadata_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    initial=st.dictionaries(metadata_text, metadata_text, max_size=6),
    target=st.dictionaries(metadata_text, st.text(st.characters(exclude_categories=["Cs"]), max_size=3000), max_size=8),
    slack=st.sampled_from([0, 1, 7, 64, 4096]),
)
def test_random_metadata_round_trips_through_both_readers(
    initial: dict[str, str], target: dict[str, str], slack: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = lora_file(Path(folder) / "r.safetensors", initial or None, seed=len(target))
        _, _, buffer_before = split(path)
        changes: dict[str, str | None] = {key: None for key in initial if key not in target}
        changes.update(target)
        result = update_metadata(path, changes, slack=slack)
        assert library_metadata(path) == target
        assert read_metadata(path) == target
        assert split(path)[2] == buffer_before
        assert read_header(path).header_len == result.header_len
        if result.rewritten:
            assert result.header_len % 8 == 0
