from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_strategies import dialects, prompt_text

from peropix_tui.core.prompt import (
    Dialect,
    SpanKind,
    TokenizedPrompt,
    line_highlights,
    tokenize,
    weighted_chunks,
)

K = SpanKind
NAI = Dialect.NAI
SD = Dialect.SD

prompt_like = prompt_text(max_size=40)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)


def pieces(tp: TokenizedPrompt) -> list[tuple[SpanKind, str]]:
    return [(span.kind, tp.text[span.start : span.end]) for span in tp.spans]


def weight_of(tp: TokenizedPrompt, piece: str) -> float:
    for span in tp.spans:
        if tp.text[span.start : span.end] == piece and span.kind is K.TEXT:
            return span.weight
    raise AssertionError(f"{piece!r} not found as text in {pieces(tp)}")


# --- NovelAI dialect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "piece", "weight"),
    [
        ("{a}", "a", 1.05),
        ("{{a}}", "a", 1.1025),
        ("{{{a}}}", "a", 1.05**3),
        ("[a]", "a", 1 / 1.05),
        ("[[a]]", "a", 1.05**-2),
        ("{[a]}", "a", 1.0),
        ("1.5::a::", "a", 1.5),
        ("1.5::{a}::", "a", 1.575),
        ("{1.5::a::}", "a", 1.575),
        ("-1::censored::", "censored", -1.0),
        ("-0.8::feet::", "feet", -0.8),
        ("0::ai-generated::", "ai-generated", 0.0),
        (".5::a::", "a", 0.5),
        ("2::a:: b", "b", 1.0),
        ("x, 1.2:: 1990s ::", "1990s", 1.2),
        ("1.5::a 0.5::b::", "b", 0.5),
        ("1.5::a 0.5::b:: c", "c", 1.0),
        ("1.5::unclosed", "unclosed", 1.5),
    ],
)
def test_nai_weights(text: str, piece: str, weight: float) -> None:
    assert weight_of(tokenize(text, NAI), piece) == pytest.approx(weight)


def test_nai_parentheses_and_colons_are_literal() -> None:
    tp = tokenize("hatsune miku (vocaloid), rating:general", NAI)
    assert pieces(tp) == [
        (K.TEXT, "hatsune"),
        (K.SPACE, " "),
        (K.TEXT, "miku"),
        (K.SPACE, " "),
        (K.TEXT, "(vocaloid)"),
        (K.COMMA, ","),
        (K.SPACE, " "),
        (K.TEXT, "rating:general"),
    ]
    assert all(span.weight == 1.0 for span in tp.spans)
    assert tp.diagnostics == []


def test_nai_span_kinds_for_every_syntax_form() -> None:
    tp = tokenize("{{a}}, 1.5::[b]::, c:0.5 | d", NAI)
    assert pieces(tp) == [
        (K.OPEN, "{"),
        (K.OPEN, "{"),
        (K.TEXT, "a"),
        (K.CLOSE, "}"),
        (K.CLOSE, "}"),
        (K.COMMA, ","),
        (K.SPACE, " "),
        (K.WEIGHT_PREFIX, "1.5::"),
        (K.OPEN, "["),
        (K.TEXT, "b"),
        (K.CLOSE, "]"),
        (K.SECTION_CLOSE, "::"),
        (K.COMMA, ","),
        (K.SPACE, " "),
        (K.TEXT, "c"),
        (K.PART_WEIGHT, ":0.5"),
        (K.SPACE, " "),
        (K.PIPE, "|"),
        (K.SPACE, " "),
        (K.TEXT, "d"),
    ]
    assert [span.depth for span in tp.spans[:5]] == [1, 2, 2, 2, 1]
    assert tp.diagnostics == []


def test_nai_part_weight_only_with_pipes() -> None:
    assert K.PART_WEIGHT not in tokenize("cat:0.5", NAI).kinds
    tp = tokenize("cat : 0.3| dog:0.7", NAI)
    assert [p for p in pieces(tp) if p[0] is K.PART_WEIGHT] == [
        (K.PART_WEIGHT, ":"),
        (K.PART_WEIGHT, "0.3"),
        (K.PART_WEIGHT, ":0.7"),
    ]


def test_number_inside_a_word_is_not_a_weight() -> None:
    tp = tokenize("abc1.5::x", NAI)
    assert K.WEIGHT_PREFIX not in tp.kinds
    assert [d.message for d in tp.diagnostics] == ["'::' at 6 closes no numeric weight"]
    assert pieces(tp)[1] == (K.ERROR, "::")


def test_nai_bracket_diagnostics() -> None:
    tp = tokenize("a}, {b, [c}", NAI)
    kinds = pieces(tp)
    assert kinds[1] == (K.ERROR, "}")
    assert [(d.start, d.message) for d in tp.diagnostics] == [
        (1, "unmatched '}' at 1"),
        (4, "'{' at 4 is never closed"),
        (8, "'[' at 8 is never closed"),
        (10, "unmatched '}' at 10; '[' is still open"),
    ]
    # unclosed openers are shown as errors, but still weigh what follows them
    assert tp.spans[4].kind is K.ERROR and tp.spans[8].kind is K.ERROR
    assert weight_of(tp, "c") == pytest.approx(1.0)  # { x1.05 and [ /1.05
    assert weight_of(tp, "b") == pytest.approx(1.05)


def test_unclosed_numeric_section_is_a_diagnostic() -> None:
    tp = tokenize("1.3::a, b", NAI)
    assert [d.message for d in tp.diagnostics] == ["numeric weight at 0 is never closed with '::'"]
    assert tp.kinds[0] is K.WEIGHT_PREFIX
    assert weight_of(tp, "b") == pytest.approx(1.3)


# --- A1111 / ComfyUI dialect -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "piece", "weight"),
    [
        ("(a)", "a", 1.1),
        ("((a))", "a", 1.21),
        ("[a]", "a", 1 / 1.1),
        ("(a:1.3)", "a", 1.3),
        ("(a: 1.3 )", "a", 1.3),
        ("(a:0)", "a", 0.0),
        ("(a:-1)", "a", -1.0),
        ("((a:1.3))", "a", 1.43),
        ("(x, (a:1.5), b:0.5)", "a", 0.75),
        ("(x, (a:1.5), b:0.5)", "b", 0.5),
        ("(a, b:1.2)", "a", 1.2),
        ("[a:1.3]", "a:1.3", 1 / 1.1),
        ("{a}", "{a}", 1.0),
        ("(unclosed", "unclosed", 1.1),
    ],
)
def test_sd_weights(text: str, piece: str, weight: float) -> None:
    assert weight_of(tokenize(text, SD), piece) == pytest.approx(weight)


def test_sd_span_kinds() -> None:
    tp = tokenize("(a:1.3), \\(b\\) BREAK [c]|d", SD)
    assert pieces(tp) == [
        (K.OPEN, "("),
        (K.TEXT, "a"),
        (K.WEIGHT_SUFFIX, ":1.3"),
        (K.CLOSE, ")"),
        (K.COMMA, ","),
        (K.SPACE, " "),
        (K.ESCAPE, "\\("),
        (K.TEXT, "b"),
        (K.ESCAPE, "\\)"),
        (K.SPACE, " "),
        (K.BREAK, "BREAK"),
        (K.SPACE, " "),
        (K.OPEN, "["),
        (K.TEXT, "c"),
        (K.CLOSE, "]"),
        (K.PIPE, "|"),
        (K.TEXT, "d"),
    ]
    assert weight_of(tp, "b") == 1.0


def test_break_is_a_keyword_only_as_a_whole_uppercase_word_in_sd() -> None:
    assert K.BREAK not in tokenize("BREAKfast, break, a_BREAK", SD).kinds
    assert K.BREAK not in tokenize("a BREAK b", NAI).kinds
    assert tokenize("a,BREAK,b", SD).kinds.count(K.BREAK) == 1


def test_sd_escapes_keep_weight_and_are_one_span() -> None:
    tp = tokenize("(a \\(b\\) \\[c\\] \\{d\\} \\\\)", SD)
    escapes = [p for p in pieces(tp) if p[0] is K.ESCAPE]
    assert [text for _, text in escapes] == ["\\(", "\\)", "\\[", "\\]", "\\{", "\\}", "\\\\"]
    assert tp.diagnostics == []
    assert all(span.weight == pytest.approx(1.1) for span in tp.spans)


def test_sd_stray_closer() -> None:
    tp = tokenize("a), (b]", SD)
    assert [d.message for d in tp.diagnostics] == [
        "unmatched ')' at 1",
        "'(' at 4 is never closed",
        "unmatched ']' at 6; '(' is still open",
    ]


# --- LoRA tags -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize(
    ("tag", "keyword", "name", "te", "unet"),
    [
        ("<lora:foo:0.8>", "lora", "foo", 0.8, 0.8),
        ("<lora:foo>", "lora", "foo", 1.0, 1.0),
        ("<lora:foo:0.5:0.7>", "lora", "foo", 0.5, 0.7),
        ("<lyco:foo:0.6>", "lyco", "foo", 0.6, 0.6),
        ("<lyco:foo:-1:.25>", "lyco", "foo", -1.0, 0.25),
        ("<lora:foo bar:1.2>", "lora", "foo bar", 1.2, 1.2),
        ("<lora:my.lora-v1.5_final:1>", "lora", "my.lora-v1.5_final", 1.0, 1.0),
        ("<lora:ミク 日本:0.4>", "lora", "ミク 日本", 0.4, 0.4),
        ("<LoRA:Foo:0.8>", "lora", "Foo", 0.8, 0.8),
        ("<lora: spaced name : 0.8 >", "lora", "spaced name", 0.8, 0.8),
        ("<lora:foo:unet=0.3:te=0.9>", "lora", "foo", 0.9, 0.3),
    ],
)
def test_lora_forms(dialect: Dialect, tag: str, keyword: str, name: str, te: float, unet: float) -> None:
    tp = tokenize(f"a, {tag}, b", dialect)
    assert tp.diagnostics == []
    [lora] = tp.loras
    assert (lora.text, lora.keyword, lora.name) == (tag, keyword, name)
    assert (lora.te_weight, lora.unet_weight) == pytest.approx((te, unet))
    assert (lora.start, lora.end) == (3, 3 + len(tag))
    inside = [p for p, span in zip(pieces(tp), tp.spans, strict=True) if lora.start <= span.start < lora.end]
    assert "".join(text for _, text in inside) == tag
    assert inside[0] == (K.LORA_OPEN, "<")
    assert inside[1][0] is K.LORA_KEYWORD
    assert inside[-1] == (K.LORA_CLOSE, ">")
    assert (K.LORA_NAME, name) in inside


def test_lora_span_kinds() -> None:
    tp = tokenize("<lora:a b:0.5:0.7>", SD)
    assert pieces(tp) == [
        (K.LORA_OPEN, "<"),
        (K.LORA_KEYWORD, "lora"),
        (K.LORA_SEP, ":"),
        (K.LORA_NAME, "a b"),
        (K.LORA_SEP, ":"),
        (K.LORA_WEIGHT, "0.5"),
        (K.LORA_SEP, ":"),
        (K.LORA_WEIGHT, "0.7"),
        (K.LORA_CLOSE, ">"),
    ]


def test_lora_dyn_value() -> None:
    assert tokenize("<lora:x:1:1:16>", SD).loras[0].dyn == 16
    assert tokenize("<lora:x:dyn=8>", SD).loras[0].dyn == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<lora:foo:abc>", "LoRA weight 'abc' at 10 is not a number"),
        ("<lora:foo:1e5>", "LoRA weight '1e5' at 10 is not a number"),
        ("<lora:foo:>", "LoRA weight '' at 10 is not a number"),
        ("<lora::0.5>", "LoRA tag at 0 has no name"),
        ("<lora:foo:1:1:x>", "LoRA dyn value 'x' at 14 is not a whole number"),
        ("<lora:foo:1:1:4:9>", "too many values in LoRA tag at 16"),
        ("<lora:foo:scale=2>", "unknown LoRA parameter 'scale=2' at 10"),
    ],
)
def test_bad_lora_values_are_diagnostics(text: str, message: str) -> None:
    tp = tokenize(text, SD)
    assert [d.message for d in tp.diagnostics] == [message]
    assert len(tp.loras) == 1
    assert tp.loras[0].text == text


def test_bad_lora_weight_is_an_error_span_and_falls_back_to_one() -> None:
    tp = tokenize("<lora:foo:abc>", NAI)
    assert (K.ERROR, "abc") in pieces(tp)
    assert (tp.loras[0].te_weight, tp.loras[0].unet_weight) == (1.0, 1.0)


def test_unclosed_lora_tag() -> None:
    tp = tokenize("<lora:foo:0.5, smile", SD)
    assert tp.loras == []
    assert pieces(tp)[0] == (K.ERROR, "<")
    assert [d.message for d in tp.diagnostics] == ["LoRA tag at 0 is not closed with '>'"]


def test_angle_brackets_that_are_not_lora_are_text() -> None:
    tp = tokenize(">_<, <3, a > b", NAI)
    assert tp.diagnostics == []
    assert {kind for kind, _ in pieces(tp)} == {K.TEXT, K.COMMA, K.SPACE}


# --- wildcards and picks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(Dialect))
def test_wildcard_and_pick_span_kinds(dialect: Dialect) -> None:
    tp = tokenize("a __hair__, <pick:red|x\\|y\\>z|> b", dialect)
    assert pieces(tp) == [
        (K.TEXT, "a"),
        (K.SPACE, " "),
        (K.WILDCARD, "__hair__"),
        (K.COMMA, ","),
        (K.SPACE, " "),
        (K.PICK_OPEN, "<pick:"),
        (K.TEXT, "red"),
        (K.PICK_SEP, "|"),
        (K.TEXT, "x"),
        (K.PICK_ESCAPE, "\\|"),
        (K.TEXT, "y"),
        (K.PICK_ESCAPE, "\\>"),
        (K.TEXT, "z"),
        (K.PICK_SEP, "|"),
        (K.PICK_CLOSE, ">"),
        (K.SPACE, " "),
        (K.TEXT, "b"),
    ]
    assert tp.diagnostics == []


@pytest.mark.parametrize(
    ("text", "wildcards"),
    [
        ("long_hair, __hair__", ["__hair__"]),
        ("x__hair__y", ["__hair__"]),
        ("___hair__", ["__hair__"]),  # a lone `_` first
        ("__a_b.c/d-e__", ["__a_b.c/d-e__"]),
        ("__日本__", ["__日本__"]),
        ("__../../etc/passwd__", ["__../../etc/passwd__"]),  # a wildcard; expanding it refuses the name
        ("__ hair__, __hair __, ____, __a__b__", ["__a__"]),
        ("macross__frontier:_itsuwari", []),
        ("^_^, o_o, >_<, ^__^", []),
    ],
)
def test_where_wildcards_are(text: str, wildcards: list[str]) -> None:
    for dialect in Dialect:
        tp = tokenize(text, dialect)
        assert [tp.span_text(i) for i, k in enumerate(tp.kinds) if k is K.WILDCARD] == wildcards
        assert "".join(tp.span_text(i) for i in range(len(tp.kinds))) == text


def test_pick_syntax_outside_a_pick_is_what_it_was() -> None:
    assert pieces(tokenize("a\\|b > c\\>", NAI)) == [
        (K.TEXT, "a\\"),
        (K.PIPE, "|"),
        (K.TEXT, "b"),
        (K.SPACE, " "),
        (K.TEXT, ">"),
        (K.SPACE, " "),
        (K.TEXT, "c\\>"),
    ]
    assert K.PART_WEIGHT in tokenize("a:0.5|b", NAI).kinds
    assert K.PART_WEIGHT not in tokenize("<pick:a:0.5|b>", NAI).kinds


def test_nested_picks_and_a_lora_inside() -> None:
    tp = tokenize("<pick:<lora:x:0.5>|<pick:a|b>>", NAI)
    kinds = [k for k in tp.kinds if k in (K.PICK_OPEN, K.PICK_SEP, K.PICK_CLOSE, K.LORA_CLOSE)]
    assert kinds == [K.PICK_OPEN, K.LORA_CLOSE, K.PICK_SEP, K.PICK_OPEN, K.PICK_SEP, K.PICK_CLOSE, K.PICK_CLOSE]
    assert [lora.name for lora in tp.loras] == ["x"]


def test_unclosed_pick_and_unbalanced_choice_are_diagnostics() -> None:
    tp = tokenize("a, <pick:x|y", NAI)
    assert tp.kinds[tp.starts.index(3)] is K.ERROR
    assert [d.message for d in tp.diagnostics] == ["'<pick:' at 3 is never closed with '>'"]
    tp = tokenize("<pick:{a|b}>", NAI)
    assert [d.message for d in tp.diagnostics] == ["a bracket in the <pick:> at 0 does not close within its choice"]
    assert tokenize("<pick:{a}|[b]>", NAI).diagnostics == []


def test_pick_kinds_are_highlighted_by_name() -> None:
    result = line_highlights(tokenize("__x__ <pick:a|b>", NAI))
    names = [name for *_, name in result]
    assert names == [K.WILDCARD, K.PICK_OPEN, K.TEXT, K.PICK_SEP, K.TEXT, K.PICK_CLOSE]


@settings(max_examples=300)
@given(st.one_of(prompt_like, any_text), dialects)
def test_words_split_the_same_whether_or_not_the_text_holds_a_wildcard(text: str, dialect: Dialect) -> None:
    """Words stop before `__` only in text holding one (a cheaper scan otherwise): both scans must agree."""
    if "__" in text:
        return
    prefix = "__w__\n"
    plain = tokenize(text, dialect)
    marked = tokenize(prefix + text, dialect)
    assert marked.kinds[0] is K.WILDCARD

    def per_char(tp: TokenizedPrompt, offset: int) -> list[tuple[SpanKind, float, int]]:
        out: list[tuple[SpanKind, float, int]] = []
        for kind, start, end, weight, depth in zip(tp.kinds, tp.starts, tp.ends, tp.weights, tp.depths, strict=True):
            out.extend([(kind, weight, depth)] * (end - max(start, offset)) if end > offset else [])
        return out

    assert per_char(marked, len(prefix)) == per_char(plain, 0)
    assert len(marked.diagnostics) == len(plain.diagnostics)


# --- byte offsets, weighted chunks, highlights --------------------------------------------------------------


def test_byte_offsets_count_utf8_bytes() -> None:
    text = "é, {日本}, 🎨"
    tp = tokenize(text, NAI)
    assert [(span.start, span.byte_start) for span in tp.spans] == [
        (0, 0),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (6, 11),
        (7, 12),
        (8, 13),
        (9, 14),
    ]
    assert tp.spans[-1].byte_end == len(text.encode())


def test_weighted_chunks_strip_syntax_and_loras() -> None:
    tp = tokenize("{{a}}, b, 1.5::[c]::, <lora:x:0.5>, -1::d::", NAI)
    chunks = weighted_chunks(tp)
    assert [text for text, _ in chunks] == ["a", ", b, ", "c", ", , ", "d"]
    assert [w for _, w in chunks] == pytest.approx([1.1025, 1.0, 1.5 / 1.05, 1.0, -1.0])


def test_weighted_chunks_sd_unescape_and_break() -> None:
    tp = tokenize("(a:1.2) \\(b\\) BREAK [c]", SD)
    assert weighted_chunks(tp) == [
        ("a", pytest.approx(1.2)),
        (" (b) ", 1.0),
        ("BREAK", 1.0),
        (" ", 1.0),
        ("c", pytest.approx(1 / 1.1)),
    ]


def test_line_highlights_bytes_per_line() -> None:
    text = "é, {a}\r\n<lora:ü:1>,\n\n  [b]"
    tp = tokenize(text, NAI)
    result = line_highlights(tp)
    lines = text.splitlines()
    assert (0, 0, 2, K.TEXT) in result
    assert (0, 4, 5, K.OPEN) in result
    assert (1, 0, 1, K.LORA_OPEN) in result
    assert (1, 6, 8, K.LORA_NAME) in result  # "ü" is two bytes
    assert (3, 2, 3, K.OPEN) in result
    assert all(name != K.SPACE for _, _, _, name in result)
    for line, start, end, name in result:
        piece = lines[line].encode()[start:end].decode()
        assert piece and not piece.isspace(), (line, start, end, name)


def test_line_highlights_space_and_bracket_levels() -> None:
    tp = tokenize("{{a}} \n b", NAI)
    result = line_highlights(tp, skip=(), bracket_levels=2)
    assert result == [
        (0, 0, 1, "bracket.open.0"),
        (0, 1, 2, "bracket.open.1"),
        (0, 2, 3, K.TEXT),
        (0, 3, 4, "bracket.close.1"),
        (0, 4, 5, "bracket.close.0"),
        (0, 5, 6, K.SPACE),
        (1, 0, 1, K.SPACE),
        (1, 1, 2, K.TEXT),
    ]


def test_line_highlights_unbalanced_bracket_is_error() -> None:
    result = line_highlights(tokenize("a}", NAI), bracket_levels=3)
    assert result == [(0, 0, 1, K.TEXT), (0, 1, 2, K.ERROR)]


def test_deep_nesting_and_huge_weights_do_not_raise() -> None:
    text = "(" * 3000 + "a:1.1)" * 3000 + "{" * 20000 + "b"
    sd = tokenize(text, SD)
    assert [d.message for d in sd.diagnostics] == []
    assert sd.weights[3000] == pytest.approx(1.1**3000)
    nai = tokenize(text, NAI)
    assert nai.kinds.count(K.ERROR) == 20000  # parentheses are text in NAI, every brace is unclosed
    assert nai.weights[-1] == float("inf")
    assert tokenize("9" * 400 + "::a::", NAI).weights[1] == float("inf")


# --- properties ----------------------------------------------------------------------------------------------


def check_tiling(tp: TokenizedPrompt) -> None:
    text = tp.text
    encoded = text.encode("utf-8", "surrogatepass")
    position = 0
    byte_position = 0
    for span in tp.spans:
        assert span.start == position and span.end > span.start
        assert span.byte_start == byte_position
        assert encoded[span.byte_start : span.byte_end] == text[span.start : span.end].encode("utf-8", "surrogatepass")
        position = span.end
        byte_position = span.byte_end
    assert position == len(text)
    assert "".join(text[s.start : s.end] for s in tp.spans) == text
    for span in tp.spans:
        if span.kind is not K.SPACE:
            assert not any(c in text[span.start : span.end] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


@settings(max_examples=400)
@given(any_text, dialects)
def test_tokenize_never_raises_and_tiles_any_text(text: str, dialect: Dialect) -> None:
    tp = tokenize(text, dialect)
    check_tiling(tp)
    for diagnostic in tp.diagnostics:
        assert 0 <= diagnostic.start <= diagnostic.end <= len(text)
        assert "\n" not in diagnostic.message


@settings(max_examples=400)
@given(prompt_like, dialects)
def test_tokenize_tiles_prompt_like_text(text: str, dialect: Dialect) -> None:
    tp = tokenize(text, dialect)
    check_tiling(tp)
    for lora in tp.loras:
        assert text[lora.start : lora.end] == lora.text


@given(st.one_of(prompt_like, any_text), dialects)
def test_line_highlights_match_text(text: str, dialect: Dialect) -> None:
    tp = tokenize(text, dialect)
    lines = [line.encode("utf-8", "surrogatepass") for line in text.splitlines()]
    covered = 0
    for line, start, end, _ in line_highlights(tp, skip=()):
        assert 0 <= start < end <= len(lines[line])
        covered += end - start
    breaks = sum(len(b.encode("utf-8")) for b in _line_breaks(text))
    assert covered + breaks == len(text.encode("utf-8", "surrogatepass"))


def _line_breaks(text: str) -> list[str]:
    kept = text.splitlines(keepends=True)
    return [line[len(bare) :] for line, bare in zip(kept, text.splitlines(), strict=True)]
