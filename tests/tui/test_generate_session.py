"""Generating from the TUI against the real sandbox server running in this process.

Each test starts the sandbox (its HTTP server on a loopback port, the environment pointed at it) and drives the
app with key presses: queue jobs, watch their progress in the queue table and the preview, cancel and retry from
the table, and check what landed in the outputs folder and the history store.
"""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Input

from peropix_tui.core.jobs import JobState
from peropix_tui.core.metadata import read_metadata
from peropix_tui.engine.nai.cost import estimate_cost
from peropix_tui.engine.nai.models import MAX_SEED
from peropix_tui.messages import HistoryAdded
from peropix_tui.sandbox.nai_accounts import OPUS_TIER, SandboxAccount
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.widgets.job_queue import JobQueue
from peropix_tui.widgets.parameter_form import ParameterForm
from peropix_tui.widgets.prompt_editor import PromptEditor
from peropix_tui.widgets.stream_preview import StreamPreview

from .helpers import (
    PROMPT,
    SIZE,
    bar_text,
    cell,
    generation_ids,
    new_app,
    notifications,
    screen,
    set_field,
    start,
    wait_until,
)


async def test_three_jobs_progress_cancel_and_two_saved() -> None:
    # Each job streams for 3 s: long enough for the presses below (a Pilot press waits up to 1 s for the app to
    # be idle, which it is not while frames arrive) to happen while the first job runs.
    with sandbox_session(delay_s=3.0) as session:
        app = new_app(session)
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await start(pilot)
            for _ in range(3):
                await pilot.press("f5")
            queue = screen(app).query_one(JobQueue)
            await wait_until(pilot, lambda: queue.row_count == 3, "three rows in the queue")
            first, second, third = generation_ids(app)
            assert cell(queue, third, "state") == "queued"
            assert cell(queue, first, "price") == "20"  # 832x1216, 28 steps, a Scroll account

            # the running job's progress is drawn in its row while the stream arrives
            await wait_until(
                pilot,
                lambda: cell(queue, first, "state") == "running" and cell(queue, first, "progress") not in ("", "0%"),
                "progress of the first job",
            )
            queue.focus()
            queue.move_cursor(row=2)
            await pilot.press("x")
            await wait_until(pilot, lambda: app.jobs.active_count == 0, "the queue to finish", limit=30)

            states = [app.jobs.get(job_id).state for job_id in (first, second, third)]
            assert states == [JobState.DONE, JobState.DONE, JobState.CANCELLED]
            assert [cell(queue, j, "state") for j in (first, second, third)] == ["done", "done", "cancelled"]
            assert cell(queue, first, "progress") == "100%"

            steps = [m.event for m in messages if isinstance(m, JobQueue.Updated) and m.event.kind == "progress"]
            assert steps, "no progress event reached the table"
            assert {e.progress.total for e in steps} == {28}
            assert all(isinstance(e.extra.get("preview"), bytes) for e in steps)
            assert {e.job_id for e in steps} <= {first, second}

            files = sorted(app.config.outputs_dir.rglob("*.png"))
            assert len(files) == 2
            entries = app.open_history().page(0, 10)
            assert {e.path for e in entries} == {f.resolve() for f in files}
            assert {e.provider for e in entries} == {"sandbox"}
            assert all(e.prompt.startswith(PROMPT) for e in entries)
            added = {m.entry_id for m in messages if isinstance(m, HistoryAdded)}
            assert added == {e.id for e in entries}
            assert read_metadata(files[0]).peropix["provider"] == "sandbox"

            preview = screen(app).query_one(StreamPreview)
            await wait_until(pilot, lambda: bool(preview.query(".preview-image")), "the final image in the preview")
            assert preview.decoded >= 2
            assert not notifications(messages, "error")


async def test_payment_error_is_notified_and_the_failed_job_retried() -> None:
    with sandbox_session(balance=5) as session:
        app = new_app(session)
        messages: list[Message] = []
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await start(pilot)
            assert "Balance 5 Anlas (Scroll)" in bar_text(app)
            await pilot.press("ctrl+enter")
            queue = screen(app).query_one(JobQueue)
            await wait_until(pilot, lambda: queue.row_count == 1, "the job's row")
            [failed] = generation_ids(app)
            await wait_until(pilot, lambda: app.jobs.get(failed).state is JobState.FAILED, "the job to fail")
            await wait_until(pilot, lambda: cell(queue, failed, "state") == "failed", "the failed row")
            errors = notifications(messages, "error")
            # the server's own words reach the user
            assert any("HTTP 402" in e and "the request costs 20, the balance is 5" in e for e in errors), errors
            assert not list(app.config.outputs_dir.rglob("*.png"))

            session.server.set_account(session.token, SandboxAccount(fixed_anlas=1000))
            queue.focus()
            await pilot.press("r")
            await wait_until(pilot, lambda: len(generation_ids(app)) == 2, "the retry")
            retry = generation_ids(app)[1]
            assert app.jobs.get(retry).retry_of == failed
            await wait_until(pilot, lambda: app.jobs.get(retry).state is JobState.DONE, "the retry to finish")
            await wait_until(pilot, lambda: str(retry) in queue.rows and cell(queue, retry, "state") == "done", "row")
            assert str(failed) not in queue.rows
            assert cell(queue, retry, "price") == "20"
            assert len(list(app.config.outputs_dir.rglob("*.png"))) == 1
            await wait_until(pilot, lambda: "Balance 980 Anlas" in bar_text(app), "the balance after the image")


async def test_price_follows_the_settings_and_the_balance_follows_generations() -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            assert "Price 20 Anlas" in bar_text(app)
            assert "Balance 10,000 Anlas (Scroll)" in bar_text(app)
            assert "SANDBOX" in bar_text(app) and "FREE" not in bar_text(app)
            assert "SANDBOX" in app.sub_title

            await set_field(pilot, "param-steps", "40")
            request = screen(app).current_request()
            expected = estimate_cost(request, app.nai.subscription.account if app.nai.subscription else None)
            assert expected.total != 20
            await wait_until(pilot, lambda: f"Price {expected.total} Anlas" in bar_text(app), "the new price")

            await pilot.press("f5")
            await wait_until(pilot, lambda: app.jobs.active_count == 0 and generation_ids(app) != [], "the image")
            balance = 10_000 - expected.total
            await wait_until(pilot, lambda: f"Balance {balance:,} Anlas" in bar_text(app), "the new balance")
            assert session.server.balance(session.token) == balance


async def test_free_badge_on_opus() -> None:
    with sandbox_session() as session:
        session.server.set_account(session.token, SandboxAccount(tier=OPUS_TIER, fixed_anlas=500))
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            await wait_until(pilot, lambda: "FREE" in bar_text(app), "the FREE badge")
            assert "Price 0 Anlas" in bar_text(app) and "(Opus)" in bar_text(app)
            await set_field(pilot, "param-steps", "29")  # more than 28 steps is never free
            await wait_until(pilot, lambda: "FREE" not in bar_text(app), "the badge to go")
            assert "Price 0 Anlas" not in bar_text(app)


async def test_no_token_refuses_to_queue() -> None:
    app = new_app()
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await start(pilot)
        assert "No NovelAI token" in bar_text(app)
        await pilot.press("f5")
        await pilot.pause(0.2)
        assert generation_ids(app) == []
        assert any("No NovelAI token" in e for e in notifications(messages, "error"))


async def test_roll_seed_and_recall_the_last_image() -> None:
    with sandbox_session() as session:
        app = new_app(session)
        async with app.run_test(size=SIZE) as pilot:
            await start(pilot)
            seed_field = screen(app).query_one("#param-seed", Input)
            await pilot.press("ctrl+r")
            first = int(seed_field.value)
            await pilot.press("ctrl+r")
            assert 1 <= first <= MAX_SEED and 1 <= int(seed_field.value) <= MAX_SEED
            assert int(seed_field.value) != first

            await set_field(pilot, "param-seed", "123456")
            await set_field(pilot, "param-steps", "20")
            await pilot.press("f5")
            await wait_until(pilot, lambda: app.jobs.active_count == 0 and generation_ids(app) != [], "the image")
            sent = screen(app).current_request()

            await set_field(pilot, "param-seed", "")
            await set_field(pilot, "param-steps", "28")
            editor = screen(app).query_one("#prompt-editor", PromptEditor)
            editor.text = "something else"
            await pilot.press("f8")
            await wait_until(pilot, lambda: seed_field.value == "123456", "the recalled seed")
            recalled = screen(app).query_one(ParameterForm).request(editor.text, "")
            assert (recalled.seed, recalled.steps, recalled.width, recalled.height) == (123456, 20, 832, 1216)
            assert recalled.model == sent.model and recalled.sampler == sent.sampler
            assert editor.text == PROMPT
