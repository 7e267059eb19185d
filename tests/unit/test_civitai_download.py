"""Every download fault of the sandbox server, end to end over real HTTP: the log status it must leave, and
never a corrupt file under a final name."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from civitai_helpers import FAST, KEY, SleepRecorder, collect

from peropix_tui.civitai.client import CivitaiClient, RetryPolicy
from peropix_tui.civitai.download import FileJob, ModelDownloader, looks_like_error_page, refused_type, sniff_extension
from peropix_tui.civitai.layout import IMAGE_EXTENSIONS, part_path
from peropix_tui.civitai.log import DownloadLog, Status
from peropix_tui.core.jobs import Executors
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, FileAccess, ModelType, SandboxFile
from peropix_tui.sandbox.civitai_faults import Fault, FaultKind
from peropix_tui.sandbox.civitai_images import ImageFormat
from peropix_tui.sandbox.civitai_server import CivitaiSandbox

SIZE = 3 * 1024 * 1024 + 12345  # several storage pieces, not a round number


def dl_dataset() -> CivitaiDataset:
    dataset = CivitaiDataset(seed=11)
    carol = dataset.add_creator("carol")
    for name in ("First Style", "Second Style"):
        model = dataset.add_model(carol, name, type=ModelType.LORA)
        version = dataset.add_version(model, "v1.0")
        dataset.add_file(version, size=SIZE)
        dataset.add_image(version, image_format=ImageFormat.PNG)
    return dataset


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(dl_dataset()) as server:
        yield server


def files(sandbox: CivitaiSandbox) -> list[SandboxFile]:
    return sorted(sandbox.dataset.files.values(), key=lambda f: f.id)


def target(root: Path, sandbox: CivitaiSandbox, sandbox_file: SandboxFile) -> Path:
    model = sandbox.dataset.models[sandbox.dataset.versions[sandbox_file.version_id].model_id]
    return root / "Users" / "carol" / model.name / sandbox_file.name


def log_entries(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    document = json.loads((root / "download_logs" / "carol" / "carol_download_log.json").read_text())
    return {(e["type"], e["id"]): e for e in document["success"] + document["failed"]}


def assert_done(root: Path, sandbox: CivitaiSandbox, sandbox_file: SandboxFile) -> None:
    path = target(root, sandbox, sandbox_file)
    assert path.read_bytes() == sandbox_file.read()
    assert not part_path(path).exists()
    entry = log_entries(root)[("lora", sandbox_file.id)]
    assert entry["size"] == sandbox_file.size and entry["sha256"] == sandbox_file.hashes.sha256
    assert "status" not in entry  # a success entry, in the seed's shape


def assert_no_file(root: Path, sandbox: CivitaiSandbox, sandbox_file: SandboxFile) -> None:
    path = target(root, sandbox, sandbox_file)
    assert not path.exists()
    assert not part_path(path).exists() or part_path(path).read_bytes() == sandbox_file.read(
        0, part_path(path).stat().st_size
    )


def failed(root: Path, file_id: int) -> dict[str, Any]:
    return log_entries(root)[("lora", file_id)]


async def test_clean_run_fetches_byte_identical_files_and_never_leaks_the_key(
    sandbox: CivitaiSandbox, tmp_path: Path
) -> None:
    result = await collect(sandbox, tmp_path, ("carol",))
    for sandbox_file in files(sandbox):
        assert_done(tmp_path, sandbox, sandbox_file)
    assert result.tally.count("done", "model") == 2 and result.tally.failed == 0
    assert sandbox.key_leaks() == []
    assert not any(r.method == "HEAD" for r in sandbox.requests)
    downloads = [r for r in sandbox.requests if r.path.startswith("/api/download/models/")]
    assert all(r.headers.get("authorization") == "<redacted>" and "fileId" in r.query for r in downloads)


async def test_missing_key_is_logged_as_such_and_public_items_still_come(
    sandbox: CivitaiSandbox, tmp_path: Path
) -> None:
    locked, public = files(sandbox)
    locked.access = FileAccess.KEY
    result = await collect(sandbox, tmp_path, ("carol",), key=None)
    entry = failed(tmp_path, locked.id)
    assert (entry["status"], entry["reason"], entry["http_status"]) == ("failed", "needs_api_key", 401)
    assert "needs a CivitAI API key" in entry["info"]
    assert_no_file(tmp_path, sandbox, locked)
    assert_done(tmp_path, sandbox, public)
    assert result.tally.count("done", "image") == 2


async def test_login_page_redirect_is_needs_api_key_and_no_html_is_saved(
    sandbox: CivitaiSandbox, tmp_path: Path
) -> None:
    first, second = files(sandbox)
    sandbox.inject(Fault(FaultKind.LOGIN_PAGE, file_id=first.id), times=None)
    await collect(sandbox, tmp_path, ("carol",))
    assert failed(tmp_path, first.id)["reason"] == "needs_api_key"
    assert_no_file(tmp_path, sandbox, first)
    assert not any(r.path == "/login" for r in sandbox.requests)
    assert_done(tmp_path, sandbox, second)


async def test_html_body_from_storage_is_never_saved(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, second = files(sandbox)
    sandbox.inject(Fault(FaultKind.HTML_BODY, file_id=first.id), times=None)
    sandbox.inject(Fault(FaultKind.HTML_BODY, file_id=second.id), times=1)
    await collect(sandbox, tmp_path, ("carol",))
    entry = failed(tmp_path, first.id)
    assert (entry["status"], entry["reason"]) == ("failed", "bad_content")
    path = target(tmp_path, sandbox, first)
    assert not path.exists() and not part_path(path).exists()
    assert_done(tmp_path, sandbox, second)


async def test_early_access_is_deferred_to_its_deadline(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.EARLY_ACCESS, file_id=first.id, deadline_s=7200), times=None)
    await collect(sandbox, tmp_path, ("carol",))
    entry = failed(tmp_path, first.id)
    assert (entry["status"], entry["reason"], entry["http_status"]) == ("deferred", "early_access", 403)
    deadline = datetime.fromisoformat(entry["retry_after"])
    assert abs((deadline - datetime.now(UTC)).total_seconds() - 7200) < 60
    assert_no_file(tmp_path, sandbox, first)
    # A rerun before the deadline leaves it alone; --retry-failed tries it again.
    sandbox.clear_requests()
    again = await collect(sandbox, tmp_path, ("carol",))
    assert again.finished("model")[first.id].status == "deferred"
    assert not any(r.file_id == first.id for r in sandbox.requests if r.path.startswith("/api/download"))
    sandbox.clear_faults()
    forced = await collect(sandbox, tmp_path, ("carol",), retry_failed=True)
    assert forced.finished("model")[first.id].status == "done"
    assert_done(tmp_path, sandbox, first)


async def test_archived_is_a_permanent_skip(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.GONE, file_id=first.id), times=None)
    await collect(sandbox, tmp_path, ("carol",))
    entry = failed(tmp_path, first.id)
    assert (entry["status"], entry["reason"], entry["http_status"]) == ("skipped_permanent", "archived", 410)
    assert_no_file(tmp_path, sandbox, first)


async def test_quota_stops_model_downloads_for_the_run_but_not_images(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, second = files(sandbox)
    sandbox.inject(Fault(FaultKind.QUOTA), times=1)
    result = await collect(sandbox, tmp_path, ("carol",), download_workers=1)
    statuses = {f.id: failed(tmp_path, f.id) for f in (first, second)}
    assert all(e["status"] == "deferred" and e["reason"] == "quota" for e in statuses.values())
    assert all(e.get("retry_after") for e in statuses.values())
    assert sum(1 for r in sandbox.requests if r.path.startswith("/api/download")) == 1
    assert result.tally.count("done", "image") == 2
    assert any("quota" in getattr(e, "message", "") for e in result.events)


async def test_truncated_body_resumes_with_range(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.TRUNCATE, file_id=first.id, after_bytes=1_500_000), times=1)
    await collect(sandbox, tmp_path, ("carol",))
    assert_done(tmp_path, sandbox, first)
    storage = [r for r in sandbox.requests if r.path.startswith("/storage/") and r.file_id == first.id]
    assert storage[1].headers["range"] == "bytes=1500000-"
    assert storage[1].status == 206
    assert sandbox.bytes_served[first.id] == first.size
    assert sandbox.downloads[first.id] == 2  # a fresh redirect for the second attempt


async def test_range_ignored_restarts_cleanly(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.TRUNCATE, file_id=first.id, after_bytes=1_000_000), times=1)
    sandbox.inject(Fault(FaultKind.RANGE_IGNORED, file_id=first.id), times=1)
    await collect(sandbox, tmp_path, ("carol",))
    assert_done(tmp_path, sandbox, first)
    storage = [r for r in sandbox.requests if r.path.startswith("/storage/") and r.file_id == first.id]
    assert [r.status for r in storage] == [200, 200]


async def test_wrong_hash_once_is_fetched_again(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.WRONG_HASH, file_id=first.id), times=1)
    await collect(sandbox, tmp_path, ("carol",))
    assert_done(tmp_path, sandbox, first)
    assert sandbox.downloads[first.id] == 2


async def test_wrong_hash_twice_is_hash_mismatch_and_the_file_is_kept(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.WRONG_HASH, file_id=first.id), times=None)
    result = await collect(sandbox, tmp_path, ("carol",))
    entry = failed(tmp_path, first.id)
    assert (entry["status"], entry["reason"]) == ("hash_mismatch", "hash_mismatch")
    assert entry["sha256_expected"] == first.hashes.sha256 and entry["sha256"] != first.hashes.sha256
    assert target(tmp_path, sandbox, first).stat().st_size == first.size
    assert sandbox.downloads[first.id] == 2  # one re-download, no loop
    assert result.tally.failed == 1
    # Not retried by a plain rerun.
    sandbox.clear_requests()
    await collect(sandbox, tmp_path, ("carol",))
    assert not any(r.file_id == first.id for r in sandbox.requests if r.path.startswith("/api/download"))


async def test_expired_presigned_url_gets_a_fresh_redirect(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.EXPIRED_URL, file_id=first.id), times=1)
    await collect(sandbox, tmp_path, ("carol",))
    assert_done(tmp_path, sandbox, first)
    assert sandbox.downloads[first.id] == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault(FaultKind.STATUS, status=503, retry_after=1),
        Fault(FaultKind.STATUS, status=500),
        Fault(FaultKind.STATUS, status=404),  # marked no-store: a transient resolver failure
        Fault(FaultKind.THROTTLE),
        Fault(FaultKind.THROTTLE, retry_after=3),
        Fault(FaultKind.DROP),
    ],
    ids=["503-burst", "500", "404-no-store", "429-no-retry-after", "429-retry-after", "drop"],
)
async def test_transient_download_route_failures_are_retried(
    sandbox: CivitaiSandbox, tmp_path: Path, fault: Fault
) -> None:
    first, _ = files(sandbox)
    routed = Fault(fault.kind, status=fault.status, retry_after=fault.retry_after, paths=frozenset({"/api/download/*"}))
    sandbox.inject(routed, times=2)
    await collect(sandbox, tmp_path, ("carol",), download_workers=1)
    assert_done(tmp_path, sandbox, first)


async def test_persistent_server_errors_fail_with_a_reason(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, second = files(sandbox)
    sandbox.inject(Fault(FaultKind.STATUS, status=502, file_id=first.id), times=None)
    result = await collect(sandbox, tmp_path, ("carol",))
    entry = failed(tmp_path, first.id)
    assert (entry["status"], entry["reason"], entry["http_status"]) == ("failed", "http_502", 502)
    assert entry["attempts"] == FAST.attempts
    assert_no_file(tmp_path, sandbox, first)
    assert_done(tmp_path, sandbox, second)
    assert result.tally.failed == 1
    # A plain rerun retries a transient failure.
    sandbox.clear_faults()
    again = await collect(sandbox, tmp_path, ("carol",))
    assert again.finished("model")[first.id].status == "done"


async def test_images_fall_back_to_b2_and_get_their_real_extension(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    images = sorted(sandbox.dataset.images.values(), key=lambda i: i.id)
    images[0].cdn_missing = True
    images[1].image_format = ImageFormat.WEBP
    images[1]._original = None
    await collect(sandbox, tmp_path, ("carol",))
    folder = {m.id: tmp_path / "Users" / "carol" / m.name for m in sandbox.dataset.models.values()}
    for image in images:
        model_id = sandbox.dataset.versions[image.version_id].model_id  # type: ignore[index]
        ext = "png" if image.image_format is ImageFormat.PNG else "webp"
        path = folder[model_id] / f"{image.id}.{ext}"
        assert path.read_bytes() == image.original
        sidecar = json.loads((folder[model_id] / f"{image.id}.txt").read_text())
        assert sidecar["image_id"] == image.id
    assert any(r.path.startswith("/file/civitai-media-cache/") for r in sandbox.requests)
    cdn = [r for r in sandbox.requests if r.path.startswith("/xG1nkqKTMzGDvpLrqFT7WA/")]
    assert all("/original=true/" in r.path for r in cdn)


async def test_missing_images_are_logged(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    image = min(sandbox.dataset.images.values(), key=lambda i: i.id)
    sandbox.inject(
        Fault(FaultKind.STATUS, status=404, paths=frozenset({"/xG1nkqKTMzGDvpLrqFT7WA/*", "/file/*"})), times=None
    )
    result = await collect(sandbox, tmp_path, ("carol",))
    document = json.loads((tmp_path / "download_logs" / "carol" / "carol_download_log.json").read_text())
    entry = next(e for e in document["failed"] if e["type"] == "image" and e["id"] == image.id)
    assert entry["reason"] == "missing"
    assert result.tally.count("failed", "image") == 2
    assert not list((tmp_path / "Users" / "carol").glob("*/*.png"))


async def test_cancelled_run_keeps_the_part_and_the_log_and_resumes(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.SLOW, file_id=first.id, rate=512 * 1024), times=1)
    task = asyncio.ensure_future(collect(sandbox, tmp_path, ("carol",), download_workers=2))
    part = part_path(target(tmp_path, sandbox, first))
    for _tick in range(600):  # the slow drip sends 512 KiB/s: a little over 2 s to get past 1.1 MB
        if part.exists() and part.stat().st_size >= 1_100_000:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = part.stat().st_size
    assert 1_000_000 <= kept < first.size
    assert part.read_bytes() == first.read(0, kept)
    assert not target(tmp_path, sandbox, first).exists()
    book = DownloadLog.open(tmp_path, "carol")
    assert book.model(next(iter(sandbox.dataset.models))) is not None  # the plan was saved before downloading

    sandbox.clear_requests()
    await collect(sandbox, tmp_path, ("carol",))
    assert_done(tmp_path, sandbox, first)
    [resumed] = [r for r in sandbox.requests if r.path.startswith("/storage/") and r.file_id == first.id]
    assert resumed.headers["range"] == f"bytes={kept}-" and resumed.bytes_sent == first.size - kept


async def test_downloader_accepts_a_complete_part_answered_with_416(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    path = tmp_path / "x.safetensors"
    part_path(path).write_bytes(first.read())
    executors = Executors()
    try:
        async with CivitaiClient(sandbox.base_url, KEY, spacing_s=0, policy=FAST, sleep=SleepRecorder()) as client:
            outcome = await ModelDownloader(client, executors).download(
                FileJob(first.version_id, first.id, path, first.hashes.sha256, first.size)
            )
    finally:
        executors.shutdown()
    assert outcome.status is Status.DONE and outcome.size == first.size
    assert path.read_bytes() == first.read()
    assert [r.status for r in sandbox.requests if r.path.startswith("/storage/")] == [416]


@pytest.mark.parametrize(
    ("fault", "reason", "words"),
    [
        (Fault(FaultKind.DELAY, delay_s=5.0, paths=frozenset({"/storage/*"})), "timeout", "no answer from"),
        (Fault(FaultKind.DROP, paths=frozenset({"/storage/*"})), "network", "closed the connection without"),
    ],
    ids=["no-answer", "dropped"],
)
async def test_storage_network_failures_are_retried_then_logged_with_their_reason(
    sandbox: CivitaiSandbox, tmp_path: Path, fault: Fault, reason: str, words: str
) -> None:
    first, _ = files(sandbox)
    sandbox.inject(fault, times=None)
    policy = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02, jitter=0.0)
    executors = Executors()
    try:
        async with CivitaiClient(
            sandbox.base_url, KEY, spacing_s=0, policy=policy, sleep=SleepRecorder(), timeout=httpx.Timeout(1.0)
        ) as client:
            outcome = await ModelDownloader(client, executors).download(
                FileJob(first.version_id, first.id, tmp_path / "x.safetensors", first.hashes.sha256, first.size)
            )
    finally:
        executors.shutdown()
    assert (outcome.status, outcome.reason, outcome.attempts) == (Status.FAILED, reason, 2)
    assert outcome.info.startswith("x.safetensors from storage: ") and words in outcome.info
    assert "\n" not in outcome.info
    assert sandbox.downloads[first.id] == 2  # each attempt asked for a fresh address
    assert not (tmp_path / "x.safetensors").exists()


async def test_a_cancel_is_seen_soon_on_a_slow_link(sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    first, _ = files(sandbox)
    sandbox.inject(Fault(FaultKind.SLOW, file_id=first.id, rate=40 * 1024), times=1)
    path = tmp_path / "x.safetensors"
    executors = Executors()
    try:
        async with CivitaiClient(sandbox.base_url, KEY, spacing_s=0, policy=FAST, sleep=SleepRecorder()) as client:
            task = asyncio.ensure_future(
                ModelDownloader(client, executors).download(
                    FileJob(first.version_id, first.id, path, first.hashes.sha256, first.size)
                )
            )
            await asyncio.sleep(1.0)
            cancelled = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # A read asks for about 0.2 s of bytes at the speed seen, not a whole 1 MiB block (25 s here).
            assert time.monotonic() - cancelled < 2.0
    finally:
        executors.shutdown()
    kept = part_path(path).read_bytes()
    assert 0 < len(kept) < first.size and kept == first.read(0, len(kept))


def test_content_sniffing() -> None:
    assert sniff_extension(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "png"
    assert sniff_extension(b"\xff\xd8\xff\xe0") == "jpg"
    assert sniff_extension(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_extension(b"\0\0\0\x18ftypisom") == "mp4"
    assert sniff_extension(b"\0\0\0\x18ftypavif") == "avif"
    assert sniff_extension(b"\x1a\x45\xdf\xa3rest") == "webm"
    assert sniff_extension(b"GIF89a....") == "gif"
    assert sniff_extension(b"<!DOCTYPE html><html>", "image/jpeg") is None
    assert sniff_extension(b'{"error":"nope"}', "image/png") is None
    assert sniff_extension(b"????", "image/png") == "png"
    assert sniff_extension(b"????", "text/html") is None
    assert sniff_extension(b"????") is None
    heads = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"\x1a\x45\xdf\xa3", b"ID3", b"RIFF\0\0\0\0WEBP"]
    heads += [b"\0\0\0\x18ftyp" + brand for brand in (b"isom", b"avif", b"heic", b"qt  ")]
    # Every extension a download can get is one the collection recognises as an image on a rerun.
    assert {sniff_extension(head + b"\0" * 16) for head in heads} <= set(IMAGE_EXTENSIONS)
    assert looks_like_error_page(b"  \n<HTML><body>")
    assert not looks_like_error_page(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert refused_type("text/html; charset=utf-8") and refused_type("application/json")
    assert not refused_type("application/octet-stream") and not refused_type("")
