"""Blocking GETs of model files from storage hosts, received straight into the caller's memory.

A model file is gigabytes, and on a small machine the CPU each byte costs bounds how fast it comes. A general
HTTP client hands a body over as new byte strings: received into one, appended to its parse buffer, sliced
out again, then copied once more into the writer's aligned buffer. Here `StorageStream.readinto` receives the
body into the memory the caller hashes and writes from, so the kernel's copy is the only one.

What the downloader relies on from a full client is kept: redirects are followed (the Authorization header
is dropped as soon as they leave its origin), connect and read timeouts, certificates checked against the
same CA bundle as the API client (certifi, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), proxies from the
environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`: an http:// proxy forwards http and
tunnels https with CONNECT), and connections kept alive per origin for the next file. Every failure is a
one-line `StorageError`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from urllib.parse import unquote, urlsplit

import certifi
import httpx

from peropix_tui.civitai.errors import CivitaiError

log = logging.getLogger(__name__)

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS: Final = 20
IDLE_PER_ROUTE: Final = 8
# A redirect's body is read to its end (so its connection can serve the next hop) when it is this small.
MAX_DRAIN: Final = 64 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class StorageError(CivitaiError):
    """A storage request that failed on the way: connection, TLS, an answer that is not HTTP, a cut body."""


class StorageTimeout(StorageError):
    """No connection, or no data, within the configured time."""


class StorageAddressError(StorageError):
    """An address that cannot be fetched: unusable, another scheme, too many redirects, a proxy we cannot use."""


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Route:
    """How to reach an origin: directly, or through an http proxy (forwarding http, tunnelling https)."""

    origin: _Origin
    proxy: _Origin | None = None
    proxy_auth: str | None = None

    @property
    def where(self) -> str:
        return str(self.origin) if self.proxy is None else f"{self.origin} through the proxy {self.proxy}"


class StorageStream:
    """One answer of a storage host: status and headers at once, the body on demand; close it (or use it as
    a context manager) to give its connection back."""

    def __init__(
        self,
        owner: StorageStreams,
        route: _Route,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        self._owner = owner
        self._route = route
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self.status = response.status
        self._expected = None if response.chunked else response.length
        self._received = 0

    def header(self, name: str) -> str:
        """The named header's value (the first one when repeated), "" when absent."""
        value = self._response.getheader(name)
        return "" if value is None else value

    def readinto(self, view: memoryview) -> int:
        """Receive body bytes into `view`, filling it unless the body ends first; 0 at the end of the body.
        A connection that ends before the announced length is a `StorageError`, never a short body."""
        try:
            count = self._response.readinto(view)
        except TimeoutError:
            raise StorageTimeout(f"no data from {self._route.where}{_during(self._owner.read_timeout)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise StorageError(f"{self._route.where}: {_describe(exc)}") from None
        self._received += count
        if not count and len(view) and self._expected is not None and self._received < self._expected:
            raise StorageError(
                f"{self._route.where} closed the connection after {self._received} of {self._expected} bytes"
            )
        return count

    def drain(self) -> None:
        """Read a small body to its end, so the connection can carry the next request."""
        length = self._response.length
        if length is None or length > MAX_DRAIN:
            return
        with contextlib.suppress(OSError, http.client.HTTPException):
            self._response.read(length)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        response = self._response
        reusable = response.isclosed() and not response.will_close
        response.close()
        if reusable:
            self._owner.give_back(self._route, connection)
        else:
            connection.close()

    def __enter__(self) -> StorageStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StorageStreams:
    """GETs to storage hosts from worker threads, with a small pool of kept-alive connections per route.

    Proxies are read from the environment once, when it is made. `ssl_context` None means the CA bundle the
    API client uses.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: httpx.Timeout,
        ssl_context: ssl.SSLContext | None = None,
        max_redirects: int = MAX_REDIRECTS,
        idle_per_route: int = IDLE_PER_ROUTE,
    ) -> None:
        self.user_agent = user_agent
        self.connect_timeout = timeout.connect
        self.read_timeout = timeout.read
        self.max_redirects = max_redirects
        self.idle_per_route = idle_per_route
        self._proxies = urllib.request.getproxies()
        self._ssl_context = ssl_context
        self._idle: dict[_Route, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, url: str, headers: Mapping[str, str]) -> StorageStream:
        """GET `url` with `headers`, following redirects; the answer that is not a redirect comes back."""
        target = _parse(url)
        sent = dict(headers)
        for _hop in range(self.max_redirects + 1):
            stream = self._request(target, sent)
            location = stream.header("location")
            if stream.status not in REDIRECT_STATUSES or not location:
                return stream
            stream.drain()
            stream.close()
            try:
                following = _parse(str(target.join(location)))
            except (httpx.InvalidURL, StorageAddressError):
                unusable = f"{_origin(target)} redirected to an unusable address {location[:120]!r}"
                raise StorageAddressError(unusable) from None
            if _origin(following) != _origin(target):
                sent = {name: value for name, value in sent.items() if name.lower() != "authorization"}
            target = following
        raise StorageAddressError(f"more than {self.max_redirects} redirects, the last from {_origin(target)}")

    def give_back(self, route: _Route, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose answer was read to its end for the route's next request."""
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(route, [])
                if len(idle) < self.idle_per_route:
                    idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """Close every idle connection; connections in use close when their answer does."""
        with self._lock:
            self._closed = True
            idle = [connection for connections in self._idle.values() for connection in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()

    def __enter__(self) -> StorageStreams:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, url: httpx.URL, headers: Mapping[str, str]) -> StorageStream:
        route = self._route(url)
        connection = self._take_idle(route)
        if connection is not None:
            try:
                return self._send(route, connection, url, headers)
            except _Stale:
                log.debug("kept-alive connection to %s was closed by the host; opening another", route.where)
        try:
            return self._send(route, self._connect(route), url, headers)
        except _Stale as stale:
            raise StorageError(f"{route.where}: {_describe(stale.cause)}") from None

    def _send(
        self, route: _Route, connection: http.client.HTTPConnection, url: httpx.URL, headers: Mapping[str, str]
    ) -> StorageStream:
        forward = route.proxy is not None and route.origin.scheme == "http"
        request_headers = {"User-Agent": self.user_agent, "Accept": "*/*", **headers}
        if forward and route.proxy_auth:
            request_headers["Proxy-Authorization"] = route.proxy_auth
        try:
            connection.request("GET", str(url) if forward else url.raw_path.decode("ascii"), headers=request_headers)
            response = connection.getresponse()
        except TimeoutError:
            connection.close()
            raise StorageTimeout(f"no answer from {route.where}{_during(self.read_timeout)}") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            connection.close()
            raise _Stale(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise StorageError(f"{route.where}: {_describe(exc)}") from None
        return StorageStream(self, route, connection, response)

    def _take_idle(self, route: _Route) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(route)
                if not idle:
                    return None
                connection = idle.pop()
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()  # the host closed it (or sent something unasked): it cannot carry a request

    def _connect(self, route: _Route) -> http.client.HTTPConnection:
        address = route.proxy or route.origin
        connection: http.client.HTTPConnection
        if route.origin.scheme == "https":
            connection = http.client.HTTPSConnection(
                address.host, address.port, timeout=self.connect_timeout, context=self._tls()
            )
            if route.proxy is not None:
                tunnel_headers = {"Proxy-Authorization": route.proxy_auth} if route.proxy_auth else None
                connection.set_tunnel(route.origin.host, route.origin.port, headers=tunnel_headers)
        else:
            connection = http.client.HTTPConnection(address.host, address.port, timeout=self.connect_timeout)
        try:
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(self.read_timeout)
        except TimeoutError:
            connection.close()
            raise StorageTimeout(f"connecting to {route.where} timed out{_during(self.connect_timeout)}") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise StorageError(f"cannot connect to {route.where}: {_describe(exc)}") from None
        return connection

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = _default_tls()
            return self._ssl_context

    def _route(self, url: httpx.URL) -> _Route:
        origin = _origin(url)
        proxy = self._proxies.get(origin.scheme) or self._proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(f"{origin.host}:{origin.port}"):
            return _Route(origin)
        if "://" not in proxy:
            proxy = f"http://{proxy}"
        try:
            parts = urlsplit(proxy)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError:
            raise StorageAddressError(f"the {origin.scheme} proxy setting {proxy[:120]!r} is not a URL") from None
        if parts.scheme != "http" or not parts.hostname:
            raise StorageAddressError(
                f"the proxy {parts.scheme}://{parts.hostname or ''} set for {origin.scheme} is not supported for "
                "model files; use an http:// proxy"
            )
        auth = None
        if parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(user_pass.encode("utf-8")).decode("ascii")
        return _Route(origin, _Origin("http", parts.hostname, port), auth)


class _Stale(Exception):
    """A connection that broke before any answer came: a kept-alive one the host had closed meanwhile."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise StorageAddressError(f"unusable address {url[:120]!r}") from None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.raw_host:
        raise StorageAddressError(f"unusable address {url[:120]!r}: not an http(s) URL with a host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise StorageAddressError(f"unusable address {url[:120]!r}: port {parsed.port} is out of range")
    return parsed


def _origin(url: httpx.URL) -> _Origin:
    return _Origin(url.scheme, url.raw_host.decode("ascii").lower(), url.port or _DEFAULT_PORTS[url.scheme])


def _during(seconds: float | None) -> str:
    return "" if seconds is None else f" for {seconds:g} s"


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read: for a kept-alive connection, the host closing it."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _default_tls() -> ssl.SSLContext:
    """Certificates checked as the API client checks them: `SSL_CERT_FILE`, `SSL_CERT_DIR`, else certifi."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    try:
        if cafile:
            context = ssl.create_default_context(cafile=cafile)
        elif capath:
            context = ssl.create_default_context(capath=capath)
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        where = cafile or capath or certifi.where()
        raise StorageError(f"cannot load the CA certificates from {where}: {_describe(exc)}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _describe(exc: BaseException) -> str:
    """One line for a network failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the body ended after {len(exc.partial)} bytes"
    if isinstance(exc, http.client.HTTPException):
        text = " ".join(str(exc).split())[:120]
        return f"not a valid HTTP answer ({type(exc).__name__}{': ' + text if text else ''})"
    if isinstance(exc, OSError):
        return " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    return " ".join(str(exc).split()) or type(exc).__name__
