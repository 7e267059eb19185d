from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from prompt_strategies import dialects, prompt_text

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.prompt import (
    Dialect,
    PromptError,
    extract_loras,
    find_loras,
    move_loras_to_front,
    remove_loras,
    rename_lora,
)

LORAS = ["<lora:foo bar:0.8>", "<lora:x>", "<lyco:ü.v2-1:0.5:0.7>", "<lora:bad:abc>", "<LORA:Up:1>"]
prompt_like = prompt_text(*LORAS)


def test_extract_loras_in_order() -> None:
    text = "1girl, <lora:foo bar:0.8>, {smile}, <lyco:my.style-v2>, <lora:日本:0.5:0.3>"
    assert extract_loras(text) == [
        ("<lora:foo bar:0.8>", "foo bar"),
        ("<lyco:my.style-v2>", "my.style-v2"),
        ("<lora:日本:0.5:0.3>", "日本"),
    ]


def test_find_loras_values() -> None:
    [a, b] = find_loras("<lora:a:0.5:0.25>, (<lyco:b>:1.2)")
    assert (a.name, a.keyword, a.te_weight, a.unet_weight, a.start, a.end) == ("a", "lora", 0.5, 0.25, 0, 17)
    assert (b.name, b.keyword, b.te_weight, b.unet_weight) == ("b", "lyco", 1.0, 1.0)


def test_extract_ignores_broken_tags() -> None:
    assert extract_loras("<lora:unclosed, <notlora:x:1>, lora:x:1") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1girl, <lora:a:0.8>, smile", "<lora:a:0.8>, 1girl, smile"),
        ("<lora:a:1>, 1girl", "<lora:a:1>, 1girl"),
        ("1girl, <lora:b:1>, smile, <lyco:a:0.5>", "<lora:b:1>, <lyco:a:0.5>, 1girl, smile"),
        ("1girl <lora:a:1>, smile", "<lora:a:1>, 1girl, smile"),
        ("masterpiece, (<lora:a:1>:1.2), smile", "<lora:a:1>, masterpiece, smile"),
        ("masterpiece, (<lora:a:1>, smile:1.2)", "<lora:a:1>, masterpiece, (smile:1.2)"),
        ("<lora:a:1>, <lora:b:1>", "<lora:a:1>, <lora:b:1>"),
        ("1girl,\n<lora:a:1>,\nsmile\n", "<lora:a:1>, 1girl,\nsmile\n"),
        ("no loras, here", "no loras, here"),
    ],
)
def test_move_loras_to_front(text: str, expected: str) -> None:
    assert move_loras_to_front(text) == expected


def test_move_loras_nai_braces() -> None:
    assert move_loras_to_front("a, {<lora:x:1>}, b", dialect=Dialect.NAI) == "<lora:x:1>, a, b"
    # in SD, braces are plain text and stay
    assert move_loras_to_front("a, {<lora:x:1>}, b") == "<lora:x:1>, a, {}, b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<lora:a:1>, 1girl, <lora:b:1> smile, <lyco:c>", "1girl, smile"),
        ("1girl, <lora:a:1>", "1girl"),
        ("<lora:a:1>", ""),
        ("1girl,<lora:a:1>,smile", "1girl,smile"),
        ("((<lora:a:1>)), smile", "smile"),
        ("(smile, <lora:a:1>:1.2)", "(smile:1.2)"),
        ("1girl | <lora:a:1> | smile", "1girl | smile"),
        ("a <lora:x:1> b, c", "a b, c"),
        ("a, b", "a, b"),
    ],
)
def test_remove_loras(text: str, expected: str) -> None:
    assert remove_loras(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<lora:old:0.8>, smile", "<lora:new name:0.8>, smile"),
        ("<lora: old :1:0.5>", "<lora: new name :1:0.5>"),
        ("<lyco:old>, <lora:older:1>, <lora:Old:1>, old", "<lyco:new name>, <lora:older:1>, <lora:Old:1>, old"),
        ("no loras", "no loras"),
    ],
)
def test_rename_lora(text: str, expected: str) -> None:
    assert rename_lora(text, "old", "new name") == expected


@pytest.mark.parametrize("bad", ["", "  ", "a>b", "a:b", "a<b", "a\nb"])
def test_rename_lora_rejects_bad_names(bad: str) -> None:
    with pytest.raises(PromptError, match="cannot rename LoRA") as info:
        rename_lora("<lora:old:1>", "old", bad)
    assert isinstance(info.value, PeropixError)
    assert "\n" not in str(info.value)


@settings(max_examples=300)
@given(prompt_like, dialects)
def test_move_loras_to_front_keeps_the_lora_multiset(text: str, dialect: Dialect) -> None:
    before = Counter(tag for tag, _ in extract_loras(text))
    moved = move_loras_to_front(text, dialect=dialect)
    assert Counter(tag for tag, _ in extract_loras(moved)) == before
    tags = [tag for tag, _ in extract_loras(text)]
    assert moved.startswith(", ".join(tags))
    assert move_loras_to_front(moved, dialect=dialect) == moved


@settings(max_examples=300)
@given(prompt_like, dialects)
def test_remove_loras_leaves_no_lora_and_no_dangling_separator(text: str, dialect: Dialect) -> None:
    out = remove_loras(text, dialect=dialect)
    assert extract_loras(out) == []
    if extract_loras(text):
        stripped = out.strip()
        assert not stripped.startswith(",") and not stripped.endswith(",")


@given(prompt_like)
def test_rename_then_back(text: str) -> None:
    renamed = rename_lora(text, "foo bar", "zzz")
    assert [name for _, name in extract_loras(renamed)] == [
        "zzz" if name == "foo bar" else name for _, name in extract_loras(text)
    ]
    assert rename_lora(renamed, "zzz", "foo bar") == text  # "zzz" never occurs in the generated prompts
