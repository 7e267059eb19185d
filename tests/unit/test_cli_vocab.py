from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run
from test_collected_vocabulary import write_sidecar

from peropix_tui.core.collected_vocabulary import CollectedVocabulary, cache_path
from peropix_tui.core.paths import AppDirs


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    write_sidecar(root, "alice", "Numahana", 1, "1girl, (long hair:1.1), smile, <lora:zz:1>")
    write_sidecar(root, "alice", "Numahana", 2, "1girl, long_hair, cat ears")
    write_sidecar(root, "bob", "Other", 3, "1girl, solo")
    return root


def test_update_then_show(capsys: pytest.CaptureFixture[str], library: Path) -> None:
    result = run(capsys, "vocab", "update", "--root", str(library), "--top", "2")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"{library}: 3 new, 0 changed, 0 removed, 0 skipped sidecars; 5 tags from 3 images"
    assert lines[1:] == ["3  1girl", "2  long hair"]
    cached = CollectedVocabulary.load(cache_path(AppDirs.from_env().data_dir))
    assert cached.count("cat ears") == 1

    again = run(capsys, "vocab", "update", "--root", str(library), "--top", "0")
    assert again.out.splitlines()[0].startswith(f"{library}: 0 new, 0 changed, 0 removed, 0 skipped")

    shown = run(capsys, "vocab", "show", "--top", "0")
    assert shown.code == 0
    assert [line.split(None, 1)[1] for line in shown.out.splitlines()] == [
        "1girl",
        "long hair",
        "cat ears",
        "smile",
        "solo",
    ]
    prefixed = run(capsys, "vocab", "show", "S")
    assert prefixed.out.splitlines() == ["1  smile", "1  solo"]


def test_update_uses_the_configured_root(capsys: pytest.CaptureFixture[str], library: Path) -> None:
    assert run(capsys, "config", "set", "paths.civitai_root", str(library)).code == 0
    result = run(capsys, "vocab", "update", "--top", "1")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1] == "3  1girl"


def test_show_before_any_update(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "vocab", "show")
    assert result.code == 0
    assert result.out == ""
    assert "peropix vocab update" in result.err


def test_missing_root_is_one_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = run(capsys, "vocab", "update", "--root", str(tmp_path / "nowhere"))
    assert result.code == 1
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("peropix: ") and "does not exist" in lines[0]
