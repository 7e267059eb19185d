"""Whole-file reads under a size cap: the bytes up to the cap, one-line errors of the caller's kind past it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.core.capped_read import describe_size, read_capped
from peropix_tui.core.errors import PeropixError


class ThingError(PeropixError):
    """Stands for a caller's own error kind."""


@given(data=st.binary(max_size=64), limit=st.integers(0, 80))
def test_returns_the_file_up_to_the_cap_and_refuses_past_it(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, limit: int
) -> None:
    path = tmp_path_factory.mktemp("capped") / "thing.bin"
    path.write_bytes(data)
    if len(data) <= limit:
        assert read_capped(path, limit, ThingError) == data
    else:
        with pytest.raises(
            ThingError, match=rf"^{re.escape(str(path))}: larger than the {limit:,} bytes a file may take$"
        ):
            read_capped(path, limit, ThingError)


def test_messages_name_the_file_and_its_kind(tmp_path: Path) -> None:
    missing = tmp_path / "gone.json"
    with pytest.raises(ThingError, match=rf"^{re.escape(str(missing))} does not exist$"):
        read_capped(missing, 10, ThingError, what="a thing file")
    with pytest.raises(ThingError, match=r"^no thing called 'gone'$"):
        read_capped(missing, 10, ThingError, missing="no thing called 'gone'")
    with pytest.raises(ThingError, match=rf"^{re.escape(str(tmp_path))} is a folder, not a thing file$"):
        read_capped(tmp_path, 10, ThingError, what="a thing file")
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * (2 << 20) + b"!")
    with pytest.raises(ThingError, match=rf"^{re.escape(str(big))}: larger than the 2 MiB a thing file may take$"):
        read_capped(big, 2 << 20, ThingError, what="a thing file")


def test_other_system_errors_give_the_system_reason(tmp_path: Path) -> None:
    under_a_file = tmp_path / "plain.txt" / "inside.json"
    under_a_file.parent.write_bytes(b"")
    with pytest.raises(ThingError, match=rf"^cannot read {re.escape(str(under_a_file))}: Not a directory$"):
        read_capped(under_a_file, 10, ThingError)


def test_sizes_read_as_mib_only_when_whole() -> None:
    assert describe_size(4 << 20) == "4 MiB"
    assert describe_size((4 << 20) + 1) == "4,194,305 bytes"
    assert describe_size(1000) == "1,000 bytes"
    assert describe_size(0) == "0 bytes"
