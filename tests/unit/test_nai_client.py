"""The NovelAI client over real HTTP against the sandbox server: every action, both stream framings, vibes
through the cache, the subscription, the per-token queue and cancellation."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image
from sandbox_nai_helpers import V45, MakeClient, RecordingSleep, on, png_bytes, small

from peropix_tui import __version__
from peropix_tui.core.config import Config
from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.jobs import Executors
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore
from peropix_tui.engine.nai.client import NaiTokenMissingError, NovelAIClient
from peropix_tui.engine.nai.payload import build_payload
from peropix_tui.engine.nai.transport import USER_AGENT, token_lock
from peropix_tui.engine.nai.vibe_cache import VibeCache, VibeKey
from peropix_tui.engine.nai.vibe_files import load_vibes, save_vibes
from peropix_tui.engine.types import (
    CharacterPrompt,
    CharacterReference,
    ProgressEvent,
    RequestError,
    VibeRef,
)
from peropix_tui.sandbox.nai_accounts import SANDBOX_OPUS_TOKEN, SANDBOX_TOKEN, SandboxAccount
from peropix_tui.sandbox.nai_faults import ENCODE_PATH, GENERATE_PATH, STREAM_PATH, SUBSCRIPTION_PATH
from peropix_tui.sandbox.nai_server import NaiSandbox

V4 = "nai-diffusion-4-full"
START_BALANCE = 10_000


def decoded(value: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(value)))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- actions ---------------------------------------------------------------------------------------------------


async def test_txt2img_sends_the_built_payload_and_returns_every_image(
    sandbox: NaiSandbox, make_client: MakeClient
) -> None:
    client = make_client()
    request = small(n=2, characters=(CharacterPrompt("girl, red eyes", position="B2"),))
    price = await client.estimate(request)
    images = await client.generate(request, stream=False)

    (sent,) = on(sandbox, GENERATE_PATH)
    assert sent.body == orjson.loads(orjson.dumps(build_payload(request)))
    assert sent.headers["user-agent"] == USER_AGENT == f"peropix/{__version__}"
    assert re.fullmatch(r"[A-Za-z0-9]{6}", sent.headers["x-correlation-id"])
    assert sent.headers["authorization"] == "<redacted>"
    assert "application/json" not in sent.headers.get("accept", "")
    assert [(image.index, image.seed, image.format) for image in images] == [(0, 1234, "png"), (1, 1235, "png")]
    assert [image.metadata.seed for image in images] == [1234, 1235]
    assert all(image.metadata.prompt == sent.body["input"] for image in images)
    assert all(image.request.seed == 1234 for image in images)
    assert images[0].data != images[1].data
    assert START_BALANCE - sandbox.balance(SANDBOX_TOKEN) == price.total > 0


async def test_a_request_without_a_seed_gets_one_that_is_recorded(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    (image,) = await make_client().generate(small(seed=None), stream=False)
    (sent,) = on(sandbox, GENERATE_PATH)
    assert image.seed == sent.body["parameters"]["seed"] == image.metadata.seed == image.request.seed
    assert image.seed > 0


async def test_json_images_answer(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    images = await make_client(images_format="json").generate(small(n=2, seed=77), stream=False)
    (sent,) = on(sandbox, GENERATE_PATH)
    assert "application/json" in sent.headers["accept"]
    assert [image.seed for image in images] == [77, 78]
    assert all(sniff_image_format(image.data) == "png" for image in images)


@pytest.mark.parametrize(("stream_format", "accept"), [("msgpack", "msgpack"), ("sse", "text/event-stream")])
async def test_streaming_reports_every_step_with_a_preview(
    sandbox: NaiSandbox, make_client: MakeClient, stream_format: str, accept: str
) -> None:
    progress: list[ProgressEvent] = []
    client = make_client(stream_format=stream_format)
    images = await client.generate(small(n=2, steps=5), on_progress=progress.append)

    (sent,) = on(sandbox, STREAM_PATH)
    assert sent.body["parameters"]["stream"] == stream_format
    assert accept in sent.headers["accept"]
    assert [(p.sample_index, p.step, p.total) for p in progress] == [(s, i, 5) for s in (0, 1) for i in range(1, 6)]
    assert all(p.preview is not None and sniff_image_format(p.preview) == "jpeg" for p in progress)
    assert [(image.seed, image.format) for image in images] == [(1234, "png"), (1235, "png")]
    assert [image.metadata.seed for image in images] == [1234, 1235]


async def test_img2img_resizes_the_source_and_streams_the_strength_share(
    sandbox: NaiSandbox, make_client: MakeClient
) -> None:
    progress: list[ProgressEvent] = []
    request = small(image=png_bytes(100, 150), strength=0.5, steps=6)
    (image,) = await make_client().generate(request, on_progress=progress.append)

    (sent,) = on(sandbox, STREAM_PATH)
    assert sent.body["action"] == "img2img"
    assert decoded(sent.body["parameters"]["image"]).size == (256, 256)
    assert [(p.step, p.total) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert image.metadata.strength == 0.5


async def test_inpaint_goes_to_the_inpainting_model_with_a_binary_mask(
    sandbox: NaiSandbox, make_client: MakeClient
) -> None:
    mask = Image.new("L", (256, 256), 0)
    mask.paste(200, (64, 64, 192, 192))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    request = small(image=png_bytes(256, 256), mask=buffer.getvalue(), strength=0.8)
    (image,) = await make_client().generate(request, stream=False)

    (sent,) = on(sandbox, GENERATE_PATH)
    assert (sent.body["action"], sent.body["model"]) == ("infill", "nai-diffusion-4-5-full-inpainting")
    sent_mask = np.asarray(decoded(sent.body["parameters"]["mask"]).convert("L"))
    assert set(np.unique(sent_mask).tolist()) == {0, 255}
    assert image.format == "png"


# --- vibes -----------------------------------------------------------------------------------------------------


async def test_a_cached_vibe_encoding_is_never_paid_twice(
    sandbox: NaiSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    source = png_bytes(64, 64, (10, 200, 30))
    request = small(vibes=(VibeRef(image=source, strength=0.5, information_extracted=0.8),))
    client = make_client()
    assert (await client.estimate(request)).vibe_cost == 2
    await client.generate(request, stream=False)

    (encode,) = on(sandbox, ENCODE_PATH)
    assert encode.body["information_extracted"] == 0.8
    assert encode.body["model"] == V45
    encoding = VibeCache(tmp_path / "vibes").get(VibeKey.of(source, V45, 0.8))
    assert encoding is not None
    (generation,) = on(sandbox, GENERATE_PATH)
    assert generation.body["parameters"]["reference_image_multiple"] == [base64.b64encode(encoding).decode()]
    assert generation.body["parameters"]["reference_information_extracted_multiple"] == [0.8]

    # A new client (a later session) with the same cache: no encode request, no encode charge.
    again = make_client()
    assert (await again.estimate(request)).vibe_cost == 0
    await again.generate(request, stream=False)
    assert len(on(sandbox, ENCODE_PATH)) == 1
    generation_cost = sandbox.account(SANDBOX_TOKEN).charged[1]
    assert sandbox.account(SANDBOX_TOKEN).charged == [2, generation_cost, generation_cost]


async def test_another_information_extracted_or_model_family_is_encoded_afresh(
    sandbox: NaiSandbox, make_client: MakeClient
) -> None:
    source = png_bytes(64, 64, (10, 200, 30))
    client = make_client()
    first = await client.encode_vibe(source, V45, 0.8)
    assert await client.encode_vibe(source, V45, 0.8004) == first
    assert await client.encode_vibe(source, V45, 0.5) != first
    assert await client.encode_vibe(source, "nai-diffusion-4-5-full-inpainting", 0.8) == first
    assert await client.encode_vibe(source, V4, 0.8) != first
    assert [(r.body["model"], r.body["information_extracted"]) for r in on(sandbox, ENCODE_PATH)] == [
        (V45, 0.8),
        (V45, 0.5),
        (V4, 0.8),
    ]


async def test_concurrent_encodes_of_one_image_pay_once(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    sandbox.delay_s = 0.2
    source = png_bytes(64, 64, (1, 2, 3))
    first, second = await asyncio.gather(make_client().encode_vibe(source, V45), make_client().encode_vibe(source, V45))
    assert first == second
    assert len(on(sandbox, ENCODE_PATH)) == 1
    assert sandbox.account(SANDBOX_TOKEN).charged == [2]


async def test_an_imported_vibe_file_is_used_instead_of_paying_again(
    sandbox: NaiSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    source = png_bytes(64, 64, (90, 20, 160))
    exported = await make_client().export_vibe(source, V45, 0.6, strength=0.4)
    path = tmp_path / "mine.naiv4vibe"
    save_vibes(path, [exported])
    assert len(on(sandbox, ENCODE_PATH)) == 1

    other = make_client(vibe_cache=VibeCache(tmp_path / "elsewhere"))
    (vibe,) = await other.import_vibes(path)
    assert vibe == load_vibes(path)[0]
    await other.generate(small(vibes=(VibeRef(image=source, information_extracted=0.6),)), stream=False)
    await other.generate(small(vibes=(vibe.to_vibe_ref(V45),)), stream=False)
    assert len(on(sandbox, ENCODE_PATH)) == 1
    sent = [r.body["parameters"] for r in on(sandbox, GENERATE_PATH)]
    expected = base64.b64encode(exported.encodings[0].data).decode()
    assert [p["reference_image_multiple"] for p in sent] == [[expected], [expected]]
    assert sent[1]["reference_strength_multiple"] == [0.4]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"steps": 51}, "at most 50 steps"),
        ({"extra_vibes": 16}, "at most 16 vibes, not 17"),
        ({"character_reference": CharacterReference(png_bytes(64, 64))}, "cannot be used together"),
        ({"model": "nai-diffusion-5-full"}, "has no vibe transfer"),
    ],
)
async def test_a_request_the_server_would_refuse_is_refused_before_any_vibe_is_paid(
    sandbox: NaiSandbox, make_client: MakeClient, changes: dict[str, Any], reason: str
) -> None:
    extra = changes.pop("extra_vibes", 0)
    vibes = tuple(VibeRef(image=png_bytes(64, 64, (n, 0, 0))) for n in range(1 + extra))
    with pytest.raises(RequestError, match=reason):
        await make_client().generate(small(vibes=vibes, **changes))
    assert sandbox.requests == []


# --- account ---------------------------------------------------------------------------------------------------


async def test_subscription_reports_tier_and_both_kinds_of_anlas(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=100, purchased_anlas=50))
    scroll = await make_client().subscription()
    assert (scroll.tier, scroll.tier_name, scroll.balance, scroll.opus, scroll.active) == (
        2,
        "Scroll",
        150,
        False,
        True,
    )
    assert scroll.expires_at is not None
    opus = await make_client(SANDBOX_OPUS_TOKEN).subscription()
    assert (opus.tier, opus.tier_name, opus.opus) == (3, "Opus", True)


async def test_subscription_falls_back_to_the_image_host(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    client = make_client(account_url=closed_port_url())
    subscription = await client.subscription()
    assert subscription.balance == START_BALANCE
    assert client.last_subscription == subscription
    assert len(on(sandbox, SUBSCRIPTION_PATH)) == 1


async def test_the_balance_is_refreshed_after_each_generation(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    client = make_client()
    before = client.last_subscription
    await client.generate(small(), stream=False)
    after = client.last_subscription
    assert before is None
    assert after is not None
    assert after.balance == sandbox.balance(SANDBOX_TOKEN) < START_BALANCE
    assert [r.path for r in sandbox.requests] == [GENERATE_PATH, SUBSCRIPTION_PATH]

    opus = make_client(SANDBOX_OPUS_TOKEN)
    await opus.subscription()
    assert (await opus.estimate(small())).free
    await opus.generate(small())
    assert opus.last_subscription is not None
    assert opus.last_subscription.balance == START_BALANCE == sandbox.balance(SANDBOX_OPUS_TOKEN)


# --- queueing and cancellation -----------------------------------------------------------------------------------


async def test_generations_on_one_token_queue_instead_of_colliding(
    sandbox: NaiSandbox, make_client: MakeClient, sleeps: RecordingSleep
) -> None:
    sandbox.delay_s = 0.3
    results = await asyncio.gather(
        make_client().generate(small(seed=1), stream=False),
        make_client().generate(small(seed=2)),
        make_client().generate(small(seed=3), stream=False),
    )
    assert [images[0].seed for images in results] == [1, 2, 3]
    generations = [r for r in sandbox.requests if r.path in (GENERATE_PATH, STREAM_PATH)]
    assert [r.status for r in generations] == [200, 200, 200]
    assert [r.body["parameters"]["seed"] for r in generations] == [1, 2, 3]
    assert sleeps.delays == []


async def test_cancelling_a_running_generation_releases_the_token_lock(
    sandbox: NaiSandbox, make_client: MakeClient
) -> None:
    sandbox.delay_s = 2.0
    client = make_client(sleep=RecordingSleep(scale=0.3))
    task = asyncio.create_task(client.generate(small()))
    for _ in range(200):
        if on(sandbox, STREAM_PATH):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not token_lock(SANDBOX_TOKEN).locked()
    sandbox.delay_s = 0.0
    (image,) = await client.generate(small(seed=99), stream=False)
    assert image.seed == 99


async def test_cancelling_a_queued_generation_sends_nothing(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    sandbox.delay_s = 0.4
    running = asyncio.create_task(make_client().generate(small(seed=1), stream=False))
    queued = asyncio.create_task(make_client().generate(small(seed=2), stream=False))
    for _ in range(200):
        if on(sandbox, GENERATE_PATH):
            break
        await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await running)[0].seed == 1
    assert [r.body["parameters"]["seed"] for r in on(sandbox, GENERATE_PATH)] == [1]
    assert not token_lock(SANDBOX_TOKEN).locked()


# --- wiring ------------------------------------------------------------------------------------------------------


async def test_blocking_work_runs_on_the_app_executors(sandbox: NaiSandbox, make_client: MakeClient) -> None:
    executors = Executors()
    client = make_client(executors=executors)
    images = await client.generate(small(vibes=(VibeRef(image=png_bytes(64, 64)),)))
    assert images[0].metadata.seed == 1234
    executors.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        await client.generate(small())


async def test_client_from_settings_and_secrets(sandbox: NaiSandbox, tmp_path: Path) -> None:
    dirs = AppDirs(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    urls = {"PEROPIX_NAI_BASE_URL": sandbox.base_url, "PEROPIX_NAI_ACCOUNT_URL": sandbox.base_url}
    config = Config.load(dirs, environ=urls)
    secrets = SecretStore(dirs.secrets_file, environ={"PEROPIX_NAI_TOKEN": SANDBOX_TOKEN})
    async with NovelAIClient.from_config(config, secrets) as client:
        assert client.vibe_cache is not None
        assert client.vibe_cache.folder == config.vibes_dir
        assert (await client.subscription()).balance == START_BALANCE
    with pytest.raises(NaiTokenMissingError, match="PEROPIX_NAI_TOKEN"):
        NovelAIClient.from_config(config, SecretStore(dirs.secrets_file, environ={}))
