from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from peropix_tui.core import atomicio
from peropix_tui.core.atomicio import atomic_write_bytes, atomic_write_text, atomic_writer
from peropix_tui.core.errors import DiskFullError


def test_write_creates_folders_and_content(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_mode_is_set_and_existing_mode_kept(tmp_path: Path) -> None:
    secret = tmp_path / "s.json"
    atomic_write_bytes(secret, b"{}", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    atomic_write_bytes(secret, b'{"a": 1}')
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_exception_inside_block_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write(b"partial new content")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_keyboard_interrupt_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_writer(target) as fh:
        fh.write(b"half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 1


def test_disk_full_is_a_clear_error_and_old_file_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomicio.os, "fsync", full_disk)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*out\.bin"):
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.setattr(atomicio.os, "fsync", real_fsync)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
