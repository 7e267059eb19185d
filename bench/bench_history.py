"""History store speed at 20,000 entries: open + first page, text filter, deep page, against plain sqlite3.

The store is filled through `HistoryStore.add` with varied tag prompts and real WebP thumbnails (made by
`make_thumbnail` from crops of a real NovelAI image). The reference in the same run is the least any SQLite
reader can do on the same file: a plain `sqlite3` connection and `SELECT … ORDER BY rowid DESC LIMIT 50` (with
`OFFSET` for the deep page), plus, for the text filter, the LIKE scan a store without a text index would need.

    python bench/bench_history.py
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from history_data import TAGS, thumbnails

from peropix_tui.core.history import Entry, HistoryStore
from peropix_tui.core.metadata import ImageMetadata

ENTRIES = 20_000
PAGE = 50
DEEP = 19_000
RUNS = 30
FILTER = "silver hair"
RARE = "kitsune mask"  # in one prompt of 200
COLUMNS = "id, created, path, provider, model, seed, width, height, steps, cfg, sampler, prompt, negative"


def fill(store: HistoryStore) -> float:
    rng = random.Random(11)
    thumbs = thumbnails(rng, 40)
    start = time.perf_counter()
    for i in range(ENTRIES):
        tags = rng.sample(TAGS, rng.randrange(12, 40)) + (["kitsune_mask"] if i % 200 == 7 else [])
        meta = ImageMetadata(
            prompt=", ".join(tags).replace("_", " "),
            negative_prompt="lowres, bad anatomy, bad hands, text, error, worst quality, jpeg artifacts",
            model="nai-diffusion-4-5-full",
            seed=rng.randrange(2**32),
            steps=28,
            cfg=5.0,
            sampler="k_euler_ancestral",
            width=832,
            height=1216,
            peropix={"provider": "nai", "job_id": f"job-{i}"},
        )
        path = f"/data/outputs/2025-{1 + i // 2000:02d}-01/{i % 2000 + 1:05d}_{meta.seed}.png"
        entry_id = store.add(path, meta, provider="nai", thumbnail=thumbs[i % len(thumbs)], created=1.7e9 + i // 2)
        if i % 20 == 3:
            store.set_favourite(entry_id, True)
    return time.perf_counter() - start


def median_ms(func: Callable[[], object]) -> float:
    func()  # warm the page cache and the statement cache
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def row(label: str, ours: float, reference: float | None = None, reference_label: str = "") -> None:
    line = f"  {label:<36} ours {ours:8.3f} ms"
    if reference is not None:
        line += f"   {reference_label:<34} {reference:8.3f} ms   ratio {ours / reference:6.2f}x"
    print(line)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "history.sqlite3"
        with HistoryStore(db) as store:
            elapsed = fill(store)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
        each = elapsed / ENTRIES * 1e6
        print(f"{ENTRIES} entries added one by one in {elapsed:.2f} s ({each:.0f} µs each), database {size:.1f} MiB")

        def ref_first_page() -> list[tuple[object, ...]]:
            conn = sqlite3.connect(db)
            try:
                return conn.execute(f"SELECT {COLUMNS} FROM entries ORDER BY rowid DESC LIMIT {PAGE}").fetchall()
            finally:
                conn.close()

        def ours_first_page() -> list[Entry]:
            with HistoryStore(db) as cold:
                return cold.page(0, PAGE)

        assert [e.id for e in ours_first_page()] == [r[0] for r in ref_first_page()]

        store = HistoryStore(db)
        conn = sqlite3.connect(db)

        def ref_page(offset: int) -> Callable[[], list[tuple[object, ...]]]:
            sql = f"SELECT {COLUMNS} FROM entries ORDER BY rowid DESC LIMIT {PAGE} OFFSET {offset}"
            return lambda: conn.execute(sql).fetchall()

        def ref_like(text: str) -> Callable[[], list[tuple[object, ...]]]:
            words = text.split()
            where = " AND ".join("prompt LIKE ?" for _ in words)
            sql = f"SELECT {COLUMNS} FROM entries WHERE {where} ORDER BY rowid DESC LIMIT {PAGE}"
            return lambda: conn.execute(sql, [f"%{w}%" for w in words]).fetchall()

        def ours_text(text: str) -> Callable[[], list[Entry]]:
            return lambda: store.page(0, PAGE, text=text)

        def ours_count(text: str) -> Callable[[], int]:
            return lambda: store.count(text=text)

        for text in (FILTER, RARE):  # same rows as a plain LIKE scan before anything is timed
            assert {e.id for e in ours_text(text)()} == {r[0] for r in ref_like(text)()}
        assert [e.id for e in store.page(DEEP, PAGE)] == [r[0] for r in ref_page(DEEP)()]

        print(f"times are medians of {RUNS} runs; ratio = ours / reference")
        first, ref_first = median_ms(ours_first_page), median_ms(ref_first_page)
        row("open store + first page (cold)", first, ref_first, "sqlite3.connect + rowid DESC LIMIT")
        plain = median_ms(ref_page(0))
        for text in (FILTER, RARE):
            matches = store.count(text=text)
            ours = median_ms(ours_text(text))
            row(f"text {text!r} page ({matches} hits)", ours, plain, "rowid DESC LIMIT (no filter)")
            row(f"text {text!r} page ({matches} hits)", ours, median_ms(ref_like(text)), "LIKE scan, rowid DESC LIMIT")
            row(f"text {text!r} count", median_ms(ours_count(text)))
        row(
            f"deep page (offset {DEEP})",
            median_ms(lambda: store.page(DEEP, PAGE)),
            median_ms(ref_page(DEEP)),
            "rowid DESC LIMIT OFFSET",
        )
        favourites = store.count(favourites=True)
        row(
            f"favourites page ({favourites} hits)",
            median_ms(lambda: store.page(0, PAGE, favourites=True)),
            plain,
            "rowid DESC LIMIT (no filter)",
        )
        conn.close()
        store.close()


if __name__ == "__main__":
    main()
