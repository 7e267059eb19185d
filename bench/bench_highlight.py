"""Prompt editor cost per keystroke on a 2,000-character prompt, against a plain TextArea in the same run.

A keystroke is `insert()` of one character at the end of the prompt: the edit, the re-wrap and (for the prompt
editor) the full re-tokenize and highlight rebuild. Also the highlight rebuild alone. Goal: under 5 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from textual.app import App, ComposeResult
from textual.widgets import TextArea

from peropix_tui.widgets.prompt_editor import PromptEditor

PART = (
    "masterpiece, best quality, 1girl, solo, {{silver hair}}, long hair, [blush], 1.3::night city::, "
    "-1::censored::, <lora:detail tweaker v2:0.6>, looking at viewer, (red dress:1.1), "
)
PROMPT = (PART * (2000 // len(PART) + 1))[:2000]
KEYS = 300


class Bench(App[None]):
    def __init__(self, editor: TextArea) -> None:
        super().__init__()
        self.editor = editor

    def compose(self) -> ComposeResult:
        yield self.editor


async def per_key(editor: TextArea) -> float:
    app = Bench(editor)
    async with app.run_test(size=(120, 40)) as pilot:
        editor.load_text(PROMPT)
        editor.move_cursor(editor.document.end)
        await pilot.pause()
        times = []
        for i in range(KEYS):
            t = time.perf_counter()
            editor.insert("abc, "[i % 5])
            times.append(time.perf_counter() - t)
        await pilot.pause()
    return statistics.median(times)


async def rebuild_only() -> float:
    editor = PromptEditor(PROMPT)
    app = Bench(editor)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        times = []
        for _ in range(KEYS):
            t = time.perf_counter()
            editor._build_highlight_map()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


async def main() -> None:
    ours = await per_key(PromptEditor())
    plain = await per_key(TextArea())
    rebuild = await rebuild_only()
    print(
        f"keystroke on a {len(PROMPT)}-char prompt, median of {KEYS}: prompt editor {ours * 1000:.2f} ms | "
        f"plain TextArea {plain * 1000:.2f} ms | ratio {ours / plain:.2f} | goal < 5 ms: "
        f"{'met' if ours < 0.005 else 'MISSED'}"
    )
    print(f"highlight rebuild alone: {rebuild * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
