from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from safetensors_helpers import PEPPER, kohya_metadata, split

from peropix_tui.core.safetensors import (
    AUTOV1_MIN_SIZE,
    FileHashes,
    HashingError,
    compute_hashes,
    hash_matches,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


@pytest.fixture
def big_lora(tmp_path: Path) -> Path:
    """A 3+ MiB safetensors file, so every hash (AutoV1 included) has something to cover."""
    rng = np.random.default_rng(7)
    path = tmp_path / "big.safetensors"
    tensors: dict[str, np.ndarray] = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": rng.standard_normal((32, 25_000)).astype(
            np.float32
        ),
        "lora_unet_mid_block_attentions_0_proj_in.alpha": np.array(16.0, dtype=np.float16),
    }
    save_file(tensors, str(path), metadata=kohya_metadata(PEPPER))
    return path


def expected_hashes(path: Path) -> tuple[str, str | None, str, str]:
    """The four hashes, each computed independently from the whole file in memory."""
    blob = path.read_bytes()
    _, _, buffer = split(path)
    autov1 = sha(blob[0x100000:0x110000])[:8] if len(blob) >= 0x200000 else None
    return sha(blob), autov1, sha(blob)[:10], sha(buffer)


def test_hashes_of_safetensors_file(big_lora: Path) -> None:
    sha256, autov1, autov2, autov3 = expected_hashes(big_lora)
    hashes = compute_hashes(big_lora)
    assert hashes.size == big_lora.stat().st_size > AUTOV1_MIN_SIZE
    assert hashes.sha256 == sha256
    assert hashes.autov1 == autov1
    assert hashes.autov2 == autov2
    assert hashes.autov3 == autov3
    assert hashes.autov3_short == autov3[:12]
    assert hashes.sha256 != hashes.autov3


@pytest.mark.parametrize("chunk_size", [4099, 65_536, 1 << 20, 3 << 20, 16 << 20])
def test_chunk_size_does_not_change_results(big_lora: Path, chunk_size: int) -> None:
    assert compute_hashes(big_lora, chunk_size=chunk_size) == compute_hashes(big_lora)


def test_progress_reports_every_chunk(big_lora: Path) -> None:
    calls: list[tuple[int, int]] = []
    compute_hashes(big_lora, chunk_size=1 << 20, progress=lambda done, total: calls.append((done, total)))
    size = big_lora.stat().st_size
    assert len(calls) == -(-size // (1 << 20))
    assert [total for _, total in calls] == [size] * len(calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})
    assert calls[-1] == (size, size)


def test_progress_exception_propagates(big_lora: Path) -> None:
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_hashes(big_lora, chunk_size=65_536, progress=stop)


@pytest.mark.parametrize(
    ("size", "has_autov1"),
    [
        (0x110000, False),
        (AUTOV1_MIN_SIZE - 1, False),
        (AUTOV1_MIN_SIZE, True),
        (AUTOV1_MIN_SIZE + 1, True),
    ],
)
def test_autov1_boundary(tmp_path: Path, size: int, has_autov1: bool) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(os.urandom(size))
    hashes = compute_hashes(path)
    assert (hashes.autov1 is not None) is has_autov1
    if has_autov1:
        assert hashes.autov1 == sha(path.read_bytes()[0x100000:0x110000])[:8]
    assert hashes.autov3 is None
    assert hashes.sha256 == sha(path.read_bytes())


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x02",
        b"\x02\x00\x00\x00\x00\x00\x00\x00{}",  # a valid, empty safetensors file
        b"\x05\x00\x00\x00\x00\x00\x00\x00{oops" + b"tail",  # plausible length and '{', broken JSON
        b"\x02\x00\x00\x00\x00\x00\x00\x00[]" + b"x" * 100,  # plausible length, no '{'
        b"\xff" * 8 + b"{" + b"x" * 100,  # absurd length
        b"PK\x03\x04" + b"zip-ish" * 50,
    ],
)
def test_small_and_foreign_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    for chunk_size in (1, 3, 8, 9, 10, 1 << 20):
        hashes = compute_hashes(path, chunk_size=chunk_size)
        assert hashes.sha256 == sha(content)
        assert hashes.autov1 is None
        assert hashes.size == len(content)
        if content.startswith(b"\x02\x00\x00\x00\x00\x00\x00\x00{}"):
            assert hashes.autov3 == sha(b"")
        else:
            assert hashes.autov3 is None


def test_autov3_matches_tiny_chunks(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"w": np.arange(300, dtype=np.int16)}, str(path), metadata={"ss_output_name": "t"})
    n, _, buffer = split(path)
    for chunk_size in (1, 7, 8, 9, n + 8, n + 9, 100):
        assert compute_hashes(path, chunk_size=chunk_size).autov3 == sha(buffer)


def test_unreadable_paths_and_bad_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(HashingError, match=r"cannot hash .*nope"):
        compute_hashes(tmp_path / "nope.safetensors")
    with pytest.raises(HashingError, match="cannot hash"):
        compute_hashes(tmp_path)
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="chunk_size"):
        compute_hashes(path, chunk_size=0)


@settings(max_examples=80, deadline=None)
@given(content=st.binary(max_size=5000), chunk_size=st.integers(1, 6000))
def test_any_content_any_chunking_matches_hashlib(content: bytes, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blob"
        path.write_bytes(content)
        hashes = compute_hashes(path, chunk_size=chunk_size)
    assert hashes.sha256 == sha(content)
    assert hashes.autov2 == sha(content)[:10]


def make(autov1: str | None = "1A2B3C4D", autov3: str | None = "C" * 64) -> FileHashes:
    return FileHashes(size=1, sha256="ABCDEF0123" + "0" * 54, autov1=autov1, autov2="ABCDEF0123", autov3=autov3)


@pytest.mark.parametrize(
    ("expected", "matches"),
    [
        ("abcdef0123" + "0" * 54, True),
        ("0xABCDEF0123" + "0" * 54, True),
        ("  ABCDEF0123" + "0" * 54 + "\n", True),
        ("ABCDEF0123" + "0" * 53 + "1", False),
        ("c" * 64, True),
        ("cccccccccccc", True),
        ("CCCCCCCCCCCD", False),
        ("abcdef0123", True),
        ("abcdef0124", False),
        ("1a2b3c4d", True),
        ("1a2b3c4e", False),
        ("abcdef012", False),  # 9 hex: no hash has that length
        ("", False),
        ("zz2b3c4d", False),
        ("ABCDEF0123" + "0" * 54 + "00", False),
    ],
)
def test_hash_matches_by_length(expected: str, matches: bool) -> None:
    assert hash_matches(expected, make()) is matches


def test_hash_matches_without_optional_hashes() -> None:
    bare = make(autov1=None, autov3=None)
    assert not hash_matches("1a2b3c4d", bare)
    assert not hash_matches("cccccccccccc", bare)
    assert not hash_matches("c" * 64, bare)
    assert hash_matches("ABCDEF0123", bare)


def test_real_file_hashes_match_themselves(big_lora: Path) -> None:
    hashes = compute_hashes(big_lora)
    assert hashes.autov1 is not None and hashes.autov3 is not None
    for form in (hashes.sha256, hashes.autov2, hashes.autov1, hashes.autov3, hashes.autov3[:12]):
        assert hash_matches(form.lower(), hashes)
