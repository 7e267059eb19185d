from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.civitai.errors import CreatorRefError
from peropix_tui.civitai.urls import (
    CreatorRef,
    is_civitai_host,
    parse_batch,
    parse_creator,
    read_batch_file,
    unique_creators,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://civitai.com/user/Ggrue", CreatorRef("Ggrue", "https://civitai.com")),
        ("https://civitai.com/user/Ggrue/models", CreatorRef("Ggrue", "https://civitai.com")),
        ("https://civitai.red/user/Ggrue/models/", CreatorRef("Ggrue", "https://civitai.red")),
        ("http://www.civitai.com/user/Ggrue?sort=Newest#top", CreatorRef("Ggrue", "https://civitai.com")),
        ("civitai.red/user/0123", CreatorRef("0123", "https://civitai.red")),
        ("HTTPS://CIVITAI.COM/USER/MixedCase/MODELS", CreatorRef("MixedCase", "https://civitai.com")),
        ("https://civitai.com/user/na%C3%AFve", CreatorRef("naïve", "https://civitai.com")),
        ("  Ggrue  ", CreatorRef("Ggrue")),
        ("@Ggrue", CreatorRef("Ggrue")),
        ("0123", CreatorRef("0123")),
        ("some.name-with_marks", CreatorRef("some.name-with_marks")),
    ],
)
def test_creator_urls_and_names(text: str, expected: CreatorRef) -> None:
    assert parse_creator(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty creator"),
        ("   ", "empty creator"),
        ("https://example.com/user/x", "not on civitai.com or civitai.red"),
        ("https://civitai.com.evil.example/user/x", "not on civitai.com or civitai.red"),
        ("ftp://civitai.com/user/x", "scheme"),
        ("https://civitai.com/models/12345/some-lora", "a model page"),
        ("https://civitai.com/user/x/images", "not /images"),
        ("https://civitai.com/", "not a creator page"),
        ("civitai.com", "names the site but no creator"),
        ("two words", "contains ' '"),
        ("tab\there", "contains '\\t'"),
        ("x" * 101, "longer than 100"),
        ("@", "holds no username"),
    ],
)
def test_bad_creators_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(CreatorRefError) as info:
        parse_creator(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_batch_reports_bad_lines_by_number_and_skips_comments_and_duplicates() -> None:
    text = "\n".join(
        [
            "# creators to collect",
            "https://civitai.com/user/alice",
            "",
            "   # indented comment",
            "https://example.com/user/bob",
            "bob",
            "https://civitai.red/user/Alice/models",
            "https://civitai.com/models/1",
            "carol  ",
        ]
    )
    batch = parse_batch(text)
    assert [(line.line, line.creator.username) for line in batch.creators] == [(2, "alice"), (6, "bob"), (9, "carol")]
    assert [problem.line for problem in batch.problems] == [5, 8]
    assert str(batch.problems[0]).startswith("line 5: ")
    assert "not on civitai.com" in batch.problems[0].message
    assert batch.problems[1].text == "https://civitai.com/models/1"


def test_batch_file_reading(tmp_path: Path) -> None:
    good = tmp_path / "creators.txt"
    good.write_bytes("\ufeffalice\r\nhttps://civitai.red/user/0123\r\n".encode())
    batch = read_batch_file(good)
    assert [line.creator for line in batch.creators] == [CreatorRef("alice"), CreatorRef("0123", "https://civitai.red")]

    with pytest.raises(CreatorRefError, match="does not exist"):
        read_batch_file(tmp_path / "missing.txt")
    with pytest.raises(CreatorRefError, match="is a folder"):
        read_batch_file(tmp_path)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"alice\nna\xefve\n")
    with pytest.raises(CreatorRefError, match=r"not UTF-8 text \(line 2\)"):
        read_batch_file(latin)


def test_civitai_hosts() -> None:
    assert is_civitai_host("civitai.com")
    assert is_civitai_host("image-b2.civitai.com")
    assert is_civitai_host("CIVITAI.RED.")
    assert not is_civitai_host("civitai.com.example.org")
    assert not is_civitai_host("notcivitai.com")
    assert not is_civitai_host("127.0.0.1")


@given(st.text(max_size=120))
def test_any_text_is_a_creator_or_a_creator_error(text: str) -> None:
    try:
        creator = parse_creator(text)
    except CreatorRefError as exc:
        assert "\n" not in str(exc)
        return
    assert creator.username
    assert "/" not in creator.username
    assert not any(c.isspace() for c in creator.username)


def test_unique_creators_keeps_the_first_spelling_and_order() -> None:
    creators = [CreatorRef("Alice"), CreatorRef("bob"), CreatorRef("alice", "https://civitai.red"), CreatorRef("BOB")]
    assert unique_creators(creators) == [CreatorRef("Alice"), CreatorRef("bob")]
