from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from prompt_strategies import dialects, prompt_text

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.prompt import (
    DEFAULT_CATEGORIES,
    Dialect,
    FilterError,
    WordFilter,
    default_filter_text,
    ensure_user_filters,
    extract_loras,
    split_tags,
    tokenize,
)

NAI = Dialect.NAI
SD = Dialect.SD

FILTER = WordFilter.from_lines(
    {
        "sex": ["# explicit", "", "nude", "  Completely_Nude  ", "sex"],
        "clothes": ["shirt", "hatsune miku \\(vocaloid\\)"],
    }
)

FILTER_WORDS = ("nude", "NUDE", "Completely_Nude", "shirt", "smile", "<lora:nude:0.8>", "<lora:x:1>")
prompt_like = prompt_text(*FILTER_WORDS)


def test_from_lines_skips_comments_and_normalizes() -> None:
    assert FILTER.categories == ("sex", "clothes")
    assert FILTER.entries("sex") == frozenset({"nude", "completely nude", "sex"})
    assert FILTER.matches("Completely Nude")
    assert FILTER.matches("shirt", ["clothes"])
    assert not FILTER.matches("shirt", ["sex"])


def test_unknown_category_is_a_clear_error() -> None:
    with pytest.raises(FilterError, match="unknown filter category 'etc'; loaded: sex, clothes"):
        FILTER.apply("a", categories=["etc"])


@pytest.mark.parametrize(
    ("text", "dialect", "expected", "removed"),
    [
        ("{nude}, smile", NAI, "smile", ["nude"]),
        ("smile, {nude}", NAI, "smile", ["nude"]),
        ("{nude, smile}", NAI, "{smile}", ["nude"]),
        ("{smile, nude}", NAI, "{smile}", ["nude"]),
        ("a, {nude, sex}, b", NAI, "a, b", ["nude", "sex"]),
        ("a, {{nude}, smile}, b", NAI, "a, {smile}, b", ["nude"]),
        (
            "smile, {{Nude}}, NUDE, 1.2::nude::, -1::nude::, [nude], blush",
            NAI,
            "smile, blush",
            ["Nude", "NUDE", "nude", "nude", "nude"],
        ),
        ("1.2::nude, smile::, x", NAI, "1.2::smile::, x", ["nude"]),
        ("smile, (nude:1.2), ((nude)), [nude], blush", SD, "smile, blush", ["nude", "nude", "nude"]),
        ("(smile, nude:1.2)", SD, "(smile:1.2)", ["nude"]),
        ("(nude, smile:1.2)", SD, "(smile:1.2)", ["nude"]),
        ("smile,nude,blush", NAI, "smile,blush", ["nude"]),
        ("smile ,  nude  , blush", NAI, "smile , blush", ["nude"]),
        ("nude, smile", NAI, "smile", ["nude"]),
        ("smile, nude", NAI, "smile", ["nude"]),
        ("smile, nude\n", NAI, "smile\n", ["nude"]),
        ("nude", NAI, "", ["nude"]),
        ("a,, nude, b", NAI, "a, b", ["nude"]),
        ("a, nude | b", NAI, "a | b", ["nude"]),
        ("a, nude:0.5 | b", NAI, "a:0.5 | b", ["nude"]),
        ("a, nude BREAK b", SD, "a BREAK b", ["nude"]),
        ("completely_nude, long hair", NAI, "long hair", ["completely_nude"]),
        ("hatsune miku \\(vocaloid\\), smile", SD, "smile", ["hatsune miku \\(vocaloid\\)"]),
        ("hatsune miku (vocaloid), smile", NAI, "smile", ["hatsune miku (vocaloid)"]),
        ("nude <lora:x:0.8>, smile", SD, "<lora:x:0.8>, smile", ["nude"]),
        ("<lora:nude:0.8>, nude", SD, "<lora:nude:0.8>", ["nude"]),
        ("nudes, nude body, smile", NAI, "nudes, nude body, smile", []),
        ("a,,b", NAI, "a,,b", []),
    ],
)
def test_apply(text: str, dialect: Dialect, expected: str, removed: list[str]) -> None:
    result = FILTER.apply(text, dialect)
    assert result.text == expected
    assert result.removed == removed


def test_apply_by_category() -> None:
    text = "nude, shirt, smile"
    assert FILTER.apply(text, NAI, categories=["sex"]).text == "shirt, smile"
    assert FILTER.apply(text, NAI, categories=["clothes"]).text == "nude, smile"
    assert FILTER.apply(text, NAI).text == "smile"
    assert FILTER.apply(text, NAI, categories=[]).text == text


def test_other_tags_keep_their_exact_bytes() -> None:
    text = "  (masterpiece:1.2),  {{long  hair}},\tnude,  1.3::blue eyes::, \\(x\\)"
    result = FILTER.apply(text, SD).text
    assert result == "  (masterpiece:1.2),  {{long  hair}},  1.3::blue eyes::, \\(x\\)"


def test_shipped_defaults() -> None:
    for name in DEFAULT_CATEGORIES:
        assert default_filter_text(name).strip()
    loaded = WordFilter.load(None)
    assert loaded.categories == DEFAULT_CATEGORIES
    assert {"nude", "sex", "nipples", "pussy", "cum"} <= loaded.entries("sex")
    assert {"shirt", "skirt", "thighhighs", "school uniform", "hat"} <= loaded.entries("clothes")
    assert {
        "watermark",
        "signature",
        "artist name",
        "patreon username",
        "web address",
        "commentary request",
        "highres",
        "absurdres",
    } <= loaded.entries("etc")
    for name in DEFAULT_CATEGORIES:
        assert 30 <= len(loaded.entries(name)) <= 250
    assert not loaded.entries("sex") & loaded.entries("clothes")


def test_load_prefers_user_file(tmp_path: Path) -> None:
    (tmp_path / "sex.txt").write_text("# mine\nkiss\n", encoding="utf-8")
    loaded = WordFilter.load(tmp_path, ["sex", "etc"])
    assert loaded.entries("sex") == frozenset({"kiss"})
    assert "watermark" in loaded.entries("etc")  # no user file: the shipped default


def test_load_custom_category(tmp_path: Path) -> None:
    (tmp_path / "my-list.txt").write_text("Red Hair\n", encoding="utf-8")
    loaded = WordFilter.load(tmp_path, ["my-list"])
    assert loaded.apply("red_hair, smile").text == "smile"
    with pytest.raises(FilterError, match="no filter list for category 'nothere'"):
        WordFilter.load(tmp_path, ["nothere"])


@pytest.mark.parametrize("name", ["../etc", "Sex", "", "a/b", "x" * 80])
def test_bad_category_names(name: str) -> None:
    with pytest.raises(FilterError, match="bad filter category name"):
        WordFilter.load(None, [name])


def test_unreadable_user_file(tmp_path: Path) -> None:
    (tmp_path / "sex.txt").write_bytes(b"\xff\xfe nude")
    with pytest.raises(FilterError, match=r"sex\.txt is not UTF-8 text") as info:
        WordFilter.load(tmp_path, ["sex"])
    assert isinstance(info.value, PeropixError)
    (tmp_path / "etc.txt").mkdir()  # a folder where a file should be: not a file, so the default is used
    assert "watermark" in WordFilter.load(tmp_path, ["etc"]).entries("etc")


def test_ensure_user_filters(tmp_path: Path) -> None:
    folder = tmp_path / "filters"
    created = ensure_user_filters(folder)
    assert sorted(p.name for p in created) == sorted(f"{name}.txt" for name in DEFAULT_CATEGORIES)
    assert (folder / "sex.txt").read_text(encoding="utf-8") == default_filter_text("sex")
    (folder / "sex.txt").write_text("kiss\n", encoding="utf-8")
    (folder / "etc.txt").unlink()
    assert ensure_user_filters(folder) == [folder / "etc.txt"]
    assert (folder / "sex.txt").read_text(encoding="utf-8") == "kiss\n"
    assert sorted(p.name for p in folder.iterdir()) == ["clothes.txt", "etc.txt", "sex.txt"]


@settings(max_examples=300)
@given(prompt_like, dialects)
# A filtered tag holding an empty weight section: the section goes with it, the comma before it stays meaningful.
@example("nudenude,1.5::::nude", Dialect.NAI)
def test_filtering_is_idempotent_and_keeps_loras(text: str, dialect: Dialect) -> None:
    once = FILTER.apply(text, dialect)
    twice = FILTER.apply(once.text, dialect)
    assert twice.text == once.text
    assert twice.removed == []
    assert Counter(extract_loras(once.text)) == Counter(extract_loras(text))
    assert not any(tag.normalized in FILTER.entries("sex") for tag in split_tags(once.text, dialect))
    if once.removed:
        stripped = once.text.strip()
        assert not stripped.startswith((",", "|")) and not stripped.endswith((",", "|"))
        assert ",," not in stripped.replace(" ", "")
        assert len(tokenize(once.text, dialect).diagnostics) <= len(tokenize(text, dialect).diagnostics)
