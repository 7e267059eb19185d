"""The model-file transport against real local servers: bodies received into the caller's memory, kept-alive
connections, redirects and where the Authorization header may go, every network fault as a one-line
`StorageError`, environment proxies (forwarding and CONNECT tunnels) and certificate checks."""

from __future__ import annotations

import http.client
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from peropix_tui.civitai.storage_stream import StorageAddressError, StorageError, StorageStreams, StorageTimeout

TLS = Path(__file__).parents[1] / "fixtures" / "storage_tls"
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD")


def pattern(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class State:
    """What one server saw: requests in order, connections opened and ended."""

    requests: list[Seen] = field(default_factory=list)
    opened: int = 0
    ended: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    stop: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.state = State()
        super().__init__(("127.0.0.1", 0), handler)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        super().shutdown_request(request)
        self.state.ended.release()  # the socket is closed now


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def setup(self) -> None:
        super().setup()
        self.server.state.opened += 1
        self.answered = 0

    def record(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.state.requests.append(Seen(self.command, self.path, headers))

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Storage(_Recording):
    """`/file/N` (Range too), `/hop/N?to=URL` (N relative redirects, then one to URL), `/loop`, `/cut/N/M`
    (M of N bytes, then closed), `/stall/N`, `/garbage`, `/chunked/N`, `/chunk-cut`, `/close-after/N` (closed
    without saying so), `/drop-second/N` (a second request on one connection gets no answer)."""

    def do_GET(self) -> None:
        self.record()
        parts = urlsplit(self.path)
        name, *args = parts.path.strip("/").split("/")
        numbers = [int(a) for a in args if a.isdigit()]
        if name == "file":
            self.file(numbers[0])
        elif name == "hop":
            to = parse_qs(parts.query)["to"][0]
            location = f"/hop/{numbers[0] - 1}?to={quote(to, safe='')}" if numbers[0] else to
            self.answer(302, b"moved", {"Location": location})
        elif name == "loop":
            self.answer(302, b"", {"Location": "/loop"})
        elif name == "to":
            self.answer(307, b"", {"Location": parse_qs(parts.query)["url"][0]})
        elif name == "cut":
            size, after = numbers
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(pattern(size)[:after])
            self.close_connection = True
        elif name == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(numbers[0]))
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.server.state.stop.wait(10)
            self.close_connection = True
        elif name == "garbage":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.close_connection = True
        elif name == "chunked":
            self.chunked(pattern(numbers[0]))
        elif name == "chunk-cut":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3e8\r\n" + b"y" * 10)
            self.close_connection = True
        elif name == "close-after":
            self.file(numbers[0])
            self.close_connection = True
        elif name == "drop-second":
            if self.answered:
                self.close_connection = True
                return
            self.file(numbers[0])
        else:
            self.answer(404, b"no such route")
        self.answered += 1

    def file(self, size: int) -> None:
        data = pattern(size)
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
            self.answer(206, data[start:], {"Content-Range": f"bytes {start}-{size - 1}/{size}"})
        else:
            self.answer(200, data, {"Content-Type": "application/octet-stream"})

    def chunked(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        third = len(data) // 3 + 1
        for start in range(0, len(data), third):
            piece = data[start : start + third]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class _Proxy(_Recording):
    """An http proxy: absolute-URI GETs are forwarded, CONNECT opens a tunnel."""

    def do_GET(self) -> None:
        self.record()
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=5)
        skip = {"proxy-authorization", "connection", "host"}
        headers = {name: value for name, value in self.headers.items() if name.lower() not in skip}
        upstream.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        relayed = {n: v for n, v in response.getheaders() if n.lower() not in {"content-length", "connection"}}
        self.answer(response.status, body, relayed)

    def do_CONNECT(self) -> None:
        self.record()
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        ends = [self.connection, upstream]
        while not self.server.state.stop.is_set():
            ready, _, _ = select.select(ends, [], [], 0.1)
            for end in ready:
                data = end.recv(1 << 16)
                if not data:
                    upstream.close()
                    self.close_connection = True
                    return
                (upstream if end is self.connection else self.connection).sendall(data)
        upstream.close()
        self.close_connection = True


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, State]]:
    server = _Server(handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://{'localhost' if tls else '127.0.0.1'}:{server.server_address[1]}", server.state
    finally:
        server.state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def server_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    return context


def trusting() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(TLS / "ca.pem"))


@pytest.fixture(autouse=True)
def no_environment_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def storage() -> Iterator[tuple[str, State]]:
    with serve(_Storage) as served:
        yield served


@pytest.fixture
def streams() -> Iterator[StorageStreams]:
    pool = StorageStreams(user_agent="peropix-test", timeout=TIMEOUT)
    yield pool
    pool.close()


def fetch(pool: StorageStreams, url: str, headers: dict[str, str] | None = None, step: int = 1 << 20) -> bytes:
    """The whole body, received into one preallocated buffer `step` bytes at a time."""
    with pool.get(url, headers or {}) as stream:
        assert stream.status in (200, 206)
        received = bytearray()
        buffer = bytearray(step)
        with memoryview(buffer) as view:
            while count := stream.readinto(view):
                received += view[:count]
        return bytes(received)


@pytest.mark.parametrize("step", [1, 4096, 1 << 20])
def test_bodies_come_whole_whatever_the_read_size_and_one_connection_carries_them(
    storage: tuple[str, State], streams: StorageStreams, step: int
) -> None:
    base, state = storage
    assert fetch(streams, f"{base}/file/{300_001 if step > 1 else 3000}", step=step) == pattern(
        300_001 if step > 1 else 3000
    )
    assert fetch(streams, f"{base}/chunked/{100_000}", step=step) == pattern(100_000)
    assert fetch(streams, f"{base}/file/5000", {"Range": "bytes=1000-"}, step=step) == pattern(5000)[1000:]
    assert state.opened == 1
    assert [r.headers["user-agent"] for r in state.requests] == ["peropix-test"] * 3
    assert state.requests[2].headers["range"] == "bytes=1000-"


def test_headers_and_status_are_read_before_the_body(storage: tuple[str, State], streams: StorageStreams) -> None:
    base, _ = storage
    with streams.get(f"{base}/file/5000", {"Range": "bytes=4000-"}) as stream:
        assert stream.status == 206
        assert stream.header("content-range") == "bytes 4000-4999/5000"
        assert stream.header("Content-Length") == "1000"
        assert stream.header("x-absent") == ""
    with streams.get(f"{base}/nowhere", {}) as missing:
        assert missing.status == 404


def test_a_connection_the_host_closed_is_not_reused(
    storage: tuple[str, State], streams: StorageStreams, caplog: pytest.LogCaptureFixture
) -> None:
    base, state = storage
    caplog.set_level(logging.DEBUG, logger="peropix_tui.civitai.storage_stream")
    assert fetch(streams, f"{base}/close-after/2000") == pattern(2000)
    assert state.ended.acquire(timeout=5)  # the host has closed the kept-alive connection
    assert fetch(streams, f"{base}/file/3000") == pattern(3000)
    assert state.opened == 2
    assert "opening another" not in caplog.text  # seen closed while idle: no request was sent on it


def test_a_kept_connection_that_breaks_on_the_next_request_is_replaced(
    storage: tuple[str, State], streams: StorageStreams, caplog: pytest.LogCaptureFixture
) -> None:
    base, state = storage
    caplog.set_level(logging.DEBUG, logger="peropix_tui.civitai.storage_stream")
    assert fetch(streams, f"{base}/drop-second/2000") == pattern(2000)
    assert fetch(streams, f"{base}/drop-second/3000") == pattern(3000)
    assert state.opened == 2 and len(state.requests) == 3
    assert "was closed by the host; opening another" in caplog.text


def test_redirects_are_followed_and_authorization_stays_on_its_origin(storage: tuple[str, State]) -> None:
    base, first = storage
    with serve(_Storage) as (other, second), StorageStreams(user_agent="t", timeout=TIMEOUT) as pool:
        hops = f"{base}/hop/3?to={quote(other + '/file/7000', safe='')}"
        headers = {"Authorization": "Bearer secret", "Range": "bytes=500-"}
        assert fetch(pool, hops, headers) == pattern(7000)[500:]
    assert [r.target.split("?")[0] for r in first.requests] == ["/hop/3", "/hop/2", "/hop/1", "/hop/0"]
    assert all(r.headers.get("authorization") == "Bearer secret" for r in first.requests)
    assert first.opened == 1  # the small redirect bodies were read, so one connection carried every hop
    [landed] = second.requests
    assert "authorization" not in landed.headers and landed.headers["range"] == "bytes=500-"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/loop", "more than 3 redirects"),
        ("/to?url=" + quote("ftp://files.example/a.safetensors", safe=""), "unusable address"),
        ("/to?url=" + quote("http://storage.example:abc/", safe=""), "unusable address"),
    ],
)
def test_redirects_that_lead_nowhere_are_address_errors(storage: tuple[str, State], path: str, words: str) -> None:
    base, _ = storage
    with (
        StorageStreams(user_agent="t", timeout=TIMEOUT, max_redirects=3) as pool,
        pytest.raises(StorageAddressError, match=words),
    ):
        pool.get(base + path, {})


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://host/file", "http:///no-host", "http://host:99999/x", "http://h/\x00"]
)
def test_unusable_addresses_are_address_errors(streams: StorageStreams, url: str) -> None:
    with pytest.raises(StorageAddressError, match="unusable address"):
        streams.get(url, {})


def test_a_cut_body_is_an_error_never_a_short_file(storage: tuple[str, State], streams: StorageStreams) -> None:
    base, _ = storage
    with pytest.raises(StorageError, match=r"closed the connection after 70000 of 200000 bytes"):
        fetch(streams, f"{base}/cut/200000/70000")
    with pytest.raises(StorageError, match="the body ended after"):
        fetch(streams, f"{base}/chunk-cut")


def test_a_stalled_body_times_out_on_the_read_timeout(storage: tuple[str, State]) -> None:
    base, _ = storage
    with StorageStreams(user_agent="t", timeout=httpx.Timeout(0.3, connect=2.0)) as pool:
        started = time.monotonic()
        with pytest.raises(StorageTimeout, match=r"no data from 127\.0\.0\.1:\d+ for 0\.3 s"):
            fetch(pool, f"{base}/stall/100000")
        assert time.monotonic() - started < 3


def test_refused_connections_and_garbage_answers_are_one_line_errors(
    storage: tuple[str, State], streams: StorageStreams
) -> None:
    base, _ = storage
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(StorageError, match=rf"cannot connect to 127\.0\.0\.1:{port}: .*refused") as refused:
        streams.get(f"http://127.0.0.1:{port}/file/1", {})
    assert not isinstance(refused.value, StorageTimeout) and "\n" not in str(refused.value)
    with pytest.raises(StorageError, match="not a valid HTTP answer"):
        streams.get(f"{base}/garbage", {})


def test_close_ends_the_idle_connections(storage: tuple[str, State]) -> None:
    base, state = storage
    pool = StorageStreams(user_agent="t", timeout=TIMEOUT)
    assert fetch(pool, f"{base}/file/1000") == pattern(1000)
    assert not state.ended.acquire(timeout=0.2)  # kept alive
    pool.close()
    assert state.ended.acquire(timeout=5)


def test_http_goes_through_the_environment_proxy_with_its_credentials(
    storage: tuple[str, State], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, origin = storage
    with serve(_Proxy) as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy.replace("http://", "http://us%40er:p%3Ass@"))
        with StorageStreams(user_agent="t", timeout=TIMEOUT) as pool:
            assert fetch(pool, f"{base}/file/90000") == pattern(90000)
            assert fetch(pool, f"{base}/file/1000") == pattern(1000)
        assert [(r.method, r.target) for r in seen.requests] == [
            ("GET", f"{base}/file/90000"),
            ("GET", f"{base}/file/1000"),
        ]
        assert seen.requests[0].headers["proxy-authorization"] == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
        assert seen.opened == 1
        assert all("proxy-authorization" not in r.headers for r in origin.requests)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        with StorageStreams(user_agent="t", timeout=TIMEOUT) as direct:
            assert fetch(direct, f"{base}/file/1000") == pattern(1000)
        assert len(seen.requests) == 2


def test_https_is_tunnelled_through_the_proxy_and_still_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(_Storage, server_tls()) as (base, origin), serve(_Proxy) as (proxy, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        with StorageStreams(user_agent="t", timeout=TIMEOUT, ssl_context=trusting()) as pool:
            assert fetch(pool, f"{base}/file/250000") == pattern(250000)
            assert fetch(pool, f"{base}/file/1000") == pattern(1000)
        port = urlsplit(base).port
        assert [(r.method, r.target) for r in seen.requests] == [("CONNECT", f"localhost:{port}")]
        assert [r.target for r in origin.requests] == ["/file/250000", "/file/1000"]
        with (
            StorageStreams(user_agent="t", timeout=TIMEOUT) as untrusting,
            pytest.raises(StorageError, match="certificate not trusted"),
        ):
            untrusting.get(f"{base}/file/10", {})


def test_certificates_are_checked_against_the_configured_authorities(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(_Storage, server_tls()) as (base, _):
        with (
            StorageStreams(user_agent="t", timeout=TIMEOUT) as default,
            pytest.raises(StorageError, match=r"cannot connect to localhost:\d+: certificate not trusted"),
        ):
            default.get(f"{base}/file/10", {})
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "ca.pem"))
        with StorageStreams(user_agent="t", timeout=TIMEOUT) as configured:
            assert fetch(configured, f"{base}/file/20000") == pattern(20000)
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "missing.pem"))
        with (
            StorageStreams(user_agent="t", timeout=TIMEOUT) as broken,
            pytest.raises(StorageError, match=r"cannot load the CA certificates from .*missing\.pem"),
        ):
            broken.get(f"{base}/file/10", {})


def test_a_proxy_we_cannot_speak_to_is_an_address_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with (
        StorageStreams(user_agent="t", timeout=TIMEOUT) as pool,
        pytest.raises(StorageAddressError, match=r"socks5://127\.0\.0\.1 .* is not supported"),
    ):
        pool.get("https://storage.example/file", {})
