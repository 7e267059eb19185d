"""Auto-save off: images wait in the unsaved folder, indexed; saving one later moves it into the outputs folder
with the saving settings; old or excess unsaved images are pruned. Also `peropix generate --format`."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_nai_helpers import MakeClient, small

from peropix_tui.cli import main
from peropix_tui.core.history import HistoryError, HistoryStore
from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.outputs import OutputError, SaveOptions, parse_name_pattern, prune_unsaved
from peropix_tui.engine.run import save_output, save_unsaved
from peropix_tui.engine.types import GeneratedImage
from peropix_tui.sandbox.nai_accounts import SandboxAccount
from peropix_tui.sandbox.nai_server import NaiSandbox

TOKEN = "pst-outputs-unsaved-test-token-00000000001"
DAY = 86400
JPEG_BY_MODEL = SaveOptions(format="jpeg", quality=85, pattern=parse_name_pattern("{date}/{model}/{counter}_{seed}"))


async def generated(make_client: MakeClient, seed: int = 4321) -> GeneratedImage:
    async with make_client() as client:
        [image] = await client.generate(small(seed=seed), stream=False)
    return image


async def test_an_unsaved_image_waits_indexed_then_is_saved_with_the_settings(
    make_client: MakeClient, tmp_path: Path
) -> None:
    outputs, unsaved = tmp_path / "outputs", tmp_path / "unsaved"
    image = await generated(make_client)
    with HistoryStore(tmp_path / "history.sqlite3") as store:
        waiting = save_output(
            image,
            outputs_dir=outputs,
            provider="sandbox",
            history=lambda: store,
            options=JPEG_BY_MODEL,
            unsaved_dir=unsaved,
        )
        assert waiting.unsaved and waiting.entry_id is not None
        assert waiting.path.is_relative_to(unsaved) and waiting.path.suffix == ".png"
        assert not outputs.exists()
        assert read_metadata(waiting.path).peropix == {**image.metadata.peropix, "provider": "sandbox"}
        created = store.get(waiting.entry_id).created  # type: ignore[union-attr]

        saved = save_unsaved(store, waiting.entry_id, outputs_dir=outputs, unsaved_dir=unsaved, options=JPEG_BY_MODEL)
        day = time.strftime("%Y-%m-%d", time.localtime(created))
        assert saved.relative_to(outputs).as_posix() == f"{day}/{image.request.model}/00001_4321.jpg"
        assert not waiting.path.exists()
        entry = store.get(waiting.entry_id)
        assert entry is not None and entry.path == saved.resolve() and entry.created == created
        after = read_metadata(saved)
        assert (after.prompt, after.seed, after.peropix["provider"]) == (image.metadata.prompt, 4321, "sandbox")

        with pytest.raises(OutputError, match=r"00001_4321\.jpg is already saved"):
            save_unsaved(store, waiting.entry_id, outputs_dir=outputs, unsaved_dir=unsaved, options=JPEG_BY_MODEL)
        with pytest.raises(HistoryError, match="no history entry with id 999"):
            save_unsaved(store, 999, outputs_dir=outputs, unsaved_dir=unsaved, options=JPEG_BY_MODEL)


async def test_saving_the_same_image_twice_at_once_saves_it_once(make_client: MakeClient, tmp_path: Path) -> None:
    outputs, unsaved = tmp_path / "outputs", tmp_path / "unsaved"
    image = await generated(make_client)
    with HistoryStore(tmp_path / "history.sqlite3") as store:
        waiting = save_output(image, outputs_dir=outputs, provider="nai", history=lambda: store, unsaved_dir=unsaved)
        entry_id = waiting.entry_id
        assert entry_id is not None
        start = threading.Barrier(4)

        def press() -> Path | str:
            start.wait()
            try:
                return save_unsaved(store, entry_id, outputs_dir=outputs, unsaved_dir=unsaved, options=JPEG_BY_MODEL)
            except OutputError as exc:
                return str(exc)

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: press(), range(4)))
        saved = [r for r in results if isinstance(r, Path)]
        assert len(saved) == 1
        assert all("is already saved" in r for r in results if isinstance(r, str))
        assert [p for p in outputs.rglob("*") if p.is_file()] == saved


async def test_a_trashed_unsaved_image_is_not_saved(make_client: MakeClient, tmp_path: Path) -> None:
    unsaved = tmp_path / "unsaved"
    image = await generated(make_client)
    with HistoryStore(tmp_path / "history.sqlite3") as store:
        waiting = save_output(
            image, outputs_dir=tmp_path / "o", provider="nai", history=lambda: store, unsaved_dir=unsaved
        )
        assert waiting.entry_id is not None
        store.trash(waiting.entry_id, tmp_path / "o" / ".trash")
        with pytest.raises(OutputError, match="is in the trash"):
            save_unsaved(
                store, waiting.entry_id, outputs_dir=tmp_path / "o", unsaved_dir=unsaved, options=SaveOptions()
            )


def test_relocating_onto_another_entry_is_refused(tmp_path: Path) -> None:
    from peropix_tui.core.metadata import ImageMetadata

    with HistoryStore(tmp_path / "history.sqlite3") as store:
        first = store.add(tmp_path / "a.png", ImageMetadata(seed=1), provider="nai")
        store.add(tmp_path / "b.png", ImageMetadata(seed=2), provider="nai")
        with pytest.raises(HistoryError, match="another entry has it"):
            store.relocate(first, tmp_path / "b.png")
        store.relocate(first, tmp_path / "c.png")
        assert store.get(first).path == (tmp_path / "c.png").resolve()  # type: ignore[union-attr]
        assert store.forget([tmp_path / "c.png", tmp_path / "missing.png"]) == 1
        assert store.count() == 1


def touch(path: Path, size: int, age_days: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = now - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_prune_deletes_old_images_then_the_oldest_beyond_the_cap(tmp_path: Path) -> None:
    now = time.time()
    folder = tmp_path / "unsaved"
    old = touch(folder / "2025-01-01" / "00001_1.png", 100, 10, now)
    middle = touch(folder / "2025-01-05" / "00001_2.png", 300, 3, now)
    recent = touch(folder / "2025-01-07" / "00001_3.webp", 300, 1, now)
    newest = touch(folder / "2025-01-07" / "00002_4.png", 300, 0.1, now)
    marker = touch(folder / "2025-01-07" / ".00003.reserved", 0, 30, now)
    note = touch(folder / "notes.txt", 10, 30, now)

    assert prune_unsaved(folder, keep_days=7, max_bytes=10_000, now=now) == [old]
    assert not old.parent.exists()  # its emptied day folder went too
    assert prune_unsaved(folder, keep_days=7, max_bytes=700, now=now) == [middle]
    assert [p for p in (recent, newest, marker, note) if p.exists()] == [recent, newest, marker, note]
    assert prune_unsaved(tmp_path / "nothing-here", keep_days=1, max_bytes=0, now=now) == []


# --- peropix generate ------------------------------------------------------------------------------------------


@pytest.fixture
def nai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[NaiSandbox]:
    with NaiSandbox(accounts={TOKEN: SandboxAccount(fixed_anlas=10_000)}) as server:
        monkeypatch.setenv("PEROPIX_NAI_BASE_URL", server.base_url)
        monkeypatch.setenv("PEROPIX_NAI_ACCOUNT_URL", server.base_url)
        monkeypatch.setenv("PEROPIX_NAI_TOKEN", TOKEN)
        yield server


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_generate_saves_in_the_format_asked_and_rings_on_a_terminal(
    nai_server: NaiSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    isolated_dirs: tuple[Path, Path],
) -> None:
    _, data_dir = isolated_dirs
    common = ["generate", "--prompt", "1girl, solo", "--size", "256x256", "--steps", "4", "--seed", "99"]
    assert main([*common, "--format", "jpeg", "--save-quality", "70"]) == 0
    [path] = sorted((data_dir / "outputs").rglob("*.jpg"))
    assert path.name == "00001_99.jpg"
    assert read_metadata(path).seed == 99 and read_metadata(path).prompt.startswith("1girl, solo")  # type: ignore[union-attr]
    assert "\a" not in capsys.readouterr().err  # not a terminal: no bell

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setenv("TERM", "foot")
    monkeypatch.delenv("TMUX", raising=False)
    assert main([*common, "--format", "webp"]) == 0
    assert terminal.getvalue().endswith("\a\x1b]777;notify;peropix: queue finished;1 image saved\a")
    assert len(list((data_dir / "outputs").rglob("*.webp"))) == 1


def test_generate_refuses_a_quality_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "x", "--save-quality", "0"])
    assert info.value.code == 2
    assert "--save-quality: must be a whole number from 1 to 100, not '0'" in capsys.readouterr().err
