"""History pane over the history store: paging, filters, favourites, trash with undo, export, settings applied back.

Stores are filled directly (fast) or from real images in tests/fixtures/images; the app then opens them itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static, Switch

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.history import HistoryStore, make_thumbnail
from peropix_tui.core.metadata import ImageMetadata, read_metadata
from peropix_tui.core.paths import AppDirs
from peropix_tui.engine.nai.presets import compose_prompts
from peropix_tui.engine.types import UcPreset
from peropix_tui.messages import HistoryAdded
from peropix_tui.screens.history import PAGE_SIZE, HistoryScreen
from peropix_tui.widgets.image_preview import ImagePreview
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.prompt_editor import PromptEditor

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
NAI_FULL = "nai__enslo_sd-metadata__novelai-full-3char.png"
NAI_CURATED = "webp__enslo_sd-metadata__novelai-curated.webp"
FORGE = "a1111__enslo_sd-metadata__forge.png"
SIZE = (140, 40)


def config() -> Config:
    return Config.load(AppDirs.from_env())


def fill_outputs() -> tuple[Path, list[Path]]:
    """Three real images and a truncated one in the outputs folder of an install that has no history yet."""
    outputs = config().outputs_dir
    day = outputs / "2026-11-24"
    day.mkdir(parents=True)
    copied = []
    for i, name in enumerate(["nai__LlmKira_novelai-python__sample-0316.png", FORGE, NAI_CURATED]):
        target = day / name
        shutil.copy(IMAGES / name, target)
        os.utime(target, (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
        copied.append(target)
    broken = day / "broken.png"
    broken.write_bytes((IMAGES / "nai__LlmKira_novelai-python__sample-0316.png").read_bytes()[:100])
    os.utime(broken, (1_600_000_000, 1_600_000_000))
    return outputs, copied


def add_images(*names: str) -> list[int]:
    """Copy real images into the outputs folder and index them with thumbnails; the last one is the newest."""
    cfg = config()
    day = cfg.outputs_dir / "2026-11-25"
    day.mkdir(parents=True, exist_ok=True)
    ids = []
    with HistoryStore(cfg.history_file) as store:
        for i, name in enumerate(names):
            target = day / name
            shutil.copy(IMAGES / name, target)
            data = target.read_bytes()
            ids.append(
                store.add(target, read_metadata(data), provider="nai", thumbnail=make_thumbnail(data), created=1e9 + i)
            )
    return ids


def fill_store(count: int, prompt: Callable[[int], str] = lambda i: f"1girl, solo, number {i}") -> None:
    """`count` entries without files (the list never opens them), entry i created at second i."""
    with HistoryStore(config().history_file) as store:
        for i in range(count):
            meta = ImageMetadata(
                prompt=prompt(i), model="nai-diffusion-4-5-full", seed=10_000 + i, width=832, height=1216
            )
            store.add(f"/nowhere/{i:05d}.png", meta, provider="nai", created=1_700_000_000 + i)


async def until(pilot: Pilot[int], condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def open_history(pilot: Pilot[int]) -> HistoryScreen:
    app = pilot.app
    assert isinstance(app, PeropixApp)
    await until(pilot, lambda: app.history is not None, "the history store to open")
    await pilot.press("f3")
    await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the History mode")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    await until(pilot, lambda: screen._loaded_once and not screen._loading, "the first page")
    return screen


def table_of(screen: HistoryScreen) -> DataTable[object]:
    return screen.query_one("#history-table", DataTable)


def keys(screen: HistoryScreen) -> list[int]:
    return [int(str(row.value)) for row in table_of(screen).rows]


def summary(screen: HistoryScreen) -> str:
    return str(screen.query_one("#history-summary").render())


async def test_first_open_indexes_an_old_install_newest_first() -> None:
    _, copied = fill_outputs()
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        await until(pilot, lambda: table_of(screen).row_count == 4, "the indexed images")
        assert app.history is not None
        paths = [app.history.get(key).path for key in keys(screen)]  # type: ignore[union-attr]
        assert paths[:3] == [p.resolve() for p in reversed(copied)]
        assert paths[3].name == "broken.png"
        expected = read_metadata(copied[0])
        row = [str(c) for c in table_of(screen).get_row(str(keys(screen)[2]))]
        assert row[4] == str(expected.seed)
        assert row[5] == f"{expected.width}×{expected.height}"
        assert expected.prompt is not None and row[2].startswith(" ".join(expected.prompt.split())[:20])
        table_of(screen).move_cursor(row=2)
        await pilot.pause(0.2)
        detail = str(screen.query_one("#history-meta", Static).render())
        assert f"Seed: {expected.seed}" in detail
        await pilot.press("ctrl+t")
        assert app.clipboard == str(expected.seed)
        await pilot.press("ctrl+y")
        assert app.clipboard == expected.prompt


async def test_empty_history_names_the_outputs_folder() -> None:
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_history(pilot)
        text = summary(screen)
        assert "No images yet" in text and str(config().outputs_dir) in text


async def test_pages_load_as_the_cursor_nears_the_end() -> None:
    total = 3 * PAGE_SIZE + 40
    fill_store(total)
    app = PeropixApp(image_widget="off")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        table = table_of(screen)
        assert table.row_count == PAGE_SIZE
        assert f"{total} images" in summary(screen) and f"{PAGE_SIZE} loaded" in summary(screen)
        assert app.history is not None
        newest = app.history.page(0, 1)[0]
        assert keys(screen)[0] == newest.id and table.cursor_row == 0
        for loaded in (2 * PAGE_SIZE, 3 * PAGE_SIZE, total):
            await pilot.press("end")
            await until(pilot, lambda n=loaded: table.row_count == n, f"{loaded} rows")  # type: ignore[misc]
        listed = keys(screen)
        assert len(set(listed)) == total
        created = [app.history.get(key).created for key in listed]  # type: ignore[union-attr]
        assert created == sorted(created, reverse=True)
        assert "loaded" not in summary(screen)


async def test_text_filter_and_favourites_filter() -> None:
    fill_store(120, prompt=lambda i: "1girl, kitsune mask, shrine" if i % 10 == 3 else f"1boy, city, number {i}")
    app = PeropixApp(image_widget="off")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        await pilot.press("slash")
        assert screen.query_one("#history-filter", Input).has_focus
        await pilot.press(*"kitsune", "enter")
        await until(pilot, lambda: table_of(screen).row_count == 12, "the filtered rows")
        assert table_of(screen).has_focus
        assert app.history is not None
        assert all("kitsune" in app.history.get(k).prompt for k in keys(screen))  # type: ignore[union-attr]
        assert "12 images" in summary(screen) and "kitsune" in summary(screen)
        # letters typed into the filter never reach the table's keys (no favourite made by the "f" of "fox")
        await pilot.press("slash", *"fox", "enter")
        await until(pilot, lambda: table_of(screen).row_count == 0, "no match")
        assert "No image matching" in summary(screen)
        assert app.history.count(favourites=True) == 0
        await pilot.press("escape")
        await until(pilot, lambda: table_of(screen).row_count == PAGE_SIZE, "the unfiltered list")
        assert screen.query_one("#history-filter", Input).value == ""
        first = keys(screen)[0]
        app.history.set_favourite(first, True)
        await pilot.press("asterisk")
        await until(pilot, lambda: keys(screen) == [first], "the favourites only")
        assert "favourites only" in summary(screen)


async def test_favourite_copies_into_the_gallery_with_metadata() -> None:
    [entry_id] = add_images(NAI_FULL)
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        assert app.history is not None
        await pilot.press("f")
        await until(pilot, lambda: app.history.get(entry_id).favourite, "the favourite flag")  # type: ignore[union-attr]
        copy = config().gallery_dir / NAI_FULL
        source = app.history.get(entry_id).path  # type: ignore[union-attr]
        assert copy.read_bytes() == source.read_bytes()
        assert read_metadata(copy).seed == read_metadata(source).seed
        await until(pilot, lambda: "★" in str(table_of(screen).get_cell(str(entry_id), "favourite")), "the star")
        await pilot.press("f")  # unmark: the flag goes, the gallery copy stays
        await until(pilot, lambda: not app.history.get(entry_id).favourite, "the flag off")  # type: ignore[union-attr]
        assert copy.exists()


async def test_delete_moves_to_trash_and_u_restores_the_same_bytes() -> None:
    older, newer = add_images(FORGE, NAI_FULL)
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_history(pilot)
        assert app.history is not None
        original = app.history.get(newer).path  # type: ignore[union-attr]
        before = original.read_bytes()
        await pilot.press("d")
        await until(pilot, lambda: keys(screen) == [older], "the row to go")
        assert not original.exists()
        trashed = list((config().outputs_dir / ".trash").iterdir())
        assert [p.read_bytes() for p in trashed] == [before]
        assert any("u to undo" in str(n.message) for n in app._notifications)
        assert screen._selected == older  # the neighbour is selected
        await pilot.press("u")
        await until(pilot, lambda: keys(screen) == [newer, older], "the row to come back")
        assert original.read_bytes() == before
        assert not app.history.get(newer).deleted  # type: ignore[union-attr]
        assert screen._selected == newer


async def test_export_strips_the_metadata(tmp_path: Path) -> None:
    [entry_id] = add_images(NAI_FULL)
    target = tmp_path / "export"
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await open_history(pilot)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.focused, Input), "the export folder prompt")
        field = app.focused
        assert isinstance(field, Input) and field.value == "~/peropix-export"
        field.value = str(target)
        await pilot.press("enter")
        exported = target / NAI_FULL
        await until(pilot, exported.exists, "the exported file")
        assert read_metadata(exported).prompt is None
        assert app.history is not None
        source = app.history.get(entry_id).path  # type: ignore[union-attr]
        with Image.open(exported) as a, Image.open(source) as b:
            assert a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def generate_state(app: PeropixApp) -> tuple[str, str, ParameterForm]:
    screen = app.screen
    prompt = screen.query_one("#prompt-editor", PromptEditor).text
    negative = screen.query_one("#negative-editor", PromptEditor).text
    return prompt, negative, screen.query_one(ParameterForm)


async def test_apply_settings_back_fills_the_generate_screen_without_doubling_quality_tags() -> None:
    [entry_id] = add_images(NAI_FULL)
    meta = read_metadata(IMAGES / NAI_FULL)
    assert meta.prompt is not None and meta.negative_prompt is not None and meta.model is not None
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await open_history(pilot)
        await pilot.press("a")
        await until(pilot, lambda: app.current_mode == "generate", "the Generate mode")
        await until(pilot, lambda: "dancing" in generate_state(app)[0], "the prompt")
        prompt, negative, form = generate_state(app)
        assert "very aesthetic" not in prompt and "masterpiece" not in prompt
        assert form.query_one("#param-quality", Switch).value is True
        assert form.query_one("#param-seed", Input).value == str(meta.seed)
        assert form.query_one("#param-size", Select).value == "Square 1024×1024"
        assert form.query_one("#param-model", Select).value == meta.model
        request = form.request(prompt, negative)
        assert (request.width, request.height, request.seed, request.steps) == (
            meta.width,
            meta.height,
            meta.seed,
            meta.steps,
        )
        assert request.scale == meta.cfg and request.sampler == meta.sampler and request.scheduler == meta.scheduler
        # what the engine would send is the image's own text: quality tags and preset once, not twice
        sent = compose_prompts(
            request.prompt,
            request.negative,
            request.model,
            quality_tags=request.quality_tags,
            uc_preset=request.uc_preset,
            dataset=request.dataset,
        )
        assert sent == (meta.prompt, meta.negative_prompt)
        assert app.history is not None and app.history.get(entry_id) is not None


async def test_apply_prompt_only_and_seed_only() -> None:
    add_images(FORGE, NAI_CURATED)
    curated = read_metadata(IMAGES / NAI_CURATED)
    forge = read_metadata(IMAGES / FORGE)
    assert curated.model is not None and curated.seed != forge.seed
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await open_history(pilot)
        await pilot.press("p")  # the curated WebP is the newest: its prompts and their flags, nothing else
        await until(pilot, lambda: app.current_mode == "generate", "the Generate mode")
        await until(pilot, lambda: "hatsune miku" in generate_state(app)[0], "the prompt")
        prompt, negative, form = generate_state(app)
        assert form.uc_preset is UcPreset.LIGHT and negative == ""
        assert form.query_one("#param-seed", Input).value == ""
        # Its quality tags are an older web version's: kept as written with the switch off, so they stay single.
        quality = form.query_one("#param-quality", Switch).value
        sent = compose_prompts(prompt, negative, curated.model, quality_tags=quality, uc_preset=form.uc_preset)
        assert sent == (curated.prompt, curated.negative_prompt)
        assert sent[0].count("very aesthetic") == 1
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "the History mode")
        await pilot.press("down", "s")  # the Forge image: only its seed
        await until(pilot, lambda: app.current_mode == "generate", "the Generate mode again")
        await until(
            pilot, lambda: generate_state(app)[2].query_one("#param-seed", Input).value == str(forge.seed), "seed"
        )
        assert generate_state(app)[:2] == (prompt, negative)


async def test_thumbnail_shows_at_once_and_new_images_appear_without_rescan() -> None:
    [first] = add_images(FORGE)
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        preview = screen.query_one("#history-preview", ImagePreview)
        # the stored thumbnail is on screen before the full image's delayed decode has even started
        assert len(preview.query(".preview-image")) == 1
        assert app.history is not None
        day = config().outputs_dir / "2026-11-26"
        day.mkdir(parents=True)
        target = day / NAI_FULL
        shutil.copy(IMAGES / NAI_FULL, target)
        added = app.history.add(target, read_metadata(target), provider="nai", created=2e9)
        app.post_message(HistoryAdded(added))
        await until(pilot, lambda: keys(screen) == [added, first], "the new image on top")
        assert screen._selected == first  # the selection stays where it was
        # one saved while another mode is shown is there on coming back
        await pilot.press("f2")
        other = day / FORGE
        shutil.copy(IMAGES / FORGE, other)
        later = app.history.add(other, read_metadata(other), provider="nai", created=3e9)
        app.post_message(HistoryAdded(later))
        await pilot.pause(0.2)
        await pilot.press("f3")
        await until(pilot, lambda: keys(screen) == [later, added, first], "the image saved meanwhile")


async def test_rescan_indexes_files_added_outside_the_app() -> None:
    add_images(FORGE)
    app = PeropixApp(image_widget="off")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot)
        assert table_of(screen).row_count == 1
        extra = config().outputs_dir / "manual" / NAI_CURATED
        extra.parent.mkdir(parents=True)
        shutil.copy(IMAGES / NAI_CURATED, extra)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: table_of(screen).row_count == 2, "the rescanned file")
        assert app.history is not None
        assert {app.history.get(k).path.name for k in keys(screen)} == {FORGE, NAI_CURATED}  # type: ignore[union-attr]
