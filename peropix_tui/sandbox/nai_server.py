"""A real HTTP server on loopback that answers like NovelAI: generate (ZIP or JSON), stream (msgpack or SSE),
encode-vibe and the subscription, with NovelAI's error bodies, per-token locking, Anlas charging and
injectable faults.

It is the standard library's threading HTTP server so every byte on the wire is under control, including a
connection closed half-way through an answer. Tests and benchmarks start it in-process (`with NaiSandbox()
as sandbox:` or `start()`/`stop()`), `peropix sandbox` runs it in the foreground. One server answers both
the image host and the account host paths, so both base URLs point at `base_url`.

Control endpoints under `/_sandbox/` (loopback only, no token) let a script steer a running sandbox:
`GET|DELETE /_sandbox/requests`, `POST|DELETE /_sandbox/faults`, `POST /_sandbox/accounts`,
`POST /_sandbox/delay`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.cost import VIBE_ENCODE_COST
from peropix_tui.engine.nai.wire import b64
from peropix_tui.sandbox import nai_stream
from peropix_tui.sandbox.nai_accounts import SandboxAccount, default_accounts
from peropix_tui.sandbox.nai_faults import (
    ENCODE_PATH,
    GENERATE_PATH,
    STREAM_PATH,
    SUBSCRIPTION_PATH,
    UP_FRONT,
    Fault,
    FaultError,
    FaultKind,
    FaultPlan,
)
from peropix_tui.sandbox.nai_output import build_zip, encode_image, text_fields
from peropix_tui.sandbox.nai_render import previews, render
from peropix_tui.sandbox.nai_requests import (
    ApiError,
    GenerateJob,
    generation_cost,
    parse_encode_vibe,
    parse_generate,
)
from peropix_tui.sandbox.nai_vibe import encode_vibe

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024 * 1024
LOG_LIMIT: Final = 1000
LOG_BYTES: Final = 256 * 1024 * 1024
"""Request bodies kept in the log at most; the oldest entries go first (the newest always stays)."""
IDLE_TIMEOUT_S: Final = 30.0
POLL_INTERVAL_S: Final = 0.05
CONTROL_PREFIX: Final = "/_sandbox/"
ZIP_TYPE: Final = "binary/octet-stream"
STREAM_TYPES: Final[Mapping[str, str]] = {"msgpack": "application/msgpack", "sse": "text/event-stream"}
CORRELATION_HEADER: Final = "x-correlation-id"
HTML_BLOCK_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body><h1>Checking your browser before accessing image.novelai.net</h1></body></html>"
)


class SandboxError(PeropixError):
    """The sandbox cannot start: an address that is not loopback, or a port already taken."""


class ControlError(ValueError):
    """A control-endpoint request that cannot be carried out (answered with 400)."""


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server received it; the Authorization value is never kept."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names in lower case; the Authorization value is replaced by `<redacted>`."""
    body: Any
    """The parsed JSON body, or None when there was none or it was not JSON."""
    body_size: int
    status: int | None = None
    """The status answered; None while running, or when the connection was closed before any answer."""
    fault: str | None = None
    """The injected fault that shaped the answer, if any."""


def loopback_host(host: str) -> str:
    """`host` as a loopback IP literal; anything that could reach another machine is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise SandboxError(f"host {host!r} is not an IP address; the sandbox listens on loopback only") from exc
    if not address.is_loopback:
        raise SandboxError(f"host {host} is not a loopback address; the sandbox listens on 127.0.0.1 or ::1 only")
    return str(address)


class _Server(ThreadingHTTPServer):
    """One daemon thread per connection, each remembered with its socket, so `close()` can end idle
    keep-alive connections and join every thread (daemon threads keep a forgotten sandbox from blocking
    interpreter exit)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: NaiSandbox) -> None:
        self.sandbox = sandbox
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="nai-sandbox-connection",
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


class NaiSandbox:
    """The sandbox NovelAI server. Accounts map tokens to their state; faults and delay can change at any
    time from any thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, SandboxAccount] | None = None,
        delay_s: float = 0.0,
        log_limit: int = LOG_LIMIT,
        log_bytes: int = LOG_BYTES,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self.host = loopback_host(host)
        if not 0 <= port <= 65535:
            raise SandboxError(f"port must be 0-65535, not {port}")
        self._requested_port = port
        self.accounts: dict[str, SandboxAccount] = dict(accounts) if accounts is not None else default_accounts()
        self.delay_s = delay_s
        """Seconds each generation and encode takes, spent while the token's lock is held."""
        self.faults = FaultPlan()
        self.on_request = on_request
        self._log: deque[RecordedRequest] = deque(maxlen=log_limit)
        self._log_bytes = 0
        self._log_bytes_limit = log_bytes
        self._log_lock = threading.Lock()
        self._accounts_lock = threading.Lock()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> NaiSandbox:
        if self._server is not None:
            raise SandboxError("the sandbox is already running")
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self._requested_port), self)
        except OSError as exc:
            raise SandboxError(f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}") from exc
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, name="nai-sandbox", daemon=True
        )
        self._thread.start()
        log.info("NovelAI sandbox listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, wait for every handler thread; the port is free after."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close()
        thread.join()
        self._server = self._thread = None
        log.info("NovelAI sandbox stopped")

    def __enter__(self) -> NaiSandbox:
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
            raise SandboxError("the sandbox is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL for both the image host and the account host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- state for tests -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far (control requests excluded), oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._log_bytes = 0

    def inject(self, fault: Fault, times: int | None = 1) -> None:
        """Queue `fault` for the next `times` matching requests (None: until `clear_faults`)."""
        self.faults.add(fault, times)

    def fail_next(self, count: int, status: int = 500, *, paths: frozenset[str] = frozenset()) -> None:
        """The next `count` generation requests answer `status`; later ones succeed."""
        self.faults.add(Fault(FaultKind.STATUS, status=status, paths=paths), count)

    def clear_faults(self) -> None:
        self.faults.clear()

    def account(self, token: str) -> SandboxAccount:
        with self._accounts_lock:
            return self.accounts[token]

    def set_account(self, token: str, account: SandboxAccount) -> None:
        with self._accounts_lock:
            self.accounts[token] = account

    def balance(self, token: str) -> int:
        with self._accounts_lock:
            return self.accounts[token].balance

    # --- used by the handler -------------------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        """Sleep, but wake at once when the sandbox stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def record(self, entry: RecordedRequest) -> None:
        with self._log_lock:
            if len(self._log) == self._log.maxlen:
                self._log_bytes -= self._log[0].body_size
            self._log.append(entry)
            self._log_bytes += entry.body_size
            while self._log_bytes > self._log_bytes_limit and len(self._log) > 1:
                self._log_bytes -= self._log.popleft().body_size

    def announce(self, entry: RecordedRequest) -> None:
        if self.on_request is not None:
            self.on_request(entry)

    def known_token(self, token: str) -> bool:
        with self._accounts_lock:
            return token in self.accounts

    @contextmanager
    def generation_slot(self, token: str) -> Iterator[None]:
        """One generation at a time per token; a second one meanwhile gets NovelAI's 429."""
        with self._busy_lock:
            if token in self._busy:
                raise ApiError(429, "Concurrent generation is locked")
            self._busy.add(token)
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy.discard(token)

    def check_funds(self, token: str, cost: int) -> None:
        with self._accounts_lock:
            balance = self.accounts[token].balance
        if cost > balance:
            raise ApiError(402, f"Not enough Anlas: the request costs {cost}, the balance is {balance}")

    def price(self, token: str, job: GenerateJob) -> int:
        with self._accounts_lock:
            pricing = self.accounts[token].pricing()
        return generation_cost(job, pricing)

    def charge(self, token: str, cost: int) -> None:
        with self._accounts_lock:
            self.accounts[token].charge(cost)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "peropix-sandbox"
    timeout = IDLE_TIMEOUT_S
    server: _Server
    _entry: RecordedRequest | None = None
    _started = False

    # --- plumbing --------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    @property
    def sandbox(self) -> NaiSandbox:
        return self.server.sandbox

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "Length Required")
        try:
            length = int(length_text) if length_text else 0
        except ValueError as exc:
            self.close_connection = True
            raise ApiError(400, "Invalid Content-Length header") from exc
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"Request body larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        self._entry = None
        self._started = False
        try:
            self._answer(path, query)
        except OSError:
            # The client went away (a timeout on its side, a test closing early): nothing left to answer.
            log.debug("sandbox client disconnected during %s %s", self.command, path)
            self.close_connection = True
        except Exception as exc:
            log.exception("sandbox failed on %s %s", self.command, path)
            self.close_connection = True
            if not self._started:
                self._send_json(500, {"statusCode": 500, "message": f"Sandbox error: {exc}"})
        self._announce()

    def _announce(self) -> None:
        if self._entry is not None:
            self.sandbox.announce(self._entry)

    def _answer(self, path: str, query: str) -> None:
        try:
            raw = self._read_body()
        except ApiError as exc:
            self._send_json(exc.status, exc.body())
            return
        body = self._parse(raw)
        if path.startswith(CONTROL_PREFIX):
            self._control(path, body)
            return
        headers = {
            key.lower(): ("<redacted>" if key.lower() == "authorization" else value)
            for key, value in self.headers.items()
        }
        self._entry = RecordedRequest(self.command, path, parse_qs(query), headers, body, len(raw))
        self.sandbox.record(self._entry)
        try:
            self._route(path, raw, body)
        except ApiError as exc:
            self._send_json(exc.status, exc.body())

    @staticmethod
    def _parse(raw: bytes) -> Any:
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    def _start(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(length))
        correlation = self.headers.get(CORRELATION_HEADER)
        if correlation:
            self.send_header(CORRELATION_HEADER, correlation)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._started = True
        if self._entry is not None:
            self._entry.status = status

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self._start(status, content_type, len(data))
        self.wfile.write(data)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, orjson.dumps(payload), "application/json")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # --- routes ----------------------------------------------------------------------------------------------

    def _route(self, path: str, raw: bytes, body: Any) -> None:
        routes: dict[str, tuple[str, Callable[[Any], None]]] = {
            GENERATE_PATH: ("POST", lambda b: self._generate(b, streaming=False)),
            STREAM_PATH: ("POST", lambda b: self._generate(b, streaming=True)),
            ENCODE_PATH: ("POST", self._encode_vibe),
            SUBSCRIPTION_PATH: ("GET", lambda _b: self._subscription()),
        }
        if path not in routes:
            raise ApiError(404, f"Cannot {self.command} {path}")
        method, handler = routes[path]
        if self.command != method:
            raise ApiError(405, f"{path} takes {method}, not {self.command}")
        fault = self.sandbox.faults.take(path, UP_FRONT)
        if fault is not None and self._apply_fault(fault, path):
            return
        if method == "POST" and not isinstance(body, dict):
            self._token()
            what = "empty" if not raw else "not a JSON object"
            raise ApiError.validation(f"request body is {what}")
        handler(body)

    def _token(self) -> str:
        header = self.headers.get("Authorization")
        if header is None:
            raise ApiError(401, "Invalid accessToken.")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
            raise ApiError(400, "Invalid Authorization header content.")
        if not self.sandbox.known_token(token):
            raise ApiError(401, "Invalid accessToken.")
        return token

    def _subscription(self) -> None:
        token = self._token()
        self._send_json(200, self.sandbox.account(token).subscription())

    def _encode_vibe(self, body: Mapping[str, Any]) -> None:
        token = self._token()
        job = parse_encode_vibe(body)
        with self.sandbox.generation_slot(token):
            self.sandbox.check_funds(token, VIBE_ENCODE_COST)
            self.sandbox.wait(self.sandbox.delay_s)
            data = encode_vibe(job.image, job.family, job.information_extracted, job.mask)
            self.sandbox.charge(token, VIBE_ENCODE_COST)
            self._send(200, data, "application/binary")

    def _generate(self, body: Mapping[str, Any], *, streaming: bool) -> None:
        token = self._token()
        job = parse_generate(body, streaming=streaming)
        with self.sandbox.generation_slot(token):
            cost = self.sandbox.price(token, job)
            self.sandbox.check_funds(token, cost)
            if streaming:
                self._stream(job, token, cost)
                return
            self.sandbox.wait(self.sandbox.delay_s)
            images = [encode_image(render(job, i), text_fields(job, i), job.image_format) for i in range(job.n_samples)]
            self.sandbox.charge(token, cost)
            if "application/json" in self.headers.get("Accept", ""):
                entries = [
                    {"image": b64(data), "index": i, "seed": job.sample_seed(i)} for i, data in enumerate(images)
                ]
                self._send_json(200, {"images": entries})
                return
            archive = build_zip(images, job.image_format)
            fault = self.sandbox.faults.take(GENERATE_PATH, {FaultKind.TRUNCATED_ZIP})
            if fault is not None:
                self._note(fault)
                archive = archive[: len(archive) // 2]
            self._send(200, archive, ZIP_TYPE)

    def _stream(self, job: GenerateJob, token: str, cost: int) -> None:
        assert job.stream is not None  # parse_generate sets it for the stream endpoint
        frame = nai_stream.msgpack_frame if job.stream == "msgpack" else nai_stream.sse_frame
        fault = self.sandbox.faults.take(STREAM_PATH, {FaultKind.STREAM_ERROR})
        if fault is not None:
            self._note(fault)
        gen_id = hashlib.sha256(f"{job.seed}:{job.prompt}".encode()).hexdigest()[:16]
        count = job.intermediate_steps
        pause = self.sandbox.delay_s / max(1, count * job.n_samples)
        self._start(200, STREAM_TYPES[job.stream], None)
        sent = 0
        charged = False
        for index in range(job.n_samples):
            image = render(job, index)
            for step, preview in enumerate(previews(image, job, index, count)):
                if fault is not None and sent >= fault.after_frames:
                    self._chunk(frame(nai_stream.error(index, fault.error_message, fault.status)))
                    self._end_chunks()
                    return
                self.sandbox.wait(pause)
                self._chunk(frame(nai_stream.intermediate(index, step, count, gen_id, preview)))
                sent += 1
            if fault is not None:
                self._chunk(frame(nai_stream.error(index, fault.error_message, fault.status)))
                self._end_chunks()
                return
            final = encode_image(image, text_fields(job, index), job.image_format)
            if not charged:
                self.sandbox.charge(token, cost)
                charged = True
            self._chunk(frame(nai_stream.final(index, gen_id, final)))
        self._end_chunks()

    # --- faults ----------------------------------------------------------------------------------------------

    def _note(self, fault: Fault) -> None:
        if self._entry is not None:
            self._entry.fault = fault.kind.value

    def _apply_fault(self, fault: Fault, path: str) -> bool:
        """Carry out an up-front fault; False when the request should then be answered normally."""
        self._note(fault)
        if fault.kind is FaultKind.DELAY:
            self.sandbox.wait(fault.delay_s)
            return False
        if fault.kind is FaultKind.STATUS:
            self._send_json(fault.status, {"statusCode": fault.status, "message": fault.error_message})
        elif fault.kind is FaultKind.GARBAGE:
            self._send(200, HTML_BLOCK_PAGE, "text/html; charset=UTF-8")
        else:
            self._drop(path)
        return True

    def _drop(self, path: str) -> None:
        """Start a successful-looking answer and close the connection before it is complete."""
        self.close_connection = True
        if path == STREAM_PATH:
            self._start(200, STREAM_TYPES["msgpack"], None)
            self._chunk(b"\x00\x00\x10\x00\x85")
        else:
            self._start(200, ZIP_TYPE, 65_536)
            self.wfile.write(b"PK\x03\x04" + bytes(1020))
        if self._entry is not None:
            self._entry.status = None
        self.connection.shutdown(socket.SHUT_RDWR)

    # --- control endpoints -------------------------------------------------------------------------------------

    def _control(self, path: str, body: Any) -> None:
        action = (self.command, path.removeprefix(CONTROL_PREFIX).rstrip("/"))
        sandbox = self.sandbox
        try:
            if action == ("GET", "requests"):
                self._send_json(200, [asdict(entry) for entry in sandbox.requests])
                return
            if action == ("DELETE", "requests"):
                sandbox.clear_requests()
            elif action == ("POST", "faults"):
                fault, times = Fault.from_json(body if isinstance(body, dict) else {})
                sandbox.inject(fault, times)
            elif action == ("DELETE", "faults"):
                sandbox.clear_faults()
            elif action == ("POST", "accounts"):
                self._set_account(body if isinstance(body, dict) else {})
            elif action == ("POST", "delay"):
                delay = (body or {}).get("delay_s") if isinstance(body, dict) else None
                if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 600:
                    raise ControlError("delay_s must be a number of seconds between 0 and 600")
                sandbox.delay_s = float(delay)
            else:
                self._send_json(404, {"statusCode": 404, "message": f"no control action {self.command} {path}"})
                return
        except (FaultError, ControlError) as exc:
            self._send_json(400, {"statusCode": 400, "message": str(exc)})
            return
        self._send_json(200, {"ok": True})

    def _set_account(self, body: Mapping[str, Any]) -> None:
        token = body.get("token")
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ControlError("token must be a non-empty string without spaces")
        values: dict[str, Any] = {}
        for key in ("tier", "fixed_anlas", "purchased_anlas"):
            value = body.get(key, 0 if key != "tier" else 2)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ControlError(f"{key} must be a non-negative integer")
            values[key] = value
        for key in ("active", "usage_exhausted"):
            value = body.get(key, key == "active")
            if not isinstance(value, bool):
                raise ControlError(f"{key} must be true or false")
            values[key] = value
        self.sandbox.set_account(token, SandboxAccount(**values))
