"""The collector's model-file downloads against curl, on the same local sandbox CivitAI server.

Usage: python bench/bench_civitai.py [files] [size_mb] [workers] [rounds]

Serves `files` LoRA files of `size_mb` MB (default 20 × 64) from the sandbox server on 127.0.0.1 and downloads
all of them into fresh folders, `workers` at a time (default 4), `rounds` times each (default 3):
- ours: the collector's model downloader (download route, storage redirect, SHA256 while streaming, fsync,
  atomic rename) on the files the API lists, in a child process so it shares no GIL with the server;
- reference: `curl --parallel --parallel-max workers` following the same download route to files on the same
  disk (`httpx` streaming to files when curl is not installed), without hashing or fsync; then once more
  timed up to the end of a `sync`, the cost of making its files as durable as ours.
Rounds alternate which one goes first, so neither always finds the page cache the other just freed. It prints
the best time of each with the median, the CPU seconds each spent (with 2 cores and a server to feed, the CPU
a transfer needs bounds its speed, and CPU time stays honest on a busy machine where wall time does not), the
sandbox server's CPU, and the ratio (goal: at least 0.9). Then the peak RSS of our child for 16 MB and 256 MB
files: streaming keeps it flat whatever the file size.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]
CREATOR = "bench"
RSS_FILES = 4
RSS_SIZES_MB = (16, 256)


@dataclass(frozen=True, slots=True)
class Run:
    """One timed download of every file: wall seconds, CPU seconds of the downloader, CPU of the server."""

    elapsed: float
    cpu: float
    server_cpu: float
    durable: float | None = None
    peak_rss_mb: float | None = None


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
    collector's model downloader, `workers` at a time; print elapsed and CPU seconds and peak RSS."""
    from peropix_tui.civitai.client import CivitaiClient
    from peropix_tui.civitai.download import FileJob, ModelDownloader
    from peropix_tui.civitai.listing import list_models
    from peropix_tui.core.jobs import Executors, ExecutorSizes

    async def run() -> tuple[float, float]:
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

                cpu = cpu_seconds(resource.RUSAGE_SELF)
                started = time.perf_counter()
                await asyncio.gather(*(one(job) for job in jobs))
                return time.perf_counter() - started, cpu_seconds(resource.RUSAGE_SELF) - cpu
        finally:
            executors.shutdown()

    Path(root).mkdir(parents=True, exist_ok=True)
    elapsed, cpu = asyncio.run(run())
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "peak_rss_mb": peak_rss_kb() / 1024}))


def peak_rss_kb() -> int:
    """This process's peak RSS. Linux's `ru_maxrss` keeps the parent's peak across fork and exec (it would
    report the bench's own server process), so the high-water mark of /proc/self/status comes first."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def ours(base_url: str, root: Path, workers: int) -> Run:
    server = cpu_seconds(resource.RUSAGE_SELF)
    done = subprocess.run(
        [sys.executable, __file__, "--child", base_url, str(root), str(workers)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"our download child failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(
        float(result["elapsed"]),
        float(result["cpu"]),
        cpu_seconds(resource.RUSAGE_SELF) - server,
        peak_rss_mb=float(result["peak_rss_mb"]),
    )


def download_urls(sandbox: object, base_url: str) -> list[tuple[str, str]]:
    dataset = sandbox.dataset  # type: ignore[attr-defined]
    return [(f"{base_url}/api/download/models/{f.version_id}?fileId={f.id}", f.name) for f in dataset.files.values()]


def reference_curl(urls: list[tuple[str, str]], folder: Path, workers: int) -> Run:
    """curl's time and CPU, and its time up to the end of a `sync` (what making its files durable costs)."""
    command = ["curl", "--silent", "--show-error", "--fail", "--location", "--parallel"]
    command += ["--parallel-max", str(workers)]
    for url, name in urls:
        command += ["--output", str(folder / name), url]
    server = cpu_seconds(resource.RUSAGE_SELF)
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"curl failed: {done.stderr.strip()[-500:]}")
    used = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    server_cpu = cpu_seconds(resource.RUSAGE_SELF) - server
    os.sync()
    return Run(elapsed, used, server_cpu, durable=time.perf_counter() - started)


def reference_httpx(urls: list[tuple[str, str]], folder: Path, workers: int) -> Run:
    """Plain httpx streaming to files, for machines without curl (its CPU is shared with the server here)."""
    import httpx

    async def fetch(client: httpx.AsyncClient, gate: asyncio.Semaphore, url: str, name: str) -> None:
        async with gate, client.stream("GET", url) as response:
            response.raise_for_status()
            with (folder / name).open("wb") as fh:
                async for chunk in response.aiter_raw():
                    fh.write(chunk)

    async def run() -> None:
        gate = asyncio.Semaphore(workers)
        async with httpx.AsyncClient(follow_redirects=True, timeout=120) as client:
            await asyncio.gather(*(fetch(client, gate, url, name) for url, name in urls))

    cpu = cpu_seconds(resource.RUSAGE_SELF)
    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    used = cpu_seconds(resource.RUSAGE_SELF) - cpu
    os.sync()
    return Run(elapsed, used, used, durable=time.perf_counter() - started)


def warm(base_url: str) -> None:
    """Ask for the listing once so the server computes the files' hashes before anything is timed."""
    with urllib.request.urlopen(f"{base_url}/api/v1/models?username={CREATOR}&limit=100", timeout=600) as answer:
        answer.read()


def measure(files: int, size: int, workers: int, rounds: int, scratch: Path) -> tuple[list[Run], list[Run], str]:
    """`rounds` runs of ours and of the reference on one server, alternating which goes first."""
    from peropix_tui.sandbox.civitai_server import CivitaiSandbox

    name = "curl" if shutil.which("curl") else "httpx"
    reference = reference_curl if name == "curl" else reference_httpx
    ours_runs: list[Run] = []
    reference_runs: list[Run] = []
    with CivitaiSandbox(build_dataset(files, size)) as sandbox:  # type: ignore[arg-type]
        base_url = sandbox.base_url
        warm(base_url)
        urls = download_urls(sandbox, base_url)
        for n in range(rounds):
            steps: list[Callable[[Path], None]] = [
                lambda folder: ours_runs.append(ours(base_url, folder, workers)),
                lambda folder: reference_runs.append(reference(urls, folder, workers)),
            ]
            for step in steps if n % 2 == 0 else steps[::-1]:
                folder = scratch / f"round-{n}"
                folder.mkdir()
                step(folder)
                shutil.rmtree(folder)
    return ours_runs, reference_runs, name


def peak_rss(files: int, size_mb: int, workers: int, scratch: Path) -> float:
    from peropix_tui.sandbox.civitai_server import CivitaiSandbox

    with CivitaiSandbox(build_dataset(files, size_mb * MB)) as sandbox:  # type: ignore[arg-type]
        warm(sandbox.base_url)
        folder = scratch / f"rss-{size_mb}"
        run = ours(sandbox.base_url, folder, workers)
        shutil.rmtree(folder)
    assert run.peak_rss_mb is not None
    return run.peak_rss_mb


def line(label: str, runs: list[Run], total_mb: float, *, durable: bool = False) -> tuple[float, float]:
    """Print the best and median time of `runs`; return them."""
    times = [(run.durable if durable and run.durable is not None else run.elapsed) for run in runs]
    best, median = min(times), statistics.median(times)
    cpu = statistics.median(run.cpu for run in runs)
    server = statistics.median(run.server_cpu for run in runs)
    extra = "" if durable else f"  CPU {cpu:5.2f} s (server {server:4.2f} s)"
    print(f"  {label:<32}: {best:6.2f} s {total_mb / best:7.1f} MB/s  median {median:6.2f} s{extra}")
    return best, median


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    size_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    total_mb = files * size_mb
    with tempfile.TemporaryDirectory(prefix="peropix-bench-") as tmp:
        scratch = Path(tmp)
        load = os.getloadavg()[0]
        ours_runs, reference_runs, name = measure(files, size_mb * MB, workers, rounds, scratch)
        load = max(load, os.getloadavg()[0])
        print(f"{files} files x {size_mb} MB, {workers} at a time, from the sandbox server on 127.0.0.1")
        print(f"  best of {rounds} rounds; {os.cpu_count()} CPUs, load average up to {load:.1f} while measuring")
        ours_best, ours_median = line("ours (SHA256 + fsync + rename)", ours_runs, total_mb)
        ref_best, ref_median = line(name, reference_runs, total_mb)
        durable_best, durable_median = line(f"{name} then sync", reference_runs, total_mb, durable=True)
        print(
            f"  ratio ours/{name} throughput: {ref_best / ours_best:.2f}x best, "
            f"{ref_median / ours_median:.2f}x median (goal >= 0.9x)"
        )
        print(
            f"  ratio ours/({name} then sync): {durable_best / ours_best:.2f}x best, "
            f"{durable_median / ours_median:.2f}x median"
        )
        small, large = (peak_rss(RSS_FILES, size, workers, scratch) for size in RSS_SIZES_MB)
        print(
            f"  peak RSS of our run ({RSS_FILES} files): {small:6.1f} MB with {RSS_SIZES_MB[0]} MB files, "
            f"{large:6.1f} MB with {RSS_SIZES_MB[1]} MB files"
        )


if __name__ == "__main__":
    main()
