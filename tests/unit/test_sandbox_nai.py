"""The sandbox NovelAI server over real HTTP: auth, validation, Anlas, locking, faults, request log, lifecycle."""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from typing import Any

import httpx
import pytest
from sandbox_cmd_helpers import interrupt, sandbox_args, sandbox_process
from sandbox_nai_helpers import AUTH, V45, b64, body, jpeg_bytes, msgpack_events, png_bytes, sse_events

from peropix_tui.commands import sandbox_cmd
from peropix_tui.core.errors import PeropixError
from peropix_tui.sandbox.nai_accounts import SANDBOX_OPUS_TOKEN, SANDBOX_TOKEN, SandboxAccount
from peropix_tui.sandbox.nai_faults import (
    ENCODE_PATH,
    GENERATE_PATH,
    STREAM_PATH,
    SUBSCRIPTION_PATH,
    Fault,
    FaultKind,
)
from peropix_tui.sandbox.nai_server import NaiSandbox, SandboxError


def error_of(response: httpx.Response) -> tuple[int, str]:
    payload = response.json()
    assert payload["statusCode"] == response.status_code
    return response.status_code, payload["message"]


# --- auth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GENERATE_PATH, ENCODE_PATH, STREAM_PATH])
def test_unknown_token_is_401(sandbox: NaiSandbox, path: str) -> None:
    response = httpx.post(sandbox.base_url + path, json=body(), headers={"Authorization": "Bearer pst-nope"})
    assert error_of(response) == (401, "Invalid accessToken.")


def test_missing_authorization_is_401_and_malformed_is_400(sandbox: NaiSandbox) -> None:
    assert error_of(httpx.post(sandbox.base_url + GENERATE_PATH, json=body()))[0] == 401
    for header in ("Token abc", "Bearer", "Bearer a b", SANDBOX_TOKEN):
        response = httpx.get(sandbox.base_url + SUBSCRIPTION_PATH, headers={"Authorization": header})
        assert error_of(response) == (400, "Invalid Authorization header content."), header


def test_subscription_reports_tier_and_balance(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(tier=1, fixed_anlas=300, purchased_anlas=45))
    data = client.get(SUBSCRIPTION_PATH).json()
    assert data["tier"] == 1
    assert data["active"] is True
    assert data["trainingStepsLeft"] == {"fixedTrainingStepsLeft": 300, "purchasedTrainingSteps": 45}
    assert set(data) >= {"expiresAt", "perks", "accountType", "isGracePeriod", "usage"}
    assert data["usage"]["isNegative"] is False
    opus = client.get(SUBSCRIPTION_PATH, headers={"Authorization": f"Bearer {SANDBOX_OPUS_TOKEN}"}).json()
    assert opus["tier"] == 3
    assert opus["perks"]["unlimitedImageGeneration"] is True


# --- validation ------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(request: dict[str, Any]) -> None:
        node: Any = request
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _size(width: int, height: int) -> Any:
    def change(request: dict[str, Any]) -> None:
        request["parameters"]["width"] = width
        request["parameters"]["height"] = height

    return change


def _infill_without_mask(request: dict[str, Any]) -> None:
    request["action"] = "infill"
    request["model"] = V45 + "-inpainting"
    request["parameters"]["image"] = b64(png_bytes(256, 256))


def _char_ref(width: int, height: int, model: str = V45) -> Any:
    def change(request: dict[str, Any]) -> None:
        request["model"] = model
        request["parameters"] |= {
            "director_reference_images": [b64(jpeg_bytes(width, height))],
            "director_reference_descriptions": [
                {"caption": {"base_caption": "character&style", "char_captions": []}, "legacy_uc": False}
            ],
            "director_reference_information_extracted": [1],
            "director_reference_strength_values": [1],
            "director_reference_secondary_strength_values": [0],
        }

    return change


def _raw_vibe(request: dict[str, Any]) -> None:
    request["parameters"] |= {
        "reference_image_multiple": [b64(png_bytes(64, 64))],
        "reference_information_extracted_multiple": [1],
        "reference_strength_multiple": [0.6],
    }


def _extra_negative_character(request: dict[str, Any]) -> None:
    negative = request["parameters"]["v4_negative_prompt"]["caption"]["char_captions"]
    negative.append({"char_caption": "", "centers": [{"x": 0.5, "y": 0.5}]})


VALIDATION_CASES = [
    ("width not on the grid", _set("parameters.width", 300), "multiple of 64"),
    ("too many pixels", _size(2048, 2048), "at most 3145728"),
    ("zero steps", _set("parameters.steps", 0), "steps must be between 1 and 50"),
    ("51 steps", _set("parameters.steps", 51), "steps must be between 1 and 50"),
    ("unknown model", _set("model", "nai-diffusion-9"), "doesn't exist"),
    ("unknown sampler", _set("parameters.sampler", "k_heun"), "sampler 'k_heun'"),
    ("SMEA on V4.5", _set("parameters.sm", True), "SMEA"),
    ("infill on a base model", _set("action", "infill"), "doesn't support action infill"),
    ("infill without mask", _infill_without_mask, "mask is required"),
    ("character reference on V4", _char_ref(1024, 1536, "nai-diffusion-4-full"), "character reference"),
    ("character reference off canvas", _char_ref(1000, 1500), "Error encoding v4 director references"),
    ("mismatched char_captions", _extra_negative_character, "char_captions"),
    ("input differs from base_caption", _set("input", "something else"), "input must equal"),
    ("raw image as a V4 vibe", _raw_vibe, "raw image"),
    ("too many samples for the size", _set("parameters.n_samples", 9), "n_samples"),
    ("string steps", _set("parameters.steps", "28"), "steps must be an integer"),
]


@pytest.mark.parametrize(
    ("change", "fragment"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_validation_errors_are_400_with_novelai_messages(
    client: httpx.Client, sandbox: NaiSandbox, change: Any, fragment: str
) -> None:
    request = body(characters=(("girl, red eyes", 0.5, 0.5),))
    change(request)
    status, message = error_of(client.post(GENERATE_PATH, json=request))
    assert status == 400
    assert fragment in message
    assert sandbox.balance(SANDBOX_TOKEN) == 10_000


def test_empty_centers_are_refused(client: httpx.Client) -> None:
    request = body(characters=(("girl", 0.1, 0.1),))
    request["parameters"]["v4_prompt"]["caption"]["char_captions"][0]["centers"] = []
    assert error_of(client.post(GENERATE_PATH, json=request)) == (
        400,
        "Validation error: v4_prompt.caption.char_captions[0].centers must be a non-empty array",
    )


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post(GENERATE_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    assert error_of(response) == (400, "Validation error: request body is not a JSON object")


def test_unknown_path_and_wrong_method(client: httpx.Client) -> None:
    assert client.get("/ai/nothing-here").status_code == 404
    assert client.get(GENERATE_PATH).status_code == 405


# --- Anlas -------------------------------------------------------------------------------------------------


def test_generation_charges_the_web_price_and_subscription_follows(client: httpx.Client, sandbox: NaiSandbox) -> None:
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216)).status_code == 200
    assert sandbox.balance(SANDBOX_TOKEN) == 10_000 - 20  # spec §5.1: 832x1216 at 28 steps costs 20
    assert client.post(GENERATE_PATH, json=body(width=1024, height=1536, steps=28)).status_code == 200
    assert sandbox.account(SANDBOX_TOKEN).charged == [20, 30]
    left = client.get(SUBSCRIPTION_PATH).json()["trainingStepsLeft"]
    assert left["fixedTrainingStepsLeft"] + left["purchasedTrainingSteps"] == 10_000 - 50


def test_monthly_anlas_are_spent_before_purchased_ones(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=5, purchased_anlas=100))
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216)).status_code == 200
    left = client.get(SUBSCRIPTION_PATH).json()["trainingStepsLeft"]
    assert left == {"fixedTrainingStepsLeft": 0, "purchasedTrainingSteps": 85}


def test_short_balance_is_402_and_nothing_is_charged(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=19))
    status, message = error_of(client.post(GENERATE_PATH, json=body(width=832, height=1216)))
    assert status == 402
    assert "costs 20" in message
    assert sandbox.balance(SANDBOX_TOKEN) == 19


def test_opus_gets_one_small_image_free(client: httpx.Client, sandbox: NaiSandbox) -> None:
    opus = {"Authorization": f"Bearer {SANDBOX_OPUS_TOKEN}"}
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216), headers=opus).status_code == 200
    assert sandbox.balance(SANDBOX_OPUS_TOKEN) == 10_000
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216, n=2), headers=opus).status_code == 200
    assert client.post(GENERATE_PATH, json=body(width=1024, height=1536), headers=opus).status_code == 200
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216, steps=29), headers=opus).status_code == 200
    # 29 steps ends the free image; at this size it still costs 20 (spec §5.1).
    assert sandbox.account(SANDBOX_OPUS_TOKEN).charged == [0, 20, 30, 20]


def test_v5_is_free_for_opus_only_while_the_usage_allowance_lasts(client: httpx.Client, sandbox: NaiSandbox) -> None:
    opus = {"Authorization": f"Bearer {SANDBOX_OPUS_TOKEN}"}
    v5 = body(model="nai-diffusion-5-full", width=832, height=1216)
    assert client.post(GENERATE_PATH, json=v5, headers=opus).status_code == 200
    sandbox.account(SANDBOX_OPUS_TOKEN).usage_exhausted = True
    assert client.get(SUBSCRIPTION_PATH, headers=opus).json()["usage"]["isNegative"] is True
    assert client.post(GENERATE_PATH, json=v5, headers=opus).status_code == 200
    assert sandbox.account(SANDBOX_OPUS_TOKEN).charged == [0, 30]  # V5 costs 1.5 times the V4.5 price


def test_encode_vibe_charges_two_anlas_and_is_deterministic(client: httpx.Client, sandbox: NaiSandbox) -> None:
    image = b64(png_bytes(64, 64))
    first = client.post(ENCODE_PATH, json={"image": image, "information_extracted": 1, "model": V45})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/binary"
    again = client.post(ENCODE_PATH, json={"image": image, "information_extracted": 1, "model": V45})
    other = client.post(ENCODE_PATH, json={"image": image, "information_extracted": 0.5, "model": V45})
    assert first.content == again.content != other.content
    assert sandbox.account(SANDBOX_TOKEN).charged == [2, 2, 2]


@pytest.mark.parametrize("model", ["nai-diffusion-3", "nai-diffusion-5-full", "nai-diffusion-7"])
def test_encode_vibe_refuses_models_without_encodings(client: httpx.Client, model: str) -> None:
    response = client.post(
        ENCODE_PATH, json={"image": b64(png_bytes(64, 64)), "information_extracted": 1, "model": model}
    )
    assert response.status_code == 400


def test_vibe_encodings_work_only_with_their_model_family(client: httpx.Client) -> None:
    encoding = client.post(ENCODE_PATH, json={"image": b64(png_bytes(64, 64)), "model": V45}).content
    request = body()
    request["parameters"] |= {
        "reference_image_multiple": [b64(encoding)],
        "reference_information_extracted_multiple": [1],
        "reference_strength_multiple": [0.6],
    }
    assert client.post(GENERATE_PATH, json=request).status_code == 200
    request["model"] = "nai-diffusion-4-full"
    request["input"] = request["parameters"]["v4_prompt"]["caption"]["base_caption"]
    status, message = error_of(client.post(GENERATE_PATH, json=request))
    assert status == 400
    assert "encoded for model family v4.5" in message


def test_more_than_four_vibes_cost_two_each(client: httpx.Client, sandbox: NaiSandbox) -> None:
    request = body(width=832, height=1216)
    encodings = [
        b64(client.post(ENCODE_PATH, json={"image": b64(png_bytes(64, 64, (i, 0, 0))), "model": V45}).content)
        for i in range(6)
    ]
    request["parameters"] |= {
        "reference_image_multiple": encodings,
        "reference_information_extracted_multiple": [1] * 6,
        "reference_strength_multiple": [0.5] * 6,
    }
    assert client.post(GENERATE_PATH, json=request).status_code == 200
    assert sandbox.account(SANDBOX_TOKEN).charged == [2] * 6 + [20 + 4]


def test_character_reference_costs_five_per_image(client: httpx.Client, sandbox: NaiSandbox) -> None:
    request = body(width=832, height=1216)
    _char_ref(1024, 1536)(request)
    assert client.post(GENERATE_PATH, json=request).status_code == 200
    assert sandbox.account(SANDBOX_TOKEN).charged == [25]


# --- concurrency -----------------------------------------------------------------------------------------


def _post_together(sandbox: NaiSandbox, tokens: list[str]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(tokens))
    results: list[httpx.Response] = []

    def send(token: str) -> None:
        with httpx.Client(base_url=sandbox.base_url, timeout=20) as http:
            barrier.wait()
            results.append(http.post(GENERATE_PATH, json=body(), headers={"Authorization": f"Bearer {token}"}))

    threads = [threading.Thread(target=send, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_second_request_on_one_token_meanwhile_gets_429(sandbox: NaiSandbox) -> None:
    sandbox.delay_s = 0.6
    results = _post_together(sandbox, [SANDBOX_TOKEN, SANDBOX_TOKEN])
    assert sorted(r.status_code for r in results) == [200, 429]
    locked = next(r for r in results if r.status_code == 429)
    assert error_of(locked) == (429, "Concurrent generation is locked")
    assert sandbox.account(SANDBOX_TOKEN).charged == [2]


def test_different_tokens_generate_at_the_same_time(sandbox: NaiSandbox) -> None:
    sandbox.delay_s = 0.3
    results = _post_together(sandbox, [SANDBOX_TOKEN, SANDBOX_OPUS_TOKEN])
    assert [r.status_code for r in results] == [200, 200]


def test_lock_is_released_after_a_refusal(client: httpx.Client) -> None:
    bad = body()
    bad["parameters"]["steps"] = 99
    assert client.post(GENERATE_PATH, json=bad).status_code == 400
    assert client.post(GENERATE_PATH, json=body(width=832, height=1216, n=1)).status_code == 200
    stream = body()
    stream["parameters"]["stream"] = "msgpack"
    assert client.post(STREAM_PATH, json=stream).status_code == 200
    assert client.post(GENERATE_PATH, json=body()).status_code == 200


# --- faults ----------------------------------------------------------------------------------------------


def test_fail_next_then_succeed_and_the_log_counts_tries(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.fail_next(2, status=503)
    statuses = [client.post(GENERATE_PATH, json=body()).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in sandbox.requests] == [503, 503, 200]
    assert [r.fault for r in sandbox.requests] == ["status", "status", None]
    assert sandbox.account(SANDBOX_TOKEN).charged == [2]


@pytest.mark.parametrize(("status", "message"), [(500, "Internal server error"), (502, "Bad gateway")])
def test_status_faults_carry_the_error_body(
    client: httpx.Client, sandbox: NaiSandbox, status: int, message: str
) -> None:
    sandbox.inject(Fault(FaultKind.STATUS, status=status))
    assert error_of(client.post(GENERATE_PATH, json=body())) == (status, message)


def test_faults_leave_other_paths_alone_unless_asked(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.fail_next(1, status=500)
    assert client.get(SUBSCRIPTION_PATH).status_code == 200
    sandbox.clear_faults()
    sandbox.fail_next(1, status=500, paths=frozenset({SUBSCRIPTION_PATH}))
    assert client.post(GENERATE_PATH, json=body()).status_code == 200
    assert client.get(SUBSCRIPTION_PATH).status_code == 500
    assert client.get(SUBSCRIPTION_PATH).status_code == 200


def test_dropped_connection_is_a_transport_error(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.DROP))
    with pytest.raises(httpx.TransportError):
        client.post(GENERATE_PATH, json=body())
    assert sandbox.requests[-1].fault == "drop"
    assert sandbox.requests[-1].status is None
    assert client.post(GENERATE_PATH, json=body()).status_code == 200


def test_dropped_stream_is_a_transport_error(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.DROP))
    request = body()
    request["parameters"]["stream"] = "msgpack"
    with pytest.raises(httpx.TransportError):
        client.post(STREAM_PATH, json=request)


def test_truncated_zip(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.TRUNCATED_ZIP))
    response = client.post(GENERATE_PATH, json=body())
    assert response.status_code == 200
    assert response.content.startswith(b"PK\x03\x04")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(response.content)).read("image_0.png")
    complete = client.post(GENERATE_PATH, json=body())
    assert zipfile.ZipFile(io.BytesIO(complete.content)).namelist() == ["image_0.png"]


def test_garbage_html_with_200(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.GARBAGE))
    response = client.post(GENERATE_PATH, json=body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content.startswith(b"<!DOCTYPE html>")


def test_delay_fault_makes_the_client_time_out(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.DELAY, delay_s=1.0))
    with pytest.raises(httpx.ReadTimeout):
        client.post(GENERATE_PATH, json=body(), timeout=0.3)
    started = time.monotonic()
    assert client.post(GENERATE_PATH, json=body()).status_code == 200
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("kind", ["msgpack", "sse"])
def test_mid_stream_error_frame_and_no_charge(client: httpx.Client, sandbox: NaiSandbox, kind: str) -> None:
    sandbox.inject(Fault(FaultKind.STREAM_ERROR, after_frames=3, message="CUDA out of memory"))
    request = body(steps=10)
    request["parameters"]["stream"] = kind
    response = client.post(STREAM_PATH, json=request)
    if kind == "msgpack":
        events = msgpack_events(response.content)
    else:
        events = [data for _name, data in sse_events(response.text)]
    assert [e["event_type"] for e in events] == ["intermediate"] * 3 + ["error"]
    assert (events[-1]["message"], events[-1]["code"]) == ("CUDA out of memory", 500)
    assert sandbox.account(SANDBOX_TOKEN).charged == []


def test_stream_error_after_every_preview_replaces_the_final_frame(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.STREAM_ERROR, after_frames=99))
    request = body(steps=4)
    request["parameters"]["stream"] = "msgpack"
    events = msgpack_events(client.post(STREAM_PATH, json=request).content)
    assert [e["event_type"] for e in events] == ["intermediate"] * 4 + ["error"]


def test_control_endpoint_injects_faults_and_lists_requests(client: httpx.Client, sandbox: NaiSandbox) -> None:
    added = httpx.post(sandbox.base_url + "/_sandbox/faults", json={"kind": "status", "status": 502, "times": 2})
    assert added.json() == {"ok": True}
    assert [client.post(GENERATE_PATH, json=body()).status_code for _ in range(3)] == [502, 502, 200]
    logged = httpx.get(sandbox.base_url + "/_sandbox/requests").json()
    assert [entry["status"] for entry in logged] == [502, 502, 200]
    assert logged[0]["body"]["parameters"]["seed"] == 1000
    assert httpx.post(sandbox.base_url + "/_sandbox/faults", json={"kind": "nonsense"}).status_code == 400
    httpx.post(sandbox.base_url + "/_sandbox/faults", json={"kind": "garbage", "times": None})
    httpx.delete(sandbox.base_url + "/_sandbox/faults")
    assert client.post(GENERATE_PATH, json=body()).status_code == 200
    httpx.delete(sandbox.base_url + "/_sandbox/requests")
    assert sandbox.requests == []


def test_control_endpoint_sets_accounts_and_delay(client: httpx.Client, sandbox: NaiSandbox) -> None:
    httpx.post(sandbox.base_url + "/_sandbox/accounts", json={"token": "pst-new", "tier": 3, "fixed_anlas": 7})
    data = client.get(SUBSCRIPTION_PATH, headers={"Authorization": "Bearer pst-new"}).json()
    assert (data["tier"], data["trainingStepsLeft"]["fixedTrainingStepsLeft"]) == (3, 7)
    assert httpx.post(sandbox.base_url + "/_sandbox/accounts", json={"token": ""}).status_code == 400
    assert httpx.post(sandbox.base_url + "/_sandbox/delay", json={"delay_s": 0.25}).status_code == 200
    assert sandbox.delay_s == 0.25


# --- request log -----------------------------------------------------------------------------------------


def test_request_log_keeps_headers_without_the_token(client: httpx.Client, sandbox: NaiSandbox) -> None:
    sent = body(seed=77)
    client.post(GENERATE_PATH, json=sent, headers={"x-correlation-id": "Ab12Cd"})
    (entry,) = sandbox.requests
    assert (entry.method, entry.path, entry.status) == ("POST", GENERATE_PATH, 200)
    assert entry.body == sent
    assert entry.headers["x-correlation-id"] == "Ab12Cd"
    assert entry.headers["authorization"] == "<redacted>"
    assert SANDBOX_TOKEN not in repr(entry)


def test_request_log_is_bounded_in_entries_and_bytes() -> None:
    with NaiSandbox(log_limit=3) as sandbox, httpx.Client(base_url=sandbox.base_url, headers=AUTH) as http:
        for seed in range(1, 6):
            http.post(GENERATE_PATH, json=body(seed=seed))
        assert [entry.body["parameters"]["seed"] for entry in sandbox.requests] == [3, 4, 5]
    size = len(httpx.Request("POST", "http://x", json=body()).content)
    with NaiSandbox(log_bytes=size * 2) as sandbox, httpx.Client(base_url=sandbox.base_url, headers=AUTH) as http:
        for seed in range(1, 6):
            http.post(GENERATE_PATH, json=body(seed=seed))
        assert [entry.body["parameters"]["seed"] for entry in sandbox.requests] == [4, 5]


def test_correlation_id_is_echoed(client: httpx.Client) -> None:
    response = client.post(GENERATE_PATH, json=body(steps=0), headers={"x-correlation-id": "Zz99Yy"})
    assert response.headers["x-correlation-id"] == "Zz99Yy"


# --- lifecycle -------------------------------------------------------------------------------------------


def test_stop_closes_keep_alive_connections_joins_threads_and_frees_the_port() -> None:
    before = threading.active_count()
    sandbox = NaiSandbox().start()
    port = sandbox.port
    http = httpx.Client(base_url=sandbox.base_url, headers=AUTH)
    assert http.get(SUBSCRIPTION_PATH).status_code == 200  # leaves an idle keep-alive connection open
    started = time.monotonic()
    sandbox.stop()
    assert time.monotonic() - started < 2
    assert threading.active_count() == before
    with pytest.raises(httpx.TransportError):
        http.get(SUBSCRIPTION_PATH)
    http.close()
    sandbox.stop()  # a second stop is harmless
    with NaiSandbox(port=port) as again:  # the port is free for the next sandbox
        assert httpx.get(again.base_url + SUBSCRIPTION_PATH, headers=AUTH).status_code == 200


def test_stop_interrupts_a_long_generation() -> None:
    sandbox = NaiSandbox(delay_s=30).start()
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(httpx.post(sandbox.base_url + GENERATE_PATH, json=body(), headers=AUTH, timeout=60))
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    while not sandbox.requests:
        time.sleep(0.01)
    started = time.monotonic()
    sandbox.stop()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert outcome
    assert not isinstance(outcome[0], httpx.Response) or outcome[0].status_code == 200


def test_only_loopback_addresses_are_allowed() -> None:
    for host in ("0.0.0.0", "192.168.1.2", "example.com"):
        with pytest.raises(SandboxError, match="loopback"):
            NaiSandbox(host=host)
    assert NaiSandbox(host="localhost").host == "127.0.0.1"


def test_port_in_use_is_a_clear_error(sandbox: NaiSandbox) -> None:
    with pytest.raises(SandboxError, match=f"cannot listen on 127.0.0.1:{sandbox.port}"):
        NaiSandbox(port=sandbox.port).start()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        sandbox = NaiSandbox(host="::1").start()
    except SandboxError:
        pytest.skip("IPv6 loopback not configured")
    with sandbox:
        assert sandbox.base_url.startswith("http://[::1]:")
        assert httpx.get(sandbox.base_url + SUBSCRIPTION_PATH, headers=AUTH).status_code == 200


# --- peropix sandbox -------------------------------------------------------------------------------------


def test_command_refuses_bad_options() -> None:
    with pytest.raises(SandboxError, match="loopback"):
        sandbox_cmd._run(sandbox_args(host="0.0.0.0"))
    with pytest.raises(PeropixError, match="--balance"):
        sandbox_cmd._run(sandbox_args(balance=-1))
    with pytest.raises(PeropixError, match="--token"):
        sandbox_cmd._run(sandbox_args(token="two words"))


def test_command_serves_until_interrupted() -> None:
    options = ("--balance", "77", "--token", "pst-mine")
    with sandbox_process(*options, ready="PEROPIX_NAI_BASE_URL=") as (process, settings, lines):
        assert settings["PEROPIX_NAI_TOKEN"] == "pst-mine"
        assert settings["PEROPIX_NAI_ACCOUNT_URL"] == settings["PEROPIX_NAI_BASE_URL"]
        assert any("pst-mine (Scroll, 77 Anlas)" in line for line in lines)
        response = httpx.get(
            settings["PEROPIX_NAI_ACCOUNT_URL"] + SUBSCRIPTION_PATH, headers={"Authorization": "Bearer pst-mine"}
        )
        assert response.json()["trainingStepsLeft"]["fixedTrainingStepsLeft"] == 77
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"GET {SUBSCRIPTION_PATH} -> 200"
        interrupt(process)


def test_env_line() -> None:
    assert sandbox_cmd.env_line("http://127.0.0.1:5", "pst-x") == (
        "PEROPIX_NAI_BASE_URL=http://127.0.0.1:5 PEROPIX_NAI_ACCOUNT_URL=http://127.0.0.1:5 PEROPIX_NAI_TOKEN=pst-x"
    )
