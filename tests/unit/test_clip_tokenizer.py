"""Golden ids computed from the released CLIP merges file (specs/local-engine.md §2.5)."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from peropix_tui.core.clip_tokenizer import BOS, EOS, chunk_count, clip_tokenizer


def test_packaged_merges_file_is_the_released_one() -> None:
    data = resources.files("peropix_tui.data.clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        (
            "masterpiece, best quality, (red:1.2) dress",
            [12066, 267, 949, 3027, 267, 263, 736, 281, 272, 269, 273, 264, 2595],
        ),
        ("1girl", [272, 1611]),
    ],
)
def test_golden_ids(text: str, ids: list[int]) -> None:
    assert clip_tokenizer().encode(text) == ids


def test_vocabulary_edges() -> None:
    tok = clip_tokenizer()
    assert tok.encoder["!"] == 0 and tok.encoder["!</w>"] == 256
    assert tok.encoder["<start_of_text>"] == BOS and tok.encoder["<end_of_text>"] == EOS
    assert len(tok.encoder) == 49408


def test_cleaning_and_unicode() -> None:
    tok = clip_tokenizer()
    assert tok.encode("A  PHOTO\nof &amp; a cat") == tok.encode("a photo of & a cat")
    assert tok.count("") == 0
    assert tok.count("猫耳 少女 ♥ 🎀") > 0  # multibyte text goes through the byte alphabet


def test_chunks() -> None:
    assert [chunk_count(n) for n in (0, 1, 75, 76, 150, 151)] == [1, 1, 1, 2, 2, 3]
