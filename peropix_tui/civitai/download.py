"""Downloading model files and images so that nothing corrupt ever looks complete.

Model files (`/api/download/models/{versionId}?fileId=…`):
- every attempt asks the API for a fresh storage redirect (presigned URLs expire); the key goes to the API
  only, the storage request carries none;
- bytes go to `<name>.part`; a later attempt or run resumes it with `Range` after re-hashing what is there,
  and copes with storage answering a Range request with 200 and the whole file;
- HTML or JSON bodies (a login page, an error) are refused by Content-Type and by their first bytes, and a
  body far smaller than the API's size is refused, so neither is ever saved as a model;
- SHA256 is computed while streaming and compared with the API's: on a mismatch the file is fetched once
  more from scratch, then kept and reported as `hash_mismatch` (CivitAI has wrong hashes for some files);
- the part is fsynced and renamed into place atomically;
- the body is received straight into one aligned buffer (see storage_stream), hashed there and, on local
  disk filesystems, written from it with O_DIRECT (see `PartWriter`).
The answers of the download route map to log statuses as CivitAI documents them: 401 needs a key (or the
creator disabled downloads: permanent), 403 early access (deferred to its deadline) or no access
(permanent), 404 (transient when marked `no-store`, else permanent), 410 archived, and the download quota
429, after which the run downloads no more model files.

Images: the original bytes from the CDN (`original=true`), the B2 origin as fallback, the extension from
the magic bytes (CivitAI names everything `.jpeg`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin

import httpx

from peropix_tui.civitai.client import CivitaiClient, error_message, is_html
from peropix_tui.civitai.jsonio import JsonBodyError, parse_json
from peropix_tui.civitai.layout import image_name, part_path
from peropix_tui.civitai.log import Status, parse_iso, utc_now
from peropix_tui.civitai.storage_stream import StorageAddressError, StorageError, StorageStream, StorageTimeout
from peropix_tui.civitai.urls import host_of, split_url
from peropix_tui.core.atomicio import fsync_dir
from peropix_tui.core.errors import DiskFullError
from peropix_tui.core.jobs import CancelToken, Executors

log = logging.getLogger(__name__)

DOWNLOAD_PATH: Final = "/api/download/models/{}"
CHUNK: Final = 1 << 20
SNIFF_BYTES: Final = 64
PROGRESS_STEP: Final = 1 << 20
BLOCK: Final = 1 << 20
# Reads of a model body last about this long (never longer than one block), so a cancel is seen in time.
CANCEL_CHECK_S: Final = 0.2
MIN_READ: Final = 16 << 10
DIRECT_ALIGN: Final = 4096
WRITEBACK_STEP: Final = 8 << 20
# POSIX_FADV_DONTNEED on written pages starts their writeback without waiting (Linux); absent elsewhere.
_FADVISE: Final = getattr(os, "POSIX_FADV_DONTNEED", None)
_O_DIRECT: Final[int] = getattr(os, "O_DIRECT", 0)
MOUNTINFO: Final = Path("/proc/self/mountinfo")
# Local disk filesystems whose O_DIRECT writes are plain and fast. Elsewhere (network and FUSE filesystems,
# tmpfs, overlays, systems without O_DIRECT) a synchronous write per block could be slow or refused.
DIRECT_FILESYSTEMS: Final = frozenset({"ext4", "xfs", "btrfs", "f2fs", "bcachefs"})
MAX_ERROR_BODY: Final = 64 * 1024
MAX_IMAGE_BYTES: Final = 4 << 30
QUOTA_DEFER_HOURS: Final = 6.0
EARLY_ACCESS_DEFAULT_HOURS: Final = 24.0
TRANSIENT_404_LIMIT: Final = 3
_REFUSED_TYPES: Final = ("text/html", "application/json", "application/xml", "text/xml", "text/plain")
_ERROR_STARTS: Final = (b"<!doctype", b"<html", b"<?xml", b'{"error"', b"<head", b"<body")

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True, slots=True)
class FileJob:
    """One model file to fetch; `expected_size` comes from the API's approximate `sizeKB`."""

    version_id: int
    file_id: int
    target: Path
    expected_sha256: str | None
    expected_size: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one download ended, in the log's terms."""

    status: Status
    reason: str | None = None
    info: str = ""
    size: int | None = None
    sha256: str | None = None
    retry_after: datetime | None = None
    http_status: int | None = None
    attempts: int = 1
    quota: bool = False


class _Retry(Exception):
    """An attempt that failed in a way another attempt may fix; `limit` caps attempts for this reason."""

    def __init__(
        self,
        reason: str,
        info: str,
        *,
        http_status: int | None = None,
        limit: int | None = None,
        wait: float | None = None,
    ) -> None:
        super().__init__(info)
        self.reason = reason
        self.info = info
        self.http_status = http_status
        self.limit = limit
        self.wait = wait


class _Final(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.info)
        self.outcome = outcome


def refused_type(content_type: str) -> bool:
    """Content types that are never a model or an image: error pages and error documents."""
    value = content_type.split(";", 1)[0].strip().lower()
    return value.startswith(_REFUSED_TYPES)


def looks_like_error_page(first: bytes) -> bool:
    """Whether the first bytes of a body are an HTML/XML page or a JSON error rather than a file."""
    head = first[:64].lstrip().lower()
    return head.startswith(_ERROR_STARTS)


def _fail(status: Status, reason: str, info: str, *, http_status: int | None = None, **extra: Any) -> _Final:
    return _Final(Outcome(status, reason, info, http_status=http_status, **extra))


def classify_download_answer(
    status: int, body: bytes, headers: httpx.Headers, *, have_key: bool, what: str
) -> _Final | _Retry:
    """What a non-redirect answer of the download route means (CivitAI's outcome table)."""
    message = error_message(body)
    lowered = message.lower()
    document: Any = None
    try:
        document = parse_json(body[:MAX_ERROR_BODY], where=what)
    except JsonBodyError:
        document = None
    if status == 401:
        if "disabled downloads" in lowered:
            return _fail(Status.SKIPPED, "downloads_disabled", f"{what}: {message}", http_status=status)
        hint = "needs a CivitAI API key" if not have_key else "the API key is not allowed to download it"
        return _fail(Status.FAILED, "needs_api_key", f"{what}: {hint} ({message})", http_status=status)
    if status == 403:
        if "early access" in lowered:
            deadline = parse_iso(document.get("deadline")) if isinstance(document, dict) else None
            until = deadline or utc_now() + timedelta(hours=EARLY_ACCESS_DEFAULT_HOURS)
            return _fail(
                Status.DEFERRED,
                "early_access",
                f"{what}: early access until {until:%Y-%m-%d %H:%M}Z",
                http_status=status,
                retry_after=until,
            )
        if "do not have access" in lowered:
            return _fail(Status.SKIPPED, "no_access", f"{what}: {message}", http_status=status)
        return _fail(Status.FAILED, "forbidden", f"{what}: {message}", http_status=status)
    if status == 404:
        cache = headers.get("cache-control", "").lower()
        if "no-store" in cache:
            return _Retry(
                "not_found",
                f"{what}: storage lookup failed for now ({message})",
                http_status=status,
                limit=TRANSIENT_404_LIMIT,
            )
        return _fail(Status.SKIPPED, "not_found", f"{what}: {message or 'file not found'}", http_status=status)
    if status == 410:
        return _fail(Status.SKIPPED, "archived", f"{what}: {message or 'model archived'}", http_status=status)
    if status == 429:
        if "unusual amount of downloading" in lowered or "come back later" in lowered:
            until = utc_now() + timedelta(hours=QUOTA_DEFER_HOURS)
            return _fail(
                Status.DEFERRED,
                "quota",
                f"{what}: CivitAI download quota reached ({message})",
                http_status=status,
                retry_after=until,
                quota=True,
            )
        return _Retry("throttled", f"{what}: HTTP 429 {message}", http_status=status)
    if status >= 500:
        return _Retry(f"http_{status}", f"{what}: HTTP {status} {message}", http_status=status)
    if status == 400:
        return _fail(Status.FAILED, "bad_request", f"{what}: {message}", http_status=status)
    return _fail(Status.FAILED, f"http_{status}", f"{what}: HTTP {status} {message}", http_status=status)


def _login_redirect(location: str) -> bool:
    parts = split_url(location)
    return parts is not None and (parts.path.rstrip("/").endswith("/login") or "download-auth" in parts.query)


def _disk_error(exc: OSError, path: Path, *, image: bool) -> Exception:
    """A full disk stops the run (nothing else could be saved either); any other write error fails this file
    only, as `copy_failed`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full while writing {path}; the partial file is kept for resume")
    info = f"cannot write {path}: {exc.strerror or exc}"
    return ImageFailure("copy_failed", info) if image else _fail(Status.FAILED, "copy_failed", info)


class ModelDownloader:
    """Downloads model files for one run; shares the client's connections and the run's executors."""

    def __init__(self, client: CivitaiClient, executors: Executors) -> None:
        self.client = client
        self.executors = executors

    async def download(self, job: FileJob, progress: Progress | None = None) -> Outcome:
        policy = self.client.policy
        attempts = 0
        retries_by_reason: dict[str, int] = {}
        refetched = False
        while True:
            attempts += 1
            try:
                size, digest = await self._attempt(job, progress)
            except _Final as final:
                return _with_attempts(final.outcome, attempts)
            except _Retry as retry:
                count = retries_by_reason.get(retry.reason, 0) + 1
                retries_by_reason[retry.reason] = count
                limit = min(retry.limit or policy.attempts, policy.attempts)
                if count >= limit:
                    return Outcome(
                        Status.FAILED, retry.reason, retry.info, http_status=retry.http_status, attempts=attempts
                    )
                delay = retry.wait if retry.wait is not None else policy.backoff(count)
                log.info("%s; attempt %d again in %.1f s", retry.info, attempts + 1, delay)
                await self.client.sleep(delay)
                continue
            expected = (job.expected_sha256 or "").upper()
            if expected and digest != expected:
                if not refetched:
                    refetched = True
                    log.warning("%s: SHA256 %s is not the API's %s; downloading it again", job.target, digest, expected)
                    await self.executors.run("io", _unlink, part_path(job.target))
                    continue
                return await self._finish(job.target, attempts) or Outcome(
                    Status.HASH_MISMATCH,
                    "hash_mismatch",
                    f"{job.target.name}: SHA256 {digest} twice, the API says {expected}; file kept",
                    size=size,
                    sha256=digest,
                    attempts=attempts,
                )
            return await self._finish(job.target, attempts) or Outcome(
                Status.DONE, size=size, sha256=digest, attempts=attempts
            )

    async def _finish(self, target: Path, attempts: int) -> Outcome | None:
        """Move the verified part into place; a failure to do so is the file's outcome (None when it worked)."""
        try:
            await self.executors.run("io", _promote, part_path(target), target)
        except OSError as exc:
            failure = _disk_error(exc, target, image=False)
            if isinstance(failure, _Final):
                return _with_attempts(failure.outcome, attempts)
            raise failure from None
        return None

    async def _resolve(self, job: FileJob) -> tuple[str, dict[str, str]]:
        """Ask the download route for this file: where to fetch it, and the headers that request may carry
        (none for a storage redirect; the key when the route answered with the file itself)."""
        url = self.client.url(DOWNLOAD_PATH.format(job.version_id))
        what = f"file {job.file_id} of version {job.version_id}"
        request = self.client.http.build_request(
            "GET",
            url,
            params={"fileId": str(job.file_id)},
            headers={**self.client.auth_headers(url), "Accept-Encoding": "identity"},
        )
        try:
            response = await self.client.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Retry(_network_reason(exc), f"{what}: {type(exc).__name__} asking for the download") from None
        status = response.status_code
        if status in (301, 302, 303, 307, 308):
            await response.aclose()
            location = response.headers.get("location", "")
            if not location:
                raise _Retry("presigned_url_failed", f"{what}: redirect without a Location", http_status=status)
            if _login_redirect(location):
                hint = "needs a CivitAI API key" if not self.client.api_key else "the API key is not accepted for it"
                raise _fail(
                    Status.FAILED, "needs_api_key", f"{what}: {hint} (sent to the login page)", http_status=status
                )
            try:
                return str(urljoin(str(response.url), location)), {}
            except ValueError:
                raise _Retry("presigned_url_failed", f"{what}: unusable redirect {location[:120]!r}") from None
        if status == 200 and not refused_type(response.headers.get("content-type", "")):
            # The route served the file itself: fetch it like storage, from the same (API) address.
            await response.aclose()
            direct = str(response.url)
            return direct, self.client.auth_headers(direct)
        try:
            body = await _read_capped(response, MAX_ERROR_BODY)
        finally:
            await response.aclose()
        transient = status == 429 or status >= 500
        if status == 200 or (is_html(response) and not transient):
            # A page where the file should be: CivitAI's answer to a request it wants a login for.
            if is_html(response):
                hint = "needs a CivitAI API key" if not self.client.api_key else "the API key is not accepted for it"
                info = f"{what}: got an HTML page instead of the file ({hint})"
                raise _fail(Status.FAILED, "needs_api_key", info, http_status=status)
            info = f"{what}: got a document instead of the file: {error_message(body)}"
            raise _fail(Status.FAILED, "bad_content", info, http_status=status)
        outcome = classify_download_answer(
            status, body, response.headers, have_key=bool(self.client.api_key), what=what
        )
        if isinstance(outcome, _Retry) and status == 429:
            outcome.wait = self.client.policy.retry_after(response) or self.client.policy.throttle()
        raise outcome

    async def _attempt(self, job: FileJob, progress: Progress | None) -> tuple[int, str]:
        """One try: a fresh address from the API, then the bytes, fetched on an I/O thread.

        The transfer runs on a thread with the synchronous client: reading, hashing and writing there costs
        far less interpreter time per byte than the event loop would, and the loop stays free for the
        metadata calls and images meanwhile. A cancelled run sets the token, which the thread checks
        between chunks; what it wrote stays in the `.part` file.
        """
        url, headers = await self._resolve(job)
        loop = asyncio.get_running_loop()
        report: Progress | None = None
        if progress is not None:
            callback = progress

            def report(done: int, total: int | None) -> None:
                loop.call_soon_threadsafe(callback, done, total)

        token = CancelToken()
        return await self.executors.run("io", self._fetch, job, url, headers, report, token, token=token)

    def _fetch(
        self, job: FileJob, url: str, headers: dict[str, str], report: Progress | None, token: CancelToken
    ) -> tuple[int, str]:
        part = part_path(job.target)
        try:
            hasher, offset = _hash_existing(part, token)
        except OSError as exc:
            raise _disk_error(exc, part, image=False) from None
        request_headers = {"Accept-Encoding": "identity", **headers}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        what = f"{job.target.name} from storage"
        try:
            with self.client.storage_streams.get(url, request_headers) as stream:
                return self._receive(job, stream, hasher, offset, report, token)
        except StorageAddressError as exc:
            raise _Retry("presigned_url_failed", f"{what}: {exc}") from None
        except StorageError as exc:
            reason = "timeout" if isinstance(exc, StorageTimeout) else "network"
            raise _Retry(reason, f"{what}: {exc}; the partial file is kept") from None

    def _receive(
        self,
        job: FileJob,
        response: StorageStream,
        hasher: Any,
        offset: int,
        report: Progress | None,
        token: CancelToken,
    ) -> tuple[int, str]:
        what = f"{job.target.name} from storage"
        part = part_path(job.target)
        status = response.status
        total: int | None = None
        if status == 206:
            start, total = _content_range(response.header("content-range"))
            if start != offset:
                _unlink(part)
                raise _Retry("corrupted", f"{what}: asked for byte {offset}, got a range from {start}")
        elif status == 200:
            hasher, offset = hashlib.sha256(), 0
        elif status == 416 and offset:
            _, total = _content_range(response.header("content-range"))
            if total == offset:
                return offset, hasher.hexdigest().upper()
            _unlink(part)
            raise _Retry("corrupted", f"{what}: the partial file is longer than the file; starting over")
        elif status == 403:
            raise _Retry("presigned_url_failed", f"{what}: storage refused the link (HTTP 403)", http_status=403)
        else:
            reason = "presigned_url_failed" if status < 500 else f"http_{status}"
            raise _Retry(reason, f"{what}: storage answered HTTP {status}", http_status=status)
        content_type = response.header("content-type")
        if refused_type(content_type):
            raise _Retry("bad_content", f"{what}: storage sent {content_type}, not a file", http_status=status)
        length = _int_header(response.header("content-length"))
        if total is None and length is not None:
            total = offset + length
        if total is not None and job.expected_size and total * 2 < job.expected_size:
            raise _Retry("bad_content", f"{what}: storage offers {total} bytes, the API lists {job.expected_size}")
        try:
            written = _write_stream(part, response, hasher, offset, total, report, token, what)
        except OSError as exc:
            raise _disk_error(exc, part, image=False) from None
        except _Retry:
            _unlink(part)  # an error page or an overlong body: nothing in the part can be trusted
            raise
        if total is not None and written != total:
            raise _Retry("truncated", f"{what}: got {written} of {total} bytes; will resume")
        return written, hasher.hexdigest().upper()


def _write_stream(
    part: Path,
    response: StorageStream,
    hasher: Any,
    offset: int,
    total: int | None,
    report: Progress | None,
    token: CancelToken,
    what: str,
) -> int:
    """Append the body to `part` (truncating it first when `offset` is 0), hashing it as it comes; returns the
    bytes the part holds, fsynced. What arrived before a failure or a cancel stays in the part.

    The body is received straight into the writer's aligned buffer. Each read asks for about
    `CANCEL_CHECK_S` worth of bytes at the speed seen so far (one block at most), so a cancel is noticed
    as soon on a slow link as on a fast one."""
    written = offset
    reported = offset
    part.parent.mkdir(parents=True, exist_ok=True)
    writer = PartWriter(part, offset, direct=direct_io_suits(part.parent))
    try:
        if offset == 0:
            head = _read_head(response, token)
            if looks_like_error_page(head):
                raise _Retry("bad_content", f"{what}: the body is an error page, not a file")
            hasher.update(head)
            writer.write(head)
            written += len(head)
        step = MIN_READ
        while True:
            token.raise_if_cancelled()
            started = time.monotonic()
            count = writer.receive(response.readinto, step, hasher.update)
            if not count:
                break
            written += count
            if total is not None and written > total:
                raise _Retry("corrupted", f"{what}: more bytes than announced")
            step = _read_step(count, time.monotonic() - started)
            if report is not None and written - reported >= PROGRESS_STEP:
                reported = written
                report(written, total)
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    if report is not None:
        report(written, total)
    return written


def _read_head(response: StorageStream, token: CancelToken) -> bytes:
    """The body's first `SNIFF_BYTES` (fewer when it is shorter), to tell a file from an error page."""
    head = bytearray(SNIFF_BYTES)
    filled = 0
    with memoryview(head) as view:
        while filled < SNIFF_BYTES:
            token.raise_if_cancelled()
            count = response.readinto(view[filled:])
            if not count:
                break
            filled += count
    return bytes(head[:filled])


def _read_step(count: int, seconds: float) -> int:
    """How many bytes to ask for next: `CANCEL_CHECK_S` at the rate of the last read, in `MIN_READ` units."""
    wanted = int(count * CANCEL_CHECK_S / max(seconds, 1e-6))
    return max(MIN_READ, min(BLOCK, wanted - wanted % MIN_READ))


def filesystem_type(path: Path, mountinfo: str) -> str | None:
    """The type of the filesystem holding the absolute, resolved `path`, from the text of a Linux
    `/proc/<pid>/mountinfo`: the deepest mount point above it, the last one mounted there."""
    where = str(path)
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or dash + 1 >= len(fields):
            continue
        mount = _unescape_mount(fields[4])
        inside = where == mount or where.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= best[0]):
            best = (len(mount), fields[dash + 1])
    return best[1] if best is not None else None


def _unescape_mount(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as three-digit octal escapes."""
    if "\\" not in field:
        return field
    out: list[str] = []
    index = 0
    while index < len(field):
        code = field[index + 1 : index + 4]
        if field[index] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def direct_io_suits(folder: Path) -> bool:
    """Whether files in `folder` are best written with O_DIRECT: on Linux, on a local disk filesystem."""
    if not _O_DIRECT:
        return False
    try:
        table = os.fsdecode(MOUNTINFO.read_bytes())
    except OSError:
        return False
    return filesystem_type(folder.resolve(), table) in DIRECT_FILESYSTEMS


class PartWriter:
    """Appends a transfer's bytes to its `.part` file, `BLOCK` bytes per write, from one page-aligned buffer.

    `receive` lets the network read land in that buffer directly, so a body is hashed and written from the
    memory the kernel copied it into, with no copy of ours in between.
    With `direct` the file is opened with O_DIRECT, so whole blocks go from the buffer to the disk with no
    copy into the page cache: that copy and its later write-back cost about as much CPU as receiving the
    bytes, and a collection of multi-gigabyte models would otherwise push everything else out of the cache.
    Direct writes must start at multiples of `DIRECT_ALIGN`, so a resume first carries the part's last
    partial unit back into the buffer and rewrites it; the final partial unit goes through the page cache.
    A filesystem that refuses O_DIRECT, at open or on a write, gets page-cache writes whose write-back is
    started every `WRITEBACK_STEP` bytes, so the final fsync has little left to wait for.
    """

    def __init__(self, part: Path, offset: int, *, direct: bool) -> None:
        self._buffer = mmap.mmap(-1, BLOCK)  # anonymous maps start on a page boundary, as O_DIRECT wants
        self._view = memoryview(self._buffer)
        self._start = offset  # where the buffer's first byte belongs in the file
        self._fill = 0  # bytes in the buffer
        self._flushed = 0  # of those, bytes already written
        self._kicked = offset
        self._direct = False
        self._part = part
        self._fd = -1
        flags = os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC)
        try:
            if direct and _O_DIRECT:
                try:
                    self._fd = os.open(part, flags | _O_DIRECT, 0o666)
                    self._direct = True
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
            if self._fd < 0:
                self._fd = os.open(part, flags, 0o666)
            if self._direct and offset % DIRECT_ALIGN:
                self._carry(part, offset)
        except BaseException:
            self._release()
            raise

    @property
    def direct(self) -> bool:
        """Whether whole blocks still bypass the page cache."""
        return self._direct

    @property
    def size(self) -> int:
        """The part's length once everything given so far is written."""
        return self._start + self._fill

    def _carry(self, part: Path, offset: int) -> None:
        unit_start = offset - offset % DIRECT_ALIGN
        with part.open("rb") as fh:
            fh.seek(unit_start)
            carried = fh.read(offset - unit_start)
        if len(carried) != offset - unit_start:
            self._stop_direct()  # the part changed under us: append where it was; the hash check decides
            return
        self._view[: len(carried)] = carried
        self._start = unit_start
        self._fill = len(carried)

    def receive(self, readinto: Callable[[memoryview], int], most: int, absorb: Callable[[memoryview], object]) -> int:
        """Let `readinto` put up to `most` bytes straight into the buffer, give them to `absorb` (the hash),
        and write the block out once it is full; returns the count, 0 at the end of the body."""
        with self._view[self._fill : self._fill + min(most, BLOCK - self._fill)] as space:
            count = readinto(space)
            if count:
                with space[:count] as received:
                    absorb(received)
        self._fill += count
        if self._fill == BLOCK:
            self._flush()
        return count

    def write(self, data: bytes) -> None:
        """Buffer `data`, writing every block that fills up."""
        with memoryview(data) as rest:
            done = 0
            while done < len(rest):
                take = min(len(rest) - done, BLOCK - self._fill)
                self._view[self._fill : self._fill + take] = rest[done : done + take]
                self._fill += take
                done += take
                if self._fill == BLOCK:
                    self._flush()

    def _flush(self) -> None:
        while self._flushed < self._fill:
            try:
                with self._view[self._flushed : self._fill] as pending:
                    count = os.pwrite(self._fd, pending, self._start + self._flushed)
            except OSError as exc:
                if not (self._direct and exc.errno == errno.EINVAL):
                    raise
                self._stop_direct()
                continue
            self._flushed += count
            if self._direct and self._flushed < self._fill:
                self._stop_direct()  # a short direct write leaves an unaligned rest
        self._start += self._fill
        self._fill = self._flushed = 0
        if not self._direct and _FADVISE is not None and self._start - self._kicked >= WRITEBACK_STEP:
            os.posix_fadvise(self._fd, self._kicked, self._start - self._kicked, _FADVISE)
            self._kicked = self._start

    def _stop_direct(self) -> None:
        if self._direct:
            log.debug("%s: writing through the page cache from byte %d on", self._part, self._start + self._flushed)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~_O_DIRECT)
            self._direct = False

    def close(self) -> None:
        """Write what is buffered, fsync and close."""
        try:
            self._write_rest()
            os.fsync(self._fd)
        finally:
            self._release()

    def abandon(self) -> None:
        """Keep what can be kept of the buffer (a resume starts from it) and close, without an fsync."""
        try:
            with contextlib.suppress(OSError):
                self._write_rest()
        finally:
            self._release()

    def _write_rest(self) -> None:
        if self._fill - self._flushed:
            if self._fill % DIRECT_ALIGN:
                self._stop_direct()
            self._flush()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._view.release()
        # A failed `readinto` can leave views of the buffer in its traceback's frames; the map is then freed
        # with the last of them instead of here.
        with contextlib.suppress(BufferError):
            self._buffer.close()


def _with_attempts(outcome: Outcome, attempts: int) -> Outcome:
    return Outcome(
        outcome.status,
        outcome.reason,
        outcome.info,
        outcome.size,
        outcome.sha256,
        outcome.retry_after,
        outcome.http_status,
        attempts,
        outcome.quota,
    )


def _hash_existing(part: Path, token: CancelToken) -> tuple[Any, int]:
    """The SHA256 state and length of what a `.part` file already holds (a resume continues from there)."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with part.open("rb") as fh:
            while block := fh.read(CHUNK):
                token.raise_if_cancelled()
                hasher.update(block)
                size += len(block)
    except FileNotFoundError:
        return hashlib.sha256(), 0
    return hasher, size


def _network_reason(exc: httpx.TransportError) -> str:
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "network"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return


def _promote(part: Path, target: Path) -> None:
    os.replace(part, target)
    fsync_dir(target.parent)


def _int_header(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _content_range(value: str) -> tuple[int | None, int | None]:
    """`(start, total)` of `bytes start-end/total` (or `bytes */total`); None where absent."""
    value = value.strip().lower()
    if not value.startswith("bytes"):
        return None, None
    spec = value[5:].strip()
    span, _, total_text = spec.partition("/")
    total = int(total_text) if total_text.strip().isdigit() else None
    start_text = span.split("-", 1)[0].strip()
    start = int(start_text) if start_text.isdigit() else None
    return start, total


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(chunks)[:cap]


# Images -----------------------------------------------------------------------------------------------------

_MAGIC: Final[tuple[tuple[int, bytes, str], ...]] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpg"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (0, b"ID3", "mp3"),
)
_FTYP: Final = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic", b"qt  ": "mov"}
_TYPE_EXT: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
}


def sniff_extension(head: bytes, content_type: str = "") -> str | None:
    """The real extension of a file from its first bytes (Content-Type only as a last resort); None when the
    bytes are an error page or unknown and the type says nothing."""
    for offset, magic, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "mp4")
    if looks_like_error_page(head) or refused_type(content_type):
        return None
    return _TYPE_EXT.get(content_type.split(";", 1)[0].strip().lower())


@dataclass(frozen=True, slots=True)
class ImageResult:
    path: Path
    size: int
    url: str


class ImageFailure(Exception):
    """An image that could not be had from any source; `reason` is the log word."""

    def __init__(self, reason: str, info: str, http_status: int | None = None) -> None:
        super().__init__(info)
        self.reason = reason
        self.info = info
        self.http_status = http_status


class ImageDownloader:
    """Fetches original image bytes into `<dir>/<id>.<real ext>` atomically."""

    def __init__(self, client: CivitaiClient, executors: Executors) -> None:
        self.client = client
        self.executors = executors

    async def fetch(self, image_id: int, urls: list[str], folder: Path) -> ImageResult:
        """Try each URL in turn (the CDN original, then the B2 origin), retrying transient failures."""
        last = ImageFailure("uuid_not_found", f"image {image_id}: no address to download it from")
        for url in urls:
            retries = 0
            while True:
                try:
                    return await self._fetch_one(image_id, url, folder)
                except _Retry as retry:
                    retries += 1
                    last = ImageFailure(retry.reason, retry.info, retry.http_status)
                    if retries >= min(3, self.client.policy.attempts):
                        break
                    await self.client.sleep(
                        retry.wait if retry.wait is not None else self.client.policy.backoff(retries)
                    )
                except ImageFailure as failure:
                    last = failure
                    break
        raise last

    async def _fetch_one(self, image_id: int, url: str, folder: Path) -> ImageResult:
        token = CancelToken()
        return await self.executors.run("io", self._fetch_sync, image_id, url, folder, token, token=token)

    def _fetch_sync(self, image_id: int, url: str, folder: Path, token: CancelToken) -> ImageResult:
        """One GET on an I/O thread, with the blocking client (never the key: image hosts do not need it)."""
        what = f"image {image_id}"
        host = host_of(url)
        try:
            with self.client.storage_http.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    wait = self.client.policy.retry_after(response) if status == 429 else None
                    raise _Retry(f"http_{status}", f"{what}: HTTP {status} from {host}", http_status=status, wait=wait)
                if status in (403, 404, 410):
                    raise ImageFailure("missing", f"{what}: HTTP {status} from {host}", status)
                if status != 200:
                    raise ImageFailure(f"http_{status}", f"{what}: HTTP {status} from {host}", status)
                length = _int_header(response.headers.get("content-length"))
                if length is not None and length > MAX_IMAGE_BYTES:
                    raise ImageFailure("too_large", f"{what}: {length} bytes is over the {MAX_IMAGE_BYTES}-byte limit")
                return self._save(image_id, response, folder, length, token)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise ImageFailure("uuid_not_found", f"{what}: unusable address {url[:120]!r}") from None
        except httpx.TransportError as exc:
            raise _Retry(_network_reason(exc), f"{what}: {type(exc).__name__}") from None

    def _save(
        self, image_id: int, response: httpx.Response, folder: Path, length: int | None, token: CancelToken
    ) -> ImageResult:
        """Stream the body into `<id>.part`, name it by its magic bytes, fsync and rename; a part that did not
        become a whole image is removed (images are small: a retry starts over)."""
        what = f"image {image_id}"
        content_type = response.headers.get("content-type", "")
        part = folder / f"{image_id}.part"
        extension: str | None = None
        head = b""
        written = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with part.open("wb") as fh:
                for chunk in response.iter_raw():
                    token.raise_if_cancelled()
                    if extension is None:
                        head += chunk[:SNIFF_BYTES]
                        if len(head) >= SNIFF_BYTES:
                            extension = self._extension(image_id, head, content_type)
                    fh.write(chunk)
                    written += len(chunk)
                    if written > MAX_IMAGE_BYTES:
                        raise ImageFailure("too_large", f"{what}: over the {MAX_IMAGE_BYTES}-byte limit")
                if extension is None and head:
                    extension = self._extension(image_id, head, content_type)
                fh.flush()
                os.fsync(fh.fileno())
            if extension is None:
                raise _Retry("corrupted", f"{what}: empty body")
            if length is not None and written != length:
                raise _Retry("corrupted", f"{what}: got {written} of {length} bytes")
        except BaseException as exc:
            _unlink(part)
            if isinstance(exc, OSError):
                raise _disk_error(exc, part, image=True) from None
            raise
        target = folder / image_name(image_id, extension)
        _promote(part, target)
        return ImageResult(target, written, str(response.url))

    @staticmethod
    def _extension(image_id: int, head: bytes, content_type: str) -> str:
        extension = sniff_extension(head, content_type)
        if extension is None:
            raise ImageFailure("corrupted", f"image {image_id}: not an image or video ({content_type or 'no type'})")
        return extension
