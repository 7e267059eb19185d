"""Presets on the Generate screen: save the form, change it, apply the preset back; sizes; characters; files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Select, Switch, Tabs

from peropix_tui.app import PeropixApp
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.presets import (
    BUILTIN_RESOLUTIONS,
    CharacterPreset,
    ParameterPreset,
    PresetKind,
    PresetStore,
)
from peropix_tui.engine.types import CharacterPrompt
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.screens.presets import PresetsScreen
from peropix_tui.widgets.parameter_form import ParameterForm

from .helpers import generate_screen, new_app, run_from_palette, wait_until

SIZE = (100, 32)


def form(app: PeropixApp) -> ParameterForm:
    return generate_screen(app).query_one(ParameterForm)


def status(app: PeropixApp) -> str:
    return str(app.screen.query_one("#presets-status", Label).render())


def rows(app: PeropixApp) -> list[str]:
    table = app.screen.query_one("#presets-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def open_presets(pilot: Pilot[Any]) -> None:
    await pilot.press("f10")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, PresetsScreen), "the presets screen")


async def close_presets(pilot: Pilot[Any]) -> None:
    await pilot.press("escape")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, GenerateScreen), "back on Generate")


async def set_value(pilot: Pilot[Any], widget: Input | Select[str] | Switch, value: Any) -> None:
    widget.value = value
    await pilot.pause()


async def test_save_the_form_change_it_and_apply_the_preset_back() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        the_form = form(app)
        await set_value(pilot, the_form.query_one("#param-model", Select), "nai-diffusion-4-full")
        await set_value(pilot, the_form.query_one("#param-steps", Input), "23")
        await set_value(pilot, the_form.query_one("#param-scale", Input), "6.5")
        await set_value(pilot, the_form.query_one("#param-rescale", Input), "0.2")
        await set_value(pilot, the_form.query_one("#param-sampler", Select), "k_dpmpp_2m")
        await set_value(pilot, the_form.query_one("#param-schedule", Select), "exponential")
        await set_value(pilot, the_form.query_one("#param-variety", Switch), True)
        await set_value(pilot, the_form.query_one("#param-quality", Switch), False)
        before = the_form.request("1girl", "")

        await open_presets(pilot)
        assert rows(app) == []
        app.screen.query_one("#preset-name", Input).focus()
        await pilot.press(*"My V4", "ctrl+s")
        assert status(app).startswith("Parameters preset 'My V4' saved: nai-diffusion-4-full · 23 steps")
        assert rows(app) == ["My V4"]
        saved = PresetStore.in_config_dir(app.dirs.config_dir).saved(ParameterPreset)
        assert saved == [
            ParameterPreset(
                "My V4",
                model="nai-diffusion-4-full",
                steps=23,
                scale=6.5,
                cfg_rescale=0.2,
                sampler="k_dpmpp_2m",
                scheduler="exponential",
                variety=True,
                quality_tags=False,
                uc_preset="heavy",
            )
        ]
        await close_presets(pilot)

        await set_value(pilot, the_form.query_one("#param-model", Select), "nai-diffusion-4-5-full")
        await set_value(pilot, the_form.query_one("#param-steps", Input), "40")
        await set_value(pilot, the_form.query_one("#param-rescale", Input), "0")
        await set_value(pilot, the_form.query_one("#param-sampler", Select), "k_euler")
        await set_value(pilot, the_form.query_one("#param-variety", Switch), False)
        await set_value(pilot, the_form.query_one("#param-quality", Switch), True)
        assert the_form.request("1girl", "") != before

        await open_presets(pilot)
        await pilot.press("enter")  # the table has the focus, its cursor on the only preset
        await pilot.pause()
        assert status(app) == "Applied 'My V4'"
        assert the_form.request("1girl", "") == before


async def test_sizes_apply_and_save() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await open_presets(pilot)
        await pilot.press("s")
        assert app.screen.query_one("#presets-tabs", Tabs).active == "resolutions"
        assert rows(app) == [p.name for p in BUILTIN_RESOLUTIONS]
        await pilot.press("down", "enter")  # Landscape
        await pilot.pause()
        assert form(app).image_size() == (1216, 832)
        assert form(app).query_one("#param-size", Select).value == "Landscape 1216×832"

        await close_presets(pilot)
        await set_value(pilot, form(app).query_one("#param-size", Select), "custom")
        await set_value(pilot, form(app).query_one("#param-width", Input), "1472")
        await set_value(pilot, form(app).query_one("#param-height", Input), "640")
        await open_presets(pilot)
        await pilot.press("s")
        app.screen.query_one("#preset-name", Input).focus()
        await pilot.press(*"Banner", "ctrl+s")
        assert rows(app)[-1] == "Banner"
        await close_presets(pilot)
        form(app).set_size(832, 1216)
        await pilot.pause()
        await open_presets(pilot)
        await pilot.press("s", *["down"] * len(BUILTIN_RESOLUTIONS), "enter")  # the last row
        await pilot.pause()
        assert form(app).image_size() == (1472, 640)
        assert form(app).query_one("#param-size", Select).value == "custom"

        await pilot.press(*["up"] * len(BUILTIN_RESOLUTIONS), "x")  # a built-in size cannot be deleted
        assert "'Portrait' is a built-in size" in status(app)


async def test_character_presets_add_to_the_form_and_are_saved_from_it() -> None:
    app = new_app()
    store = PresetStore.in_config_dir(AppDirs.from_env().config_dir)
    store.save(CharacterPreset("Alice", "1girl, blonde hair", "hat", "B2"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        the_form = form(app)
        await open_presets(pilot)
        await pilot.press("c")
        assert rows(app) == ["Alice"]
        await pilot.press("enter")
        await pilot.pause()
        assert the_form.image_inputs.characters == (CharacterPrompt("1girl, blonde hair", "hat", "B2"),)
        assert status(app) == "Character 'Alice' added (1 in the form)"

        inputs = the_form.image_inputs
        the_form.set_image_inputs(inputs.with_characters((*inputs.characters, CharacterPrompt("1boy, red scarf"))))
        await close_presets(pilot)
        await open_presets(pilot)
        await pilot.press("c")
        choice = app.screen.query_one("#preset-character", Select)
        await set_value(pilot, choice, "1")
        app.screen.query_one("#preset-name", Input).focus()
        await pilot.press(*"Bob", "ctrl+s")
        assert store.saved(CharacterPreset) == [
            CharacterPreset("Alice", "1girl, blonde hair", "hat", "B2"),
            CharacterPreset("Bob", "1boy, red scarf"),
        ]


async def test_export_then_import_into_a_fresh_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exported = tmp_path / "shared" / "my-presets.json"
    first = new_app()
    store = PresetStore.in_config_dir(first.dirs.config_dir)
    store.save(ParameterPreset("Fast", model="nai-diffusion-4-5-full", steps=20, scale=5.0))
    store.save(CharacterPreset("Alice", "1girl", position="C3"))
    async with first.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await open_presets(pilot)
        exported.parent.mkdir()
        first.screen.query_one("#preset-file", Input).value = str(exported)
        await pilot.press("ctrl+t")
        assert status(first) == f"2 presets exported to {exported}"
    assert [p["name"] for p in orjson.loads(exported.read_bytes())["parameters"]] == ["Fast"]

    monkeypatch.setenv("PEROPIX_CONFIG_DIR", str(tmp_path / "fresh-config"))
    second = new_app()
    assert second.dirs.config_dir == tmp_path / "fresh-config"
    fresh = PresetStore.in_config_dir(second.dirs.config_dir)
    fresh.save(ParameterPreset("Fast", steps=50))
    async with second.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await open_presets(pilot)
        assert rows(second) == ["Fast"]
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "peropix-presets", "version": 1, "characters": [{"name": "X", "position": "Z9"}]}')
        second.screen.query_one("#preset-file", Input).value = str(bad)
        await pilot.press("ctrl+o")
        assert status(second) == (
            f"{bad}: characters[1] ('X'): position must be a grid cell A1..E5 (column A-E, row 1-5), not 'Z9'"
        )
        assert fresh.saved(CharacterPreset) == []

        second.screen.query_one("#preset-file", Input).value = str(exported)
        await pilot.press("ctrl+o")
        assert status(second) == "2 presets imported from my-presets.json: 1 new, 1 replaced (parameters 'Fast')"
        assert rows(second) == ["Fast"]
        await pilot.press("c")
        assert rows(second) == ["Alice"]
    assert fresh.saved(ParameterPreset) == store.saved(ParameterPreset)
    assert fresh.saved(CharacterPreset) == store.saved(CharacterPreset)
    assert fresh.path(PresetKind.CHARACTERS).is_file()


async def test_delete_asks_first_and_names_are_required() -> None:
    app = new_app()
    store = PresetStore.in_config_dir(AppDirs.from_env().config_dir)
    store.save(ParameterPreset("One", steps=10))
    store.save(ParameterPreset("Two", steps=20))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await run_from_palette(pilot, "presets", PresetsScreen)  # the command palette offers the presets too
        await pilot.press("ctrl+s")
        assert status(app) == "Type a name for the preset first"
        assert app.focused is app.screen.query_one("#preset-name", Input)
        app.screen.query_one("#presets-table", DataTable).focus()
        await pilot.press("x")
        await pilot.press("n")  # kept
        await pilot.pause()
        assert rows(app) == ["One", "Two"]
        await pilot.press("down", "x", "y")
        await pilot.pause()
        assert rows(app) == ["One"]
        assert [p.name for p in store.saved(ParameterPreset)] == ["One"]
        await pilot.press("ctrl+t")
        assert status(app) == "Type the path of a JSON file first"
