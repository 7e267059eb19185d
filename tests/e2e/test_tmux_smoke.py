"""The real `peropix` in a real terminal (tmux): starts, switches screens, opens help, quits cleanly."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def peropix_command() -> list[str]:
    script = Path(sys.executable).with_name("peropix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peropix_tui"]


class Tmux:
    def __init__(self, socket: str, session: str) -> None:
        self.base = ["tmux", "-L", socket, "-f", "/dev/null"]
        self.session = session

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=20, check=check)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} did not appear; screen was:\n{screen}")

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session, check=False).returncode == 0


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"peropix-e2e-{os.getpid()}", "e2e")
    env = {
        "TERM": "xterm-256color",
        "TEXTUAL_ANIMATIONS": "none",
        "PEROPIX_CONFIG_DIR": os.environ["PEROPIX_CONFIG_DIR"],
        "PEROPIX_DATA_DIR": os.environ["PEROPIX_DATA_DIR"],
    }
    command = " ".join(
        ["env", *(f"{k}={shlex.quote(v)}" for k, v in env.items()), *map(shlex.quote, peropix_command())]
    )
    # Textual draws on stderr, so it cannot be redirected; a crash shows its traceback in the pane, which
    # remain-on-exit keeps for the assertions.
    t.run("new-session", "-d", "-s", t.session, "-x", "100", "-y", "30", command)
    t.run("set-option", "-t", t.session, "remain-on-exit", "on")
    try:
        yield t
    finally:
        t.run("kill-server", check=False)


def test_start_switch_help_quit(tmux: Tmux) -> None:
    tmux.wait_for("Negative prompt")
    # the session option is set right after start; make sure it took before anything can exit
    assert tmux.run("show-options", "-t", tmux.session, "remain-on-exit").stdout.strip().endswith("on")
    tmux.keys("F7")
    tmux.wait_for("paths.lora_dirs")
    tmux.keys("F1")
    screen = tmux.wait_for("Keys — Settings")
    assert "Save" in screen and "Quit" in screen
    tmux.keys("Escape")
    tmux.wait_for("paths.lora_dirs")
    tmux.keys("C-q")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = tmux.run("display-message", "-p", "-t", tmux.session, "#{pane_dead} #{pane_dead_status}").stdout
        if status.startswith("1") and len(status.split()) == 2:  # dead, and tmux has its exit status
            break
        time.sleep(0.1)
    assert status.split() == ["1", "0"], f"pane status {status!r}; screen:\n{tmux.screen()}"
    assert "Traceback" not in tmux.screen()
