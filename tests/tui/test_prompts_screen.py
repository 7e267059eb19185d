"""Prompt tools (F6): the LoRA library built from real files on disk, and the word-filter lists."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import stat
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import save_file
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.paths import AppDirs
from peropix_tui.screens.help import HelpScreen
from peropix_tui.screens.prompts import HashProgress

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lora"
PEPPER = "metadata__civitai_civitai__Pepper__Carrot-headerData-jsonb.json"
BOO = "metadata__rockerBOO_lora-inspector-rs__boo-safetensors-ground-truth.json"


def kohya_metadata(name: str) -> dict[str, str]:
    raw = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}


def make_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
    rng = np.random.default_rng(len(path.name))
    tensors = {
        f"{block}.lora_down.weight": rng.standard_normal((8, 64)).astype(np.float16),
        f"{block}.lora_up.weight": rng.standard_normal((64, 8)).astype(np.float16),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def set_setting(key: str, value: object) -> None:
    config = Config.load(AppDirs.from_env())
    config.set(key, value)
    config.save()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "loras"
    make_lora(root / "pepper_v3.safetensors", kohya_metadata(PEPPER))
    make_lora(root / "characters" / "Pepper__Carrot.safetensors", {"ss_output_name": "Pepper__Carrot"})
    make_lora(root / "boo.safetensors", kohya_metadata(BOO))
    bad = root / "broken.safetensors"
    bad.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    set_setting("paths.lora_dirs", [str(root)])
    return root


async def settle(pilot: Pilot[int]) -> None:
    await pilot.pause(0.1)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


async def open_prompts(pilot: Pilot[int]) -> None:
    await pilot.pause(0.1)
    await pilot.press("f6")
    await settle(pilot)
    await settle(pilot)  # the scan's messages, then the detail read they start


def rows(table: DataTable[object]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def label_text(app: PeropixApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Label).render())


def detail_text(app: PeropixApp, selector: str = "#lora-detail") -> str:
    """The detail pane's content as plain text, wide enough that nothing wraps."""
    console = Console(file=io.StringIO(), width=500, color_system=None)
    with console.capture() as capture:
        console.print(app.screen.query_one(selector, Static).content)
    return capture.get()


def notes(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.notification.message, m.notification.severity) for m in messages if isinstance(m, Notify)]


async def move_to(pilot: Pilot[int], table: DataTable[object], file_column_text: str) -> None:
    index = next(i for i, row in enumerate(rows(table)) if row[0] == file_column_text)
    table.move_cursor(row=index)
    await settle(pilot)


async def test_library_rows_flag_damage_collisions_and_renames(library: Path) -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        table = app.screen.query_one("#lora-table", DataTable)
        got = {row[0]: row for row in rows(table)}
        assert set(got) == {
            "pepper_v3.safetensors",
            "boo.safetensors",
            "broken.safetensors",
            str(Path("characters") / "Pepper__Carrot.safetensors"),
        }
        pepper = got["pepper_v3.safetensors"]
        assert pepper[1] == "Pepper__Carrot"
        assert pepper[2].startswith("SAME NAME as characters")
        assert "file name ≠ output name" in pepper[2]
        assert pepper[3:5] == ["sdxl_base_v1-0", "32/32"]
        assert got["boo.safetensors"][1:5] == ["boo", "", "", "4/4.0"]
        broken = got["broken.safetensors"]
        assert broken[1] == "—"
        assert broken[2].startswith("DAMAGED: header is not valid JSON")
        other = got[str(Path("characters") / "Pepper__Carrot.safetensors")]
        assert other[2] == "SAME NAME as pepper_v3.safetensors"
        status = label_text(app, "#lora-status")
        assert "4 LoRA files" in status and "1 damaged" in status and "2 share a name" in status


async def test_three_files_sharing_a_name(tmp_path: Path) -> None:
    root = tmp_path / "loras"
    for folder in ("a", "b", "c"):
        make_lora(root / folder / "twin.safetensors")
    set_setting("paths.lora_dirs", [str(root)])
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        got = rows(app.screen.query_one("#lora-table", DataTable))
        assert [row[2] for row in got] == [
            f"SAME NAME as 2 files: {Path('b') / 'twin.safetensors'}, …",
            f"SAME NAME as 2 files: {Path('a') / 'twin.safetensors'}, …",
            f"SAME NAME as 2 files: {Path('a') / 'twin.safetensors'}, …",
        ]


async def test_detail_pane_shows_metadata_and_top_tags(library: Path) -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        table = app.screen.query_one("#lora-table", DataTable)
        await move_to(pilot, table, "pepper_v3.safetensors")
        text = detail_text(app)
        assert "<lora:Pepper__Carrot:1>" in text
        assert str(library / "characters" / "Pepper__Carrot.safetensors") in text  # the clashing file
        counts: Counter[str] = Counter()
        for folder in json.loads((FIXTURES / PEPPER).read_text(encoding="utf-8"))["ss_tag_frequency"].values():
            counts.update(folder)
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
        assert f"Top training tags ({len(counts)} distinct)" in text
        assert ", ".join(f"{tag} ({count})" for tag, count in top) in text
        assert "ss_sd_scripts_commit_hash" in text
        assert "ss_tag_frequency" in text and "distinct tags over 1 folder(s)" in text
        assert '"1girl": 96' not in text  # the raw blob is summarised, not dumped

        await move_to(pilot, table, "broken.safetensors")
        text = detail_text(app)
        assert "Damaged" in text and "header is not valid JSON" in text


async def test_copy_tag_and_refuse_damaged(library: Path) -> None:
    app = PeropixApp()
    messages: list[Message] = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await open_prompts(pilot)
        table = app.screen.query_one("#lora-table", DataTable)
        await move_to(pilot, table, "boo.safetensors")
        await pilot.press("c")
        await settle(pilot)
        assert app.clipboard == "<lora:boo:1>"
        assert ("Copied <lora:boo:1>", "information") in notes(messages)

        await move_to(pilot, table, "pepper_v3.safetensors")
        await pilot.press("c")
        await settle(pilot)
        assert app.clipboard == "<lora:Pepper__Carrot:1>"
        assert any("1 other file(s) answer to this name" in m for m, s in notes(messages) if s == "warning")

        await move_to(pilot, table, "broken.safetensors")
        await pilot.press("c")
        await settle(pilot)
        assert app.clipboard == "<lora:Pepper__Carrot:1>"
        assert any("is damaged" in m for m, s in notes(messages) if s == "error")


async def test_hash_action_matches_hashlib(library: Path) -> None:
    app = PeropixApp()
    messages: list[Message] = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await open_prompts(pilot)
        table = app.screen.query_one("#lora-table", DataTable)
        await move_to(pilot, table, "boo.safetensors")
        await pilot.press("h")
        await settle(pilot)
        await settle(pilot)
        blob = (library / "boo.safetensors").read_bytes()
        n = struct.unpack("<Q", blob[:8])[0]
        sha = hashlib.sha256(blob).hexdigest().upper()
        autov3 = hashlib.sha256(blob[8 + n :]).hexdigest().upper()
        text = detail_text(app)
        assert sha in text
        facts = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
        assert facts["SHA256"].strip() == sha
        assert facts["AutoV2"].strip() == sha[:10]
        assert facts["AutoV3"].strip() == autov3
        assert autov3 in text
        assert (f"boo.safetensors: AutoV2 {sha[:10]}", "information") in notes(messages)
        progress = [m for m in messages if isinstance(m, HashProgress)]
        assert progress and progress[-1].done == progress[-1].total == len(blob)
        assert not app.screen.query_one("#lora-hash-row").display

        # a damaged file still gets its SHA256, to compare with what the download should have been
        await move_to(pilot, table, "broken.safetensors")
        await pilot.press("h")
        await settle(pilot)
        await settle(pilot)
        facts = dict(line.split(None, 1) for line in detail_text(app).splitlines() if line.strip())
        assert (
            facts["SHA256"].strip() == hashlib.sha256((library / "broken.safetensors").read_bytes()).hexdigest().upper()
        )
        assert facts["AutoV3"].strip() == "(none: not a valid safetensors file)"
        assert "Damaged" in facts


async def test_no_folders_set_says_where_to_add_them() -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        assert app.screen.query_one("#lora-table", DataTable).row_count == 0
        assert label_text(app, "#lora-status") == ("No LoRA folders set — add them in Settings (F7) → paths.lora_dirs")


async def test_empty_folder_and_rescan_picks_up_new_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    set_setting("paths.lora_dirs", [str(root), str(tmp_path / "missing")])
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        status = label_text(app, "#lora-status")
        assert f"No .safetensors files in {root}" in status
        assert f"{tmp_path / 'missing'}: does not exist" in status
        make_lora(root / "fresh.safetensors")
        await pilot.press("r")
        await settle(pilot)
        assert [row[0] for row in rows(app.screen.query_one("#lora-table", DataTable))] == ["fresh.safetensors"]
        make_lora(root / "second.safetensors")
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.screen.query_one("#lora-table", DataTable).row_count == 2


async def test_help_lists_the_table_keys(library: Path) -> None:
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        help_rows = {(r[0], r[1]) for r in rows(app.screen.query_one("#help-table", DataTable))}
        assert ("r / ^r", "Rescan LoRA folders") in help_rows
        assert ("h", "Compute hashes (SHA256, AutoV2, AutoV3)") in help_rows
        assert ("c", "Copy the <lora:name:1> tag") in help_rows
        assert ("e / ^e", "Edit the filter list in $EDITOR") in help_rows


# Word filters ----------------------------------------------------------------------------------------------


def shipped_count(name: str) -> int:
    text = (Path(__file__).resolve().parents[2] / "peropix_tui" / "data" / "filters" / f"{name}.txt").read_text()
    return len({line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")})


async def test_filters_list_shipped_and_user_categories(tmp_path: Path) -> None:
    folder = AppDirs.from_env().config_dir / "filters"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("# my own list\nred hair\nblue eyes\n\nred hair\n", encoding="utf-8")
    (folder / "Bad Name.txt").write_text("x\n", encoding="utf-8")
    app = PeropixApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        table = app.screen.query_one("#filters-table", DataTable)
        got = {row[0]: row for row in rows(table)}
        assert list(got)[:3] == ["sex", "clothes", "etc"]
        assert got["etc"][1:3] == [str(shipped_count("etc")), "shipped default"]
        assert got["mine"][1:4] == ["2", "your copy", str(folder / "mine.txt")]
        assert got["Bad Name"][3].startswith("UNREADABLE: bad filter category name")
        await move_to(pilot, table, "mine")
        assert "mine: 2 tags" in detail_text(app, "#filters-detail")
        assert "blue eyes, red hair" in detail_text(app, "#filters-detail")
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert app.focused is app.screen.query_one("#lora-table")


async def test_edit_without_editor_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    app = PeropixApp()
    messages: list[Message] = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await open_prompts(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert any(m.startswith("Set $EDITOR") and s == "error" for m, s in notes(messages))
    assert not (AppDirs.from_env().config_dir / "filters").exists()


async def test_edit_where_suspend_is_unsupported_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITOR", "true")
    app = PeropixApp()
    messages: list[Message] = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await open_prompts(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        await pilot.press("e")  # the headless test driver cannot suspend
        await settle(pilot)
        target = AppDirs.from_env().config_dir / "filters" / "sex.txt"
        assert (f"This session cannot hand the terminal to an editor; edit {target} directly", "error") in notes(
            messages
        )
        assert target.is_file()  # the user copy is made first, so the named file exists
        assert rows(app.screen.query_one("#filters-table", DataTable))[0][2] == "your copy"


async def test_edit_runs_the_editor_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "editor.sh"
    script.write_text('#!/bin/sh\nprintf "brand new tag\\n" >> "$1"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("VISUAL", str(script))
    app = PeropixApp()

    @contextlib.contextmanager
    def suspended() -> Iterator[None]:  # the test driver has no terminal to give away
        yield

    monkeypatch.setattr(app, "suspend", suspended)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_prompts(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        table = app.screen.query_one("#filters-table", DataTable)
        await move_to(pilot, table, "etc")
        await pilot.press("e")
        await settle(pilot)
        user_file = AppDirs.from_env().config_dir / "filters" / "etc.txt"
        assert user_file.read_text(encoding="utf-8").endswith("brand new tag\n")
        got = {row[0]: row for row in rows(table)}
        assert got["etc"][1:3] == [str(shipped_count("etc") + 1), "your copy"]
        assert "brand new tag" in detail_text(app, "#filters-detail")


async def test_editor_that_cannot_start_or_fails_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = PeropixApp()
    messages: list[Message] = []

    @contextlib.contextmanager
    def suspended() -> Iterator[None]:
        yield

    monkeypatch.setattr(app, "suspend", suspended)
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await open_prompts(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        monkeypatch.setenv("EDITOR", f"{tmp_path / 'no-such-editor'} --wait")
        await pilot.press("e")
        await settle(pilot)
        assert (f"Cannot start {tmp_path / 'no-such-editor'}: No such file or directory", "error") in notes(messages)
        monkeypatch.setenv("EDITOR", "false")
        await pilot.press("e")
        await settle(pilot)
        assert ("false exited with status 1", "warning") in notes(messages)
        monkeypatch.setenv("EDITOR", "vi 'unbalanced")
        await pilot.press("e")
        await settle(pilot)
        assert any(m.startswith("Cannot read $EDITOR") for m, _ in notes(messages))
