"""How the NovelAI client fails, over real HTTP against the sandbox: one typed error per kind of answer, the
server's message and correlation id kept, retries exactly where a later try may succeed and nothing was
charged, and the token never in a message or a log line."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest
from sandbox_nai_helpers import MakeClient, RecordingSleep, on, png_bytes, small

from peropix_tui.engine.nai.client import NovelAIClient
from peropix_tui.engine.nai.errors import (
    NaiAuthError,
    NaiConnectionError,
    NaiForbiddenError,
    NaiPaymentError,
    NaiResponseError,
    NaiServerError,
    NaiTimeoutError,
    NaiValidationError,
)
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.types import ProgressEvent, VibeRef
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN, SandboxAccount
from peropix_tui.sandbox.nai_faults import ENCODE_PATH, GENERATE_PATH, STREAM_PATH, Fault, FaultKind
from peropix_tui.sandbox.nai_server import NaiSandbox

START_BALANCE = 10_000
FAKE_TOKEN = "pst-this-token-is-not-on-the-list-0123456789"


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# --- answers that are never retried --------------------------------------------------------------------------------


async def test_unknown_token_is_an_auth_error_and_never_leaks(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NaiAuthError, match="Invalid accessToken") as caught:
        await make_client(FAKE_TOKEN).generate(small(), stream=False)
    assert caught.value.status == 401
    assert FAKE_TOKEN not in one_line(caught.value)
    assert FAKE_TOKEN not in caplog.text
    assert len(on(sandbox, GENERATE_PATH)) == 1
    assert sleeps.delays == []


async def test_not_enough_anlas_is_a_payment_error_and_costs_nothing(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=1))
    with pytest.raises(NaiPaymentError, match="Not enough Anlas") as caught:
        await make_client().generate(small())
    assert caught.value.status == 402
    assert caught.value.correlation_id == on(sandbox, STREAM_PATH)[0].headers["x-correlation-id"]
    assert sandbox.balance(SANDBOX_TOKEN) == 1
    assert len(on(sandbox, STREAM_PATH)) == 1
    assert sleeps.delays == []


async def test_not_enough_anlas_to_encode_a_vibe_caches_nothing(
    sandbox: NaiSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=1))
    source = png_bytes(64, 64)
    with pytest.raises(NaiPaymentError):
        await make_client().encode_vibe(source, "nai-diffusion-4-5-full")
    assert VibeCache(tmp_path / "vibes").get(VibeKey.of(source, "nai-diffusion-4-5-full", 1.0)) is None
    assert len(on(sandbox, ENCODE_PATH)) == 1


async def test_server_validation_is_a_validation_error_with_its_message(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    client = make_client()
    v4_encoding = await client.encode_vibe(png_bytes(64, 64), "nai-diffusion-4-full")
    # Without knowing what the encoding was made for, the client cannot tell; the server can.
    request = small(vibes=(VibeRef(encoding=v4_encoding),))
    with pytest.raises(NaiValidationError, match=r"encoded for model family v4, not v4\.5") as caught:
        await client.generate(request, stream=False)
    assert caught.value.status == 400
    assert len(on(sandbox, GENERATE_PATH)) == 1
    assert sleeps.delays == []


async def test_forbidden_is_its_own_error(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    sandbox.fail_next(1, 403)
    with pytest.raises(NaiForbiddenError, match="HTTP 403"):
        await make_client().generate(small(), stream=False)
    assert len(on(sandbox, GENERATE_PATH)) == 1


# --- retried answers -------------------------------------------------------------------------------------------------


async def test_concurrent_lock_is_retried_with_backoff_then_succeeds(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.fail_next(2, 429)
    (image,) = await make_client().generate(small(), stream=False)
    assert image.seed == 1234
    tries = on(sandbox, GENERATE_PATH)
    assert [r.status for r in tries] == [429, 429, 200]
    assert len({r.headers["x-correlation-id"] for r in tries}) == 3
    assert len(sleeps.delays) == 2
    assert 1.0 <= sleeps.delays[0] <= 1.3
    assert 2.0 <= sleeps.delays[1] <= 2.6


async def test_server_errors_are_retried_three_times_then_reported(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.fail_next(4, 500)
    with pytest.raises(NaiServerError, match="HTTP 500") as caught:
        await make_client().generate(small(), stream=False)
    tries = on(sandbox, GENERATE_PATH)
    assert [r.status for r in tries] == [500, 500, 500, 500]
    assert caught.value.correlation_id == tries[-1].headers["x-correlation-id"]
    assert caught.value.correlation_id in one_line(caught.value)
    assert all(low <= d <= low * 1.3 for d, low in zip(sleeps.delays, (1, 2, 4), strict=True))
    assert sandbox.balance(SANDBOX_TOKEN) == START_BALANCE


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_on_the_stream_are_retried(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep, status: int
) -> None:
    sandbox.fail_next(1, status)
    (image,) = await make_client().generate(small())
    assert image.format == "png"
    assert [r.status for r in on(sandbox, STREAM_PATH)] == [status, 200]
    assert len(sleeps.delays) == 1


async def test_a_refused_connection_is_retried_then_reported(sleeps: RecordingSleep, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with NovelAIClient(SANDBOX_TOKEN, base_url=url, account_url=url, sleep=sleeps) as client:
        with pytest.raises(NaiConnectionError, match=r"127\.0\.0\.1") as caught:
            await client.generate(small(), stream=False)
    assert SANDBOX_TOKEN not in one_line(caught.value)
    assert len(sleeps.delays) == 3


async def test_a_timeout_is_retried_and_the_next_try_succeeds(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.inject(Fault(FaultKind.DELAY, delay_s=3.0), times=1)
    client = make_client(timeout=httpx.Timeout(0.4, connect=2.0))
    (image,) = await client.generate(small(), stream=False)
    assert image.seed == 1234
    assert len(sleeps.delays) == 1


async def test_timeouts_on_every_try_are_reported(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.inject(Fault(FaultKind.DELAY, delay_s=2.0), times=None)
    client = make_client(timeout=httpx.Timeout(0.2, connect=2.0))
    with pytest.raises(NaiTimeoutError, match=r"did not answer within 0\.2 s"):
        await client.generate(small())
    assert len(on(sandbox, STREAM_PATH)) == 4
    assert len(sleeps.delays) == 3
    sandbox.clear_faults()


# --- broken answers after a 2xx: reported, never retried (the images may already be paid for) ----------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_dropped_connection_is_reported_and_not_retried(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep, stream: bool
) -> None:
    sandbox.inject(Fault(FaultKind.DROP))
    with pytest.raises(NaiResponseError, match="broke before the answer was complete") as caught:
        await make_client().generate(small(), stream=stream)
    assert caught.value.correlation_id is not None
    assert len(on(sandbox, GENERATE_PATH, STREAM_PATH)) == 1
    assert sleeps.delays == []


async def test_a_truncated_zip_is_reported_and_not_retried(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.inject(Fault(FaultKind.TRUNCATED_ZIP))
    with pytest.raises(NaiResponseError, match="damaged or incomplete"):
        await make_client().generate(small(n=2), stream=False)
    assert len(on(sandbox, GENERATE_PATH)) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("stream", [False, True])
async def test_an_html_page_instead_of_images_is_named(
    sandbox: NaiSandbox, make_client: MakeClient, stream: bool
) -> None:
    sandbox.inject(Fault(FaultKind.GARBAGE))
    with pytest.raises(NaiResponseError, match="HTML page") as caught:
        await make_client().generate(small(), stream=stream)
    one_line(caught.value)


async def test_an_error_frame_ends_the_stream_with_the_server_message(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.inject(Fault(FaultKind.STREAM_ERROR, status=500, message="CUDA out of memory", after_frames=2))
    progress: list[ProgressEvent] = []
    with pytest.raises(NaiServerError, match="CUDA out of memory") as caught:
        await make_client().generate(small(), on_progress=progress.append)
    assert [p.step for p in progress] == [1, 2]
    assert caught.value.correlation_id == on(sandbox, STREAM_PATH)[0].headers["x-correlation-id"]
    assert len(on(sandbox, STREAM_PATH)) == 1
    assert sleeps.delays == []
