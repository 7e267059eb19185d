"""Image inputs from the TUI against the sandbox server running in this process: character prompts with positions,
vibes (encoded once, then taken from the cache), img2img from a history entry, a file named on the Generate screen,
and what the model refuses, in the engine's words.

Each test drives the app with keys where a user would press them, and checks what the sandbox received and what was
saved, not only what the screen shows.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Select

from peropix_tui.app import PeropixApp
from peropix_tui.core.metadata import read_metadata
from peropix_tui.engine.nai.client import ENCODE_PATH, STREAM_PATH
from peropix_tui.engine.types import CharacterPrompt
from peropix_tui.sandbox.nai_server import RecordedRequest
from peropix_tui.sandbox.session import SandboxSession, sandbox_session
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.screens.image_inputs import ImageInputsScreen
from peropix_tui.screens.use_image import UseImageScreen
from peropix_tui.widgets.character_list import CharacterList
from peropix_tui.widgets.image_inputs_bar import ImageInputsBar
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.prompt_editor import PromptEditor
from peropix_tui.widgets.vibe_list import VibeList

from .test_generate_session import bar_text, generation_ids, new_app, set_field, start, wait_until

SIZE = (120, 40)


def generation_requests(session: SandboxSession) -> list[RecordedRequest]:
    return [r for r in session.server.requests if r.path == STREAM_PATH]


def encode_requests(session: SandboxSession) -> list[RecordedRequest]:
    return [r for r in session.server.requests if r.path == ENCODE_PATH]


def form(app: PeropixApp) -> ParameterForm:
    return app.screen_stack[0].query_one(ParameterForm)


def inputs_bar(app: PeropixApp) -> ImageInputsBar:
    return app.screen_stack[0].query_one(ImageInputsBar)


def modal(app: App[Any]) -> ImageInputsScreen:
    assert isinstance(app.screen, ImageInputsScreen)
    return app.screen


def error_text(app: App[Any]) -> str:
    return str(modal(app).query_one("#inputs-error", Label).content)


def png_file(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


async def open_inputs(pilot: Pilot[Any]) -> ImageInputsScreen:
    await pilot.press("ctrl+t")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ImageInputsScreen), "the Images & characters modal")
    return modal(pilot.app)


async def add_character(pilot: Pilot[Any], prompt: str, position: str) -> None:
    screen = modal(pilot.app)
    screen.query_one("#char-table").focus()
    await pilot.press("n")
    await pilot.press(*prompt)
    screen.query_one("#char-position", Select).value = position
    await pilot.pause(0.05)


async def type_path(pilot: Pilot[Any], field_id: str, path: Path) -> None:
    field = pilot.app.screen.query_one(f"#{field_id}", Input)
    field.focus()
    field.value = str(path)
    await pilot.press("enter")


async def finish_jobs(pilot: Pilot[Any], app: PeropixApp, count: int) -> None:
    await wait_until(
        pilot, lambda: len(generation_ids(app)) == count and app.jobs.active_count == 0, "the jobs", limit=30
    )


async def test_two_characters_are_sent_saved_and_restored_from_history() -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            await open_inputs(pilot)
            await add_character(pilot, "1girl, red hair", "B2")
            await add_character(pilot, "1boy, black hair", "D2")
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the modal to close")
            characters = (CharacterPrompt("1girl, red hair", "", "B2"), CharacterPrompt("1boy, black hair", "", "D2"))
            assert form(app).image_inputs.characters == characters
            assert "2 characters" in str(inputs_bar(app).content)

            await pilot.press("f5")
            await finish_jobs(pilot, app, 1)
            [sent] = generation_requests(session)
            params = sent.body["parameters"]
            captions = params["v4_prompt"]["caption"]["char_captions"]
            assert [c["char_caption"] for c in captions] == ["1girl, red hair", "1boy, black hair"]
            assert [c["centers"] for c in captions] == [[{"x": 0.3, "y": 0.3}], [{"x": 0.7, "y": 0.3}]]
            assert params["v4_prompt"]["use_coords"] is True
            assert len(params["characterPrompts"]) == 2
            [saved] = list(app.config.outputs_dir.rglob("*.png"))
            meta = read_metadata(saved)
            assert [(c.prompt, c.centers) for c in meta.characters] == [
                ("1girl, red hair", ((0.3, 0.3),)),
                ("1boy, black hair", ((0.7, 0.3),)),
            ]

            # the characters cleared, then applied back with all the image's settings from the History pane
            await open_inputs(pilot)
            await pilot.press("f8", "escape")
            await wait_until(pilot, lambda: not form(app).image_inputs.characters, "the characters cleared")
            await pilot.press("f3")
            await wait_until(pilot, lambda: app.current_mode == "history", "the History pane")
            table = app.screen.query_one("#history-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, "the image in the history")
            table.focus()
            await pilot.press("a")
            await wait_until(pilot, lambda: form(app).image_inputs.characters == characters, "the characters back")
            assert app.current_mode == "generate"


async def test_a_vibe_is_encoded_once_across_two_jobs(tmp_path: Path) -> None:
    vibe = png_file(tmp_path / "mood.png", (320, 480), (30, 160, 90))
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            screen = await open_inputs(pilot)
            await pilot.press("f9")  # the Vibes tab
            await type_path(pilot, "vibe-path", vibe)
            pane = screen.query_one(VibeList)
            await wait_until(pilot, lambda: pane.states == (False,), "the vibe's cache state")
            assert "to encode: 2 Anlas" in str(pane.table.get_cell("1", "state"))
            await pilot.press("escape")
            await wait_until(pilot, lambda: "1 vibe (to encode)" in str(inputs_bar(app).content), "the summary")
            await wait_until(pilot, lambda: "Price 22 Anlas" in bar_text(app), "the price with one encoding")

            await pilot.press("f5")
            await finish_jobs(pilot, app, 1)
            assert len(encode_requests(session)) == 1
            assert session.server.balance(session.token) == 10_000 - 20 - 2
            # the bar looks the cache up again after the job: the encoding is there now and costs nothing
            await wait_until(pilot, lambda: "1 vibe (cached)" in str(inputs_bar(app).content), "the cached vibe")
            await wait_until(pilot, lambda: "Price 20 Anlas" in bar_text(app), "the price without encoding")

            await pilot.press("f5")
            await finish_jobs(pilot, app, 2)
            assert len(encode_requests(session)) == 1
            assert session.server.balance(session.token) == 10_000 - 40 - 2
            first, second = generation_requests(session)
            sent = [r.body["parameters"]["reference_image_multiple"] for r in (first, second)]
            assert sent[0] == sent[1] and len(sent[0]) == 1
            assert second.body["parameters"]["reference_strength_multiple"] == [0.6]


async def test_img2img_and_inpaint_from_history_entries(tmp_path: Path) -> None:
    mask = png_file(tmp_path / "mask.png", (832, 1216), (255, 255, 255))
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            await pilot.press("f5")
            await finish_jobs(pilot, app, 1)
            await pilot.press("f3")
            await wait_until(pilot, lambda: app.current_mode == "history", "the History pane")
            table = app.screen.query_one("#history-table", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, "the image in the history")
            table.focus()
            await pilot.press("b")
            await wait_until(pilot, lambda: isinstance(app.screen, ImageInputsScreen), "the modal on the Image tab")
            await wait_until(pilot, lambda: modal(app).inputs.source is not None, "the source read")
            assert "832×1216" in str(modal(app).query_one("#source-current", Label).content)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the modal to close")
            assert "img2img 0.70" in str(inputs_bar(app).content)

            await set_field(pilot, "param-width", "1024")
            await set_field(pilot, "param-height", "1024")
            await pilot.press("f5")
            await finish_jobs(pilot, app, 2)
            sent = generation_requests(session)[-1].body
            assert sent["action"] == "img2img"
            assert sent["parameters"]["strength"] == 0.7
            with Image.open(io.BytesIO(base64.b64decode(sent["parameters"]["image"]))) as source:
                assert source.size == (1024, 1024)

            # as the inpaint base: the mask is asked for next
            await pilot.press("f3")
            await wait_until(pilot, lambda: app.current_mode == "history", "the History pane")
            await wait_until(pilot, lambda: table.row_count == 2, "both images in the history")
            table.focus()
            await pilot.press("i")
            await wait_until(pilot, lambda: isinstance(app.screen, ImageInputsScreen), "the modal on the Image tab")
            await wait_until(pilot, lambda: app.screen.focused is app.screen.query_one("#mask-path"), "the mask asked")
            await type_path(pilot, "mask-path", mask)
            inpaint = (mask, "inpaint")
            await wait_until(
                pilot, lambda: (s := modal(app).inputs.source) is not None and (s.mask, s.action) == inpaint, "the mask"
            )
            await pilot.press("escape")
            await wait_until(pilot, lambda: "inpaint 0.70" in str(inputs_bar(app).content), "the inpaint summary")
            await pilot.press("f5")
            await finish_jobs(pilot, app, 3)
            sent = generation_requests(session)[-1].body
            assert sent["action"] == "infill" and sent["model"].endswith("-inpainting")
            assert "mask" in sent["parameters"]


async def test_exclusive_inputs_are_refused_in_the_engines_words(tmp_path: Path) -> None:
    picture = png_file(tmp_path / "pose.png", (512, 768), (200, 40, 90))
    dark_mask = picture  # marks nothing to repaint
    mask = png_file(tmp_path / "mask.png", (512, 768), (255, 255, 255))
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            screen = await open_inputs(pilot)
            await pilot.press("f9")
            await type_path(pilot, "vibe-path", picture)
            await wait_until(pilot, lambda: len(screen.inputs.vibes) == 1, "the vibe")
            await pilot.press("f9")  # Reference
            await type_path(pilot, "ref-path", picture)
            await wait_until(pilot, lambda: "cannot be used together" in error_text(app), "the refusal")
            assert error_text(app) == "vibes: vibe transfer and character reference cannot be used together"
            assert screen.inputs.reference is None

            await pilot.press("f9")  # Image: a mask would make it inpaint, which takes no vibes
            await type_path(pilot, "source-path", picture)
            await wait_until(pilot, lambda: screen.inputs.source is not None, "the source")
            await type_path(pilot, "mask-path", dark_mask)
            await wait_until(pilot, lambda: "marks nothing to repaint" in error_text(app), "the empty mask refused")
            await type_path(pilot, "mask-path", mask)
            await wait_until(pilot, lambda: "inpainting" in error_text(app), "the inpaint refusal")
            assert error_text(app) == "vibes: vibe transfer cannot be combined with inpainting"
            assert screen.inputs.source is not None and screen.inputs.source.mask is None
            await type_path(pilot, "source-path", text_file)
            await wait_until(pilot, lambda: "not an image that can be read" in error_text(app), "the bad file")
            assert str(text_file) in error_text(app)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the modal to close")

            # on V4 Full, which has no character reference, the reference tab says so and refuses one
            form(app).query_one("#param-model", Select).value = "nai-diffusion-4-full"
            await pilot.pause(0.1)
            screen = await open_inputs(pilot)
            note = str(screen.query_one("#ref-note", Label).content)
            assert note == "character_reference: only V4.5 models take a character reference, not NAI Diffusion V4 Full"
            screen.query_one(VibeList)  # the vibe is still there
            assert len(screen.inputs.vibes) == 1


async def test_a_file_named_on_the_generate_screen(tmp_path: Path) -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            await set_field(pilot, "param-seed", "4242")
            await pilot.press("f5")
            await finish_jobs(pilot, app, 1)
            [made] = list(app.config.outputs_dir.rglob("*.png"))
            await set_field(pilot, "param-seed", "")

            await pilot.press("ctrl+f")
            await wait_until(pilot, lambda: isinstance(app.screen, UseImageScreen), "the file chooser")
            await type_path(pilot, "use-path", made)
            choices = app.screen.query_one("#use-choices")
            await wait_until(pilot, lambda: not choices.disabled, "the choices")
            await pilot.press("s")
            await wait_until(pilot, lambda: form(app).query_one("#param-seed", Input).value == "4242", "the seed")

            await pilot.press("ctrl+f")
            await wait_until(pilot, lambda: isinstance(app.screen, UseImageScreen), "the file chooser")
            await type_path(pilot, "use-path", made)
            choices = app.screen.query_one("#use-choices")
            await wait_until(pilot, lambda: not choices.disabled, "the choices")
            await pilot.press("v")
            await wait_until(pilot, lambda: isinstance(app.screen, ImageInputsScreen), "the modal on the Vibes tab")
            await wait_until(pilot, lambda: len(modal(app).inputs.vibes) == 1, "the vibe read")
            assert modal(app).inputs.vibes[0].path == made
            await pilot.press("escape")
            await wait_until(pilot, lambda: len(form(app).image_inputs.vibes) == 1, "the vibe in the form")
            editor = app.screen.query_one("#prompt-editor", PromptEditor)
            assert editor.text  # the prompt typed at the start is untouched


async def test_character_list_keys_reorder_switch_off_and_refuse_past_the_limit() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await start(pilot, prompt="")
        screen = await open_inputs(pilot)
        for name in ("a", "b", "c", "d", "e", "f"):
            await add_character(pilot, name, "C3")
        pane = screen.query_one(CharacterList)
        pane.table.focus()
        await pilot.press("n")  # a seventh: V4.5 takes six
        await pilot.pause(0.1)
        assert error_text(app) == "characters: NAI Diffusion V4.5 Full takes at most 6 characters, not 7"
        assert [c.prompt for c in screen.inputs.characters] == ["a", "b", "c", "d", "e", "f"]
        pane.table.move_cursor(row=5)
        await pilot.press("shift+up", "space")
        await pilot.pause(0.1)
        assert [c.prompt for c in screen.inputs.characters] == ["a", "b", "c", "d", "f", "e"]
        assert [c.enabled for c in screen.inputs.characters] == [True, True, True, True, False, True]
        await pilot.press("d")
        await pilot.pause(0.1)
        assert [c.prompt for c in screen.inputs.characters] == ["a", "b", "c", "d", "e"]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the modal to close")
        assert "5 characters" in str(inputs_bar(app).content)
        request = form(app).request("x", "")
        assert [c.position for c in request.characters] == ["C3"] * 5
