"""History mode open time at 20,000 entries against an empty store, both in this process with a headless app.

Each run starts a fresh app (headless `run_test`, 140×40, half-cell previews), waits until the app has opened its
history store, then times the History mode switch (what F3 does) until the screen has listed its first page and
the next frame is painted. The newest entry has a real image file, so its preview path is the real one.
The reference is the same key on an empty store: the screen's own cost with nothing to list. A ratio near 1
means the list opens as fast on 20,000 entries as on none.

    python bench/bench_history_screen.py
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from history_data import NAI_IMAGE, TAGS, thumbnails

from peropix_tui.app import PeropixApp
from peropix_tui.core.history import HistoryStore
from peropix_tui.core.metadata import ImageMetadata
from peropix_tui.screens.history import PAGE_SIZE, HistoryScreen

ENTRIES = 20_000
RUNS = 9
SIZE = (140, 40)


def fill(data_dir: Path, count: int) -> None:
    newest = data_dir / "outputs" / f"{count - 1:06d}.png"
    newest.parent.mkdir(parents=True)
    shutil.copy(NAI_IMAGE, newest)
    rng = random.Random(6)
    thumbs = thumbnails(rng, 16)
    with HistoryStore(data_dir / "history.sqlite3") as store:
        for i in range(count):
            meta = ImageMetadata(
                prompt=", ".join(rng.sample(TAGS, 12)),
                negative_prompt="lowres, bad anatomy",
                model="nai-diffusion-4-5-full",
                seed=rng.randrange(1 << 32),
                steps=28,
                cfg=5.0,
                width=832,
                height=1216,
            )
            store.add(
                data_dir / "outputs" / f"{i:06d}.png",
                meta,
                provider="nai",
                thumbnail=thumbs[i % len(thumbs)],
                created=1_700_000_000 + i,
            )


async def open_history(data_dir: Path, expected_rows: int) -> float:
    """Seconds from F3 to the first frame painted after the first page is listed."""
    os.environ["PEROPIX_DATA_DIR"] = str(data_dir)
    app = PeropixApp(image_widget="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()  # the app opens its store in a worker after the first frame: not timed here
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.history is None:
            raise SystemExit("the app did not open its history store")
        painted = asyncio.Event()
        start = time.perf_counter()
        # What F3 runs; Pilot.press would add its own wait for the screen to settle to the timing.
        switched = app.switch_mode("history")
        while True:
            screen = app.screen
            if isinstance(screen, HistoryScreen) and screen._loaded_once:
                break
            await asyncio.sleep(0.0005)
        screen.call_after_refresh(painted.set)
        await painted.wait()
        elapsed = time.perf_counter() - start
        await switched
        rows = screen.query_one("#history-table").row_count  # type: ignore[attr-defined]
        if rows != expected_rows:
            raise SystemExit(f"listed {rows} rows, expected {expected_rows}")
    return elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PEROPIX_CONFIG_DIR"] = f"{tmp}/config"
        os.environ["TEXTUAL_ANIMATIONS"] = "none"
        full, empty = Path(tmp, "full"), Path(tmp, "empty")
        started = time.perf_counter()
        fill(full, ENTRIES)
        print(f"filled {ENTRIES} entries in {time.perf_counter() - started:.1f} s")
        await open_history(empty, 0)  # warm imports and caches once
        ours, ref = [], []
        for _ in range(RUNS):
            ours.append(await open_history(full, PAGE_SIZE))
            ref.append(await open_history(empty, 0))
    for label, pick in (("median", statistics.median), ("best", min)):
        o, r = pick(ours), pick(ref)
        print(
            f"History mode to first painted page, {label} of {RUNS}: {ENTRIES} entries {o * 1000:.1f} ms | "
            f"empty store {r * 1000:.1f} ms | ratio {o / r:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
