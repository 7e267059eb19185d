"""Wildcards: `__name__` lines drawn from files in the config dir, inline `<pick:a|b>` choices, drawn per job."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peropix_tui.core.prompt import Dialect, SpanKind, tokenize
from peropix_tui.core.prompt.syntax import WILDCARD_KINDS
from peropix_tui.core.prompt.wildcards import (
    MAX_CHARS,
    MAX_DEPTH,
    MAX_DRAWS,
    MAX_RECORDED,
    RECORD_KEY,
    Choice,
    Expander,
    WildcardError,
    WildcardLibrary,
    expand_wildcards,
    recorded_templates,
)
from peropix_tui.engine.run import expand_request
from peropix_tui.engine.types import CharacterPrompt, GenerationRequest

NAI = Dialect.NAI
SD = Dialect.SD


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "config" / "wildcards"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def library(root: Path) -> WildcardLibrary:
    return WildcardLibrary(root)


def values_over_seeds(template: str, library: WildcardLibrary | None, seeds: int = 200) -> Counter[str]:
    return Counter(expand_wildcards(template, library, seed).text for seed in range(seeds))


# --- files ---------------------------------------------------------------------------------------------------


def test_lines_are_stripped_and_comments_blanks_and_bom_skipped(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "\ufeff# hair colours\r\n  silver hair  \r\n\r\n   \r\n\t# indented comment\r\nred hair\r\n")
    assert library.count("hair") == 2
    assert set(values_over_seeds("__hair__", library)) == {"silver hair", "red hair"}


def test_a_bom_before_a_comment_still_makes_it_a_comment(root: Path, library: WildcardLibrary) -> None:
    write(root, "eyes", "\ufeff#comment\nblue eyes")  # no final newline either
    assert values_over_seeds("__eyes__", library, 20) == Counter({"blue eyes": 20})


def test_unicode_whitespace_lines_are_blank_and_non_ascii_lines_are_kept(root: Path, library: WildcardLibrary) -> None:
    write(root, "jp", "\u3000\n銀髪\n")
    assert values_over_seeds("__jp__", library, 10) == Counter({"銀髪": 10})


def test_sub_folders_and_names_with_dots_dashes_and_underscores(root: Path, library: WildcardLibrary) -> None:
    write(root, "outfits/summer_v1.2-final", "sundress\n")
    assert expand_wildcards("a, __outfits/summer_v1.2-final__, b", library, 1).text == "a, sundress, b"


def test_every_line_can_be_drawn_and_none_is_favoured(root: Path, library: WildcardLibrary) -> None:
    write(root, "n", "".join(f"line {i}\n" for i in range(5)))
    counts = values_over_seeds("__n__", library, 2000)
    assert set(counts) == {f"line {i}" for i in range(5)}
    assert min(counts.values()) > 300  # 400 expected for each


def test_names_lists_what_the_syntax_can_spell(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "x")
    write(root, "sub/deeper/eyes", "x")
    write(root, "with space", "x")  # `__with space__` cannot be written
    write(root, "_private", "x")  # nor a name starting with `_`
    (root / "notes.md").write_text("x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a link back up the tree
    assert library.names() == ["hair", "sub/deeper/eyes"]
    assert WildcardLibrary(root / "missing").names() == []


def test_missing_file_is_one_line_naming_the_file(root: Path, library: WildcardLibrary) -> None:
    with pytest.raises(WildcardError) as caught:
        expand_wildcards("1girl, __hair__", library, 1)
    message = str(caught.value)
    assert str(root / "hair.txt") in message and "__hair__" in message and "\n" not in message


def test_a_folder_with_the_name_is_not_a_file(root: Path, library: WildcardLibrary) -> None:
    (root / "hair.txt").mkdir()
    with pytest.raises(WildcardError, match="is not a file"):
        expand_wildcards("__hair__", library, 1)


def test_a_file_without_usable_lines_says_so(root: Path, library: WildcardLibrary) -> None:
    write(root, "empty", "# only a comment\n\n   \n")
    with pytest.raises(WildcardError, match=r"empty\.txt has no lines to draw from"):
        expand_wildcards("__empty__", library, 1)


def test_a_line_that_is_not_utf8_is_named(root: Path, library: WildcardLibrary) -> None:
    write(root, "bad", b"fine\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(WildcardError, match=r"bad\.txt line 3 is not UTF-8"):
        expand_wildcards("__bad__", library, 1)


def test_a_file_over_the_size_limit_is_refused(
    root: Path, library: WildcardLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peropix_tui.core.prompt.wildcards as wildcards

    write(root, "big", "x" * 100 + "\n")
    monkeypatch.setattr(wildcards, "MAX_FILE_BYTES", 64)
    with pytest.raises(WildcardError, match=r"big\.txt is 101 bytes, more than the 64"):
        expand_wildcards("__big__", library, 1)


def test_an_edited_file_is_read_again(root: Path, library: WildcardLibrary) -> None:
    path = write(root, "hair", "silver hair\n")
    assert expand_wildcards("__hair__", library, 1).text == "silver hair"
    path.write_text("black hair\nblack hair, long\n", encoding="utf-8")
    assert library.count("hair") == 2
    assert set(values_over_seeds("__hair__", library, 40)) == {"black hair", "black hair, long"}


def test_the_index_is_kept_while_size_and_mtime_stay_and_lines_are_read_at_each_draw(
    root: Path, library: WildcardLibrary
) -> None:
    path = write(root, "c", "# colours\nred\nblue\n")
    assert library.count("c") == 2
    stamp = path.stat()
    path.write_text("# colours\nRED\nBLU\n", encoding="utf-8")  # same size, lines at the same offsets
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert set(values_over_seeds("__c__", library, 40)) == {"RED", "BLU"}  # the cached offsets, fresh bytes


# --- names that would leave the folder -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "../secret", "/etc/passwd", "sub/../../secret", "..", "a//b", "./hair"]
)
def test_names_never_leave_the_wildcards_folder(root: Path, library: WildcardLibrary, name: str) -> None:
    write(root.parent, "secret", "the secret line\n")  # beside the folder: reachable only by escaping it
    write(root, "hair", "silver hair\n")
    with pytest.raises(WildcardError) as caught:
        expand_wildcards(f"1girl, __{name}__", library, 1)
    assert "does not name a file inside" in str(caught.value)
    with pytest.raises(WildcardError):
        library.path_for(name)


def test_every_accepted_name_stays_inside(library: WildcardLibrary) -> None:
    for name in ("a", "a/b", "a.b/c-d", "日本/髪"):
        assert library.path_for(name).resolve().is_relative_to(library.root.resolve())


# --- picks ---------------------------------------------------------------------------------------------------


def test_pick_draws_each_choice_stripped() -> None:
    assert set(values_over_seeds("1girl, <pick: red hair | blue hair >, smile", None, 100)) == {
        "1girl, red hair, smile",
        "1girl, blue hair, smile",
    }


def test_pick_escapes_empty_choices_and_repeats() -> None:
    counts = values_over_seeds(r"<pick:a\|b|x\>y||x\>y>", None, 4000)
    assert set(counts) == {"a|b", "x>y", ""}
    assert 1700 < counts["x>y"] < 2300  # twice as likely as the others


def test_nested_picks_and_brackets_and_loras_inside() -> None:
    template = "<pick:{red}|<pick:<lora:detail:0.5>|[dim]>>"
    assert set(values_over_seeds(template, None, 200)) == {"{red}", "<lora:detail:0.5>", "[dim]"}


def test_pick_in_either_dialect_and_any_case() -> None:
    for dialect in (NAI, SD):
        results = {expand_wildcards("<PICK:(a:1.2)|b>", None, seed, dialect=dialect).text for seed in range(50)}
        assert results == {"(a:1.2)", "b"}


def test_unclosed_pick_is_one_line_error() -> None:
    with pytest.raises(WildcardError, match=r"'<pick:' at 3 in the prompt is never closed with '>'"):
        expand_wildcards("a, <pick:red|blue", None, 1)


def test_pick_choices_are_recorded_as_written() -> None:
    expansion = expand_wildcards(r"<pick:red|x\|y>", None, 0)
    (choice,) = expansion.choices
    assert choice.kind == "pick" and choice.source == r"<pick:red|x\|y>" and choice.count == 2
    assert choice.value == ["red", r"x\|y"][choice.index]
    assert expansion.text == ["red", "x|y"][choice.index]


# --- nesting, cycles and limits ------------------------------------------------------------------------------


def test_lines_are_expanded_in_turn_and_choices_come_in_order(root: Path, library: WildcardLibrary) -> None:
    write(root, "look", "__hair__ and <pick:blue|green> eyes\n")
    write(root, "hair", "<pick:silver|black> hair\n")
    expansion = expand_wildcards("1girl, __look__", library, 5)
    assert expansion.text in {f"1girl, {h} hair and {e} eyes" for h in ("silver", "black") for e in ("blue", "green")}
    assert [(c.kind, c.source) for c in expansion.choices] == [
        ("wildcard", "__look__"),
        ("wildcard", "__hair__"),
        ("pick", "<pick:silver|black>"),
        ("pick", "<pick:blue|green>"),
    ]
    assert expansion.choices[0].value == "__hair__ and <pick:blue|green> eyes"  # as written in the file


def test_a_wildcard_inside_a_pick_is_drawn_only_when_chosen(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "silver hair\n")
    results = {expand_wildcards("<pick:__hair__|bald>", library, seed).text for seed in range(40)}
    assert results == {"silver hair", "bald"}
    raised = 0
    for seed in range(40):
        try:
            assert expand_wildcards("<pick:__nope__|bald>", library, seed).text == "bald"
        except WildcardError:
            raised += 1
    assert 0 < raised < 40


def test_direct_cycle_names_the_chain(root: Path, library: WildcardLibrary) -> None:
    write(root, "a", "x __a__\n")
    with pytest.raises(WildcardError, match=r"^wildcard cycle: __a__ → __a__$"):
        expand_wildcards("__a__", library, 1)


def test_indirect_cycle_names_the_chain(root: Path, library: WildcardLibrary) -> None:
    write(root, "a", "__b__\n")
    write(root, "b", "<pick:__c__|__c__>\n")
    write(root, "c", "__a__\n")
    with pytest.raises(WildcardError) as caught:
        expand_wildcards("start __a__", library, 1)
    assert str(caught.value) == "wildcard cycle: __a__ → __b__ → __c__ → __a__"


def test_the_same_wildcard_twice_side_by_side_is_no_cycle(root: Path, library: WildcardLibrary) -> None:
    write(root, "c", "red\nblue\n")
    write(root, "two", "__c__ and __c__\n")
    assert expand_wildcards("__two__", library, 3).text.count(" and ") == 1


def test_depth_limit(root: Path, library: WildcardLibrary) -> None:
    for level in range(MAX_DEPTH + 2):
        write(root, f"w{level}", f"__w{level + 1}__\n")
    with pytest.raises(WildcardError, match=f"nest deeper than {MAX_DEPTH} levels: __w0__ → __w1__"):
        expand_wildcards("__w0__", library, 1)
    write(root, f"w{MAX_DEPTH - 1}", "bottom\n")
    assert expand_wildcards("__w0__", library, 1).text == "bottom"


def test_runaway_growth_stops_with_a_clear_error(root: Path, library: WildcardLibrary) -> None:
    for level in range(14):
        write(root, f"g{level}", f"__g{level + 1}__ __g{level + 1}__\n")
    write(root, "g14", "x" * 50 + "\n")
    with pytest.raises(WildcardError, match=f"grows past {MAX_CHARS} characters"):
        expand_wildcards("__g0__", library, 1)


def test_runaway_draws_stop_with_a_clear_error(root: Path, library: WildcardLibrary) -> None:
    for level in range(13):  # 2**14 picks at the bottom, nothing drawn: no growth, only draws
        write(root, f"d{level}", f"__d{level + 1}__ __d{level + 1}__\n")
    write(root, "d13", "<pick:|>\n")
    with pytest.raises(WildcardError, match=f"more than {MAX_DRAWS} wildcard draws"):
        expand_wildcards("__d0__", library, 1)


def test_pieces_that_spell_a_new_wildcard_are_drawn_too(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "silver hair\n")
    assert expand_wildcards("_<pick:_hair_>_", library, 1).text == "silver hair"


def test_without_a_library_wildcards_are_an_error_and_picks_still_work() -> None:
    with pytest.raises(WildcardError, match="no wildcards folder"):
        expand_wildcards("__hair__", None, 1)
    assert expand_wildcards("<pick:a>", None, 1).text == "a"


# --- records and requests ------------------------------------------------------------------------------------


def test_record_holds_seed_templates_of_the_drawn_fields_and_choices(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "silver hair\n")
    expander = Expander(library, 42)
    assert expander.expand("1girl, __hair__") == "1girl, silver hair"
    assert expander.expand("lowres", field="negative") == "lowres"
    assert expander.record() == {
        "seed": 42,
        "template": {"prompt": "1girl, __hair__"},
        "choices": [
            {
                "field": "prompt",
                "kind": "wildcard",
                "source": "__hair__",
                "index": 0,
                "count": 1,
                "value": "silver hair",
            }
        ],
    }
    assert Expander(library, 1).record() is None


def test_a_long_record_keeps_the_first_choices_and_counts_the_rest() -> None:
    expander = Expander(None, 3)
    template = "<pick:a|b> " * (MAX_RECORDED + 20)
    drawn = expander.expand(template)
    record = expander.record()
    assert record is not None
    assert len(record["choices"]) == MAX_RECORDED and record["choices_left_out"] == 20
    assert expand_wildcards(template, None, record["seed"]).text == drawn  # the seed still gives it all


def test_expand_request_draws_every_prompt_field_and_keeps_the_rest(root: Path, library: WildcardLibrary) -> None:
    write(root, "hair", "silver hair\nblack hair\n")
    request = GenerationRequest(
        prompt="2girls, <pick:park|beach>",
        negative="<pick:lowres|blurry>",
        characters=(
            CharacterPrompt("girl, __hair__", "__hair__", "B3"),
            CharacterPrompt("girl, smile"),
        ),
        seed=7,
        steps=20,
    )
    drawn = expand_request(request, library, 99)
    out = drawn.request
    assert out.prompt in {"2girls, park", "2girls, beach"}
    assert out.negative in {"lowres", "blurry"}
    assert out.characters[0].prompt in {"girl, silver hair", "girl, black hair"}
    assert out.characters[0].negative in {"silver hair", "black hair"}
    assert out.characters[0].position == "B3"
    assert out.characters[1] == request.characters[1]
    assert (out.seed, out.steps) == (7, 20)
    assert drawn.record is not None
    assert set(drawn.record["template"]) == {"prompt", "negative", "character 1", "character 1 negative"}
    assert [c["field"] for c in drawn.record["choices"]] == [
        "prompt",
        "negative",
        "character 1",
        "character 1 negative",
    ]
    assert drawn.peropix_fields == {RECORD_KEY: drawn.record}
    assert expand_request(request, library, 99) == drawn  # the same seed draws the same again


def test_a_request_without_wildcards_is_returned_as_it_is(library: WildcardLibrary) -> None:
    request = GenerationRequest(prompt="1girl, {silver hair}, [[blush]], 1.2::night::, <lora:x:0.5>", seed=1)
    drawn = expand_request(request, library, 5)
    assert drawn.request is request and drawn.record is None and drawn.peropix_fields == {}


def test_recorded_templates_read_back_and_survive_junk() -> None:
    assert recorded_templates({RECORD_KEY: {"template": {"prompt": "a __b__", "negative": 3}}}) == {"prompt": "a __b__"}
    for junk in ({}, {RECORD_KEY: "x"}, {RECORD_KEY: {"template": ["a"]}}):
        assert recorded_templates(junk) == {}


def test_choice_json_round_trip() -> None:
    choice = Choice("pick", "<pick:a|b>", 1, 2, "b", "negative")
    assert Choice(**choice.to_json()) == choice


# --- properties ----------------------------------------------------------------------------------------------

LINES = {
    "hair": ["silver hair", "<pick:long|short> black hair", "__colour__ hair"],
    "colour": ["red", "blue", "# not a line", "", "green, {shiny}"],
    "look": ["__hair__, __eyes__", "plain"],
    "eyes": ["<pick:blue|green\\|teal> eyes"],
}
PIECES = [
    "1girl",
    ", ",
    " ",
    "{",
    "}",
    "[",
    "]",
    "|",
    "::",
    "1.2::",
    "_",
    "__",
    "long_hair",
    "<",
    ">",
    "\\",
    "\\|",
    "<lora:x:0.5>",
    "__hair__",
    "__look__",
    "__colour__",
    "<pick:",
    "a|b",
    "<pick:x|y>",
    "<pick:__hair__|bald>",
    "<pick:{red}|[blue]|>",
]
templates = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
dialects = st.sampled_from([NAI, SD])


@pytest.fixture(scope="module")
def stocked(tmp_path_factory: pytest.TempPathFactory) -> WildcardLibrary:
    folder = tmp_path_factory.mktemp("wildcards")
    for name, lines in LINES.items():
        write(folder, name, "\n".join(lines) + "\n")
    return WildcardLibrary(folder)


def _syntax_left(text: str, dialect: Dialect) -> list[str]:
    tokenized = tokenize(text, dialect)
    return [
        tokenized.span_text(i)
        for i, kind in enumerate(tokenized.kinds)
        if kind is SpanKind.WILDCARD or kind is SpanKind.PICK_OPEN
    ]


@settings(max_examples=300)
@given(templates, seeds, dialects)
def test_expansion_leaves_no_pick_and_no_wildcard_with_a_file(
    stocked: WildcardLibrary, template: str, seed: int, dialect: Dialect
) -> None:
    try:
        expansion = expand_wildcards(template, stocked, seed, dialect=dialect)
    except WildcardError as exc:
        # Only templates that hold a pick that never closes, or a wildcard without a file, may fail.
        tokenized = tokenize(template, dialect)
        message = str(exc)
        assert "\n" not in message
        assert "never closed" in message or "no wildcard file" in message, message
        assert SpanKind.ERROR in tokenized.kinds or "no wildcard file" in message
        return
    assert _syntax_left(expansion.text, dialect) == []
    assert expand_wildcards(template, stocked, seed, dialect=dialect) == expansion  # same seed, same draw


@settings(max_examples=300)
@given(st.text(), seeds, dialects)
def test_text_without_wildcards_is_unchanged_byte_for_byte(text: str, seed: int, dialect: Dialect) -> None:
    tokenized = tokenize(text, dialect)
    has_syntax = any(kind in WILDCARD_KINDS for kind in tokenized.kinds) or any(
        kind is SpanKind.ERROR and tokenized.span_text(i).lower() == "<pick:" for i, kind in enumerate(tokenized.kinds)
    )
    if has_syntax:
        return
    expansion = expand_wildcards(text, None, seed, dialect=dialect)
    assert expansion.text == text and expansion.choices == ()


@settings(max_examples=200)
@given(st.lists(st.sampled_from([p for p in PIECES if "pick" not in p and "__" not in p]), max_size=30), seeds)
def test_prompt_like_text_without_wildcards_is_unchanged(pieces: list[str], seed: int) -> None:
    text = "".join(pieces)
    if "__" in text and _syntax_left(text, NAI):  # "_" + "_hair" pieces may spell a wildcard
        return
    assert expand_wildcards(text, None, seed).text == text


@given(templates, seeds)
def test_draws_leave_the_global_generator_alone(stocked: WildcardLibrary, template: str, seed: int) -> None:
    state = random.getstate()
    try:
        expand_wildcards(template, stocked, seed)
    except WildcardError:
        pass
    assert random.getstate() == state
