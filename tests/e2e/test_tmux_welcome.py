"""The first start in a real terminal (tmux): the welcome offers its ways on, and each one leads to a generation.

- "Try the sandbox": the SANDBOX badge appears and an image is generated without any account.
- A NovelAI token: a wrong one is refused with the server's answer, a right one is checked against the subscription
  endpoint of a real HTTP server (the sandbox NovelAI server, started here as a stand-in for NovelAI), saved 0600,
  and the balance it reads is shown — with no SANDBOX badge, since nothing is faked inside the app.
"""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator

import pytest

from e2e.terminal import Tmux, generate_and_quit, start_peropix
from peropix_tui.core.paths import AppDirs
from peropix_tui.sandbox.nai_accounts import SandboxAccount
from peropix_tui.sandbox.nai_server import NaiSandbox
from peropix_tui.screens.welcome import welcome_marker

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

TOKEN = "pst-welcome-e2e-token-00000000000000000000000000000000000001"


def start(extra_env: dict[str, str]) -> Tmux:
    # The e2e conftest marks the welcome as seen; a first start is what these tests are about.
    welcome_marker(AppDirs.from_env()).unlink(missing_ok=True)
    return start_peropix("welcome", size=(120, 40), env=extra_env)


@pytest.fixture
def nai_server() -> Iterator[NaiSandbox]:
    with NaiSandbox(accounts={TOKEN: SandboxAccount(fixed_anlas=7_500)}) as server:
        yield server


def test_first_start_try_the_sandbox() -> None:
    t = start({})
    try:
        t.wait_for("Welcome to peropix")
        # The token field has the focus; the sandbox button is the fifth stop of the focus chain.
        for _ in range(4):
            t.keys("Tab")
        t.keys("Enter")
        t.wait_for("SANDBOX · nothing is charged")
        t.wait_for("Balance 10,000", timeout=20)
        generate_and_quit(t, "Balance 9,980")
    finally:
        t.close()


def test_first_start_with_a_token_checked_against_the_server(nai_server: NaiSandbox) -> None:
    t = start({"PEROPIX_NAI_BASE_URL": nai_server.base_url, "PEROPIX_NAI_ACCOUNT_URL": nai_server.base_url})
    try:
        t.wait_for("Welcome to peropix")
        t.keys("-l", "pst-this-token-is-not-known-to-the-server-000000000000000000")
        t.keys("Enter")
        refused = t.wait_for("NovelAI refused this token", timeout=20)
        assert "SANDBOX" not in refused
        # Keys at a human pace: a burst of clear + token + Enter sent in one go by tmux can outrun the field.
        t.keys("C-u")
        time.sleep(0.5)
        t.keys("-l", TOKEN)
        time.sleep(0.5)
        t.keys("Enter")
        screen = t.wait_for("Balance 7,500", timeout=20)
        assert "Welcome to peropix" not in screen and "SANDBOX" not in screen
        assert TOKEN not in screen  # never shown in full
        secrets_file = AppDirs.from_env().secrets_file
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        assert TOKEN in secrets_file.read_text()
        generate_and_quit(t, "Balance 7,480")
    finally:
        t.close()
