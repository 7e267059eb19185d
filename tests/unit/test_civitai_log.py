from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

from peropix_tui.civitai.download_log import log_path, read_download_log
from peropix_tui.civitai.log import DownloadLog, Entry, ModelRecord, Status, due, utc_now, verified

SEED = {
    "success": [
        {"id": 469281, "type": "lora", "path": "PLACEHOLDER/a.safetensors", "size": 5},
        {"id": 76353065, "type": "image", "path": "PLACEHOLDER/76353065.png", "size": 3},
    ],
    "failed": [
        {"id": 469282, "type": "lora", "reason": "presigned_url_failed", "info": "403"},
        {"id": "76353070", "type": "image", "reason": "uuid_not_found", "info": {"url": "https://x/y"}},
        {"id": 76353065, "type": "image", "reason": "timeout", "info": "before it worked"},
    ],
    "started_at": "2026-01-01T00:00:00Z",
}


def write_seed(root: Path, username: str) -> Path:
    path = log_path(root, username)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(SEED).replace("PLACEHOLDER", str(root)), encoding="utf-8")
    return path


def test_seed_log_is_read_as_it_is(tmp_path: Path) -> None:
    write_seed(tmp_path, "Ggrue")
    book = DownloadLog.open(tmp_path, "Ggrue")
    assert book.problem is None
    lora = book.get("model", 469281)
    assert lora is not None and lora.status is Status.DONE and lora.type == "lora" and lora.size == 5
    image = book.get("image", "76353065")
    assert image is not None and image.status is Status.DONE  # the later success wins over the old failure
    failed = book.get("model", 469282)
    assert failed is not None and (failed.status, failed.reason, failed.info) == (
        Status.FAILED,
        "presigned_url_failed",
        "403",
    )
    odd = book.get("image", 76353070)
    assert odd is not None and odd.info == '{"url":"https://x/y"}'
    assert book.done_at(tmp_path / "a.safetensors") is lora


def test_written_log_keeps_the_seed_format_and_unknown_keys(tmp_path: Path) -> None:
    path = write_seed(tmp_path, "Ggrue")
    book = DownloadLog.open(tmp_path, "Ggrue", site="https://civitai.red")
    book.set_model(500352, ModelRecord("Crazy Mix", "Crazy Mix", {469281: "a.safetensors"}, [556208]))
    until = utc_now() + timedelta(hours=3)
    book.record(
        Entry(
            "model",
            "469283",
            "lora",
            Status.DEFERRED,
            reason="early_access",
            info="until later",
            retry_after=until,
            attempts=1,
            http_status=403,
            model_id=500352,
            version_id=556208,
        )
    )
    book.record(Entry("image", "9", "image", Status.DONE, path=str(tmp_path / "9.png"), size=10, attempts=1))
    book.save()

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["started_at"] == "2026-01-01T00:00:00Z"
    assert document["username"] == "Ggrue" and document["site"] == "https://civitai.red"
    success = {(e["type"], e["id"]): e for e in document["success"]}
    assert set(success) == {("lora", 469281), ("image", 76353065), ("image", 9)}
    assert {"id", "type", "path", "size"} <= set(success[("image", 9)])
    failed = {e["id"]: e for e in document["failed"]}
    assert failed[469283]["status"] == "deferred" and failed[469283]["reason"] == "early_access"
    assert failed[469283]["retry_after"].endswith("Z")
    assert document["models"]["500352"] == {
        "name": "Crazy Mix",
        "folder": "Crazy Mix",
        "files": {"469281": "a.safetensors"},
        "versions": [556208],
    }
    # The Downloads screen's reader understands it.
    seen = read_download_log(path, "Ggrue")
    assert seen.error is None
    assert (seen.models_ok, seen.images_ok, seen.failed) == (1, 2, 3)
    assert ("early_access", 1) in seen.failed_by_reason
    # And it reads back the same.
    again = DownloadLog.open(tmp_path, "Ggrue")
    entry = again.get("model", 469283)
    assert entry is not None and entry.retry_after is not None
    assert abs((entry.retry_after - until).total_seconds()) < 1
    record = again.model(500352)
    assert record is not None and record.files == {469281: "a.safetensors"}


def test_attempts_accumulate_and_entries_change_state(tmp_path: Path) -> None:
    book = DownloadLog.open(tmp_path, "u")
    book.record(Entry("model", "1", "lora", Status.FAILED, reason="timeout", attempts=2))
    book.record(Entry("model", "1", "lora", Status.DONE, path="/x", size=1, attempts=1))
    entry = book.get("model", 1)
    assert entry is not None and entry.status is Status.DONE and entry.attempts == 3


def test_unreadable_log_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    path = log_path(tmp_path, "u")
    path.parent.mkdir(parents=True)
    path.write_text("{ not json", encoding="utf-8")
    book = DownloadLog.open(tmp_path, "u")
    assert book.problem is not None and "kept as" in book.problem
    aside = [p for p in path.parent.iterdir() if ".unreadable-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == "{ not json"
    book.record(Entry("image", "1", "image", Status.DONE, path="/p", size=1))
    book.save()
    assert json.loads(path.read_text())["success"][0]["id"] == 1


def test_unsafe_usernames_get_a_safe_log_folder(tmp_path: Path) -> None:
    book = DownloadLog.open(tmp_path, "../../evil")
    book.record(Entry("image", "1", "image", Status.DONE, path="/p", size=1))
    book.save()
    assert book.path.is_relative_to(tmp_path / "download_logs")
    assert book.path.parent.name == "_.._evil"


def test_saves_happen_during_the_run_not_only_at_the_end(tmp_path: Path) -> None:
    book = DownloadLog.open(tmp_path, "u", save_interval_s=0.0)
    book.record(Entry("image", "1", "image", Status.DONE, path="/p", size=1))
    assert book.path.exists()
    slow = DownloadLog.open(tmp_path, "v", save_interval_s=3600.0)
    slow.record(Entry("image", "1", "image", Status.DONE, path="/p", size=1))
    slow.record(Entry("image", "2", "image", Status.DONE, path="/p", size=1))
    assert json.loads(slow.path.read_text())["success"][0]["id"] == 1  # first record saved at once
    with slow.saving():
        pass
    assert len(json.loads(slow.path.read_text())["success"]) == 2


def test_many_threads_record_safely(tmp_path: Path) -> None:
    book = DownloadLog.open(tmp_path, "u", save_interval_s=0.0)

    def work(start: int) -> None:
        for n in range(start, start + 50):
            book.record(Entry("image", str(n), "image", Status.DONE, path=f"/p/{n}", size=n))

    threads = [threading.Thread(target=work, args=(k * 50,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    book.save()
    document = json.loads(book.path.read_text())
    assert sorted(e["id"] for e in document["success"]) == list(range(400))


def test_verified_checks_the_disk(tmp_path: Path) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"12345")
    entry = Entry("model", "1", "lora", Status.DONE, path=str(file), size=5)
    assert verified(entry)
    file.write_bytes(b"1234")
    assert not verified(entry)
    file.unlink()
    assert not verified(entry)
    assert not verified(Entry("model", "1", "lora", Status.FAILED, path=str(file)))


def test_when_failures_are_due() -> None:
    now = utc_now()

    def entry(status: Status, reason: str, retry_after: timedelta | None = None) -> Entry:
        return Entry(
            "model", "1", "lora", status, reason=reason, retry_after=None if retry_after is None else now + retry_after
        )

    plain = {"now": now, "retry_failed": False, "have_key": False}
    assert due(entry(Status.FAILED, "timeout"), **plain)
    assert not due(entry(Status.FAILED, "needs_api_key"), **plain)
    assert due(entry(Status.FAILED, "needs_api_key"), now=now, retry_failed=False, have_key=True)
    assert not due(entry(Status.DEFERRED, "early_access", timedelta(hours=1)), **plain)
    assert due(entry(Status.DEFERRED, "early_access", timedelta(hours=-1)), **plain)
    assert not due(entry(Status.SKIPPED, "archived"), **plain)
    assert not due(entry(Status.HASH_MISMATCH, "hash_mismatch"), **plain)
    forced = {"now": now, "retry_failed": True, "have_key": False}
    for status in (Status.SKIPPED, Status.HASH_MISMATCH, Status.DEFERRED, Status.FAILED):
        assert due(entry(status, "x", timedelta(hours=5)), **forced)
    assert not due(Entry("model", "1", "lora", Status.DONE), **forced)
