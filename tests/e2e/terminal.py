"""The real `peropix` in a real terminal: a tmux server of its own per test, and what the tests ask of it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peropix_command() -> list[str]:
    script = Path(sys.executable).with_name("peropix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peropix_tui"]


class Tmux:
    def __init__(self, socket: str, session: str, status_file: Path) -> None:
        self.base = ["tmux", "-L", socket, "-f", "/dev/null"]
        self.session = session
        self.status_file = status_file

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

    def exit_status(self, limit: float = 15.0) -> str | None:
        """peropix's exit status once it has ended (None if it is still running after `limit` seconds).

        The shell around it writes the status to a file: tmux itself sometimes reaps a finished pane process
        only much later, so its `pane_dead_status` cannot be waited on."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.status_file.exists() and (status := self.status_file.read_text().strip()):
                return status
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.run("kill-server", check=False)


def start_peropix(name: str, *args: str, size: tuple[int, int] = (100, 30), env: dict[str, str] | None = None) -> Tmux:
    """`peropix ARGS` in a new tmux server, with the test's config and data folders; call `close()` after.

    Textual draws on stderr, so it cannot be redirected; a crash shows its traceback in the pane, which
    remain-on-exit keeps for the assertions."""
    socket = f"peropix-e2e-{name}-{os.getpid()}"
    t = Tmux(socket, name, Path(tempfile.gettempdir()) / f"{socket}.status")
    t.status_file.unlink(missing_ok=True)
    variables = {
        "TERM": "xterm-256color",
        "TEXTUAL_ANIMATIONS": "none",
        "PEROPIX_CONFIG_DIR": os.environ["PEROPIX_CONFIG_DIR"],
        "PEROPIX_DATA_DIR": os.environ["PEROPIX_DATA_DIR"],
        **(env or {}),
    }
    peropix = " ".join(
        [
            "env",
            *(f"{k}={shlex.quote(v)}" for k, v in variables.items()),
            *map(shlex.quote, [*peropix_command(), *args]),
        ]
    )
    command = f"sh -c {shlex.quote(f'{peropix}; echo $? > {shlex.quote(str(t.status_file))}')}"
    t.run("new-session", "-d", "-s", t.session, "-x", str(size[0]), "-y", str(size[1]), command)
    t.run("set-option", "-t", t.session, "remain-on-exit", "on")
    return t


def generate_and_quit(t: Tmux, balance_after: str) -> None:
    """Type a prompt, queue it, wait for the balance after its price, check the file, quit with status 0."""
    t.keys("-l", "1girl, silver hair")
    t.keys("F5")
    screen = t.wait_for(balance_after, timeout=30)
    assert " done " in screen
    assert len(list((Path(os.environ["PEROPIX_DATA_DIR"]) / "outputs").rglob("*.png"))) == 1
    t.keys("C-q")
    assert t.exit_status() == "0", t.screen()
    assert "Traceback" not in t.screen()
