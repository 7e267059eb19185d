"""History lists real images from the outputs folder with metadata read by core/metadata."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from textual.widgets import DataTable, Static

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.paths import AppDirs

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"


def fill_outputs() -> tuple[Path, list[Path]]:
    outputs = Config.load(AppDirs.from_env()).outputs_dir
    day = outputs / "2026-11-24"
    day.mkdir(parents=True)
    copied = []
    for i, name in enumerate(
        [
            "nai__LlmKira_novelai-python__sample-0316.png",
            "a1111__enslo_sd-metadata__forge.png",
            "webp__enslo_sd-metadata__novelai-curated.webp",
        ]
    ):
        target = day / name
        shutil.copy(IMAGES / name, target)
        os.utime(target, (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
        copied.append(target)
    broken = day / "broken.png"
    broken.write_bytes((IMAGES / "nai__LlmKira_novelai-python__sample-0316.png").read_bytes()[:100])
    os.utime(broken, (1_600_000_000, 1_600_000_000))
    return outputs, copied


async def test_history_lists_newest_first_with_metadata() -> None:
    _, copied = fill_outputs()
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f3")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        table = app.screen.query_one("#history-table", DataTable)
        keys = [row.value for row in table.rows]
        assert keys[:3] == [str(p) for p in reversed(copied)]
        assert keys[3].endswith("broken.png")
        expected = read_metadata(copied[0])
        row = [str(c) for c in table.get_row(str(copied[0]))]
        assert row[3] == str(expected.seed)
        assert row[4] == f"{expected.width}×{expected.height}"
        assert expected.prompt is not None and row[5].startswith(" ".join(expected.prompt.split())[:20])
        assert "⚠" in str(table.get_cell(keys[3], "prompt"))
        # select the NAI image: the detail pane shows its prompt and seed
        table.move_cursor(row=2)
        await pilot.pause(0.3)
        detail = str(app.screen.query_one("#history-meta", Static).render())
        assert f"Seed: {expected.seed}" in detail
        await pilot.press("ctrl+t")
        assert app.clipboard == str(expected.seed)
        await pilot.press("ctrl+y")
        assert app.clipboard == expected.prompt


async def test_history_empty_state_names_the_folder() -> None:
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("f3")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        summary = str(app.screen.query_one("#history-summary").render())
        assert "No images in" in summary and "outputs" in summary
