"""Completion from the shipped Danbooru tag list: ranking by post count, aliases, categories, underscore style."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import pytest

from peropix_tui.core.danbooru import danbooru_vocabulary, parse_tag_csv
from peropix_tui.core.vocabulary import Candidate, Vocabulary

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "tags" / "danbooru.csv"

SAMPLE = (
    '1girl,0,6008644,"1girls,sole_female"\n'
    'long_hair,0,4350743,"/lh,longhair"\n'
    'breasts,0,3439214,"/b,boobs,breast,oppai"\n'
    'hatsune_miku,4,106634,"miku,hatsune_miku_(vocaloid)"\n'
    '"don\'t_say_""lazy""",0,1076,don\'t_say_lazy\n'
    "broken line without numbers\n"
    "boobplate,0,1642,\n"
)


def test_parse_rows_aliases_and_categories() -> None:
    rows = list(parse_tag_csv(SAMPLE))
    texts = {(c.text, c.match) for c in rows}
    assert ("long hair", None) in texts
    assert ("breasts", "boobs") in texts
    assert ("hatsune miku", "miku") in texts
    assert ('don\'t say "lazy"', None) in texts  # CSV quoting handled
    assert all(not (c.match or "").startswith("/") for c in rows)  # "/lh" shortcuts are not aliases
    miku = next(c for c in rows if c.text == "hatsune miku" and c.match is None)
    assert miku.detail == "character · 106,634" and miku.rank == 106634


def test_alias_completes_to_the_tag_and_ranks_by_posts() -> None:
    vocab = Vocabulary(parse_tag_csv(SAMPLE))
    assert [c.text for c in vocab.complete("boob")] == ["breasts", "boobplate"]
    assert vocab.complete("boob")[0].detail.endswith("alias boobs")
    assert [c.text for c in vocab.complete("long_h")] == ["long hair"]  # underscores typed still match
    assert [c.text for c in vocab.complete("LONG H")] == ["long hair"]
    assert vocab.complete("") == []


def test_underscore_style() -> None:
    vocab = Vocabulary(parse_tag_csv(SAMPLE, "underscores"))
    assert [c.text for c in vocab.complete("long h")] == ["long_hair"]


def test_candidates_deduplicated_by_inserted_text() -> None:
    vocab = Vocabulary(
        [Candidate("breasts", "tag", 10), Candidate("breasts", "tag", 10, match="breast"), Candidate("x", "lora")]
    )
    assert [c.text for c in vocab.complete("brea")] == ["breasts"]
    assert vocab.merged(Vocabulary([Candidate("brea lora", "lora")])).complete("brea", kind="lora")[0].text == (
        "brea lora"
    )


def test_shipped_list_is_the_published_one_and_loads() -> None:
    packaged = resources.files("peropix_tui.data.tags").joinpath("danbooru.csv.gz").read_bytes()
    text = gzip.decompress(packaged)
    if SHARED_CSV.exists():
        assert hashlib.sha256(text).digest() == hashlib.sha256(SHARED_CSV.read_bytes()).digest()
    vocab = danbooru_vocabulary()
    assert len(vocab) > 140_000
    top = vocab.complete("1gi")[0]
    assert (top.text, top.detail) == ("1girl", "general · 6,008,644")


@pytest.mark.parametrize("prefix", ["l", "lo", "a", "s"])
def test_short_prefixes_stay_bounded(prefix: str) -> None:
    assert 0 < len(danbooru_vocabulary().complete(prefix, limit=10)) <= 10
