"""The real `peropix` in a real terminal (tmux): starts, switches screens, opens help, quits cleanly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from e2e.terminal import Tmux, start_peropix

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = start_peropix("smoke")
    try:
        yield t
    finally:
        t.close()


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
    assert tmux.exit_status() == "0", tmux.screen()
    assert "Traceback" not in tmux.screen()
