"""A real HTTP server on loopback that answers like CivitAI: the REST API, the download route with its
outcome table, a presigned storage route, and the image CDN with its B2 origin, with injectable faults.

It is the standard library's threading HTTP server, so every byte on the wire is under control, down to a
connection closed half-way through a file. Tests and benchmarks start it in-process; `peropix sandbox`
runs it in the foreground next to the NovelAI one.

    with CivitaiSandbox(default_dataset()) as civitai:           # or CivitaiSandbox(my_dataset).start()
        civitai.base_url                                          # http://127.0.0.1:<free port>
        civitai.inject(Fault(FaultKind.STATUS, status=503, retry_after=2), times=3)
        civitai.inject(Fault(FaultKind.TRUNCATE, file_id=lora.id))
        ...                                                       # point the client at base_url
        civitai.requests, civitai.key_leaks(), civitai.downloads[lora.id], civitai.faults.fired()

Routes (GET; HEAD runs the same handler without the body, and is recorded, so a test can tell a client
never probes):
- `/api/v1/models` (`username`, `types`, `nsfw`, `sort`, `period`, `limit`, `cursor`, `page`, `query`,
  `baseModels`, `primaryFileOnly`, `ids`), `/api/v1/models/{id}`, `/api/v1/model-versions/{id}`,
  `/api/v1/images` (`modelVersionId`, `modelId`, `imageId`, `postId`, `username`, `userId`,
  `browsingLevel`, `nsfw`, `withMeta`, `flatMeta`, `sort`, `period`, `limit`, `cursor`, `page`),
  `/api/v1/creators` (`query`, `limit`, `page`), `/api/v1/me` (200 for a known key, else 401).
  Cursors end up in `metadata.nextCursor` and `metadata.nextPage`; `page * limit > 1000` is the 429.
- `/api/download/models/{versionId}?fileId=` (or `type`/`format`/`size`/`fp`, or nothing for the primary
  file): 307 to a presigned storage URL, or the outcome the file's `FileAccess`, its model's mode and its
  version's early access call for: 401/403 JSON for a client, the login redirect for a browser User-Agent.
  A key comes from `Authorization: Bearer` (it wins) or `?token=`; an unknown key counts as none.
- `/storage/model/{fileId}/{name}?X-Amz-...`: the file, in 1 MiB pieces with Content-Length, `Range:
  bytes=n-` (206 + Content-Range, 416 past the end). Any Authorization header is refused with S3's 400; a
  bad signature or a URL past `presign_ttl_s` gets S3's 403 XML. Storage shares the API's host and port, so
  a client following the 307 keeps its Authorization header (same origin) unless it drops it itself, as it
  must: `key_leaks()` lists every storage or image request that carried the key.
- `/xG1nkqKTMzGDvpLrqFT7WA/{uuid}/{options}/{name}`: the original bytes with `original=true`, a smaller
  JPEG without metadata otherwise; `/file/civitai-media-cache/{uuid}/original`: the original, also for
  images whose CDN copy is missing.
- `/login`, `/model-versions/{id}`: the HTML pages the browser redirects land on.

What it serves is a `CivitaiDataset` (`civitai_dataset.py`: build creators, models, versions, files of any
size and images in a few lines; `warm_hashes()` before timing downloads) or `default_dataset()`
(`civitai_default.py`: one model per case). Faults are `Fault(FaultKind...)` (`civitai_faults.py`), matched
by path glob, query values or `file_id`; `faults.fired(kind)` counts them. `downloads` and `bytes_served`
count, per file id, the redirects handed out and the storage bytes written.

Control endpoints under `/_sandbox/` (not recorded) steer a sandbox running in another process:
`GET|DELETE /_sandbox/requests`, `POST|DELETE /_sandbox/faults` (body as `Fault.from_json`).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import orjson

from peropix_tui.sandbox import civitai_bodies as bodies
from peropix_tui.sandbox.civitai_credentials import SANDBOX_API_KEY, SANDBOX_USERNAME
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, FileAccess, ModelMode, SandboxFile
from peropix_tui.sandbox.civitai_default import default_dataset
from peropix_tui.sandbox.civitai_faults import (
    ANSWER_KINDS,
    B2_PREFIX,
    CDN_PREFIX,
    CURSOR_KINDS,
    DOWNLOAD_PREFIX,
    IMAGES_PATH,
    MODELS_PATH,
    STORAGE_PREFIX,
    Fault,
    FaultError,
    FaultKind,
    FaultPlan,
)
from peropix_tui.sandbox.civitai_images import variant_bytes
from peropix_tui.sandbox.civitai_listing import (
    IMAGE_SORTS,
    MODEL_SORTS,
    ApiError,
    Page,
    cursor_page,
    number_page,
    parse_creator_query,
    parse_image_query,
    parse_model_query,
    select_creators,
    select_images,
    select_models,
)
from peropix_tui.sandbox.nai_server import SandboxError, loopback_host

log = logging.getLogger(__name__)

PRESIGN_TTL_S: Final = 86_400
LOG_LIMIT: Final = 10_000
MAX_BODY: Final = 1024 * 1024
IDLE_TIMEOUT_S: Final = 30.0
POLL_INTERVAL_S: Final = 0.05
SLOW_TICKS_PER_S: Final = 20
CONTROL_PREFIX: Final = "/_sandbox/"
REDACTED: Final = "<redacted>"
BROWSER_AGENT: Final = re.compile(r"mozilla|chrome|safari|firefox|opera|edge", re.IGNORECASE)
JSON_TYPE: Final = "application/json; charset=utf-8"
HTML_TYPE: Final = "text/html; charset=utf-8"
XML_TYPE: Final = "application/xml"
PUBLIC_CACHE: Final = "public, s-maxage=300, stale-while-revalidate=150"
NOT_LOGGED_IN: Final = "The creator of this asset requires you to be logged in to download it"
DOWNLOADS_DISABLED: Final = "The creator of this asset has disabled downloads on this file"
NO_ACCESS: Final = "You do not have access to download this file"
QUOTA_MESSAGE: Final = (
    "We've noticed an unusual amount of downloading from your account. Contact support@civitai.com or come back later."
)
EARLY_ACCESS_MESSAGE: Final = "This asset is in Early Access. You can use Buzz access it now!"
LOGIN_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>Sign In | Civitai</title></head>"
    b"<body><h1>Sign in to Civitai</h1><p>You need to be logged in to download this file.</p></body></html>"
)
THROTTLE_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>Access denied | civitai.com used Cloudflare to restrict access</title>"
    b"</head><body><h1>Error 1015</h1><p>You are being rate limited</p></body></html>"
)
_MODEL_ROUTE: Final = re.compile(r"/api/v1/models/(\d+)")
_VERSION_ROUTE: Final = re.compile(r"/api/v1/model-versions/(\d+)")
_DOWNLOAD_ROUTE: Final = re.compile(re.escape(DOWNLOAD_PREFIX) + r"(\d+)")
_STORAGE_ROUTE: Final = re.compile(re.escape(STORAGE_PREFIX) + r"(\d+)/([^/]+)")
_CDN_ROUTE: Final = re.compile(re.escape(CDN_PREFIX) + r"([0-9a-f-]{36})/([^/]+)/([^/]+)")
_B2_ROUTE: Final = re.compile(re.escape(B2_PREFIX) + r"([0-9a-f-]{36})/original")
_SITE_VERSION: Final = re.compile(r"/model-versions/(\d+)")
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")
_ESCAPE: Final = re.compile(rb"\\(?:u00([01][0-9a-fA-F])|([bf])|(.))", re.DOTALL)
_KEPT_ESCAPED: Final = frozenset({0x09, 0x0A, 0x0D})


def raw_control_chars(data: bytes) -> bytes:
    """JSON text with every control character escape in strings written as the raw byte, except tab,
    CR and LF, as some CivitAI answers come: strict parsers reject them."""

    def swap(match: re.Match[bytes]) -> bytes:
        code, short = match.group(1), match.group(2)
        if code is not None:
            value = int(code, 16)
            return match.group(0) if value in _KEPT_ESCAPED else bytes([value])
        if short is not None:
            return b"\x08" if short == b"b" else b"\x0c"
        return match.group(0)

    return _ESCAPE.sub(swap, data)


def s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    ).encode()


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server received it; key values are never kept."""

    method: str
    path: str
    query: dict[str, list[str]]
    """The query; a `token` value is replaced by `<redacted>`."""
    headers: dict[str, str]
    """Header names in lower case; the Authorization value is replaced by `<redacted>`."""
    status: int | None = None
    """The status answered; None while running, or when the connection was closed before any answer."""
    fault: str | None = None
    """The injected fault that shaped the answer, if any."""
    file_id: int | None = None
    """The model file a download or storage request was about."""
    bytes_sent: int = 0
    """Body bytes written (for storage and images: what the client was given before any cut)."""

    @property
    def carried_key(self) -> bool:
        """Whether the request carried an API key (a header or `?token=`)."""
        return "authorization" in self.headers or "token" in self.query


class _Server(ThreadingHTTPServer):
    """One daemon thread per connection, each remembered with its socket, so `close()` can end idle
    keep-alive connections and slow downloads, and join every thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: CivitaiSandbox) -> None:
        self.sandbox = sandbox
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="civitai-sandbox-connection",
            daemon=True,
        )
        with self._connections_lock:
            for finished in [t for t in self._connections if not t.is_alive()]:
                del self._connections[finished]
            self._connections[thread] = request
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox connection from %s ended with an error", client_address, exc_info=True)

    def close(self) -> None:
        """Close the listening socket and every connection, then wait for their threads."""
        self.server_close()
        with self._connections_lock:
            connections = dict(self._connections)
            self._connections.clear()
        for sock in connections.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("sandbox connection already closed")
        for thread in connections:
            thread.join()


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass(slots=True)
class _Counters:
    downloads: Counter[int] = field(default_factory=Counter)
    bytes_served: Counter[int] = field(default_factory=Counter)


class CivitaiSandbox:
    """The sandbox CivitAI server. The dataset, keys and faults can change at any time from any thread."""

    def __init__(
        self,
        dataset: CivitaiDataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Mapping[str, str] | None = None,
        presign_ttl_s: int = PRESIGN_TTL_S,
        raw_control_chars: bool = False,
        clock: Callable[[], float] = time.time,
        log_limit: int = LOG_LIMIT,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self.host = loopback_host(host)
        if not 0 <= port <= 65535:
            raise SandboxError(f"port must be 0-65535, not {port}")
        if presign_ttl_s < 0:
            raise SandboxError(f"presign_ttl_s must be 0 or more, not {presign_ttl_s}")
        self._requested_port = port
        self.dataset = dataset if dataset is not None else default_dataset()
        self.api_keys: dict[str, str] = dict(api_keys) if api_keys is not None else {SANDBOX_API_KEY: SANDBOX_USERNAME}
        """API key -> the username `/api/v1/me` reports for it."""
        self.presign_ttl_s = presign_ttl_s
        self.raw_control_chars = raw_control_chars
        """Write raw control characters in every JSON answer (the RAW_CONTROL_CHARS fault does it per request)."""
        self.clock = clock
        self.faults = FaultPlan()
        self.on_request = on_request
        self._secret = os.urandom(16)
        self._counters = _Counters()
        self._log: deque[RecordedRequest] = deque(maxlen=log_limit)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> CivitaiSandbox:
        if self._server is not None:
            raise SandboxError("the CivitAI sandbox is already running")
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self._requested_port), self)
        except OSError as exc:
            raise SandboxError(f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}") from exc
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="civitai-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.info("CivitAI sandbox listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection (slow downloads too), wait for every handler thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close()
        thread.join()
        self._server = self._thread = None
        log.info("CivitAI sandbox stopped")

    def __enter__(self) -> CivitaiSandbox:
        return self if self.running else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise SandboxError("the CivitAI sandbox is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What a client uses as the CivitAI host (`PEROPIX_CIVITAI_BASE_URL`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- state for tests -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far (control requests excluded), oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def key_leaks(self) -> list[RecordedRequest]:
        """Requests to storage or to an image host that carried the API key: there should be none."""
        hosts = (STORAGE_PREFIX, CDN_PREFIX, B2_PREFIX)
        return [r for r in self.requests if r.path.startswith(hosts) and r.carried_key]

    @property
    def downloads(self) -> Counter[int]:
        """File id -> presigned redirects handed out."""
        with self._lock:
            return Counter(self._counters.downloads)

    @property
    def bytes_served(self) -> Counter[int]:
        """File id -> bytes of it written by the storage route (a resumed download sends less than twice)."""
        with self._lock:
            return Counter(self._counters.bytes_served)

    def inject(self, fault: Fault, times: int | None = 1) -> None:
        """Queue `fault` for the next `times` matching requests (None: until `clear_faults`)."""
        self.faults.add(fault, times)

    def clear_faults(self) -> None:
        self.faults.clear()

    def add_api_key(self, key: str, username: str) -> None:
        if not key or any(c.isspace() for c in key):
            raise SandboxError("an API key must be non-empty and contain no spaces")
        with self._lock:
            self.api_keys[key] = username

    # --- used by the handler -------------------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the sandbox stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def announce(self, entry: RecordedRequest) -> None:
        if self.on_request is not None:
            self.on_request(entry)

    def user_for(self, key: str) -> str | None:
        with self._lock:
            return self.api_keys.get(key)

    def count_download(self, file_id: int) -> None:
        with self._lock:
            self._counters.downloads[file_id] += 1

    def count_bytes(self, file_id: int, count: int) -> None:
        with self._lock:
            self._counters.bytes_served[file_id] += count

    def sign(self, file_id: int, amz_date: str, ttl: int) -> str:
        message = f"{file_id}\n{amz_date}\n{ttl}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def presigned_url(self, sandbox_file: SandboxFile) -> str:
        """A storage URL for `sandbox_file` shaped like an S3 presigned one, valid `presign_ttl_s`."""
        now = self.clock()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        params = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", f"SANDBOXKEY/{amz_date[:8]}/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(self.presign_ttl_s)),
            ("X-Amz-SignedHeaders", "host"),
            ("response-content-disposition", f'attachment; filename="{sandbox_file.name}"'),
            ("X-Amz-Signature", self.sign(sandbox_file.id, amz_date, self.presign_ttl_s)),
        ]
        name = quote(sandbox_file.name.replace("/", "_"), safe="")
        return f"{self.base_url}{STORAGE_PREFIX}{sandbox_file.id}/{name}?{urlencode(params, quote_via=quote)}"


def _redacted_query(query: dict[str, list[str]]) -> dict[str, list[str]]:
    return {key: ([REDACTED] * len(values) if key == "token" else values) for key, values in query.items()}


def _parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """[start, end) of a single `bytes=` range; None when there is none (or several, or it is malformed,
    all answered with the whole file); False when it starts past the end (416)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        return (max(0, size - suffix), size) if suffix else False
    start = int(first)
    if start >= size:
        return False
    end = min(size, int(last) + 1) if last else size
    return None if end <= start else (start, end)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "peropix-sandbox"
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server
    _entry: RecordedRequest | None = None
    _started = False
    _query: dict[str, list[str]]

    # --- plumbing --------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("civitai sandbox: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def sandbox(self) -> CivitaiSandbox:
        return self.server.sandbox

    @property
    def dataset(self) -> CivitaiDataset:
        return self.server.sandbox.dataset

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            self.close_connection = True
            raise ApiError(400, "Invalid Content-Length header") from exc
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"Request body larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        self._entry = None
        self._started = False
        self._query = parse_qs(query, keep_blank_values=True)
        try:
            raw = self._read_body()
            if path.startswith(CONTROL_PREFIX):
                self._control(path, raw)
                return
            headers = {
                key.lower(): (REDACTED if key.lower() == "authorization" else value)
                for key, value in self.headers.items()
            }
            self._entry = RecordedRequest(self.command, path, _redacted_query(self._query), headers)
            self.sandbox.record(self._entry)
            self._route(path)
        except ApiError as exc:
            self._send_json(exc.status, exc.payload)
        except OSError:
            # The client went away (a cancelled download, a killed process): nothing left to answer.
            log.debug("civitai sandbox client disconnected during %s %s", self.command, path)
            self.close_connection = True
        except Exception as exc:
            log.exception("civitai sandbox failed on %s %s", self.command, path)
            self.close_connection = True
            if not self._started:
                self._send_json(500, {"error": f"Sandbox error: {exc}"})
        finally:
            if self._entry is not None:
                self.sandbox.announce(self._entry)

    def _start(self, status: int, content_type: str, length: int, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._started = True
        if self._entry is not None:
            self._entry.status = status

    def _send(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self._start(status, content_type, len(data), headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = orjson.dumps(payload)
        if status == 200 and self._entry is not None:
            path = self._entry.path
            fault = self.sandbox.faults.take({FaultKind.RAW_CONTROL_CHARS}, path, self._query)
            if fault is not None:
                self._note(fault)
            if fault is not None or self.sandbox.raw_control_chars:
                data = raw_control_chars(data)
        cache = {"Cache-Control": PUBLIC_CACHE if status == 200 and not self._key_sent() else "no-store"}
        self._send(status, data, JSON_TYPE, cache | dict(headers or {}))

    def _redirect(self, location: str) -> None:
        self._send(307, b"", "text/plain", {"Location": location, "Cache-Control": "no-store"})

    def _note(self, fault: Fault) -> None:
        if self._entry is not None:
            self._entry.fault = fault.kind.value

    def _key_sent(self) -> bool:
        return self.headers.get("Authorization") is not None or "token" in self._query

    def _user(self) -> str | None:
        """The username of the request's API key (the header wins over `?token=`), None for none/unknown."""
        header = self.headers.get("Authorization")
        if header is not None:
            scheme, _, key = header.strip().partition(" ")
            return self.sandbox.user_for(key.strip()) if scheme.lower() == "bearer" else None
        tokens = self._query.get("token")
        return self.sandbox.user_for(tokens[-1]) if tokens else None

    def _browser(self) -> bool:
        return BROWSER_AGENT.search(self.headers.get("User-Agent", "")) is not None

    # --- routing ---------------------------------------------------------------------------------------------

    def _route(self, path: str) -> None:
        if self.command not in ("GET", "HEAD"):
            raise ApiError(405, f"{path} takes GET, not {self.command}")
        file_id = self._file_id(path)
        if self._entry is not None:
            self._entry.file_id = file_id
        fault = self.sandbox.faults.take(ANSWER_KINDS, path, self._query, file_id)
        if fault is not None and self._answer_fault(fault, path):
            return
        fixed: dict[str, Callable[[], None]] = {
            MODELS_PATH: self._models,
            IMAGES_PATH: self._images,
            "/api/v1/creators": self._creators,
            "/api/v1/me": self._me,
            "/login": lambda: self._send(200, LOGIN_PAGE, HTML_TYPE),
        }
        if path in fixed:
            fixed[path]()
            return
        routes: list[tuple[re.Pattern[str], Callable[[re.Match[str]], None]]] = [
            (_MODEL_ROUTE, self._model),
            (_VERSION_ROUTE, self._version),
            (_DOWNLOAD_ROUTE, self._download),
            (_STORAGE_ROUTE, self._storage),
            (_CDN_ROUTE, self._cdn),
            (_B2_ROUTE, self._b2),
            (_SITE_VERSION, lambda m: self._send(200, _site_page(m.group(1)), HTML_TYPE)),
        ]
        for pattern, handler in routes:
            match = pattern.fullmatch(path)
            if match is not None:
                handler(match)
                return
        raise ApiError(404, "Not Found")

    def _file_id(self, path: str) -> int | None:
        """The model file a download or storage request is about, so faults can target one file."""
        storage = _STORAGE_ROUTE.fullmatch(path)
        if storage is not None:
            return int(storage.group(1))
        download = _DOWNLOAD_ROUTE.fullmatch(path)
        if download is None:
            return None
        try:
            chosen = self._chosen_file(int(download.group(1)))
        except ApiError:
            return None
        return chosen.id

    def _answer_fault(self, fault: Fault, path: str) -> bool:
        """Answer as `fault` says; False when the request should then be answered normally."""
        self._note(fault)
        retry = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        kind = fault.kind
        if kind is FaultKind.DELAY:
            self.sandbox.wait(fault.delay_s)
            return False
        if kind is FaultKind.STATUS:
            cache = "private, no-store" if fault.status == 404 else "no-store"
            self._send_json(fault.status, {"error": fault.error_message}, {"Cache-Control": cache, **retry})
        elif kind is FaultKind.THROTTLE:
            self._send(429, THROTTLE_PAGE, HTML_TYPE, retry)
        elif kind is FaultKind.DROP:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind is FaultKind.LOGIN_PAGE:
            self._redirect(self._login_url(path))
        elif kind is FaultKind.EARLY_ACCESS:
            deadline = bodies.iso(self.sandbox.clock() + fault.deadline_s)
            self._early_access(deadline)
        elif kind is FaultKind.GONE:
            self._send_json(410, {"error": fault.message or "Model archived, not available for download"})
        elif kind is FaultKind.QUOTA:
            self._send_json(429, {"error": fault.message or QUOTA_MESSAGE}, retry)
        elif kind is FaultKind.HTML_BODY:
            self._send(200, LOGIN_PAGE, HTML_TYPE)
        else:
            self._send(403, s3_error("AccessDenied", "Request has expired"), XML_TYPE)
        return True

    def _login_url(self, path: str) -> str:
        download = _DOWNLOAD_ROUTE.fullmatch(path)
        back = f"/model-versions/{download.group(1)}" if download is not None else "/"
        return f"{self.sandbox.base_url}/login?{urlencode({'returnUrl': back, 'reason': 'download-auth'})}"

    def _early_access(self, deadline: str) -> None:
        self._send_json(403, {"error": "Early Access", "deadline": deadline, "message": EARLY_ACCESS_MESSAGE})

    def _next_page_url(self, path: str, **replace: str) -> str:
        pairs = [(k, v) for k, values in self._query.items() if k not in ("cursor", "page") for v in values]
        pairs += list(replace.items())
        return f"{self.sandbox.base_url}{path}?{urlencode(pairs)}"

    def _page_metadata(self, path: str, page: Page[Any], limit: int, cursor_given: bool) -> dict[str, Any]:
        if page.current_page is not None:
            metadata: dict[str, Any] = {"currentPage": page.current_page, "pageSize": limit}
            if page.next_page is not None:
                metadata["nextPage"] = self._next_page_url(path, page=str(page.next_page))
            return metadata
        if page.next_cursor is not None:
            return {"nextCursor": page.next_cursor, "nextPage": self._next_page_url(path, cursor=page.next_cursor)}
        # A walk that fits one page answers as the live API did for it; the end of a longer walk says nothing.
        return {} if cursor_given else {"currentPage": 1, "pageSize": limit}

    def _cursor_faults(self, path: str) -> tuple[bool, bool]:
        fault = self.sandbox.faults.take(CURSOR_KINDS, path, self._query)
        if fault is None:
            return False, False
        self._note(fault)
        return fault.kind is FaultKind.REPEAT_ITEM, fault.kind is FaultKind.SKIP_ITEM

    # --- the API ---------------------------------------------------------------------------------------------

    def _models(self) -> None:
        q = parse_model_query(self._query)
        now = self.sandbox.clock()
        ordered = select_models(self.dataset, q, now)
        if q.page is not None:
            page = number_page(ordered, q.limit, q.page)
        else:
            repeat, skip = self._cursor_faults(MODELS_PATH)
            page = cursor_page(ordered, MODEL_SORTS[q.sort], q.limit, q.cursor, repeat=repeat, skip=skip)
        base = self.sandbox.base_url
        items = [
            bodies.model_item(self.dataset, base, m, pg_only=not q.nsfw, primary_only=q.primary_file_only, now=now)
            for m in page.items
        ]
        metadata = self._page_metadata(MODELS_PATH, page, q.limit, q.cursor is not None)
        self._send_json(200, {"items": items, "metadata": metadata})

    def _model(self, match: re.Match[str]) -> None:
        model_id = int(match.group(1))
        model = self.dataset.models.get(model_id)
        if model is None or model.poi:
            raise ApiError(404, f"No model with id {model_id}")
        now = self.sandbox.clock()
        self._send_json(200, bodies.model_item(self.dataset, self.sandbox.base_url, model, image_ids=False, now=now))

    def _version(self, match: re.Match[str]) -> None:
        version = self.dataset.versions.get(int(match.group(1)))
        if version is None or self.dataset.model_of(version).poi:
            raise ApiError(404, "Model not found")
        now = self.sandbox.clock()
        self._send_json(200, bodies.version_body(self.dataset, self.sandbox.base_url, version, now=now))

    def _images(self) -> None:
        q = parse_image_query(self._query)
        ordered = select_images(self.dataset, q, self.sandbox.clock())
        if q.page is not None:
            page = number_page(ordered, q.limit, q.page)
        else:
            repeat, skip = self._cursor_faults(IMAGES_PATH)
            page = cursor_page(ordered, IMAGE_SORTS[q.sort], q.limit, q.cursor, repeat=repeat, skip=skip)
        base = self.sandbox.base_url
        items = [
            bodies.image_item(self.dataset, base, image, with_meta=q.with_meta, nested=q.nested_meta)
            for image in page.items
        ]
        metadata = self._page_metadata(IMAGES_PATH, page, q.limit, q.cursor is not None)
        self._send_json(200, {"items": items, "metadata": metadata})

    def _creators(self) -> None:
        q = parse_creator_query(self._query)
        found = select_creators(self.dataset, q)
        total = len(found)
        start = (q.page - 1) * q.limit
        base = self.sandbox.base_url
        items = [
            bodies.creator_item(base, name, count, avatar) for name, count, avatar in found[start : start + q.limit]
        ]
        metadata: dict[str, Any] = {
            "totalItems": total,
            "currentPage": q.page,
            "pageSize": q.limit,
            "totalPages": -(-total // q.limit),
        }
        if start + q.limit < total:
            metadata["nextPage"] = self._next_page_url("/api/v1/creators", page=str(q.page + 1))
        self._send_json(200, {"items": items, "metadata": metadata})

    def _me(self) -> None:
        username = self._user()
        if username is None:
            raise ApiError(401, "Unauthorized")
        creator = self.dataset.creator(username)
        user_id = creator.user_id if creator is not None else zlib.crc32(username.encode()) % 1_000_000
        self._send_json(200, bodies.me_body(user_id, username))

    # --- downloads -------------------------------------------------------------------------------------------

    def _chosen_file(self, version_id: int) -> SandboxFile:
        """The file a download request names: `fileId`, else the `type`/`format`/`size`/`fp` selectors,
        else the primary file."""
        version = self.dataset.versions.get(version_id)
        if version is None:
            raise ApiError(404, "File not found")
        files = list(version.files)
        wanted = self._query.get("fileId")
        if wanted:
            chosen = next((f for f in files if str(f.id) == wanted[-1]), None)
        elif any(k in self._query for k in ("type", "format", "size", "fp")):
            chosen = next((f for f in files if self._selected(f)), None)
        else:
            chosen = next((f for f in files if f.primary), files[0] if files else None)
        if chosen is None:
            raise ApiError(404, "File not found")
        return chosen

    def _selected(self, sandbox_file: SandboxFile) -> bool:
        wanted = {
            "type": sandbox_file.type,
            "format": "SafeTensor",
            "size": sandbox_file.size_label,
            "fp": sandbox_file.fp,
        }
        return all(self._query[k][-1] == v for k, v in wanted.items() if k in self._query)

    def _download(self, match: re.Match[str]) -> None:
        version_id = int(match.group(1))
        sandbox_file = self._chosen_file(version_id)
        version = self.dataset.versions[version_id]
        model = self.dataset.model_of(version)
        if model.poi or model.mode is ModelMode.TAKEN_DOWN or sandbox_file.access is FileAccess.MISSING:
            raise ApiError(404, "File not found")
        if model.mode is ModelMode.ARCHIVED:
            raise ApiError(410, "Model archived, not available for download")
        if sandbox_file.access is FileAccess.DISABLED:
            raise ApiError(401, "Unauthorized", message=DOWNLOADS_DISABLED)
        user = self._user()
        if sandbox_file.needs_key and user is None:
            if self._browser():
                self._redirect(self._login_url(f"{DOWNLOAD_PREFIX}{version_id}"))
                return
            raise ApiError(401, "Unauthorized", message=NOT_LOGGED_IN)
        early = version.early_access_until
        if early is not None and early > self.sandbox.clock():
            if self._browser():
                self._redirect(f"{self.sandbox.base_url}/model-versions/{version_id}")
                return
            self._early_access(bodies.iso(early))
            return
        if sandbox_file.access is FileAccess.NO_ACCESS:
            raise ApiError(403, NO_ACCESS)
        self.sandbox.count_download(sandbox_file.id)
        self._redirect(self.sandbox.presigned_url(sandbox_file))

    def _storage(self, match: re.Match[str]) -> None:
        sandbox_file = self.dataset.files.get(int(match.group(1)))
        if sandbox_file is None:
            self._send(404, s3_error("NoSuchKey", "The specified key does not exist."), XML_TYPE)
            return
        if self.headers.get("Authorization") is not None:
            message = (
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified"
            )
            self._send(400, s3_error("InvalidArgument", message), XML_TYPE)
            return
        problem = self._presign_problem(sandbox_file)
        if problem is not None:
            self._send(403, s3_error(*problem), XML_TYPE)
            return
        disposition = self._query.get("response-content-disposition", [f'attachment; filename="{sandbox_file.name}"'])
        blob = sandbox_file.blob
        headers = {
            # Raw UTF-8 in the header, as the storage host sends it (clients reading latin-1 get mojibake).
            "Content-Disposition": disposition[-1].encode("utf-8").decode("latin-1"),
            "ETag": f'"{sandbox_file.hashes.sha256[:32].lower()}"',
            "Last-Modified": "Fri, 21 Jun 2024 12:00:00 GMT",
        }
        self._serve_bytes("application/octet-stream", blob.size, blob.iter_range, headers, sandbox_file.id)

    def _presign_problem(self, sandbox_file: SandboxFile) -> tuple[str, str] | None:
        """Why the presigned query does not hold (S3's code and message), None when it does."""

        def one(name: str) -> str:
            values = self._query.get(name)
            return values[-1] if values else ""

        amz_date, expires, signature = one("X-Amz-Date"), one("X-Amz-Expires"), one("X-Amz-Signature")
        if not expires.isdigit() or not signature:
            return ("AccessDenied", "Query-string authentication requires the Signature and Expires parameters")
        expected = self.sandbox.sign(sandbox_file.id, amz_date, int(expires))
        if not hmac.compare_digest(expected, signature):
            return ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature")
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        if self.sandbox.clock() >= signed_at + int(expires):
            return ("AccessDenied", "Request has expired")
        return None

    # --- images ----------------------------------------------------------------------------------------------

    def _cdn(self, match: re.Match[str]) -> None:
        image = self.dataset.image_by_uuid(match.group(1))
        if image is None or image.cdn_missing:
            self._send(404, b"Not Found", "text/plain; charset=utf-8")
            return
        options = dict(part.partition("=")[::2] for part in match.group(2).split(","))
        if options.get("original") == "true":
            data, content_type = image.original, image.image_format.content_type
        else:
            width = options.get("width", "")
            data, content_type = variant_bytes(image.original, int(width) if width.isdigit() else None), "image/jpeg"
        self._serve_image(data, content_type)

    def _b2(self, match: re.Match[str]) -> None:
        image = self.dataset.image_by_uuid(match.group(1))
        if image is None:
            body = {"code": "not_found", "message": "File with such name does not exist.", "status": 404}
            self._send(404, orjson.dumps(body), JSON_TYPE)
            return
        self._serve_image(image.original, image.image_format.content_type)

    def _serve_image(self, data: bytes, content_type: str) -> None:
        def pieces(start: int, end: int) -> Iterator[bytes]:
            yield data[start:end]

        self._serve_bytes(content_type, len(data), pieces, {"Cache-Control": "public, max-age=31536000"}, None)

    # --- bodies ----------------------------------------------------------------------------------------------

    def _serve_bytes(
        self,
        content_type: str,
        size: int,
        source: Callable[[int, int], Iterable[bytes | memoryview]],
        headers: Mapping[str, str],
        file_id: int | None,
    ) -> None:
        """Stream [start, end) of a body with Content-Length, honouring Range and the body faults."""
        path = self._entry.path if self._entry is not None else ""
        faults = self.sandbox.faults
        wanted = _parse_range(self.headers.get("Range"), size)
        if wanted is not None and (ignored := faults.take({FaultKind.RANGE_IGNORED}, path, self._query, file_id)):
            self._note(ignored)
            wanted = None
        if wanted is False:
            self._send(416, b"", content_type, {"Content-Range": f"bytes */{size}"})
            return
        start, end = wanted if isinstance(wanted, tuple) else (0, size)
        status = 206 if isinstance(wanted, tuple) else 200
        extra = {"Accept-Ranges": "bytes", **headers}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        truncate = faults.take({FaultKind.TRUNCATE}, path, self._query, file_id)
        corrupt = faults.take({FaultKind.WRONG_HASH}, path, self._query, file_id)
        slow = faults.take({FaultKind.SLOW}, path, self._query, file_id)
        for fault in (truncate, corrupt, slow):
            if fault is not None:
                self._note(fault)
        self._start(status, content_type, end - start, extra)
        if self.command == "HEAD":
            return
        limit = end - start
        if truncate is not None:
            limit = min(limit, truncate.after_bytes if truncate.after_bytes is not None else limit // 2)
        flip = start + (end - start) // 2 if corrupt is not None else None
        pieces = _flipped(source(start, end), start, flip) if flip is not None else source(start, end)
        sent = self._write_pieces(pieces, limit, slow.rate if slow is not None else None, file_id)
        if truncate is not None and sent >= limit:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _write_pieces(
        self, pieces: Iterable[bytes | memoryview], limit: int, rate: int | None, file_id: int | None
    ) -> int:
        sent = 0
        step = max(1, rate // SLOW_TICKS_PER_S) if rate is not None else None
        for piece in pieces:
            view = memoryview(piece)[: limit - sent]
            while len(view):
                part = view if step is None else view[:step]
                self.wfile.write(part)
                sent += len(part)
                if self._entry is not None:
                    self._entry.bytes_sent = sent
                if file_id is not None:
                    self.sandbox.count_bytes(file_id, len(part))
                view = view[len(part) :]
                if step is not None:
                    self.sandbox.wait(1 / SLOW_TICKS_PER_S)
                    if self.sandbox.stopping:
                        raise ConnectionAbortedError("the sandbox is stopping")
            if sent >= limit:
                break
        return sent

    # --- control endpoints -----------------------------------------------------------------------------------

    def _control(self, path: str, raw: bytes) -> None:
        action = (self.command, path.removeprefix(CONTROL_PREFIX).rstrip("/"))
        sandbox = self.sandbox
        if action == ("GET", "requests"):
            self._send(200, orjson.dumps([asdict(entry) for entry in sandbox.requests]), JSON_TYPE)
            return
        if action == ("DELETE", "requests"):
            sandbox.clear_requests()
        elif action == ("POST", "faults"):
            try:
                body = orjson.loads(raw) if raw else {}
                fault, times = Fault.from_json(body if isinstance(body, dict) else {})
            except (orjson.JSONDecodeError, FaultError) as exc:
                self._send(400, orjson.dumps({"error": str(exc)}), JSON_TYPE)
                return
            sandbox.inject(fault, times)
        elif action == ("DELETE", "faults"):
            sandbox.clear_faults()
        else:
            self._send(404, orjson.dumps({"error": f"no control action {self.command} {path}"}), JSON_TYPE)
            return
        self._send(200, b'{"ok":true}', JSON_TYPE)


def _flipped(pieces: Iterable[bytes | memoryview], start: int, flip: int) -> Iterator[bytes | memoryview]:
    """`pieces` (the body from offset `start`) with the byte at offset `flip` inverted."""
    position = start
    for piece in pieces:
        if position <= flip < position + len(piece):
            changed = bytearray(piece)
            changed[flip - position] ^= 0xFF
            yield bytes(changed)
        else:
            yield piece
        position += len(piece)


def _site_page(version_id: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><title>Model version | Civitai</title></head>"
        f"<body><h1>Model version {version_id}</h1><p>This version is in Early Access.</p></body></html>"
    ).encode()
