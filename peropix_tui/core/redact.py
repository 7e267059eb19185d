"""Secrets never reach a log, a screen or a traceback in full.

`redact` shortens a secret to a recognisable stub (`pst-ab…yz`). `SecretRegistry` remembers every secret the
process has loaded so the logging filter can scrub them from any message, including ones built by libraries
(httpx logs URLs and headers at debug level).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from typing import TextIO

_PREFIX = re.compile(r"^[A-Za-z]{2,5}[-_]")
_BEARER = re.compile(r"(?i)(bearer\s+)([^\s'\",]+)")
_QUERY_TOKEN = re.compile(r"(?i)([?&](?:token|api_key|apikey|key)=)([^&\s'\"]+)")


def redact(secret: str | None) -> str:
    """A stub that identifies a secret without revealing it: `pst-ab…yz`; short values become `****`."""
    if not secret:
        return ""
    prefix_match = _PREFIX.match(secret)
    prefix = prefix_match.group(0) if prefix_match else ""
    body = secret[len(prefix) :]
    if len(body) < 10:
        return f"{prefix}****"
    return f"{prefix}{body[:2]}…{body[-2:]}"


class SecretRegistry:
    """Process-wide set of secret strings to scrub from text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, redact(secret))
        text = _BEARER.sub(lambda m: m.group(1) + redact(m.group(2)), text)
        return _QUERY_TOKEN.sub(lambda m: m.group(1) + redact(m.group(2)), text)


SECRETS = SecretRegistry()


def scrub(text: str) -> str:
    """Replace every known secret (and any bearer or `?token=` value) in `text` by its redacted stub."""
    return SECRETS.scrub(text)


class ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs secrets from everything written through it (stdout/stderr of commands)."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._inner.encoding


class RedactingFilter(logging.Filter):
    """Logging filter that renders the record once and scrubs the result, arguments and traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = scrub(message)
        record.args = None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
