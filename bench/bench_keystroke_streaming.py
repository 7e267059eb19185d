"""Keystroke latency in the prompt editor while a generation streams from the sandbox, against no stream at all.

The whole app runs headless with the half-cell renderer, so every preview frame is decoded, drawn and laid out
as in a terminal. A key event is posted to the app the way the terminal driver posts it, and the latency is the
time until the prompt editor's change message has been handled. Keys come at a typing pace (one every 40 ms);
with streaming on, jobs are queued back to back so frames arrive during every key. Goal: the stream adds less
than 5 ms to the median and keeps the 95th percentile under 50 ms.

Run from the repository root: `python bench/bench_keystroke_streaming.py`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from peropix_tui.app import PeropixApp
from peropix_tui.core.jobs import JobEvent
from peropix_tui.sandbox.session import sandbox_session
from peropix_tui.screens.generate import GenerateScreen
from peropix_tui.widgets.prompt_editor import PromptEditor
from peropix_tui.widgets.stream_preview import StreamPreview

KEYS = 150
GAP_S = 0.04
STREAM_SECONDS_PER_JOB = 2.0
"""The sandbox spreads each job's 28 frames over this long (NovelAI takes a few seconds too)."""
TYPED = "abcde fgh, "


async def latencies(streaming: bool) -> tuple[list[float], int]:
    """Per-key latencies in seconds, and how many preview frames were decoded meanwhile."""
    changed = asyncio.Event()
    changed_at = 0.0
    frames_arriving = asyncio.Event()

    def hook(message: Message) -> None:
        nonlocal changed_at
        if isinstance(message, TextArea.Changed) and message.text_area.id == "prompt-editor" and not changed.is_set():
            changed_at = time.perf_counter()
            changed.set()

    def on_job(event: JobEvent) -> None:
        if event.kind == "progress":
            frames_arriving.set()

    with sandbox_session(delay_s=STREAM_SECONDS_PER_JOB) as session:
        app = PeropixApp(image_widget="halfcell", sandbox=session)
        async with app.run_test(size=(140, 45), message_hook=hook) as pilot:
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()
            screen = app.screen
            assert isinstance(screen, GenerateScreen)
            editor = screen.query_one("#prompt-editor", PromptEditor)
            editor.load_text("1girl, solo, silver hair, night sky, ")
            editor.move_cursor(editor.document.end)
            editor.focus()
            if streaming:
                app.jobs.subscribe(on_job)
                for _ in range(3):
                    screen.action_generate()
                await frames_arriving.wait()
            times: list[float] = []
            for i in range(KEYS):
                if streaming and app.jobs.active_count < 2:
                    screen.action_generate()
                char = TYPED[i % len(TYPED)]
                key = {" ": "space", ",": "comma"}.get(char, char)
                changed.clear()
                start = time.perf_counter()
                app.post_message(events.Key(key, char))
                await changed.wait()
                times.append(changed_at - start)
                await asyncio.sleep(GAP_S)
            frames = screen.query_one(StreamPreview).decoded
            app.jobs.cancel_all()
    return times, frames


def summary(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1], ordered[-1]


def ms(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v * 1000:6.2f}" for v in values) + " ms"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(PEROPIX_CONFIG_DIR=f"{tmp}/c", PEROPIX_DATA_DIR=f"{tmp}/d", TEXTUAL_ANIMATIONS="none")
        quiet, _ = await latencies(streaming=False)
        busy, frames = await latencies(streaming=True)
    q, b = summary(quiet), summary(busy)
    print(f"keystroke latency over {KEYS} keys, one every {GAP_S * 1000:.0f} ms (median / p95 / max):")
    print(f"  no stream:       {ms(q)}")
    print(f"  while streaming: {ms(b)} ({frames} preview frames decoded meanwhile)")
    goal = "met" if b[0] - q[0] < 0.005 and b[1] < 0.05 else "MISSED"
    print(f"  ratio streaming / none: median {b[0] / q[0]:.2f}, p95 {b[1] / q[1]:.2f} | goal: {goal}")


if __name__ == "__main__":
    asyncio.run(main())
