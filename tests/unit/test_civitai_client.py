"""The REST client against the sandbox CivitAI server over real HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from civitai_helpers import FAST, KEY, SleepRecorder, alice_dataset

from peropix_tui.civitai.client import USER_AGENT, CivitaiClient, RetryPolicy, retry_after_s
from peropix_tui.civitai.errors import ApiError, ApiKeyRejected, PagingLimitError
from peropix_tui.sandbox.civitai_faults import Fault, FaultKind
from peropix_tui.sandbox.civitai_server import CivitaiSandbox


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(alice_dataset()) as server:
        yield server


def client(sandbox: CivitaiSandbox, key: str | None = KEY, **kwargs: object) -> CivitaiClient:
    options: dict[str, object] = {"spacing_s": 0.0, "policy": FAST, "sleep": SleepRecorder()} | kwargs
    return CivitaiClient(sandbox.base_url, key, **options)  # type: ignore[arg-type]


async def test_key_is_checked_once_and_a_rejected_key_is_one_clear_error(sandbox: CivitaiSandbox) -> None:
    async with client(sandbox) as good:
        me = await good.me()
    assert me is not None and me["username"] == "sandbox_user"
    async with client(sandbox, key="wrong-key-123456") as bad:
        with pytest.raises(ApiKeyRejected) as info:
            await bad.me()
    message = str(info.value)
    assert "401" in message and "PEROPIX_CIVITAI_API_KEY" in message
    assert "wrong-key-123456" not in message
    async with client(sandbox, key=None) as anonymous:
        assert await anonymous.me() is None
    assert [r.path for r in sandbox.requests].count("/api/v1/me") == 2


async def test_user_agent_is_not_a_browser_and_the_key_goes_as_bearer_only(sandbox: CivitaiSandbox) -> None:
    assert not re.search(r"mozilla|chrome|safari|firefox|opera|edge", USER_AGENT, re.IGNORECASE)
    async with client(sandbox) as api:
        await api.get_json("/api/v1/models", {"username": "alice"}, what="models")
    [request] = [r for r in sandbox.requests if r.path == "/api/v1/models"]
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["authorization"] == "<redacted>"
    assert "token" not in request.query
    assert request.method == "GET"


def test_key_only_for_the_api_origin_and_civitai_sites() -> None:
    api = CivitaiClient("http://127.0.0.1:8123", "k" * 20)
    assert api.may_send_key("http://127.0.0.1:8123/api/v1/models")
    assert not api.may_send_key("http://127.0.0.1:9999/storage/x")
    assert not api.may_send_key("http://localhost:8123/api/v1/models")
    assert api.may_send_key("https://civitai.red/api/v1/images")
    assert api.may_send_key("https://www.civitai.com/api/v1/images")
    assert not api.may_send_key("http://civitai.com/api/v1/images")
    assert not api.may_send_key("https://image-b2.civitai.com/file/x")
    assert not api.may_send_key("https://civitai-delivery-worker-prod.r2.cloudflarestorage.com/x")
    assert api.auth_headers("https://evil.example/") == {}
    assert not api.may_send_key("http://[127.0.0.1:8123/") and not api.may_send_key("https://civitai.com:99999/")
    assert CivitaiClient("http://127.0.0.1:8123", None).auth_headers("http://127.0.0.1:8123/") == {}


async def test_503_bursts_honour_retry_after(sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.STATUS, status=503, retry_after=2, paths=frozenset({"/api/v1/models"})), times=3)
    sleep = SleepRecorder()
    async with client(sandbox, sleep=sleep, policy=RetryPolicy(attempts=6, max_wait_s=300)) as api:
        page = await api.get_json("/api/v1/models", {"username": "alice"}, what="models")
    assert len(page["items"]) == 3
    assert sleep.delays == [2.0, 2.0, 2.0]


async def test_server_errors_back_off_exponentially_then_give_up(sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.STATUS, status=500, paths=frozenset({"/api/v1/models"})), times=None)
    sleep = SleepRecorder()
    policy = RetryPolicy(attempts=6, base_s=1.0, cap_s=30.0, jitter=0.0)
    async with client(sandbox, sleep=sleep, policy=policy) as api:
        with pytest.raises(ApiError) as info:
            await api.get_json("/api/v1/models", {"username": "alice"}, what="models of alice")
    assert info.value.status == 500 and info.value.reason == "http_500"
    assert "models of alice: HTTP 500" in str(info.value)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert len([r for r in sandbox.requests if r.path == "/api/v1/models"]) == 6


async def test_edge_throttle_without_retry_after_waits_long_and_slows_down(sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.THROTTLE, paths=frozenset({"/api/v1/models"})), times=1)
    sleep = SleepRecorder()
    async with client(sandbox, sleep=sleep, policy=RetryPolicy(), spacing_s=1.0) as api:
        await api.get_json("/api/v1/models", {"username": "alice"}, what="models")
        assert api.spacing_s == 2.0
    assert any(30.0 <= d <= 60.0 for d in sleep.delays)


async def test_throttle_with_retry_after_and_dropped_connections_recover(sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.THROTTLE, retry_after=7, paths=frozenset({"/api/v1/creators"})), times=1)
    sandbox.inject(Fault(FaultKind.DROP, paths=frozenset({"/api/v1/creators"})), times=1)
    sleep = SleepRecorder()
    async with client(sandbox, sleep=sleep, policy=RetryPolicy(jitter=0.0)) as api:
        page = await api.get_json("/api/v1/creators", {"query": "alice"}, what="creators")
    assert page["items"][0]["username"] == "alice"
    assert sleep.delays[0] == 7.0


async def test_deep_paging_429_is_never_retried(sandbox: CivitaiSandbox) -> None:
    async with client(sandbox) as api:
        with pytest.raises(PagingLimitError):
            await api.get_json("/api/v1/models", {"username": "alice", "page": 20, "limit": 100}, what="models")
    assert len([r for r in sandbox.requests if r.path == "/api/v1/models"]) == 1


async def test_raw_control_characters_in_json_are_accepted(sandbox: CivitaiSandbox) -> None:
    dataset = sandbox.dataset
    with dataset.lock:
        model = next(iter(dataset.models.values()))
        model.name = "Ctrl\x01\x11\x18 Name"
    sandbox.inject(Fault(FaultKind.RAW_CONTROL_CHARS), times=1)
    async with client(sandbox) as api:
        page = await api.get_json("/api/v1/models", {"username": "alice"}, what="models")
    assert "Ctrl\x01\x11\x18 Name" in [item["name"] for item in page["items"]]
    assert sandbox.faults.fired(FaultKind.RAW_CONTROL_CHARS) == 1


async def test_metadata_calls_are_serialised_with_spacing(sandbox: CivitaiSandbox) -> None:
    import asyncio

    async with client(sandbox, spacing_s=0.15, sleep=asyncio.sleep) as api:
        started = time.monotonic()
        await asyncio.gather(*(api.get_json("/api/v1/creators", {"query": "alice"}, what="c") for _ in range(4)))
        elapsed = time.monotonic() - started
    assert elapsed >= 0.4


async def test_html_instead_of_json_is_an_error(sandbox: CivitaiSandbox) -> None:
    async with client(sandbox) as api:
        with pytest.raises(ApiError) as info:
            await api.get_json("/login", what="login page")
    assert info.value.reason == "html_response"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("9999", 300.0), ("soon", None), (None, None), ("nan", None)],
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert retry_after_s(value, 300.0) == expected


def test_retry_after_http_date() -> None:
    from email.utils import formatdate

    seconds = retry_after_s(formatdate(time.time() + 60, usegmt=True), 300.0)
    assert seconds is not None and 55 <= seconds <= 61


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ApiError, match="must be an http"):
        CivitaiClient("civitai.com", None)
