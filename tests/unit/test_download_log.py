from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peropix_tui.civitai.download_log import (
    MAX_LOG_BYTES,
    FailedItem,
    log_path,
    parse_download_log,
    read_download_log,
    scan_download_logs,
)


def write_log(root: Path, username: str, document: Any, mtime: float | None = None) -> Path:
    path = log_path(root, username)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


SEED_LOG = {
    "success": [
        {"id": 469281, "type": "lora", "path": "/lib/Users/Ggrue/CGM/cgm.safetensors", "size": 228456499},
        {"id": 76353065, "type": "image", "path": "/lib/Users/Ggrue/CGM/76353065.png", "size": 1874432},
        {"id": 76353066, "type": "IMAGE", "path": "/lib/Users/Ggrue/CGM/76353066.jpeg", "size": 912},
    ],
    "failed": [
        {"id": 469282, "type": "lora", "reason": "http_401", "info": "requires login"},
        {"id": "76353070", "type": "image", "reason": "no_meta", "info": {"status": 404, "url": "https://x/y"}},
        {"id": 76353071, "type": "image", "reason": "no_meta"},
        {"type": "image", "reason": "timeout", "info": None, "extra": [1, 2]},
    ],
    "username": "Ggrue",
    "started_at": "2026-08-09T12:00:00Z",
}


def test_reads_seed_format_counts_and_failures(tmp_path: Path) -> None:
    path = write_log(tmp_path, "Ggrue", SEED_LOG)
    entry = read_download_log(path, "Ggrue")
    assert entry.error is None
    assert (entry.username, entry.path, entry.mtime) == ("Ggrue", path, path.stat().st_mtime)
    assert (entry.models_ok, entry.images_ok, entry.failed, entry.odd_entries) == (1, 2, 4, 0)
    assert entry.failures == (
        FailedItem("469282", "lora", "http_401", "requires login"),
        FailedItem("76353070", "image", "no_meta", '{"status":404,"url":"https://x/y"}'),
        FailedItem("76353071", "image", "no_meta", ""),
        FailedItem("?", "image", "timeout", ""),
    )
    assert entry.failed_by_reason == [("no_meta", 2), ("http_401", 1), ("timeout", 1)]


def test_odd_entries_are_counted_and_fields_made_one_line(tmp_path: Path) -> None:
    document = {
        "success": [{"id": 1, "type": "lora"}, "junk", 5, {"id": 2}],
        "failed": [None, {"id": 3, "type": "lora", "reason": "bad\nthing\x07", "info": "a\tb" + "x" * 400}],
    }
    entry = parse_download_log(json.dumps(document).encode(), tmp_path / "l.json", "u", 1.0)
    assert (entry.models_ok, entry.images_ok, entry.odd_entries) == (2, 0, 3)
    [item] = entry.failures
    assert item.reason == "bad thing\ufffd"
    assert item.info.startswith("a b") and len(item.info) == 300 and item.info.endswith("…")


def test_missing_lists_mean_nothing_logged(tmp_path: Path) -> None:
    entry = parse_download_log(b'{"schema": 1}', tmp_path / "l.json", "u", 1.0)
    assert entry.error is None
    assert (entry.models_ok, entry.images_ok, entry.failed) == (0, 0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object, not a list"),
        (b'{"success": {"a": 1}}', "'success' must be a list, not an object"),
        (b'{"failed": "none"}', "'failed' must be a list, not a string"),
        (b'{"failed": 3}', "'failed' must be a list, not a number"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_log_is_an_error_entry(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "u_download_log.json"
    entry = parse_download_log(data, path, "u", 5.0)
    assert entry.error is not None
    assert entry.error.startswith(f"{path}: ")
    assert message in entry.error
    assert "\n" not in entry.error
    assert entry.failures == ()


def test_oversized_log_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = log_path(tmp_path, "big")
    path.parent.mkdir(parents=True)
    with path.open("wb") as fh:
        fh.truncate(MAX_LOG_BYTES + 1)  # sparse: costs no disk
    entry = read_download_log(path, "big")
    assert entry.error is not None and "over the" in entry.error


def test_scan_lists_creators_newest_first_with_broken_ones(tmp_path: Path) -> None:
    write_log(tmp_path, "old", SEED_LOG, mtime=1_000_000)
    write_log(tmp_path, "new", {"success": [{"id": 9, "type": "image"}], "failed": []}, mtime=3_000_000)
    write_log(tmp_path, "broken", "{oops", mtime=2_000_000)
    (log_path(tmp_path, "empty")).parent.mkdir(parents=True)
    (tmp_path / "download_logs" / "stray.json").write_text("{}")

    logs = scan_download_logs(tmp_path)

    assert [entry.username for entry in logs] == ["new", "broken", "old", "empty"]
    assert [entry.error is None for entry in logs] == [True, False, True, False]
    assert logs[0].images_ok == 1
    assert logs[3].error == f"no empty_download_log.json in {tmp_path / 'download_logs' / 'empty'}"


def test_scan_without_logs_folder_is_empty(tmp_path: Path) -> None:
    assert scan_download_logs(tmp_path / "nothing") == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
entries = st.dictionaries(st.sampled_from(["id", "type", "reason", "info", "path", "size", "x"]), json_values)


@given(
    st.dictionaries(
        st.sampled_from(["success", "failed", "other"]),
        st.lists(entries | json_values, max_size=6) | json_values,
        max_size=3,
    )
)
def test_any_json_document_gives_an_entry_never_an_exception(document: dict[str, Any]) -> None:
    entry = parse_download_log(json.dumps(document).encode(), Path("/l/u/u_download_log.json"), "u", 0.0)
    if entry.error is None:
        total = entry.models_ok + entry.images_ok + entry.failed + entry.odd_entries
        assert total == len(document.get("success", [])) + len(document.get("failed", []))
        for item in entry.failures:
            assert all(field.isprintable() for field in (item.id, item.type, item.reason, item.info))
    else:
        assert "\n" not in entry.error


@given(st.binary(max_size=200))
def test_any_bytes_give_an_entry_never_an_exception(data: bytes) -> None:
    entry = parse_download_log(data, Path("/l/u/u_download_log.json"), "u", 0.0)
    assert entry.error is None or "\n" not in entry.error
