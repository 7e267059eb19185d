"""Start to the first painted frame: `peropix` vs a bare Textual app, measured two ways.

1. In a real terminal (tmux), end to end: from typing the command at a shell prompt to the terminal receiving the
   app's screen (the Generate screen's editors, or the bare app's label), watched through `tmux pipe-pane`. This
   includes the interpreter start, the CLI, the terminal's image-support queries and everything a user waits for.
   The bare app runs through the same shell, pane and watching, so the difference is ours.
2. Headless, in-process: the time of the first screen update that would reach the terminal (Textual drops those
   made while its start-up is still open), and whether torch was imported during start.

Each start is a new process (imports are cold for Python, warm for the OS page cache and with byte-code cached, as
a user's second launch is). Goal: peropix under 0.5 s and never importing torch.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = r"""
from textual.app import App
from textual.widgets import Footer, Label
class Bare(App):
    BINDINGS = [("ctrl+q", "quit", "Quit")]
    def compose(self):
        yield Label("bare textual app ready")
        yield Footer()
Bare().run()
"""

HEADLESS_CHILD = r"""
import gc, sys, time
t0 = time.perf_counter()
KIND = sys.argv[1]
if KIND == "peropix":
    gc.disable()  # as `peropix` does for its start-up
import textual.app as textual_app
if KIND == "peropix":
    from peropix_tui.app import PeropixApp as Base
    import peropix_tui.screens.generate
else:
    from textual.widgets import Label
    class Base(textual_app.App):
        def compose(self):
            yield Label("hello")
painted = []
display = textual_app.App._display
def first_frame(self, screen, renderable):
    # Frames made while Textual's start-up batch is open never reach the terminal: the first one that would.
    if not painted and renderable is not None and not self._batch_count:
        painted.append(time.perf_counter() - t0)
        self.call_later(self.exit)
    return display(self, screen, renderable)
textual_app.App._display = first_frame
app = Base()
if KIND == "peropix":
    app.resume_gc_after_first_frame()
app.run(headless=True, size=(100, 30))
print(f"{painted[0]:.4f} {'torch' in sys.modules}")
"""

PANE = "peropix-bench-startup"
POLL_S = 0.002
ROUNDS = 7


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def time_in_terminal(command: str, marker: str, quit_keys: list[str], raw: Path) -> float:
    """Seconds from sending `command` to the shell until the terminal has received `marker` from the app; then
    quits and waits for the prompt to come back.

    What the pane receives is copied to `raw` (`tmux pipe-pane`) and that file is watched: polling the screen
    with `capture-pane` would start a tmux client every few milliseconds, which on a small machine takes CPU from
    the very start-up being timed.
    """
    tmux("send-keys", "-t", PANE, "clear", "Enter")
    time.sleep(0.3)
    raw.write_bytes(b"")
    tmux("pipe-pane", "-t", PANE, f"cat >> {raw}")
    wanted = marker.encode()
    start = time.perf_counter()
    tmux("send-keys", "-t", PANE, command, "Enter")
    while wanted not in raw.read_bytes():
        if time.perf_counter() - start > 30:
            raise RuntimeError(f"{marker!r} never appeared:\n{tmux('capture-pane', '-p', '-t', PANE)}")
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - start
    tmux("pipe-pane", "-t", PANE)  # stops the copy
    time.sleep(0.3)
    tmux("send-keys", "-t", PANE, *quit_keys)
    deadline = time.perf_counter() + 20
    while not tmux("capture-pane", "-p", "-t", PANE).rstrip().endswith("BENCH-PROMPT$"):
        if time.perf_counter() > deadline:
            raise RuntimeError("the app did not quit")
        time.sleep(0.05)
    return elapsed


def terminal_round(tmp: Path) -> None:
    if shutil.which("tmux") is None:
        print("real terminal: skipped (tmux is not installed)")
        return
    bare = tmp / "bare_app.py"
    bare.write_text(BARE_APP)
    env = (
        f"PEROPIX_CONFIG_DIR={tmp}/c PEROPIX_DATA_DIR={tmp}/d TEXTUAL_ANIMATIONS=none PYTHONPATH={Path.cwd()} "
        f"PS1='BENCH-PROMPT$ '"
    )
    subprocess.run(["tmux", "kill-session", "-t", PANE], capture_output=True, check=False)
    # Byte-code is cached as on a user's machine (some shells export PYTHONDONTWRITEBYTECODE, which would
    # recompile every module at every start).
    tmux(
        "new-session", "-d", "-s", PANE, "-x", "100", "-y", "30",
        f"env -u PYTHONDONTWRITEBYTECODE {env} bash --norc --noprofile",
    )  # fmt: skip
    raw = tmp / "pane.raw"
    try:
        time.sleep(0.5)
        peropix = f"{sys.executable} -m peropix_tui"
        bare_cmd = f"{sys.executable} {bare}"
        # Warm the OS cache and byte-code once each.
        time_in_terminal(peropix, "Negative prompt", ["C-q"], raw)
        time_in_terminal(bare_cmd, "bare textual app ready", ["C-q"], raw)
        ours, ref = [], []
        for _ in range(ROUNDS):
            ours.append(time_in_terminal(peropix, "Negative prompt", ["C-q"], raw))
            ref.append(time_in_terminal(bare_cmd, "bare textual app ready", ["C-q"], raw))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", PANE], capture_output=True, check=False)
    o, r = statistics.median(ours), statistics.median(ref)
    print(
        f"real terminal (tmux), command to painted screen, median of {ROUNDS}: peropix {o * 1000:.0f} ms | "
        f"bare Textual app {r * 1000:.0f} ms | ratio {o / r:.2f} | goal < 500 ms: {'met' if o < 0.5 else 'MISSED'}"
    )


def headless_round(tmp: Path) -> None:
    env = dict(os.environ, PEROPIX_CONFIG_DIR=f"{tmp}/c", PEROPIX_DATA_DIR=f"{tmp}/d", TEXTUAL_ANIMATIONS="none")
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def run(kind: str) -> tuple[float, bool]:
        done = subprocess.run(
            [sys.executable, "-c", HEADLESS_CHILD, kind], capture_output=True, text=True, env=env, check=True
        )
        seconds, torch = done.stdout.split()
        return float(seconds), torch == "True"

    run("peropix")
    ours, ref, torch_seen = [], [], False
    for _ in range(ROUNDS):
        t, torch = run("peropix")
        ours.append(t)
        torch_seen |= torch
        ref.append(run("bare")[0])
    o, r = statistics.median(ours), statistics.median(ref)
    print(
        f"headless, interpreter start to first frame out, median of {ROUNDS}: peropix {o * 1000:.0f} ms | "
        f"bare Textual app {r * 1000:.0f} ms | ratio {o / r:.2f}"
    )
    print(f"torch imported during start: {torch_seen}")


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # The first-start welcome would cover the Generate screen: mark it seen, as after a user's first start.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from peropix_tui.core.paths import AppDirs; from peropix_tui.screens.welcome import "
                "mark_welcome_seen; mark_welcome_seen(AppDirs.from_env())",
            ],
            env=dict(os.environ, PEROPIX_CONFIG_DIR=f"{tmp}/c", PEROPIX_DATA_DIR=f"{tmp}/d"),
            check=True,
        )
        terminal_round(tmp)
        headless_round(tmp)


if __name__ == "__main__":
    main()
