"""The collector's model-file downloads against curl, on the same local sandbox CivitAI server.

Usage: python bench/bench_civitai.py [files] [size_mb] [workers]

Serves `files` LoRA files of `size_mb` MB (default 20 × 64) from the sandbox server on 127.0.0.1, then
downloads all of them twice into fresh folders, `workers` at a time (default 4):
- ours: the collector's model downloader (download route, storage redirect, SHA256 while streaming, fsync,
  atomic rename) on the files the API lists, run in a child process so it shares no GIL with the server;
- reference: `curl --parallel` following the same download route (`httpx` streaming to files when curl is
  not installed), without hashing or fsync.
It prints both throughputs and their ratio (goal: at least 0.9), then the peak RSS of our child for 16 MB and
`size_mb` MB files: streaming keeps it flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]
CREATOR = "bench"


def build_dataset(files: int, size: int) -> object:
    from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, ModelType

    dataset = CivitaiDataset(seed=1)
    creator = dataset.add_creator(CREATOR)
    for n in range(files):
        model = dataset.add_model(creator, f"Bench Style {n:02d}", type=ModelType.LORA)
        dataset.add_file(dataset.add_version(model), size=size)
    return dataset


def child(base_url: str, root: str, workers: int) -> None:
    """List the bench creator's files through the API (not timed), then download them all with the
    collector's model downloader, `workers` at a time; print elapsed seconds and peak RSS."""
    from peropix_tui.civitai.client import CivitaiClient
    from peropix_tui.civitai.download import FileJob, ModelDownloader
    from peropix_tui.civitai.listing import list_models
    from peropix_tui.core.jobs import Executors, ExecutorSizes

    async def run() -> float:
        executors = Executors(ExecutorSizes(io=workers + 1))
        try:
            async with CivitaiClient(base_url, None, spacing_s=0.0) as client:
                listing = await list_models(client, CREATOR, types=None, warn=print)
                jobs = [
                    FileJob(version["id"], file["id"], Path(root) / file["name"], file["hashes"]["SHA256"], None)
                    for model in listing.models.values()
                    for version in model["modelVersions"]
                    for file in version["files"]
                ]
                downloader = ModelDownloader(client, executors)
                gate = asyncio.Semaphore(workers)

                async def one(job: FileJob) -> None:
                    async with gate:
                        outcome = await downloader.download(job)
                    if outcome.status.value != "done":
                        raise SystemExit(f"bench download failed: {outcome}")

                started = time.perf_counter()
                await asyncio.gather(*(one(job) for job in jobs))
                return time.perf_counter() - started
        finally:
            executors.shutdown()

    Path(root).mkdir(parents=True, exist_ok=True)
    elapsed = asyncio.run(run())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"elapsed": elapsed, "peak_rss_mb": peak_kb / 1024}))


def ours(base_url: str, root: Path, workers: int) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", base_url, str(root), str(workers)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["elapsed"]), float(result["peak_rss_mb"])


def download_urls(sandbox: object, base_url: str) -> list[tuple[str, str]]:
    dataset = sandbox.dataset  # type: ignore[attr-defined]
    return [(f"{base_url}/api/download/models/{f.version_id}?fileId={f.id}", f.name) for f in dataset.files.values()]


def reference_curl(urls: list[tuple[str, str]], folder: Path, workers: int) -> tuple[float, float]:
    """curl's time, and its time plus a `sync` (what making its files durable costs on this disk)."""
    command = ["curl", "--silent", "--show-error", "--fail", "--location", "--parallel"]
    command += ["--parallel-max", str(workers)]
    for url, name in urls:
        command += ["--output", str(folder / name), url]
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"curl failed: {done.stderr.strip()[-500:]}")
    subprocess.run(["sync"], check=True)
    return elapsed, time.perf_counter() - started


def reference_httpx(urls: list[tuple[str, str]], folder: Path, workers: int) -> tuple[float, float]:
    import httpx

    async def fetch(client: httpx.AsyncClient, gate: asyncio.Semaphore, url: str, name: str) -> None:
        async with gate, client.stream("GET", url) as response:
            response.raise_for_status()
            with (folder / name).open("wb") as fh:
                async for chunk in response.aiter_raw():
                    fh.write(chunk)

    async def run() -> float:
        gate = asyncio.Semaphore(workers)
        async with httpx.AsyncClient(follow_redirects=True, timeout=120) as client:
            await asyncio.gather(*(fetch(client, gate, url, name) for url, name in urls))
        return 0.0

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    os.sync()
    return elapsed, time.perf_counter() - started


def warm(base_url: str) -> None:
    """Ask for the listing once so the server computes the files' hashes before anything is timed."""
    with urllib.request.urlopen(f"{base_url}/api/v1/models?username={CREATOR}&limit=100", timeout=600) as answer:
        answer.read()


def measure(files: int, size: int, workers: int, scratch: Path) -> tuple[float, tuple[float, float], float, str]:
    from peropix_tui.sandbox.civitai_server import CivitaiSandbox

    with CivitaiSandbox(build_dataset(files, size)) as sandbox:  # type: ignore[arg-type]
        base_url = sandbox.base_url
        warm(base_url)
        ours_root = scratch / f"ours-{size}"
        elapsed, peak = ours(base_url, ours_root, workers)
        shutil.rmtree(ours_root)
        reference_dir = scratch / f"reference-{size}"
        reference_dir.mkdir()
        urls = download_urls(sandbox, base_url)
        if shutil.which("curl"):
            name, reference = "curl", reference_curl(urls, reference_dir, workers)
        else:
            name, reference = "httpx", reference_httpx(urls, reference_dir, workers)
        shutil.rmtree(reference_dir)
    return elapsed, reference, peak, name


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    size_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    total_mb = files * size_mb
    with tempfile.TemporaryDirectory(prefix="peropix-bench-") as tmp:
        scratch = Path(tmp)
        elapsed, (reference, durable), peak, name = measure(files, size_mb * MB, workers, scratch)
        print(f"{files} files x {size_mb} MB, {workers} at a time, from the sandbox server on 127.0.0.1")
        print(f"  ours (SHA256 + fsync + rename): {elapsed:7.2f} s  {total_mb / elapsed:8.1f} MB/s")
        print(f"  {name:<30}: {reference:7.2f} s  {total_mb / reference:8.1f} MB/s")
        print(f"  {name + ' then sync':<30}: {durable:7.2f} s  {total_mb / durable:8.1f} MB/s")
        print(f"  ratio ours/{name} throughput: {reference / elapsed:.2f}x  (goal >= 0.9x)")
        print(f"  ratio ours/({name} then sync): {durable / elapsed:.2f}x")
        small_peak = measure(files, 16 * MB, workers, scratch)[2]
        print(f"  peak RSS of our run: {small_peak:6.1f} MB with 16 MB files, {peak:6.1f} MB with {size_mb} MB files")


if __name__ == "__main__":
    main()
