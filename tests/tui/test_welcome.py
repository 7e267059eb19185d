"""The first-start welcome: a token checked against the (sandbox) account, a checkpoint folder, or the sandbox."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Label

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN, default_accounts
from peropix_tui.sandbox.nai_server import NaiSandbox
from peropix_tui.sandbox.session import ENV_TOKEN, active_session
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.screens.welcome import WelcomeScreen, welcome_marker
from peropix_tui.widgets.anlas_bar import AnlasBar

SIZE = (100, 30)


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.03)


@pytest.fixture
def nai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[NaiSandbox]:
    """A sandbox server the settings point at, without a session: no token is set in the environment."""
    with NaiSandbox(accounts=default_accounts()) as server:
        monkeypatch.setenv("PEROPIX_NAI_BASE_URL", server.base_url)
        monkeypatch.setenv("PEROPIX_NAI_ACCOUNT_URL", server.base_url)
        yield server


def welcome_app() -> PeropixApp:
    return PeropixApp(image_widget="halfcell", welcome=True)


def status(app: PeropixApp, widget_id: str) -> str:
    return str(app.screen.query_one(f"#{widget_id}", Label).content)


def bar_text(app: PeropixApp) -> str:
    generate = app.screen
    assert isinstance(generate, GenerateScreen)
    return generate.query_one(AnlasBar).text


async def type_into(pilot: Pilot[Any], widget_id: str, text: str) -> None:
    field = pilot.app.screen.query_one(f"#{widget_id}", Input)
    field.value = ""
    field.focus()
    await pilot.press(*text)
    await pilot.press("enter")


async def test_token_rejected_then_accepted(nai_server: NaiSandbox) -> None:
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
        await type_into(pilot, "welcome-token", "pst-not-a-token-of-this-server")
        await wait_until(pilot, lambda: "refused" in status(app, "welcome-token-status"), "the refusal")
        assert isinstance(app.screen, WelcomeScreen)
        assert app.secrets.value("nai_token") is None
        assert nai_server.requests[-1].status == 401

        await type_into(pilot, "welcome-token", SANDBOX_TOKEN)
        await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the welcome to close")
        assert SecretStore(app.dirs.secrets_file).value("nai_token") == SANDBOX_TOKEN
        assert welcome_marker(app.dirs).exists()
        # the generate screen reads the balance with the new token
        await wait_until(pilot, lambda: "Balance 10,000 Anlas (Scroll)" in bar_text(app), "the balance")
        assert "SANDBOX" not in bar_text(app) and app.sub_title == ""


async def test_token_too_short_is_refused_before_any_request(nai_server: NaiSandbox) -> None:
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
        await type_into(pilot, "welcome-token", "abc")
        await wait_until(pilot, lambda: "too short" in status(app, "welcome-token-status"), "the message")
        assert nai_server.requests == []


async def test_sandbox_for_this_run() -> None:
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
        await pilot.click("#welcome-sandbox")
        await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the welcome to close")
        session = active_session()
        assert session is not None and app.nai.sandbox is session
        assert os.environ[ENV_TOKEN] == session.token
        assert "SANDBOX" in app.sub_title
        await wait_until(pilot, lambda: "SANDBOX" in bar_text(app) and "Balance 10,000" in bar_text(app), "badge")

        await pilot.press(*"1girl")
        await pilot.press("f5")
        await wait_until(pilot, lambda: any(app.config.outputs_dir.rglob("*.png")), "the image")
        await wait_until(pilot, lambda: app.jobs.active_count == 0, "the job to end")
        assert [e.provider for e in app.open_history().page(0, 5)] == ["sandbox"]
    # the sandbox the welcome started ends with the app, and the environment is as it was
    assert active_session() is None
    assert ENV_TOKEN not in os.environ


async def test_checkpoint_folder_saved(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "animagine.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
        await type_into(pilot, "welcome-checkpoint", str(tmp_path / "missing.safetensors"))
        assert "does not exist" in status(app, "welcome-checkpoint-status")
        await type_into(pilot, "welcome-checkpoint", str(models / "animagine.safetensors"))
        await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the welcome to close")
    assert Config.load(AppDirs.from_env()).settings.paths.checkpoint_dirs == [str(models.resolve())]


async def test_escape_leaves_it_for_good() -> None:
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "the welcome")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), "the welcome to close")
    again = welcome_app()
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert isinstance(again.screen, GenerateScreen)


async def test_not_offered_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEROPIX_NAI_TOKEN", "pst-some-token-from-the-environment")
    app = welcome_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, GenerateScreen)
    assert not welcome_marker(app.dirs).exists()


async def test_not_offered_by_a_plain_app() -> None:
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, GenerateScreen)
