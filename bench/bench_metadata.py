"""Metadata read speed: `read_metadata` against Pillow reading the same PNG text chunks, in one process.

1,000 PNGs are made from a real NovelAI image with varied chunk layouts (text before or after IDAT, iTXt and
zTXt variants, different Comment sizes). Pillow's `Image.open(p).text` is the reference: it also walks the
chunks, but loads the image to be sure it has seen text that follows the pixel data.

The stealth path is timed on a 1024x1024 NovelAI image with its text chunks removed, against a reference that
decodes with Pillow and walks the alpha LSBs column by column in plain Python.

    python bench/bench_metadata.py
"""

from __future__ import annotations

import gzip
import json
import random
import tempfile
import time
import zlib
from pathlib import Path

from PIL import Image

from peropix_tui.core.metadata import read_metadata
from peropix_tui.core.metadata.pngchunks import (
    TEXT_TYPES,
    Chunk,
    build_png,
    encode_text_chunk,
    read_all_chunks,
    replace_text_chunks,
)

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"
SMALL_NAI = FIXTURES / "nai__LlmKira_novelai-python__sample-0316.png"
LARGE_NAI = FIXTURES / "nai__enslo_sd-metadata__novelai-full-3char.png"
FILES = 1000
STEALTH_RUNS = 20


def _variant(base: list[Chunk], texts: dict[str, str], rng: random.Random) -> bytes:
    chunks = [encode_text_chunk(k, v) for k, v in texts.items()]
    if rng.random() < 0.25:  # compressed Comment
        key, value = "Comment", texts["Comment"]
        chunks = [c for c in chunks if not c.data.startswith(b"Comment\0")]
        chunks.append(Chunk.make(b"zTXt", key.encode() + b"\0\0" + zlib.compress(value.encode("latin-1"))))
    body = [c for c in base[1:-1] if c.type not in TEXT_TYPES]
    if rng.random() < 0.5:  # NovelAI V5 order: text after the pixels
        return build_png([base[0], *body, *chunks, base[-1]])
    return build_png([base[0], *chunks, *body, base[-1]])


def make_files(folder: Path) -> list[Path]:
    rng = random.Random(7)
    original = SMALL_NAI.read_bytes()
    base = read_all_chunks(original)
    with Image.open(SMALL_NAI) as im:
        texts = dict(im.text)  # type: ignore[attr-defined]
    comment = json.loads(texts["Comment"])
    paths = []
    for i in range(FILES):
        comment["seed"] = rng.randrange(2**32)
        comment["prompt"] = texts["Description"] + ", tag" * rng.randrange(0, 200)
        variant = dict(texts, Comment=json.dumps(comment), Description=comment["prompt"])
        if rng.random() < 0.3:
            variant["Description"] += ", テスト"  # forces an iTXt chunk
        path = folder / f"{i:05d}.png"
        path.write_bytes(_variant(base, variant, rng))
        paths.append(path)
    return paths


def pillow_text(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(im.text)  # type: ignore[attr-defined]


def reference_stealth(path: Path) -> str:
    """Column-major alpha LSB walk with Pillow pixel access, as simple scripts do it."""
    with Image.open(path) as im:
        width, height = im.size
        alpha = im.getchannel("A").load()
        assert alpha is not None

        def read_bytes(start_bit: int, count: int) -> bytes:
            out = bytearray()
            for byte_index in range(count):
                value = 0
                for bit in range(8):
                    n = start_bit + byte_index * 8 + bit
                    x, y = divmod(n, height)
                    value = (value << 1) | (int(alpha[x, y]) & 1)  # type: ignore[arg-type]
                out.append(value)
            return bytes(out)

        assert read_bytes(0, 15) == b"stealth_pngcomp"
        nbits = int.from_bytes(read_bytes(120, 4), "big")
        assert nbits <= width * height
        return gzip.decompress(read_bytes(152, nbits // 8)).decode()


def timed(label: str, func: object, items: list[Path]) -> float:
    start = time.perf_counter()
    for item in items:
        func(item)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    print(f"  {label:<34} {elapsed * 1000:9.1f} ms total {elapsed / len(items) * 1e6:9.1f} µs/file")
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_files(folder)
        for path in paths[:50]:  # both readers agree before anything is timed
            meta = read_metadata(path)
            assert meta.raw == pillow_text(path), path
        print(f"{FILES} NovelAI PNGs (128x128 RGBA, text before/after IDAT, tEXt/iTXt/zTXt):")
        timed("warm-up", read_metadata, paths[:100])
        ours = timed("read_metadata (full normalisation)", read_metadata, paths)
        ref = timed("Pillow Image.open().text", pillow_text, paths)
        print(f"  ratio Pillow / ours: {ref / ours:.2f}x\n")

        stealth = folder / "stealth_only.png"
        stealth.write_bytes(replace_text_chunks(LARGE_NAI.read_bytes(), {}))
        meta = read_metadata(stealth)
        assert meta.found_in == ["stealth", "novelai"] and meta.seed is not None
        assert json.loads(reference_stealth(stealth))["Description"] == meta.prompt
        print(f"stealth-only 1024x1024 NovelAI PNG, {STEALTH_RUNS} reads:")
        ours = timed("read_metadata (stealth path)", read_metadata, [stealth] * STEALTH_RUNS)
        ref = timed("Pillow decode + Python LSB walk", reference_stealth, [stealth] * STEALTH_RUNS)
        print(f"  ratio reference / ours: {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
