"""Slot mode on the Generate screen, driven by keys against the sandbox server running in this process."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, OptionList

from peropix_tui.app import PeropixApp
from peropix_tui.core.jobs import JobState
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.slots import Slot, SlotLibrary, SlotSet
from peropix_tui.engine.nai.cost import estimate_cost
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.screens.confirm import ConfirmScreen
from peropix_tui.screens.generate import GENERATION_KIND, GenerateScreen
from peropix_tui.screens.slots import SlotSetPicker, SlotsScreen
from peropix_tui.widgets.prompt_editor import PromptEditor

from .helpers import generate_screen, new_app, run_from_palette, start, wait_until

SIZE = (100, 32)
BASE = "1girl, solo, "


def slots_screen(app: PeropixApp) -> SlotsScreen:
    assert isinstance(app.screen, SlotsScreen)
    return app.screen


def table_rows(app: PeropixApp) -> list[tuple[str, ...]]:
    table = slots_screen(app).query_one("#slots-table", DataTable)
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def add_slot(pilot: Pilot[Any], name: str, part: str) -> None:
    """a adds a slot after the cursor and focuses its name; tab goes on to the repeat field, then the part."""
    app = pilot.app
    await pilot.press("a")
    name_field = app.screen.query_one("#slot-name", Input)
    assert app.focused is name_field
    name_field.value = name  # the field's text is selected on focus: typing replaces it, as setting it does
    await pilot.pause()
    app.screen.query_one("#slot-prompt", PromptEditor).focus()
    await pilot.press(*part)
    app.screen.query_one("#slots-table", DataTable).focus()
    await pilot.pause()


async def test_three_slots_one_locked_twice_queue_four_priced_jobs() -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot, BASE)
            await pilot.press("f9")
            await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the slots screen")
            assert "No slots yet" in str(app.screen.query_one("#slots-status", Label).render())

            await add_slot(pilot, "Red", "red hair, ")
            await add_slot(pilot, "Blue", "blue hair")
            await add_slot(pilot, "Green", ", green hair")
            assert [r[1:3] for r in table_rows(app)] == [
                ("Red", "red hair,"),
                ("Blue", "blue hair"),
                ("Green", ", green hair"),
            ]
            table = app.screen.query_one("#slots-table", DataTable)
            table.move_cursor(row=1)
            await pilot.press("l")  # lock Blue
            assert table_rows(app)[1][3] == "locked"
            repeat = app.screen.query_one("#slots-repeat", Input)
            repeat.value = "2"
            await pilot.pause()
            status = str(app.screen.query_one("#slots-status", Label).render())
            assert status == "Slots: 3 (1 locked) × 2 → 4 jobs"

            await pilot.press("f5")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
            base = generate_screen(app).current_request()
            account = app.nai.subscription.account if app.nai.subscription else None
            per_job = estimate_cost(base, account).total
            confirm = app.screen
            assert isinstance(confirm, ConfirmScreen)
            question = confirm.question
            assert question.startswith("Queue 4 jobs (2 slots × 2)?")
            assert f"The whole queue costs {4 * per_job:,} Anlas." in question
            assert per_job == 20  # 832×1216 at 28 steps on a Scroll account
            await pilot.press("y")

            await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "back on Generate")
            jobs = [job for job in app.jobs.jobs if job.kind == GENERATION_KIND]
            assert [job.name for job in jobs] == [
                "[Red] 1girl, solo, red hair,",
                "[Green] 1girl, solo, green hair",
                "[Red] 1girl, solo, red hair,",
                "[Green] 1girl, solo, green hair",
            ]
            summary = generate_screen(app).query_one("#generate-slots", Label)
            assert summary.display and str(summary.render()) == "Slots: 3 (1 locked) × 2"
            await wait_until(pilot, lambda: app.jobs.active_count == 0, "the queue to finish", limit=60)
            assert [job.state for job in jobs] == [JobState.DONE] * 4
            sent = [r.body["input"] for r in session.server.requests if r.path.endswith("/generate-image-stream")]
            assert len(sent) == 4
            assert [s.startswith("1girl, solo, red hair, ") for s in sent] == [True, False, True, False]
            assert all(s.startswith("1girl, solo, green hair") for s in sent[1::2])
            assert session.server.balance(session.token) == 10_000 - 4 * per_job

            # the set outlives the modal
            await pilot.press("f9")
            await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the slots screen again")
            assert [r[1] for r in table_rows(app)] == ["Red", "Blue", "Green"]
            assert app.screen.query_one("#slots-repeat", Input).value == "2"


async def test_reorder_duplicate_delete_and_refused_names() -> None:
    app = new_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        generate_screen(app).slot_set = SlotSet((Slot("A", "a"), Slot("B", "b"), Slot("C", "c")))
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the slots screen")
        table = app.screen.query_one("#slots-table", DataTable)
        table.move_cursor(row=2)
        await pilot.press("shift+up")
        assert [r[1] for r in table_rows(app)] == ["A", "C", "B"]
        assert table.cursor_row == 1  # the moved slot stays under the cursor
        await pilot.press("shift+up", "shift+up")  # stops at the top
        assert [r[1] for r in table_rows(app)] == ["C", "A", "B"]
        await pilot.press("shift+down")
        assert [r[1] for r in table_rows(app)] == ["A", "C", "B"]

        await pilot.press("c")  # duplicate C, right after it
        assert [r[1] for r in table_rows(app)] == ["A", "C", "C 2", "B"]
        assert table_rows(app)[2][2] == "c"
        assert table.cursor_row == 2

        name = app.screen.query_one("#slot-name", Input)
        name.value = "a"  # taken (names compare without case): refused, the slot keeps its name
        await pilot.pause()
        assert "two slots are named 'a'" in str(app.screen.query_one("#slots-status", Label).render())
        assert table_rows(app)[2][1] == "C 2"
        name.value = "D"
        await pilot.pause()
        assert table_rows(app)[2][1] == "D"

        table.focus()
        await pilot.press("x")  # a slot with a part asks first
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the delete question")
        await pilot.press("y")
        await pilot.pause()
        assert [r[1] for r in table_rows(app)] == ["A", "C", "B"]
        await pilot.press("escape")
        await pilot.pause()
        kept = generate_screen(app).slot_set
        assert kept is not None and [s.name for s in kept.slots] == ["A", "C", "B"]


async def test_save_and_load_slot_sets() -> None:
    app = new_app()
    library = SlotLibrary.in_config_dir(AppDirs.from_env().config_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        first = SlotSet((Slot("Day", "daylight"), Slot("Night", "night sky", "sun", locked=True)), 3)
        generate_screen(app).slot_set = first
        await pilot.press("f9")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the slots screen")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotSetPicker), "the name prompt")
        await pilot.press(*"Time of day", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the set saved")
        assert library.names() == ["Time of day"]
        assert library.load("Time of day") == first

        # another set in use, then the saved one loaded back over it
        table = app.screen.query_one("#slots-table", DataTable)
        await pilot.press("x")  # Day has a part: asked first
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the delete question")
        await pilot.press("y")
        await pilot.pause()
        assert [r[1] for r in table_rows(app)] == ["Night"]
        library.save("Other", SlotSet((Slot("X"),)))
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotSetPicker), "the list of sets")
        options = app.screen.query_one("#slot-sets-list", OptionList)
        assert [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)] == [
            "Other",
            "Time of day",
        ]
        assert options.highlighted == 1  # the set last saved here
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the set loaded")
        assert generate_screen(app).slot_set == first
        assert [r[1] for r in table_rows(app)] == ["Day", "Night"]
        assert app.screen.query_one("#slots-repeat", Input).value == "3"
        assert table.cursor_row == 0

        # a saved set can be deleted from the list
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotSetPicker), "the list of sets")
        await pilot.press("up", "delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the delete question")
        await pilot.press("y")
        await wait_until(pilot, lambda: library.names() == ["Time of day"], "the set deleted")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, SlotsScreen), "the slots screen")


async def test_queue_all_needs_valid_settings_and_an_unlocked_slot() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        generate_screen(app).slot_set = SlotSet((Slot("Only", "x", locked=True),))
        await run_from_palette(pilot, "slots", SlotsScreen)  # the command palette offers the slots too
        await pilot.press("f5")
        await pilot.pause()
        assert isinstance(app.screen, SlotsScreen)
        assert any("No unlocked slot" in n.message for n in app._notifications)
        await pilot.press("l", "f5")  # unlocked, but no token and no sandbox
        await pilot.pause()
        assert isinstance(app.screen, SlotsScreen)
        assert any("No NovelAI token" in n.message for n in app._notifications)
        assert not [job for job in app.jobs.jobs if job.kind == GENERATION_KIND]
