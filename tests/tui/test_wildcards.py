"""Wildcards in the TUI: highlighted and completed in the editor, drawn per job against the sandbox server, recorded
in each image's metadata, and reproduced exactly when an image's settings are applied back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot

from peropix_tui.app import PeropixApp
from peropix_tui.core.jobs import JobState
from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.prompt.wildcards import RECORD_KEY, WildcardLibrary, expand_wildcards
from peropix_tui.core.vocabulary import Candidate, Vocabulary
from peropix_tui.messages import ApplySettings
from peropix_tui.sandbox.nai_faults import GENERATE_PATH, STREAM_PATH
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.widgets.job_queue import JobQueue
from peropix_tui.widgets.prompt_editor import PromptEditor, PromptField

from .helpers import SIZE, cell, generation_ids, new_app, notifications, screen, start, wait_until

TEMPLATE = "1girl, <pick:red|blue> dress, __hair__"
HAIR = ["silver hair", "black hair", "pink hair"]


def wildcards_dir(isolated_dirs: tuple[Path, Path]) -> Path:
    folder = isolated_dirs[0] / "wildcards"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def set_prompt(pilot: Pilot[Any], text: str) -> PromptEditor:
    editor = screen(pilot.app).query_one("#prompt-editor", PromptEditor)  # type: ignore[arg-type]
    editor.text = text
    await pilot.pause(0.05)
    return editor


async def test_three_jobs_draw_three_variations_recorded_in_their_images(isolated_dirs: tuple[Path, Path]) -> None:
    folder = wildcards_dir(isolated_dirs)
    (folder / "hair.txt").write_text("# hair\n" + "\n".join(HAIR) + "\n", encoding="utf-8")
    with sandbox_session() as session:
        app = new_app(session)
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await start(pilot, "")
            await set_prompt(pilot, TEMPLATE)
            for _ in range(3):
                await pilot.press("f5")
            queue = screen(app).query_one(JobQueue)
            await wait_until(pilot, lambda: queue.row_count == 3, "three rows")
            jobs = generation_ids(app)
            await wait_until(pilot, lambda: app.jobs.active_count == 0, "the queue to finish", limit=40)
            assert [app.jobs.get(j).state for j in jobs] == [JobState.DONE] * 3
            assert not notifications(messages, "error")

            files = sorted(app.config.outputs_dir.rglob("*.png"))
            assert len(files) == 3
            library = WildcardLibrary(folder)
            seeds = set()
            prompts = []
            for file in files:
                meta = read_metadata(file)
                record = meta.peropix[RECORD_KEY]
                assert record["template"] == {"prompt": TEMPLATE}
                (pick, hair) = record["choices"]
                assert (pick["source"], pick["count"], hair["source"], hair["count"]) == (
                    "<pick:red|blue>",
                    2,
                    "__hair__",
                    3,
                )
                assert pick["value"] in ("red", "blue") and hair["value"] == HAIR[hair["index"]]
                drawn = f"1girl, {pick['value']} dress, {hair['value']}"
                assert (meta.prompt or "").startswith(drawn + ", very aesthetic")  # the model's quality tags follow
                # the template, the files and the recorded seed give the very same prompt again
                assert expand_wildcards(TEMPLATE, library, record["seed"]).text == drawn
                assert meta.peropix["provider"] == "sandbox"
                seeds.add(record["seed"])
                prompts.append(drawn)
            assert len(seeds) == 3  # a fresh draw for every job
            # the queue names each job by the prompt it drew
            assert sorted(cell(queue, j, "name") for j in jobs) == sorted(prompts)

            # the history keeps the record too, and applying an image back gives the prompt it was made with
            entries = app.open_history().page(0, 10)
            assert len(entries) == 3
            entry = entries[0]
            assert entry.metadata().peropix[RECORD_KEY]["template"]["prompt"] == TEMPLATE
            editor = screen(app).query_one("#prompt-editor", PromptEditor)
            editor.text = "something else"
            app.post_message(ApplySettings(entry.metadata(), "all", entry.path.name))
            await wait_until(pilot, lambda: editor.text in prompts, "the applied prompt")
            assert (entry.metadata().prompt or "").startswith(editor.text + ", very aesthetic")
            notes = [m.notification.message for m in messages if isinstance(m, Notify)]
            assert any("drawn from wildcards" in note and TEMPLATE in note for note in notes), notes


async def test_a_missing_wildcard_fails_the_job_and_a_retry_draws_again(isolated_dirs: tuple[Path, Path]) -> None:
    folder = wildcards_dir(isolated_dirs)
    with sandbox_session() as session:
        app = new_app(session)
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await start(pilot, "")
            await set_prompt(pilot, "1girl, __mood__")
            await pilot.press("f5")
            queue = screen(app).query_one(JobQueue)
            await wait_until(pilot, lambda: queue.row_count == 1, "the job's row")
            [failed] = generation_ids(app)
            assert cell(queue, failed, "name") == "1girl, __mood__"  # nothing could be drawn
            await wait_until(pilot, lambda: app.jobs.get(failed).state is JobState.FAILED, "the job to fail")
            errors = notifications(messages, "error")
            assert any(f"no wildcard file {folder / 'mood.txt'} for __mood__" in e for e in errors), errors
            assert not [r for r in session.server.requests if r.path in (GENERATE_PATH, STREAM_PATH)]

            (folder / "mood.txt").write_text("smile\n", encoding="utf-8")
            queue.focus()
            await pilot.press("r")
            await wait_until(pilot, lambda: len(generation_ids(app)) == 2, "the retry")
            retry = generation_ids(app)[1]
            await wait_until(pilot, lambda: app.jobs.get(retry).state is JobState.DONE, "the retry to finish")
            [file] = app.config.outputs_dir.rglob("*.png")
            meta = read_metadata(file)
            assert (meta.prompt or "").startswith("1girl, smile, ")
            assert meta.peropix[RECORD_KEY]["template"] == {"prompt": "1girl, __mood__"}


async def test_prompt_without_wildcards_is_sent_as_typed_with_no_record() -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot, "")
            await set_prompt(pilot, "1girl, long_hair, {smile}, a|b")
            await pilot.press("f5")
            await wait_until(pilot, lambda: app.jobs.active_count == 0 and generation_ids(app) != [], "the image")
            [file] = app.config.outputs_dir.rglob("*.png")
            meta = read_metadata(file)
            assert (meta.prompt or "").startswith("1girl, long_hair, {smile}, a|b, ")
            assert RECORD_KEY not in meta.peropix


async def test_wildcard_names_from_the_config_dir_complete_after_two_underscores(
    isolated_dirs: tuple[Path, Path],
) -> None:
    folder = wildcards_dir(isolated_dirs)
    (folder / "outfits").mkdir()
    (folder / "outfits" / "summer.txt").write_text("sundress\n", encoding="utf-8")
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        editor = screen(app).query_one("#prompt-editor", PromptEditor)
        await wait_until(
            pilot, lambda: bool(editor.vocabulary.complete("outf", kind="wildcard")), "the wildcard names", limit=30
        )
        editor.focus()
        await pilot.press(*"1girl, __outf")
        await pilot.pause()
        assert editor.suggestion == "its/summer"
        await pilot.press("tab")
        assert editor.text == "1girl, __outfits/summer__"


class EditorApp(App[None]):
    def __init__(self, vocabulary: Vocabulary) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        yield PromptField("Prompt", vocabulary=self.vocabulary, id="prompt")


async def test_wildcards_and_picks_are_highlighted_and_completion_closes_the_name() -> None:
    app = EditorApp(Vocabulary([Candidate("hair_colour", "wildcard", detail="wildcard file")]))
    async with app.run_test() as pilot:
        editor = app.query_one(PromptEditor)
        editor.focus()
        editor.text = "a, __hair__ <pick:red|x\\|y> b"
        await pilot.pause()
        line = editor.document.get_line(0).encode()
        names = [(line[s:e].decode(), str(n)) for s, e, n in editor._highlights[0] if n != "text"]
        assert names == [
            (",", "comma"),
            ("__hair__", "wildcard"),
            ("<pick:", "pick.open"),
            ("|", "pick.sep"),
            ("\\|", "pick.escape"),
            (">", "pick.close"),
        ]
        editor.text = ""
        await pilot.press(*"1girl, __hair_c")
        await pilot.pause()
        assert editor.suggestion == "olour"
        status = str(app.query_one(".prompt-status").render())
        assert "Tab → hair_colour · wildcard file" in status
        await pilot.press("tab")
        assert editor.text == "1girl, __hair_colour__"
