"""Pilot helpers shared by the TUI tests: the app on the Generate screen (with or without the in-process sandbox
session), waiting on it, typing into it and reading its queue and notifications."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.command import CommandPalette
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from peropix_tui.app import PeropixApp
from peropix_tui.sandbox.session import SandboxSession
from peropix_tui.screens.generate import GENERATION_KIND, GenerateScreen
from peropix_tui.widgets.anlas_bar import AnlasBar
from peropix_tui.widgets.job_queue import JobQueue

SIZE = (120, 40)
PROMPT = "1girl, silver hair, night"


def new_app(session: SandboxSession | None = None) -> PeropixApp:
    return PeropixApp(image_widget="halfcell", sandbox=session)


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.03)


def screen(app: PeropixApp) -> GenerateScreen:
    """The Generate screen, which must be the one shown."""
    assert isinstance(app.screen, GenerateScreen)
    return app.screen


def generate_screen(app: PeropixApp) -> GenerateScreen:
    """The Generate screen, under whatever modal is open on top of it."""
    base = app.screen_stack[0] if app.screen_stack else app.screen
    assert isinstance(base, GenerateScreen)
    return base


def bar_text(app: PeropixApp) -> str:
    return generate_screen(app).query_one(AnlasBar).text


def cell(queue: JobQueue, job_id: int, column: str) -> str:
    return str(queue.get_cell(str(job_id), column))


def generation_ids(app: PeropixApp) -> list[int]:
    return [job.id for job in app.jobs.jobs if job.kind == GENERATION_KIND]


def notifications(messages: list[Message], severity: str) -> list[str]:
    return [m.notification.message for m in messages if isinstance(m, Notify) and m.notification.severity == severity]


async def start(pilot: Pilot[Any], prompt: str = PROMPT) -> PeropixApp:
    """Wait until the Generate screen shows the price and the balance, then type `prompt` (none when empty)."""
    app = pilot.app
    assert isinstance(app, PeropixApp)
    await wait_until(pilot, lambda: bool(generate_screen(app).query(AnlasBar)), "the side panel")
    await wait_until(pilot, lambda: "…" not in bar_text(app), "the price and the balance")
    if prompt:
        await pilot.press(*prompt)
    return app


async def run_from_palette(pilot: Pilot[Any], search: str, opens: type[Screen[Any]]) -> None:
    """Open the command palette, type `search`, run the first command found and wait for the `opens` screen."""
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), "the palette")
    await pilot.press(*search)
    await pilot.pause(0.5)  # the palette searches in a worker
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, opens), f"the {opens.__name__}")


async def set_field(pilot: Pilot[Any], field_id: str, value: str) -> None:
    field = pilot.app.screen.query_one(f"#{field_id}", Input)
    field.value = value
    await pilot.pause(0.05)
