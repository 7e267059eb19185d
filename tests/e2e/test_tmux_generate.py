"""`peropix --sandbox` in a real terminal (tmux): the SANDBOX badge, one generation through the queue, a clean quit."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.test_tmux_smoke import Tmux, peropix_command

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def sandboxed() -> Iterator[Tmux]:
    t = Tmux(f"peropix-e2e-gen-{os.getpid()}", "gen")
    env = {
        "TERM": "xterm-256color",
        "TEXTUAL_ANIMATIONS": "none",
        "PEROPIX_CONFIG_DIR": os.environ["PEROPIX_CONFIG_DIR"],
        "PEROPIX_DATA_DIR": os.environ["PEROPIX_DATA_DIR"],
    }
    command = " ".join(
        [
            "env",
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            *map(shlex.quote, peropix_command()),
            "--sandbox",
        ]
    )
    t.run("new-session", "-d", "-s", t.session, "-x", "120", "-y", "40", command)
    t.run("set-option", "-t", t.session, "remain-on-exit", "on")
    try:
        yield t
    finally:
        t.run("kill-server", check=False)


def exit_status(tmux: Tmux, limit: float = 15.0) -> list[str]:
    """`[dead, status]` once the pane's process has ended and tmux has its exit status."""
    deadline = time.monotonic() + limit
    fields: list[str] = []
    while time.monotonic() < deadline:
        answer = tmux.run("display-message", "-p", "-t", tmux.session, "#{pane_dead} #{pane_dead_status}")
        fields = answer.stdout.split()
        if len(fields) == 2:
            break
        time.sleep(0.1)
    return fields


def test_sandbox_generation_in_a_real_terminal(sandboxed: Tmux) -> None:
    sandboxed.wait_for("SANDBOX · nothing is charged")
    sandboxed.wait_for("Balance 10,000", timeout=20)
    sandboxed.keys("-l", "1girl, silver hair")
    sandboxed.keys("F5")
    screen = sandboxed.wait_for("Balance 9,980", timeout=30)  # 20 Anlas: the price shown before
    assert " done " in screen
    outputs = Path(os.environ["PEROPIX_DATA_DIR"]) / "outputs"
    assert len(list(outputs.rglob("*.png"))) == 1
    sandboxed.keys("C-q")
    assert exit_status(sandboxed) == ["1", "0"], sandboxed.screen()
    assert "Traceback" not in sandboxed.screen()
