"""Slot sets: prompt composition, editing, the jobs "queue all" makes, and the JSON files they are saved in."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.prompt import split_tags
from peropix_tui.core.slots import (
    MAX_FILE_BYTES,
    MAX_NAME,
    MAX_REPEAT,
    Slot,
    SlotError,
    SlotLibrary,
    SlotSet,
    join_prompt,
    slot_set_from_json,
    slot_set_to_json,
)

# Composition -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("1girl", "red hair"), "1girl, red hair"),
        (("1girl, ", ", red hair"), "1girl, red hair"),
        (("1girl ,,  ", "  ,red hair"), "1girl, red hair"),
        (("1girl, ", ""), "1girl, "),  # an empty part leaves the base byte for byte
        (("1girl, ", " , "), "1girl, "),
        (("", "red hair, "), "red hair, "),
        (("", ""), ""),
        (("masterpiece, {1girl}", "{{red hair}}, smile"), "masterpiece, {1girl}, {{red hair}}, smile"),
        (("a", "<lora:x:0.8>", "b"), "a, <lora:x:0.8>, b"),
        (("a\n", "\nb"), "a, b"),
        (("a | b", "c"), "a | b, c"),
    ],
)
def test_join_prompt(parts: tuple[str, ...], expected: str) -> None:
    assert join_prompt(*parts) == expected


plain_text = st.text(alphabet=st.sampled_from(list("ab ,\n")), max_size=30)
prompt_text = st.text(alphabet=st.sampled_from(list("ab ,{}[]|:1.\n<>")), max_size=30)
separators = st.text(alphabet=st.sampled_from(list(" ,\n")), max_size=6)


@given(plain_text, plain_text)
def test_join_keeps_every_tag_in_order(base: str, part: str) -> None:
    joined = join_prompt(base, part)
    assert [t.text for t in split_tags(joined)] == [t.text for t in split_tags(base) + split_tags(part)]


@given(prompt_text, separators)
def test_a_part_of_separators_only_changes_nothing(base: str, part: str) -> None:
    assert join_prompt(base, part) == (base if base.strip(" ,\n") else "")
    assert join_prompt(part, base) == (base if base.strip(" ,\n") else "")


def test_slot_compose_adds_both_parts() -> None:
    slot = Slot("Red", "red hair, ", "blue hair")
    assert slot.compose("1girl, solo, ", "lowres, ") == ("1girl, solo, red hair, ", "lowres, blue hair")


# The set ---------------------------------------------------------------------------------------------------------


def three_slots() -> SlotSet:
    return SlotSet((Slot("Red", "red hair"), Slot("Blue", "blue hair", locked=True), Slot("Green", "green hair")), 2)


def test_jobs_are_every_unlocked_slot_round_by_round() -> None:
    slot_set = three_slots()
    jobs = slot_set.jobs("1girl", "lowres")
    assert [(j.slot.name, j.round, j.prompt) for j in jobs] == [
        ("Red", 0, "1girl, red hair"),
        ("Green", 0, "1girl, green hair"),
        ("Red", 1, "1girl, red hair"),
        ("Green", 1, "1girl, green hair"),
    ]
    assert {j.negative for j in jobs} == {"lowres"}
    assert slot_set.job_count == len(jobs) == 4
    assert slot_set.summary() == "Slots: 3 (1 locked) × 2"
    assert SlotSet((Slot("a"),)).summary() == "Slots: 1 × 1"
    assert SlotSet().jobs("x", "") == []


def test_editing_returns_new_sets() -> None:
    slot_set = three_slots()
    moved = slot_set.moved(0, 1)
    assert [s.name for s in moved.slots] == ["Blue", "Red", "Green"]
    assert [s.name for s in slot_set.moved(2, -5).slots] == ["Green", "Red", "Blue"]  # clamped at the top
    assert [s.name for s in slot_set.moved(0, 9).slots] == ["Blue", "Green", "Red"]
    copy = slot_set.duplicated(0)
    assert [s.name for s in copy.slots] == ["Red", "Red 2", "Blue", "Green"]
    assert copy.slots[1].prompt == "red hair"
    assert [s.name for s in copy.duplicated(1).slots] == ["Red", "Red 2", "Red 3", "Blue", "Green"]
    assert [s.name for s in slot_set.removed(1).slots] == ["Red", "Green"]
    assert slot_set.replaced(1, Slot("Blue", "navy hair")).slots[1].prompt == "navy hair"
    assert slot_set.added(Slot("First"), 0).slots[0].name == "First"
    assert slot_set.with_repeat(5).repeat == 5
    assert [s.name for s in slot_set.slots] == ["Red", "Blue", "Green"]  # untouched
    assert slot_set.index("  green ") == 2
    assert slot_set.free_name("Purple") == "Purple"
    assert slot_set.free_name("red") == "red 2"


def test_bad_sets_are_refused() -> None:
    with pytest.raises(SlotError, match="two slots are named 'red'"):
        SlotSet((Slot("Red"), Slot("red")))
    with pytest.raises(SlotError, match=f"repeat must be a whole number from 1 to {MAX_REPEAT}, not 0"):
        SlotSet((), 0)
    with pytest.raises(SlotError, match="repeat"):
        SlotSet((), True)
    with pytest.raises(SlotError, match="slot name must not be empty"):
        Slot("   ")
    with pytest.raises(SlotError, match="control character"):
        Slot("a\nb")
    with pytest.raises(SlotError, match=f"longer than {MAX_NAME}"):
        Slot("x" * (MAX_NAME + 1))
    with pytest.raises(SlotError, match="no slot number 4"):
        three_slots().removed(3)
    with pytest.raises(SlotError, match="no slot is named 'Pink'"):
        three_slots().index("Pink")
    assert Slot("  padded  ").name == "padded"


# JSON ------------------------------------------------------------------------------------------------------------

slot_names = st.text(min_size=1, max_size=MAX_NAME).filter(
    lambda s: s.strip() == s and s != "" and not any(unicodedata.category(c) == "Cc" for c in s)
)
slots = st.builds(Slot, slot_names, st.text(max_size=200), st.text(max_size=50), st.booleans())
slot_sets = st.builds(
    SlotSet,
    st.lists(slots, max_size=12, unique_by=lambda s: s.name.casefold()).map(tuple),
    st.integers(1, MAX_REPEAT),
)


@given(slot_sets)
def test_json_round_trip(slot_set: SlotSet) -> None:
    assert slot_set_from_json(slot_set_to_json(slot_set), "test.json") == slot_set


@given(
    slot_sets,
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: k not in {"version", "slots", "repeat"}), st.integers(-(2**63), 2**63 - 1)
    ),
)
def test_unknown_keys_are_ignored(slot_set: SlotSet, extra: dict[str, int]) -> None:
    document = orjson.loads(slot_set_to_json(slot_set))
    document.update(extra)
    for entry in document["slots"]:
        entry["colour"] = "teal"
    assert slot_set_from_json(orjson.dumps(document), "x.json") == slot_set


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "x.json: not valid JSON"),
        (b"[]", "x.json: must hold a JSON object"),
        (b'{"slots": []}', "x.json: needs a version number"),
        (b'{"version": 2, "slots": []}', "x.json: version 2 was written by a newer peropix"),
        (b'{"version": 1, "slots": {}}', "x.json: 'slots' must be a list"),
        (b'{"version": 1, "slots": [3]}', "x.json: slot 1 must be an object"),
        (b'{"version": 1, "slots": [{"prompt": "a"}]}', "x.json: slot 1 has no name"),
        (b'{"version": 1, "slots": [{"name": "a", "prompt": 3}]}', "x.json: slot 'a': prompt must be text, not int"),
        (b'{"version": 1, "slots": [{"name": "a", "locked": "yes"}]}', "x.json: slot 'a': locked must be true"),
        (b'{"version": 1, "repeat": 0, "slots": []}', "x.json: repeat must be a whole number"),
        (b'{"version": 1, "slots": [{"name": "a"}, {"name": "A"}]}', "x.json: two slots are named 'A'"),
    ],
)
def test_bad_documents_give_one_line(data: bytes, message: str) -> None:
    with pytest.raises(SlotError) as caught:
        slot_set_from_json(data, "x.json")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_library_saves_lists_loads_and_deletes(tmp_path: Path) -> None:
    library = SlotLibrary.in_config_dir(tmp_path)
    assert library.names() == []
    first = three_slots()
    path = library.save("Hair colours", first)
    assert path == tmp_path / "slots" / "Hair colours.json"
    library.save("후보", SlotSet((Slot("한 명"),)))
    library.save("another", SlotSet())
    (tmp_path / "slots" / ".another.json.123.tmp").write_bytes(b"half")
    (tmp_path / "slots" / "notes.txt").write_text("not a set")
    assert library.names() == ["another", "Hair colours", "후보"]
    assert library.load("Hair colours") == first
    assert library.load("후보").slots[0].name == "한 명"
    library.save("Hair colours", first.with_repeat(3))  # replaced in place
    assert library.load("Hair colours").repeat == 3
    library.delete("another")
    assert library.names() == ["Hair colours", "후보"]
    with pytest.raises(SlotError, match="no slot set 'another'"):
        library.load("another")


def test_library_refuses_bad_names_and_files(tmp_path: Path) -> None:
    library = SlotLibrary(tmp_path)
    for name in ("../up", "a/b", ".hidden", "what?"):
        with pytest.raises(SlotError, match="cannot hold"):
            library.save(name, SlotSet())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "broken.json").write_bytes(b'{"version": 1, "slots": [{"name": 5}]}')
    with pytest.raises(SlotError, match=r"broken\.json: slot name must be text"):
        library.load("broken")
    (tmp_path / "huge.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(SlotError, match=r"huge\.json: larger than"):
        library.load("huge")
