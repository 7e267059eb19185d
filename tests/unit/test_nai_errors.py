"""NovelAI errors: one type per status, the server's message and correlation id kept, retry policy."""

from __future__ import annotations

import pytest

from peropix_tui.core.errors import PeropixError
from peropix_tui.engine.nai.errors import (
    MAX_RETRIES,
    NaiAuthError,
    NaiConcurrencyError,
    NaiConflictError,
    NaiConnectionError,
    NaiError,
    NaiForbiddenError,
    NaiHttpError,
    NaiPaymentError,
    NaiServerError,
    NaiTimeoutError,
    NaiValidationError,
    backoff_delay,
    error_from_response,
    new_correlation_id,
    retry_delay,
)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, NaiValidationError, False),
        (401, NaiAuthError, False),
        (402, NaiPaymentError, False),
        (403, NaiForbiddenError, False),
        (409, NaiConflictError, False),
        (429, NaiConcurrencyError, True),
        (500, NaiServerError, True),
        (502, NaiServerError, True),
        (504, NaiServerError, True),
        (418, NaiHttpError, False),
    ],
)
def test_status_maps_to_a_typed_error(status: int, kind: type[NaiError], retryable: bool) -> None:
    error = error_from_response(status, {"statusCode": status, "message": "boom"})
    assert type(error) is kind
    assert error.retryable is retryable
    assert isinstance(error, PeropixError)
    assert error.status == status


def test_server_message_details_and_correlation_id_are_kept_on_one_line() -> None:
    body = b'{"statusCode":400,"message":"INVALID_CACHE_KEYS","details":{"invalidKeys":["k1"]}}'
    error = error_from_response(400, body, correlation_id="Ab12Cd")
    assert error.server_message == "INVALID_CACHE_KEYS"
    assert error.details == {"invalidKeys": ["k1"]}
    assert error.correlation_id == "Ab12Cd"
    assert str(error) == "NovelAI rejected the request (HTTP 400): INVALID_CACHE_KEYS [correlation id Ab12Cd]"
    multi = error_from_response(500, {"message": "line one\nline two\n" + "x" * 1000})
    assert "\n" not in str(multi) and len(multi.server_message) == 300


def test_known_server_answers() -> None:
    locked = error_from_response(429, '{"statusCode":429,"message":"Concurrent generation is locked"}')
    assert isinstance(locked, NaiConcurrencyError)
    assert "Concurrent generation is locked" in str(locked)
    auth = error_from_response(401, {"statusCode": 401, "message": "Invalid accessToken."})
    assert "persistent API token" in str(auth) and "Invalid accessToken." in str(auth)


def test_non_json_bodies() -> None:
    html = error_from_response(403, b"<!DOCTYPE html><html><body>Attention Required! | Cloudflare</body></html>")
    assert "HTML page" in str(html) and "<html" not in str(html)
    assert error_from_response(502, b"Bad Gateway").server_message == "Bad Gateway"
    assert error_from_response(500, None).server_message == ""
    assert error_from_response(400, b"{not json").server_message == "{not json"
    assert error_from_response(400, {"message": 42}).server_message == "42"
    assert error_from_response(400, b"\xff\xfe").server_message  # undecodable bytes still give text


def test_transport_failures_are_retryable() -> None:
    assert NaiTimeoutError().retryable and NaiConnectionError("refused").retryable
    assert str(NaiTimeoutError()) == "NovelAI did not answer in time"


def test_backoff_is_one_two_four_seconds_plus_up_to_thirty_percent() -> None:
    assert [backoff_delay(n, random_fraction=lambda: 0.0) for n in range(3)] == [1.0, 2.0, 4.0]
    assert backoff_delay(2, random_fraction=lambda: 1.0) == pytest.approx(5.2)
    delays = [backoff_delay(0) for _ in range(200)]
    assert all(1.0 <= d <= 1.3 for d in delays) and len(set(delays)) > 1
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1)


def test_retry_only_what_may_succeed_and_at_most_three_times() -> None:
    locked = NaiConcurrencyError("locked", status=429)
    assert [retry_delay(locked, n, random_fraction=lambda: 0.0) for n in range(MAX_RETRIES + 1)] == [
        1.0,
        2.0,
        4.0,
        None,
    ]
    assert retry_delay(NaiPaymentError(status=402), 0) is None
    assert retry_delay(NaiValidationError(status=400), 0) is None
    assert retry_delay(ValueError("bug"), 0) is None


def test_correlation_ids_are_six_alphanumerics() -> None:
    ids = {new_correlation_id() for _ in range(50)}
    assert all(len(i) == 6 and i.isalnum() and i.isascii() for i in ids)
    assert len(ids) > 45
