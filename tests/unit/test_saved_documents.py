"""The shape shared by the files users save named things in: names, the format/version envelope, list fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.saved_documents import (
    MAX_NAME,
    check_name,
    dump_document,
    json_type,
    list_field,
    load_document,
)


class ThingError(PeropixError):
    """Stands for a caller's own error kind."""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("format", "version")), json_values))
def test_a_dumped_document_loads_back_whole(body: dict[str, Any]) -> None:
    data = dump_document("peropix-things", 2, body)
    assert data.endswith(b"\n")
    document = load_document(data, "t.json", ThingError, version=2, fmt="peropix-things")
    assert document == {"format": "peropix-things", "version": 2, **body}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "t.json: not valid JSON ("),
        (b"[1]", "t.json: must hold a JSON object, not a list"),
        (b'{"version": 1}', "t.json: not a peropix things file (\"format\" is not 'peropix-things')"),
        (b'{"format": "peropix-other", "version": 1}', 't.json: not a peropix things file ("format"'),
        (b'{"format": "peropix-things"}', "t.json: needs a version number (2), found None"),
        (b'{"format": "peropix-things", "version": true}', "t.json: needs a version number (2), found True"),
        (b'{"format": "peropix-things", "version": 0}', "t.json: needs a version number (2), found 0"),
        (b'{"format": "peropix-things", "version": "1"}', "t.json: needs a version number (2), found '1'"),
        (b'{"format": "peropix-things", "version": 3}', "t.json: version 3 was written by a newer peropix"),
    ],
)
def test_a_bad_envelope_is_one_line_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(ThingError) as caught:
        load_document(data, "t.json", ThingError, version=2, fmt="peropix-things", what="peropix things file")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_without_a_format_any_format_key_is_accepted() -> None:
    assert load_document(b'{"version": 1, "x": 5}', "t.json", ThingError, version=1) == {"version": 1, "x": 5}
    with pytest.raises(ThingError, match=r"t\.json: version 2 was written by a newer peropix \(this one reads 1\)"):
        load_document(b'{"version": 2}', "t.json", ThingError, version=1)


def test_list_fields() -> None:
    document = orjson.loads(b'{"items": [1, "a"], "empty": [], "bad": {"a": 1}}')
    assert list_field(document, "items", "t.json", ThingError) == [1, "a"]
    assert list_field(document, "empty", "t.json", ThingError) == []
    assert list_field(document, "absent", "t.json", ThingError) is None
    with pytest.raises(ThingError, match=r"^t\.json: 'bad' must be a list, not an object$"):
        list_field(document, "bad", "t.json", ThingError)


@given(st.text(max_size=MAX_NAME + 20))
def test_names_are_trimmed_bounded_and_free_of_control_characters(value: str) -> None:
    name = value.strip()
    usable = bool(name) and len(name) <= MAX_NAME and all(ord(c) >= 32 and not 127 <= ord(c) < 160 for c in name)
    if usable:
        assert check_name(value, "thing name", ThingError) == name
    else:
        with pytest.raises(ThingError, match=r"^thing name"):
            check_name(value, "thing name", ThingError)


def test_name_messages() -> None:
    with pytest.raises(ThingError, match=r"^name must be text, not int$"):
        check_name(5, "name", ThingError)
    with pytest.raises(ThingError, match=r"^name must be text, not null$"):
        check_name(None, "name", ThingError)
    with pytest.raises(ThingError, match=r"^name must not be empty$"):
        check_name(" \t ", "name", ThingError)
    with pytest.raises(ThingError, match=rf"^name 'xxxxxxxxxxxxxxxxxxxx'… is longer than {MAX_NAME} characters$"):
        check_name("x" * (MAX_NAME + 1), "name", ThingError)
    with pytest.raises(ThingError, match=r"^name 'a\\x07b' holds a control character$"):
        check_name("a\x07b", "name", ThingError)


def test_json_types_read_as_json_names() -> None:
    assert [json_type(v) for v in ({}, [], None, True, 3, 1.5, "s")] == [
        "an object",
        "a list",
        "null",
        "true/false",
        "int",
        "float",
        "str",
    ]
