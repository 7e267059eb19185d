"""NovelAI failures as typed errors, one class per kind of answer, and the retry policy around them.

The server's error body is `{"statusCode", "message", "details"}`; each error keeps the message, the details
and the request's correlation id (shown to users on 5xx so support can find the request). Only failures
that a later try can fix are `retryable` (a concurrent generation still running, a server or gateway error,
a timeout, a dropped connection), with at most `MAX_RETRIES` more tries spaced 1 s, 2 s, 4 s plus jitter.
"""

from __future__ import annotations

import json
import random
import secrets
import string
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from peropix_tui.core.errors import PeropixError

MAX_RETRIES: Final = 3
BACKOFF_BASE_S: Final = 1.0
BACKOFF_JITTER: Final = 0.3
CORRELATION_ID_LENGTH: Final = 6
MAX_MESSAGE_CHARS: Final = 300
_ALPHANUMERIC: Final = string.ascii_letters + string.digits


class NaiError(PeropixError):
    """A failed NovelAI request. `server_message` is what the server said, verbatim but on one line."""

    summary: ClassVar[str] = "NovelAI request failed"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        server_message: str = "",
        *,
        status: int | None = None,
        correlation_id: str | None = None,
        details: Any = None,
    ) -> None:
        self.server_message = _one_line(server_message)
        self.status = status
        self.correlation_id = correlation_id
        self.details = details
        text = self.summary if status is None else f"{self.summary} (HTTP {status})"
        if self.server_message:
            text += f": {self.server_message}"
        if correlation_id:
            text += f" [correlation id {correlation_id}]"
        super().__init__(text)


class NaiValidationError(NaiError):
    summary = "NovelAI rejected the request"


class NaiAuthError(NaiError):
    summary = "NovelAI did not accept the token; enter a valid persistent API token"


class NaiPaymentError(NaiError):
    summary = "Not enough Anlas or no active NovelAI subscription"


class NaiForbiddenError(NaiError):
    summary = "NovelAI does not allow this for the account's subscription tier"


class NaiConflictError(NaiError):
    summary = "NovelAI reported a conflict"


class NaiConcurrencyError(NaiError):
    summary = "Another generation is still running for this NovelAI account"
    retryable = True


class NaiServerError(NaiError):
    summary = "NovelAI had a server error"
    retryable = True


class NaiTimeoutError(NaiError):
    summary = "NovelAI did not answer in time"
    retryable = True


class NaiConnectionError(NaiError):
    summary = "Could not reach NovelAI"
    retryable = True


class NaiHttpError(NaiError):
    summary = "NovelAI answered with an unexpected status"


class NaiResponseError(NaiError):
    """A 2xx answer whose body is not what the endpoint promises (bad ZIP, no final frame, unknown image)."""

    summary = "NovelAI sent a response that cannot be used"


_BY_STATUS: Final[Mapping[int, type[NaiError]]] = {
    400: NaiValidationError,
    401: NaiAuthError,
    402: NaiPaymentError,
    403: NaiForbiddenError,
    409: NaiConflictError,
    429: NaiConcurrencyError,
}


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_MESSAGE_CHARS else flat[: MAX_MESSAGE_CHARS - 3] + "..."


def error_class(status: int) -> type[NaiError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return NaiServerError if 500 <= status <= 599 else NaiHttpError


def _message_and_details(body: bytes | str | Mapping[str, Any] | None) -> tuple[str, Any]:
    if body is None:
        return "", None
    if isinstance(body, Mapping):
        message = body.get("message")
        if not isinstance(message, str):
            message = "" if message is None else str(message)
        return message, body.get("details")
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return _message_and_details(parsed)
    if stripped[:100].lower().startswith(("<!doctype html", "<html")):
        return "the answer was an HTML page (a proxy or Cloudflare block?)", None
    return stripped, None


def error_from_response(
    status: int,
    body: bytes | str | Mapping[str, Any] | None,
    *,
    correlation_id: str | None = None,
) -> NaiError:
    """The typed error for a non-2xx answer, carrying the server's message and details."""
    message, details = _message_and_details(body)
    return error_class(status)(message, status=status, correlation_id=correlation_id, details=details)


def backoff_delay(attempt: int, *, random_fraction: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): 1 s * 2**attempt * (1 + up to 30 %)."""
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, not {attempt}")
    return BACKOFF_BASE_S * 2.0**attempt * (1 + BACKOFF_JITTER * random_fraction())


def retry_delay(
    error: BaseException, attempt: int, *, random_fraction: Callable[[], float] = random.random
) -> float | None:
    """The wait before retrying after `error` on 0-based retry `attempt`, or None when it must not retry."""
    if not isinstance(error, NaiError) or not error.retryable or attempt >= MAX_RETRIES:
        return None
    return backoff_delay(attempt, random_fraction=random_fraction)


def new_correlation_id() -> str:
    """A fresh `x-correlation-id`: six random letters and digits."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(CORRELATION_ID_LENGTH))
