from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_strategies import dialects, prompt_text

from peropix_tui.core.prompt import (
    Dialect,
    dedupe_tags,
    normalize_commas_nai,
    normalize_prompt,
    normalize_tag,
    split_tags,
)

NAI = Dialect.NAI
SD = Dialect.SD

prompt_like = prompt_text()


def test_split_tags_basic() -> None:
    tags = split_tags("{{Long_Hair}}, 1.5::blue  eyes::,  <lora:x:0.5> smile , , [[A]]", NAI)
    assert [t.text for t in tags] == ["{{Long_Hair}}", "1.5::blue  eyes::", "<lora:x:0.5> smile", "[[A]]"]
    assert [t.normalized for t in tags] == ["long hair", "blue eyes", "smile", "a"]
    assert [t.weight for t in tags] == pytest.approx([1.1025, 1.5, 1.0, 1.05**-2])
    assert [len(t.loras) for t in tags] == [0, 0, 1, 0]
    assert tags[2].loras[0].name == "x"
    text = "{{Long_Hair}}, 1.5::blue  eyes::,  <lora:x:0.5> smile , , [[A]]"
    assert all(text[t.start : t.end] == t.text for t in tags)


def test_split_tags_sd_and_group_elements() -> None:
    tags = split_tags("(masterpiece:1.2), hatsune miku \\(vocaloid\\), (a, b:1.3) | c BREAK d", SD)
    assert [t.normalized for t in tags] == ["masterpiece", "hatsune miku (vocaloid)", "a", "b", "c", "d"]
    assert [t.weight for t in tags] == pytest.approx([1.2, 1.0, 1.3, 1.3, 1.0, 1.0])


def test_split_tags_lora_only_tag_and_empty() -> None:
    tags = split_tags("<lora:a:1>, (), ", SD)
    assert [(t.text, t.normalized, t.weight) for t in tags] == [("<lora:a:1>", "", 1.0)]
    assert split_tags("") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b", "a, b"),
        ("a , b", "a, b"),
        ("a  ,b", "a , b"),  # only one space before a comma is removed
        ("a,  b", "a,  b"),  # extra spaces after a comma stay
        ("a , , b", "a, , b"),
        ("  a,b  ", "  a, b  "),  # never trims
        ("a,", "a, "),
        ("a,\nb", "a, \nb"),
        ("a ,\tb", "a, \tb"),
        ("1.5::a,b::", "1.5::a, b::"),
        ("no commas", "no commas"),
    ],
)
def test_normalize_commas_nai(text: str, expected: str) -> None:
    assert normalize_commas_nai(text) == expected


def test_normalize_tag() -> None:
    assert normalize_tag("  Hatsune_Miku  \\(Vocaloid\\) ") == "hatsune miku (vocaloid)"
    assert normalize_tag("STRASSE") == normalize_tag("straße")


@pytest.mark.parametrize(
    ("text", "mode", "dialect", "expected"),
    [
        ("  long   hair ,blue eyes,,\n smile ,", "keep", NAI, "long hair, blue eyes, smile"),
        ("long_hair, blue_eyes", "keep", NAI, "long_hair, blue_eyes"),
        (
            "long_hair, {blue__eyes}, hatsune_miku_(vocaloid)",
            "spaces",
            NAI,
            "long hair, {blue eyes}, hatsune miku (vocaloid)",
        ),
        (
            "long hair, {blue  eyes}, hatsune miku (vocaloid)",
            "underscores",
            NAI,
            "long_hair, {blue_eyes}, hatsune_miku_(vocaloid)",
        ),
        (
            "(hatsune miku:1.2), hatsune miku \\(vocaloid\\)",
            "underscores",
            SD,
            "(hatsune_miku:1.2), hatsune_miku_\\(vocaloid\\)",
        ),
        (
            "^_^, >_<, @_@, o_o, 0_0, u_u, =_=, +_+, ;_;, x_x, -_-, {^_^}",
            "spaces",
            NAI,
            "^_^, >_<, @_@, o_o, 0_0, u_u, =_=, +_+, ;_;, x_x, -_-, {^_^}",
        ),
        ("<lora:my_lora  v2:0.8>, long_hair", "spaces", SD, "<lora:my_lora  v2:0.8>, long hair"),
        ("<lora:my lora:0.8>  smile", "underscores", SD, "<lora:my lora:0.8> smile"),
        ("1.2:: 1990s  ::,x", "underscores", NAI, "1.2:: 1990s ::, x"),
        ("a , b| c BREAK d ,BREAK, e", "keep", SD, "a, b | c BREAK d BREAK e"),
        ("a | , b", "keep", NAI, "a | b"),
        ("{a, b}, (c: 1.2)", "keep", SD, "{a, b}, (c: 1.2)"),
        ("", "keep", NAI, ""),
        (" , ,", "spaces", NAI, ""),
    ],
)
def test_normalize_prompt(text: str, mode: str, dialect: Dialect, expected: str) -> None:
    assert normalize_prompt(text, underscores=mode, dialect=dialect) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "dialect", "expected"),
    [
        ("a, b, a, c", NAI, "a, b, c"),
        ("a, {A}, b", NAI, "a, b"),
        ("{a}, b, a", NAI, "{a}, b"),
        ("long_hair, Long Hair,  1.2::long hair::, x", NAI, "long_hair, x"),
        ("(nude:1.2), nude, \\(x\\), (x)", SD, "(nude:1.2), \\(x\\), (x)"),
        ("a,b,  a ,c", NAI, "a,b,c"),  # the survivors keep the spacing they had next to them
        ("{a, b}, a", NAI, "{a, b}"),
        ("a, {b, a}", NAI, "a, {b}"),
        ("<lora:x:1>, a, <lora:x:1>, <lora:x:0.5>", SD, "<lora:x:1>, a, <lora:x:0.5>"),
        ("a, b", NAI, "a, b"),
        ("a,, b,", NAI, "a,, b,"),  # nothing removed: the text comes back untouched
    ],
)
def test_dedupe_tags(text: str, dialect: Dialect, expected: str) -> None:
    assert dedupe_tags(text, dialect) == expected


@settings(max_examples=300)
@given(prompt_like, dialects, st.sampled_from(["keep", "spaces", "underscores"]))
def test_normalize_prompt_is_idempotent(text: str, dialect: Dialect, mode: str) -> None:
    once = normalize_prompt(text, underscores=mode, dialect=dialect)  # type: ignore[arg-type]
    assert normalize_prompt(once, underscores=mode, dialect=dialect) == once  # type: ignore[arg-type]
    assert not once.startswith((",", " ")) and not once.endswith((",", " "))
    assert ",," not in once and ", ," not in once


@settings(max_examples=300)
@given(prompt_like, dialects)
def test_dedupe_leaves_unique_tags(text: str, dialect: Dialect) -> None:
    deduped = dedupe_tags(text, dialect)
    seen = [t.normalized for t in split_tags(deduped, dialect) if t.normalized and not t.loras]
    assert len(seen) == len(set(seen))
    assert {t.normalized for t in split_tags(text, dialect)} >= {t.normalized for t in split_tags(deduped, dialect)}
    assert dedupe_tags(deduped, dialect) == deduped


@given(st.text(max_size=80))
def test_comma_rule_changes_only_spaces_around_commas(text: str) -> None:
    out = normalize_commas_nai(text)
    assert out.replace(" ", "") == text.replace(" ", "")
    assert ",," not in out.replace(", ", "") or ",," in text.replace(" ", "")
