"""compute_hashes (SHA256 + AutoV1/V2/V3 in one pass) against hashlib.file_digest (SHA256 alone).

Usage: python bench/bench_hashes.py [size_mb] [rounds]

Builds a safetensors file of about `size_mb` MB (default 256) with a small header, reads it once so both
sides see a warm page cache, then times each side `rounds` times (default 3) and prints the best of each.
A ratio near 1 means the extra hashes cost little wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from peropix_tui.core.safetensors import compute_hashes


def build_file(folder: Path, size: int) -> Path:
    header = json.dumps(
        {
            "__metadata__": {"ss_output_name": "bench", "ss_network_dim": "32"},
            "w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]},
        },
        separators=(",", ":"),
    ).encode()
    header = header.ljust(-(-len(header) // 8) * 8, b" ")
    path = folder / "bench.safetensors"
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header)
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            fh.write(piece)
            written += len(piece)
    return path


def best_of(rounds: int, run: Callable[[], str]) -> tuple[float, str]:
    best = float("inf")
    result = ""
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def reference_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest().upper()


def main() -> None:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as folder:
        path = build_file(Path(folder), size_mb * 1_000_000)
        total_mb = path.stat().st_size / 1e6
        reference_sha256(path)  # warm the page cache for both sides
        ref_time, ref_sha = best_of(rounds, lambda: reference_sha256(path))
        ours_time, ours_sha = best_of(rounds, lambda: compute_hashes(path).sha256)
        hashes = compute_hashes(path)
    if ours_sha != ref_sha:
        raise SystemExit(f"SHA256 mismatch: ours {ours_sha}, reference {ref_sha}")
    print(f"file: {total_mb:.1f} MB, best of {rounds}, cpus: {os.cpu_count()}")
    print(f"{'hashlib.file_digest (SHA256 only)':<44} {ref_time:8.3f} s {total_mb / ref_time:9.1f} MB/s")
    print(f"{'compute_hashes (SHA256+AutoV1/V2/V3)':<44} {ours_time:8.3f} s {total_mb / ours_time:9.1f} MB/s")
    print(f"ratio ours/reference: {ours_time / ref_time:.2f}")
    print(f"AutoV2 {hashes.autov2}  AutoV1 {hashes.autov1}  AutoV3 {hashes.autov3_short}")


if __name__ == "__main__":
    main()
