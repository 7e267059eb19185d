"""The sandbox CivitAI server over real HTTP: every route, cursor walks, the download outcome table, storage
(Range, presigned URLs, no key accepted), images, every fault, the dataset's files and the lifecycle."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from sandbox_cmd_helpers import interrupt, sandbox_args, sandbox_process

from peropix_tui.commands import sandbox_cmd
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.metadata.reader import read_metadata
from peropix_tui.core.safetensors import compute_hashes, read_header
from peropix_tui.sandbox import civitai_bodies
from peropix_tui.sandbox.civitai_dataset import (
    CivitaiDataset,
    FileAccess,
    ModelMode,
    ModelType,
    NsfwLevel,
    SandboxFile,
    SandboxModel,
)
from peropix_tui.sandbox.civitai_default import (
    COMMUNITY_USER,
    FAR_FUTURE,
    MAIN_CREATOR,
    NUMERIC_CREATOR,
    default_dataset,
)
from peropix_tui.sandbox.civitai_faults import B2_GLOB, CDN_GLOB, Fault, FaultError, FaultKind
from peropix_tui.sandbox.civitai_files import BLOCK_SIZE, FileSizeError, SafetensorsBlob, kohya_metadata
from peropix_tui.sandbox.civitai_images import ImageFormat
from peropix_tui.sandbox.civitai_listing import TOO_MANY_PAGES
from peropix_tui.sandbox.civitai_server import SANDBOX_API_KEY, SANDBOX_USERNAME, CivitaiSandbox, raw_control_chars
from peropix_tui.sandbox.nai_server import SandboxError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "civitai"
KEY = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
CLIENT_UA = {"User-Agent": "peropix-test/1.0"}
BROWSER_UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"}


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(default_dataset()) as server:
        yield server


@pytest.fixture
def client(sandbox: CivitaiSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, headers=CLIENT_UA, timeout=20) as http:
        yield http


def body(response: httpx.Response) -> Any:
    """The JSON of an answer, parsed as a CivitAI client must: control characters allowed."""
    return json.loads(response.text, strict=False)


def walk(client: httpx.Client, path: str, params: Any) -> list[dict[str, Any]]:
    """Every item of a cursor walk, following `metadata.nextPage` until it is absent."""
    items: list[dict[str, Any]] = []
    response = client.get(path, params=params)
    for _ in range(200):
        assert response.status_code == 200, response.text
        page = body(response)
        items += page["items"]
        next_page = page["metadata"].get("nextPage")
        if next_page is None:
            return items
        assert page["metadata"]["nextCursor"] in httpx.URL(next_page).params.get_list("cursor")
        response = client.get(next_page)
    raise AssertionError("the walk never ended")


def artist_models(sandbox: CivitaiSandbox) -> list[SandboxModel]:
    return sandbox.dataset.models_of(MAIN_CREATOR)


def model_named(sandbox: CivitaiSandbox, name: str) -> SandboxModel:
    return next(m for m in sandbox.dataset.models.values() if m.name == name)


def first_file(model: SandboxModel) -> SandboxFile:
    return model.versions[-1].files[0]


def fetch_file(client: httpx.Client, sandbox_file: SandboxFile, headers: dict[str, str] | None = None) -> bytes:
    """Download a file the way a client must: the download route, then the storage URL without the key."""
    redirect = client.get(
        f"/api/download/models/{sandbox_file.version_id}", params={"fileId": sandbox_file.id}, headers=KEY
    )
    assert redirect.status_code == 307, redirect.text
    response = httpx.get(redirect.headers["location"], headers=headers or {}, timeout=20)
    assert response.status_code in (200, 206), response.text
    return response.content


def keys_missing(real: Any, ours: Any, where: str = "") -> list[str]:
    """Dict keys present in `real` but absent in `ours`, recursively (lists compared by their first item)."""
    missing: list[str] = []
    if isinstance(real, dict) and isinstance(ours, dict):
        for key, value in real.items():
            if key not in ours:
                missing.append(f"{where}.{key}")
            elif key not in ("meta", "hashes"):
                missing += keys_missing(value, ours[key], f"{where}.{key}")
    elif isinstance(real, list) and isinstance(ours, list) and real and ours:
        missing += keys_missing(real[0], ours[0], f"{where}[0]")
    return missing


# --- shapes against real bodies --------------------------------------------------------------------------


def test_models_items_carry_every_key_of_a_real_listing(client: httpx.Client) -> None:
    real = json.loads(
        (FIXTURES / "models__tick97115115_civitai-model-downloader__single-lora-creator-no-nextcursor.json").read_text()
    )
    response = client.get("/api/v1/models", params={"username": MAIN_CREATOR, "nsfw": "true", "types": "LORA"})
    ours = body(response)
    item = next(i for i in ours["items"] if i["modelVersions"][0]["images"])
    assert keys_missing(real["items"][0], item) == []
    real_hashes = set(real["items"][0]["modelVersions"][0]["files"][0]["hashes"])
    # BLAKE3 needs a package the sandbox does without, and files under 2 MiB have no AutoV1 (as on CivitAI).
    assert real_hashes - set(item["modelVersions"][0]["files"][0]["hashes"]) == {"BLAKE3", "AutoV1"}


def test_version_body_carries_every_key_of_a_real_one(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    real = json.loads((FIXTURES / "model-versions__OwenTruong_civitdl__399893.json").read_text())
    version = model_named(sandbox, "concept Colored inner hair").versions[0]
    ours = body(client.get(f"/api/v1/model-versions/{version.id}"))
    assert keys_missing(real, ours) == []
    assert set(real["images"][0]["meta"]) & set(ours["images"][2]["meta"]) >= {"prompt", "seed", "resources"}


# --- /api/v1/models ---------------------------------------------------------------------------------------


def test_cursor_walks_union_to_every_listed_model(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    mine = artist_models(sandbox)
    nsfw_walk = walk(client, "/api/v1/models", {"username": MAIN_CREATOR, "nsfw": "true", "limit": 3, "sort": "Newest"})
    plain_walk = walk(client, "/api/v1/models", {"username": MAIN_CREATOR, "limit": 3, "sort": "Newest"})
    nsfw_ids = [i["id"] for i in nsfw_walk]
    plain_ids = [i["id"] for i in plain_walk]
    assert len(nsfw_ids) == len(set(nsfw_ids)) and len(plain_ids) == len(set(plain_ids))
    assert set(nsfw_ids) == {m.id for m in mine if not m.poi and not m.minor}
    assert set(plain_ids) == {m.id for m in mine if not m.poi and not m.nsfw}
    union = set(nsfw_ids) | set(plain_ids)
    assert union == {m.id for m in mine if not m.poi}
    # Each walk misses something the other has: the reason clients must merge both.
    assert set(nsfw_ids) - set(plain_ids) and set(plain_ids) - set(nsfw_ids)
    creators = body(client.get("/api/v1/creators", params={"query": MAIN_CREATOR}))
    assert creators["items"][0]["username"] == MAIN_CREATOR
    assert creators["items"][0]["modelCount"] == len(union)


@pytest.mark.parametrize(
    ("sort", "field"),
    [("Newest", "publishedAt"), ("Oldest", "publishedAt"), ("Most Downloaded", "downloadCount")],
)
def test_every_sort_walks_in_order(client: httpx.Client, sandbox: CivitaiSandbox, sort: str, field: str) -> None:
    items = walk(client, "/api/v1/models", {"username": MAIN_CREATOR, "nsfw": "true", "limit": 4, "sort": sort})
    values = [i["modelVersions"][-1][field] if field == "publishedAt" else i["stats"][field] for i in items]
    assert values == sorted(values, reverse=sort != "Oldest")
    listed = [m for m in artist_models(sandbox) if not m.poi and not m.minor]
    assert len(items) == len({i["id"] for i in items}) == len(listed) == 14


def test_page_numbers_work_up_to_the_cap(client: httpx.Client) -> None:
    page2 = body(client.get("/api/v1/models", params={"username": MAIN_CREATOR, "nsfw": "true", "limit": 5, "page": 2}))
    assert page2["metadata"]["currentPage"] == 2 and page2["metadata"]["pageSize"] == 5
    assert "page=3" in page2["metadata"]["nextPage"]
    deep = client.get("/api/v1/models", params={"limit": 100, "page": 11})
    assert deep.status_code == 429
    assert body(deep) == {"error": TOO_MANY_PAGES}
    assert "retry-after" not in deep.headers


def test_a_walk_that_fits_one_page_answers_like_the_live_api(client: httpx.Client) -> None:
    real = json.loads(
        (FIXTURES / "models__tick97115115_civitai-model-downloader__single-lora-creator-no-nextcursor.json").read_text()
    )
    ours = body(client.get("/api/v1/models", params={"username": NUMERIC_CREATOR}))
    assert ours["metadata"] == real["metadata"] == {"currentPage": 1, "pageSize": 100}
    assert [i["creator"]["username"] for i in ours["items"]] == [NUMERIC_CREATOR]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"types": "Lora"}, "types"),
        ({"sort": "Best"}, "sort"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"nsfw": "maybe"}, "nsfw"),
        ({"period": "Decade"}, "period"),
    ],
)
def test_invalid_model_params_are_400_with_a_zod_issue(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    response = client.get("/api/v1/models", params=params)
    assert response.status_code == 400
    error = body(response)["error"]
    assert error["name"] == "ZodError" and error["issues"][0]["path"] == [field]


def test_nsfw_flag_hides_nsfw_models_and_previews(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    plain = body(client.get("/api/v1/models", params={"username": MAIN_CREATOR}))["items"]
    assert all(not item["nsfw"] for item in plain)
    previews = [img for item in plain for v in item["modelVersions"] for img in v["images"]]
    assert previews and all(img["nsfwLevel"] == NsfwLevel.PG for img in previews)
    full = body(client.get(f"/api/v1/models/{model_named(sandbox, 'Crazy Girlfriend Mix [XL/PONY]').id}"))
    levels = {img["nsfwLevel"] for v in full["modelVersions"] for img in v["images"]}
    assert levels >= {NsfwLevel.PG, NsfwLevel.R, NsfwLevel.X, NsfwLevel.EXPLICIT}
    assert full["nsfwLevel"] == NsfwLevel.PG | NsfwLevel.R | NsfwLevel.X | NsfwLevel.EXPLICIT


def test_types_filter_repeated_or_single(client: httpx.Client) -> None:
    params = [("types", "LORA"), ("types", "LoCon"), ("types", "DoRA"), ("username", MAIN_CREATOR), ("nsfw", "true")]
    loras = walk(client, "/api/v1/models", [*params, ("limit", "2")])
    assert {i["type"] for i in loras} == {"LORA", "LoCon", "DoRA"}
    comma = walk(client, "/api/v1/models", {"types": "LORA,LoCon,DoRA", "username": MAIN_CREATOR, "nsfw": "true"})
    assert [i["id"] for i in comma] == [i["id"] for i in loras]
    checkpoints = body(client.get("/api/v1/models", params={"nsfw": "true", "types": "Checkpoint"}))["items"]
    assert {i["name"] for i in checkpoints} == {"KawaiMix-Ultra", "别当"}


def test_archived_and_taken_down_models_list_no_files(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    items = {i["name"]: i for i in walk(client, "/api/v1/models", {"username": MAIN_CREATOR, "nsfw": "true"})}
    archived = items["Realistic_Aerith_meenow"]
    assert archived["mode"] == "Archived"
    assert archived["modelVersions"][0]["files"] == [] and "downloadUrl" not in archived["modelVersions"][0]
    assert archived["modelVersions"][0]["images"]
    taken = items["Taken Down Style"]
    assert taken["mode"] == "TakenDown" and taken["modelVersions"][0]["images"] == []
    assert "mode" not in items["KawaiMix-Ultra"]
    assert "Famous Person" not in items


def test_versions_newest_first_and_primary_only_on_the_primary_file(
    client: httpx.Client, sandbox: CivitaiSandbox
) -> None:
    crazy = model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]")
    item = body(client.get(f"/api/v1/models/{crazy.id}"))
    assert [v["name"] for v in item["modelVersions"]] == ["Insta Baddie [XL]", "Insta Baddie[PONY]"]
    assert [v["index"] for v in item["modelVersions"]] == [0, 1]
    pepper = body(client.get(f"/api/v1/models/{model_named(sandbox, 'Pepper & Carrot Style').id}"))
    files = pepper["modelVersions"][0]["files"]
    assert files[0]["primary"] is True and "primary" not in files[1]
    assert files[0]["downloadUrl"].endswith(f"/api/download/models/{pepper['modelVersions'][0]['id']}")
    assert "type=Pruned%20Model&format=SafeTensor&size=pruned&fp=fp16" in files[1]["downloadUrl"]
    only = body(client.get("/api/v1/models", params={"ids": str(pepper["id"]), "primaryFileOnly": "true"}))
    assert len(only["items"][0]["modelVersions"][0]["files"]) == 1


def test_model_by_id_has_images_without_ids_and_404s(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    crazy = model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]")
    item = body(client.get(f"/api/v1/models/{crazy.id}"))
    images = [img for v in item["modelVersions"] for img in v["images"]]
    assert images and all("id" not in img for img in images)
    listed = body(client.get("/api/v1/models", params={"ids": str(crazy.id), "nsfw": "true"}))["items"][0]
    assert all("id" in img for v in listed["modelVersions"] for img in v["images"])
    missing = client.get("/api/v1/models/999")
    assert (missing.status_code, body(missing)) == (404, {"error": "No model with id 999"})
    assert client.get(f"/api/v1/models/{model_named(sandbox, 'Famous Person').id}").status_code == 404


def test_model_version_route(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    many = sandbox.dataset.add_version(model_named(sandbox, "Pepper & Carrot Style"), "v2.0")
    sandbox.dataset.add_file(many)
    sandbox.dataset.add_file(many)
    for _ in range(12):
        sandbox.dataset.add_image(many)
    data = body(client.get(f"/api/v1/model-versions/{many.id}"))
    assert len(data["images"]) == 10
    assert all("id" not in img and img["meta"]["prompt"] for img in data["images"])
    assert [f["primary"] for f in data["files"]] == [True, False]
    assert data["modelId"] == many.model_id and data["model"]["name"] == "Pepper & Carrot Style"
    early = model_named(sandbox, "Early Bird Outfit").versions[0]
    early_data = body(client.get(f"/api/v1/model-versions/{early.id}"))
    assert early_data["earlyAccessEndsAt"] == civitai_bodies.iso(FAR_FUTURE) == "2100-01-01T00:00:00.000Z"
    missing = client.get("/api/v1/model-versions/1")
    assert (missing.status_code, body(missing)) == (404, {"error": "Model not found"})


def test_new_versions_show_up_between_walks(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    scottie = sandbox.dataset.models_of(NUMERIC_CREATOR)[0]
    before = body(client.get("/api/v1/models", params={"username": NUMERIC_CREATOR}))["items"][0]
    added = sandbox.dataset.add_version(scottie, "v8", published_at=scottie.published_at + 999_999)
    sandbox.dataset.add_file(added)
    after = body(client.get("/api/v1/models", params={"username": NUMERIC_CREATOR}))["items"][0]
    assert [v["id"] for v in after["modelVersions"]] == [added.id] + [v["id"] for v in before["modelVersions"]]


# --- /api/v1/images -------------------------------------------------------------------------------------------


def test_images_of_a_version_with_meta(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    crazy = model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]")
    pony = crazy.versions[-1]
    params = {"modelVersionId": pony.id, "browsingLevel": 31, "withMeta": "true", "flatMeta": "true"}
    everyone = walk(client, "/api/v1/images", params)
    mine = walk(client, "/api/v1/images", {**params, "username": MAIN_CREATOR})
    showcase = {i.id for i in sandbox.dataset.showcase(pony)}
    assert {i["id"] for i in mine} == showcase
    community = {i["id"] for i in everyone} - showcase
    assert community and all(sandbox.dataset.images[i].username == COMMUNITY_USER for i in community)
    by_id = {i["id"]: i for i in mine}
    for image in sandbox.dataset.showcase(pony):
        item = by_id[image.id]
        assert item["meta"] == image.meta
        assert item["browsingLevel"] == image.nsfw_level and item["nsfwLevel"] == image.nsfw_level.label
        assert item["nsfw"] is (image.nsfw_level >= NsfwLevel.R)
        assert item["url"].endswith(f"/{image.uuid}/original=true/{image.uuid}.jpeg")
    assert any(i["meta"] is None for i in mine)


def test_images_nsfw_semantics(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    pony = model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]").versions[-1]
    extras: dict[str, dict[str, Any]] = {
        "absent": {},
        "true": {"nsfw": "true"},
        "X": {"nsfw": "X"},
        "31": {"browsingLevel": 31},
    }
    levels = {
        label: {i["browsingLevel"] for i in walk(client, "/api/v1/images", {"modelVersionId": pony.id, **extra})}
        for label, extra in extras.items()
    }
    assert levels["absent"] == {NsfwLevel.PG}
    assert levels["true"] == {NsfwLevel.R, NsfwLevel.X}
    assert levels["X"] == levels["31"] == {NsfwLevel.PG, NsfwLevel.R, NsfwLevel.X}


def test_meta_is_null_without_with_meta_and_nested_on_the_legacy_path(
    client: httpx.Client, sandbox: CivitaiSandbox
) -> None:
    image = next(i for i in sandbox.dataset.images.values() if i.meta is not None)
    plain = body(client.get("/api/v1/images", params={"modelVersionId": image.version_id, "browsingLevel": 31}))
    assert all(item["meta"] is None for item in plain["items"])
    legacy = body(client.get("/api/v1/images", params={"imageId": image.id, "withMeta": "true", "browsingLevel": 31}))
    assert legacy["items"][0]["meta"] == {"id": image.id, "meta": image.meta}
    flat = body(
        client.get(
            "/api/v1/images", params={"imageId": image.id, "withMeta": "true", "flatMeta": "true", "browsingLevel": 31}
        )
    )
    assert flat["items"][0]["meta"] == image.meta


def test_all_digit_username_is_a_json_number(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    response = client.get("/api/v1/images", params={"username": NUMERIC_CREATOR, "browsingLevel": 31})
    assert b'"username":123,' in response.content
    assert {item["username"] for item in body(response)["items"]} == {123}
    creator = sandbox.dataset.creator(NUMERIC_CREATOR)
    assert creator is not None
    by_user_id = body(client.get("/api/v1/images", params={"userId": creator.user_id, "browsingLevel": 31}))
    assert len(by_user_id["items"]) == len(body(response)["items"]) == 2
    models = body(client.get("/api/v1/models", params={"username": NUMERIC_CREATOR}))
    assert models["items"][0]["creator"]["username"] == "0123"


def test_control_characters_of_real_prompts_are_in_the_answer(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    version = model_named(sandbox, "KawaiMix-Ultra").versions[0]
    response = client.get("/api/v1/images", params={"modelVersionId": version.id, "withMeta": "true"})
    assert b"\\u0001" in response.content and b"\\u0011" in response.content
    prompts = [item["meta"]["prompt"] for item in body(response)["items"] if item["meta"]]
    assert any("\x01" in p and "\x18" in p and "\x11" in p for p in prompts)


def test_image_walk_with_small_pages(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    items = walk(
        client, "/api/v1/images", {"username": MAIN_CREATOR, "browsingLevel": 31, "limit": 2, "sort": "Oldest"}
    )
    ids = [i["id"] for i in items]
    expected = {i.id for i in sandbox.dataset.images.values() if i.username == MAIN_CREATOR}
    assert len(ids) == len(set(ids)) and set(ids) == expected
    created = [i["createdAt"] for i in items]
    assert created == sorted(created)


# --- /api/v1/me and /api/v1/creators -------------------------------------------------------------------------


def test_me_validates_the_key(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    ok = client.get("/api/v1/me", headers=KEY)
    assert ok.status_code == 200
    assert set(body(ok)) == {"id", "username", "tier", "status", "isMember", "subscriptions"}
    assert body(ok)["username"] == SANDBOX_USERNAME
    assert client.get("/api/v1/me", params={"token": SANDBOX_API_KEY}).status_code == 200
    for headers, params in (
        ({}, {}),
        ({"Authorization": "Bearer nope"}, {}),
        ({"Authorization": "Bearer nope"}, {"token": SANDBOX_API_KEY}),
    ):
        refused = client.get("/api/v1/me", headers=headers, params=params)
        assert (refused.status_code, body(refused)) == (401, {"error": "Unauthorized"})
    sandbox.add_api_key("second-key", MAIN_CREATOR)
    mine = body(client.get("/api/v1/me", headers={"Authorization": "Bearer second-key"}))
    assert mine["username"] == MAIN_CREATOR and mine["id"] == sandbox.dataset.creators[MAIN_CREATOR].user_id
    assert all(r.query.get("token") in (None, ["<redacted>"]) for r in sandbox.requests)
    assert all(r.headers.get("authorization") in (None, "<redacted>") for r in sandbox.requests)


def test_creators_pages(client: httpx.Client) -> None:
    first = body(client.get("/api/v1/creators", params={"limit": 2}))
    assert first["metadata"]["totalItems"] == 3 and first["metadata"]["totalPages"] == 2
    second = body(client.get(first["metadata"]["nextPage"]))
    names = [c["username"] for c in first["items"] + second["items"]]
    assert names[0] == MAIN_CREATOR and set(names) == {MAIN_CREATOR, NUMERIC_CREATOR, "2789799177206"}
    assert "nextPage" not in second["metadata"]


# --- the download route --------------------------------------------------------------------------------------


def download(client: httpx.Client, sandbox_file: SandboxFile, **kwargs: Any) -> httpx.Response:
    return client.get(f"/api/download/models/{sandbox_file.version_id}", params={"fileId": sandbox_file.id}, **kwargs)


@pytest.mark.parametrize(
    ("name", "headers", "status", "error"),
    [
        ("Crazy Girlfriend Mix [XL/PONY]", {}, 307, None),
        (
            "KawaiMix-Ultra",
            {},
            401,
            {
                "error": "Unauthorized",
                "message": "The creator of this asset requires you to be logged in to download it",
            },
        ),
        ("KawaiMix-Ultra", KEY, 307, None),
        (
            "Downloads Off",
            KEY,
            401,
            {"error": "Unauthorized", "message": "The creator of this asset has disabled downloads on this file"},
        ),
        ("Supporters Only", {}, 401, None),
        ("Supporters Only", KEY, 403, {"error": "You do not have access to download this file"}),
        ("Lost In Storage", KEY, 404, {"error": "File not found"}),
        ("Realistic_Aerith_meenow", KEY, 410, {"error": "Model archived, not available for download"}),
        ("Taken Down Style", KEY, 404, {"error": "File not found"}),
        ("Famous Person", KEY, 404, {"error": "File not found"}),
    ],
)
def test_download_outcomes(
    client: httpx.Client,
    sandbox: CivitaiSandbox,
    name: str,
    headers: dict[str, str],
    status: int,
    error: dict[str, str] | None,
) -> None:
    response = download(client, first_file(model_named(sandbox, name)), headers=headers)
    assert response.status_code == status, response.text
    if error is not None:
        assert body(response) == error
    if status == 307:
        assert response.headers["cache-control"] == "no-store"
        assert "/storage/model/" in response.headers["location"]


def test_early_access_has_a_deadline_and_browsers_get_redirects(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    early = model_named(sandbox, "Early Bird Outfit").versions[0].files[0]
    refused = download(client, early, headers=KEY)
    assert refused.status_code == 403
    assert body(refused) == {
        "error": "Early Access",
        "deadline": "2100-01-01T00:00:00.000Z",
        "message": "This asset is in Early Access. You can use Buzz access it now!",
    }
    browser = download(client, early, headers={**KEY, **BROWSER_UA})
    assert browser.status_code == 307 and browser.headers["location"].endswith(f"/model-versions/{early.version_id}")
    locked = first_file(model_named(sandbox, "KawaiMix-Ultra"))
    login = download(client, locked, headers=BROWSER_UA)
    assert login.status_code == 307
    assert f"returnUrl=%2Fmodel-versions%2F{locked.version_id}&reason=download-auth" in login.headers["location"]
    page = client.get(login.headers["location"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_early_access_ends_by_the_clock(sandbox: CivitaiSandbox) -> None:
    now = [time.time()]
    dataset = CivitaiDataset()
    model = dataset.add_model(dataset.add_creator("clocked"), "Soon")
    version = dataset.add_version(model, early_access_until=now[0] + 60)
    sandbox_file = dataset.add_file(version)
    with CivitaiSandbox(dataset, clock=lambda: now[0]) as server, httpx.Client(base_url=server.base_url) as http:
        assert download(http, sandbox_file).status_code == 403
        now[0] += 61
        assert download(http, sandbox_file).status_code == 307


def test_file_selection(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    version = model_named(sandbox, "Pepper & Carrot Style").versions[0]
    primary, pruned = version.files
    path = f"/api/download/models/{version.id}"
    assert f"/storage/model/{primary.id}/" in client.get(path).headers["location"]
    selected = client.get(path, params={"type": "Pruned Model", "format": "SafeTensor", "fp": "fp16"})
    assert f"/storage/model/{pruned.id}/" in selected.headers["location"]
    assert client.get(path, params={"type": "VAE"}).status_code == 404
    other = first_file(model_named(sandbox, "KawaiMix-Ultra"))
    assert client.get(path, params={"fileId": other.id}).status_code == 404
    assert client.get("/api/download/models/1").status_code == 404
    assert sandbox.downloads[primary.id] == 1 and sandbox.downloads[pruned.id] == 1


def test_head_runs_the_handler_and_is_recorded(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    head = client.head(f"/api/download/models/{sandbox_file.version_id}", params={"fileId": sandbox_file.id})
    assert head.status_code == 307 and head.content == b""
    assert sandbox.downloads[sandbox_file.id] == 1
    assert [r.method for r in sandbox.requests] == ["HEAD"]
    assert sandbox.requests[0].file_id == sandbox_file.id


# --- storage ---------------------------------------------------------------------------------------------------


def downloadable(sandbox: CivitaiSandbox) -> list[SandboxFile]:
    return [
        f
        for f in sandbox.dataset.files.values()
        if f.access in (FileAccess.PUBLIC, FileAccess.KEY)
        and sandbox.dataset.models[sandbox.dataset.versions[f.version_id].model_id].mode is None
        and not sandbox.dataset.models[sandbox.dataset.versions[f.version_id].model_id].poi
        and sandbox.dataset.versions[f.version_id].early_access_until is None
    ]


def test_served_bytes_match_the_published_hashes(client: httpx.Client, sandbox: CivitaiSandbox, tmp_path: Path) -> None:
    files = downloadable(sandbox)
    assert len(files) >= 10
    for sandbox_file in files:
        data = fetch_file(client, sandbox_file)
        assert len(data) == sandbox_file.size
        version = sandbox.dataset.versions[sandbox_file.version_id]
        listed = body(client.get(f"/api/v1/model-versions/{version.id}"))
        api = next(f for f in listed["files"] if f["id"] == sandbox_file.id)
        target = tmp_path / f"{sandbox_file.id}.safetensors"
        target.write_bytes(data)
        hashes = compute_hashes(target)
        assert api["hashes"]["AutoV3"] == hashes.autov3_short
        assert api["hashes"].get("AutoV1") == hashes.autov1
        assert abs(api["sizeKB"] * 1024 - len(data)) < 1
        if sandbox_file.api_sha256 is None:
            assert api["hashes"]["SHA256"] == hashes.sha256 == hashlib.sha256(data).hexdigest().upper()
            assert api["hashes"]["AutoV2"] == hashes.autov2
        else:
            assert api["hashes"]["SHA256"] != hashes.sha256
        with safe_open(str(target), "numpy") as tensors:
            assert tensors.metadata()["ss_output_name"] == sandbox_file.output_name
        header = read_header(target).metadata
        assert header["ss_output_name"] == sandbox_file.output_name
        assert header["ss_base_model_version"] == ("sd_v1" if version.base_model == "SD 1.5" else "sdxl_base_v1-0")
    assert any(f.hashes.autov1 is not None for f in files) and any(f.hashes.autov1 is None for f in files)


def test_range_requests(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    whole = sandbox_file.read()
    location = download(client, sandbox_file).headers["location"]
    cases = {
        "bytes=1000-": (206, 1000, len(whole)),
        "bytes=10-19": (206, 10, 20),
        "bytes=-100": (206, len(whole) - 100, len(whole)),
        "bytes=0-99999999": (206, 0, len(whole)),
        "bytes=1-2,5-6": (200, 0, len(whole)),
        "items=0-5": (200, 0, len(whole)),
    }
    for header, (status, start, end) in cases.items():
        response = httpx.get(location, headers={"Range": header})
        assert response.status_code == status, header
        assert response.content == whole[start:end], header
        if status == 206:
            assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(whole)}"
        assert response.headers["accept-ranges"] == "bytes"
    past = httpx.get(location, headers={"Range": f"bytes={len(whole)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole)}"


def test_storage_refuses_the_api_key_and_records_it(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "KawaiMix-Ultra"))
    location = download(client, sandbox_file, headers=KEY).headers["location"]
    assert sandbox.key_leaks() == []
    assert httpx.get(location).status_code == 200
    assert sandbox.key_leaks() == []
    refused = httpx.get(location, headers=KEY)
    assert refused.status_code == 400 and b"<Code>InvalidArgument</Code>" in refused.content
    httpx.get(location + f"&token={SANDBOX_API_KEY}")
    leaks = sandbox.key_leaks()
    assert [leak.status for leak in leaks] == [400, 200]
    assert all(str(leak.path).startswith("/storage/model/") for leak in leaks)
    # A client following the redirect by itself keeps the header on a same-host redirect: it must drop it.
    followed = client.get(
        f"/api/download/models/{sandbox_file.version_id}",
        params={"fileId": sandbox_file.id},
        headers=KEY,
        follow_redirects=True,
    )
    assert followed.status_code == 400
    assert len(sandbox.key_leaks()) == 3


def test_presigned_urls_expire_and_are_signed(sandbox: CivitaiSandbox) -> None:
    now = [time.time()]
    with CivitaiSandbox(sandbox.dataset, presign_ttl_s=3600, clock=lambda: now[0]) as server:
        http = httpx.Client(base_url=server.base_url)
        sandbox_file = first_file(model_named(server, "Crazy Girlfriend Mix [XL/PONY]"))
        location = download(http, sandbox_file).headers["location"]
        assert "X-Amz-Expires=3600" in location and "response-content-disposition=attachment" in location
        assert httpx.get(location).status_code == 200
        tampered = httpx.get(location.replace("X-Amz-Expires=3600", "X-Amz-Expires=99999"))
        assert tampered.status_code == 403 and b"SignatureDoesNotMatch" in tampered.content
        other = sandbox.base_url + httpx.URL(location).raw_path.decode()
        assert httpx.get(other).status_code == 403, "a URL signed by another sandbox"
        now[0] += 3601
        expired = httpx.get(location)
        assert expired.status_code == 403 and b"Request has expired" in expired.content
        assert download(http, sandbox_file).status_code == 307


def test_non_ascii_names_come_as_raw_utf8_in_content_disposition(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    version = model_named(sandbox, "Wrong Hash Style").versions[0]
    named = sandbox.dataset.add_file(version, name="布川ミク.safetensors")
    response = httpx.get(download(client, named).headers["location"])
    raw = {key.lower(): value for key, value in response.headers.raw}[b"content-disposition"]
    assert raw == 'attachment; filename="布川ミク.safetensors"'.encode()


# --- images ------------------------------------------------------------------------------------------------------


def test_cdn_originals_keep_metadata_and_variants_lose_it(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    for image in (i for i in sandbox.dataset.images.values() if not i.cdn_missing):
        url = civitai_bodies.image_url(sandbox.base_url, image, f"{image.id}.jpeg")
        original = httpx.get(url)
        assert original.status_code == 200 and original.content == image.original
        assert original.headers["content-type"] == f"image/{image.image_format.value}"
        embedded = read_metadata(original.content)
        if image.meta is None:
            assert embedded.prompt is None
        else:
            assert embedded.prompt == image.meta["prompt"]
    image = next(i for i in sandbox.dataset.images.values() if i.meta is not None and i.image_format is ImageFormat.PNG)
    variant = client.get(f"/xG1nkqKTMzGDvpLrqFT7WA/{image.uuid}/width=48/{image.id}.jpeg")
    assert variant.headers["content-type"] == "image/jpeg" and variant.content[:2] == b"\xff\xd8"
    assert read_metadata(variant.content).prompt is None


def test_b2_origin_serves_images_the_cdn_lacks(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    image = next(i for i in sandbox.dataset.images.values() if i.cdn_missing)
    assert httpx.get(civitai_bodies.image_url(sandbox.base_url, image, "x.jpeg")).status_code == 404
    b2 = httpx.get(civitai_bodies.b2_url(sandbox.base_url, image))
    assert b2.status_code == 200 and b2.content == image.original
    assert client.get("/file/civitai-media-cache/00000000-0000-4000-8000-000000000000/original").status_code == 404


def test_image_hosts_take_faults_by_path(sandbox: CivitaiSandbox) -> None:
    image = next(i for i in sandbox.dataset.images.values() if not i.cdn_missing)
    sandbox.inject(Fault(FaultKind.STATUS, status=403, paths=frozenset({CDN_GLOB})))
    sandbox.inject(Fault(FaultKind.TRUNCATE, after_bytes=100, paths=frozenset({B2_GLOB})))
    cdn = httpx.get(civitai_bodies.image_url(sandbox.base_url, image, f"{image.id}.jpeg"))
    assert cdn.status_code == 403
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(civitai_bodies.b2_url(sandbox.base_url, image))
    assert sandbox.requests[-1].bytes_sent == 100
    assert httpx.get(civitai_bodies.b2_url(sandbox.base_url, image)).content == image.original


# --- faults --------------------------------------------------------------------------------------------------------


def test_503_burst_with_retry_after_then_success(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.STATUS, status=503, retry_after=2), times=3)
    answers = [client.get("/api/v1/images") for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 503, 200]
    assert all(a.headers["retry-after"] == "2" and a.headers["cache-control"] == "no-store" for a in answers[:3])
    assert sandbox.faults.fired(FaultKind.STATUS) == 3 and sandbox.faults.pending() == []
    assert [r.fault for r in sandbox.requests] == ["status"] * 3 + [None]


def test_edge_throttle_with_and_without_retry_after(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.THROTTLE, retry_after=30))
    sandbox.inject(Fault(FaultKind.THROTTLE))
    first, second = client.get("/api/v1/models"), client.get("/api/v1/models")
    assert first.status_code == second.status_code == 429
    assert first.headers["retry-after"] == "30" and "retry-after" not in second.headers
    assert second.headers["content-type"].startswith("text/html")


def test_download_faults(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    sandbox.inject(Fault(FaultKind.LOGIN_PAGE))
    sandbox.inject(Fault(FaultKind.EARLY_ACCESS, deadline_s=3600))
    sandbox.inject(Fault(FaultKind.GONE))
    sandbox.inject(Fault(FaultKind.QUOTA), times=2)
    login = download(client, sandbox_file, headers=KEY)
    assert login.status_code == 307 and "reason=download-auth" in login.headers["location"]
    assert client.get(login.headers["location"]).headers["content-type"].startswith("text/html")
    early = download(client, sandbox_file, headers=KEY)
    deadline = body(early)["deadline"]
    assert early.status_code == 403 and time.time() + 3500 < _epoch(deadline) < time.time() + 3700
    assert download(client, sandbox_file).status_code == 410
    quota = [download(client, sandbox_file) for _ in range(2)]
    assert all(q.status_code == 429 and "unusual amount of downloading" in body(q)["error"] for q in quota)
    assert download(client, sandbox_file).status_code == 307
    assert sandbox.downloads[sandbox_file.id] == 1


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_faults_can_target_one_file_or_one_query(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    target = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    other = first_file(model_named(sandbox, "Wrong Hash Style"))
    sandbox.inject(Fault(FaultKind.GONE, file_id=target.id), times=None)
    sandbox.inject(Fault(FaultKind.STATUS, status=500, query={"sort": "Oldest"}))
    assert download(client, other).status_code == 307
    assert download(client, target).status_code == 410
    assert download(client, target).status_code == 410
    assert client.get("/api/v1/models", params={"sort": "Newest"}).status_code == 200
    assert client.get("/api/v1/models", params={"sort": "Oldest"}).status_code == 500
    sandbox.clear_faults()
    assert download(client, target).status_code == 307


def test_truncated_body(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    location = download(client, sandbox_file).headers["location"]
    sandbox.inject(Fault(FaultKind.TRUNCATE, after_bytes=5000))
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", location) as response:
        assert response.headers["content-length"] == str(sandbox_file.size)
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == sandbox_file.read(0, 5000)
    assert sandbox.requests[-1].bytes_sent == 5000 and sandbox.requests[-1].fault == "truncate"
    resumed = httpx.get(location, headers={"Range": f"bytes={len(received)}-"})
    assert bytes(received) + resumed.content == sandbox_file.read()
    # The server thread adds up what it sent after the last byte is out: the client can be faster than that.
    deadline = time.monotonic() + 5
    while sandbox.bytes_served[sandbox_file.id] != sandbox_file.size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.bytes_served[sandbox_file.id] == sandbox_file.size


def test_wrong_hash_changes_one_byte_once(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    sandbox.inject(Fault(FaultKind.WRONG_HASH, file_id=sandbox_file.id))
    bad = fetch_file(client, sandbox_file)
    good = fetch_file(client, sandbox_file)
    assert len(bad) == len(good) == sandbox_file.size
    assert hashlib.sha256(bad).hexdigest().upper() != sandbox_file.hashes.sha256
    assert hashlib.sha256(good).hexdigest().upper() == sandbox_file.hashes.sha256
    assert sum(a != b for a, b in zip(bad, good, strict=True)) == 1
    sandbox.inject(Fault(FaultKind.WRONG_HASH))
    tail = fetch_file(client, sandbox_file, headers={"Range": "bytes=60000-"})
    assert tail != sandbox_file.read(60000) and len(tail) == sandbox_file.size - 60000


def test_range_answered_with_the_whole_file(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    sandbox.inject(Fault(FaultKind.RANGE_IGNORED))
    response = httpx.get(download(client, sandbox_file).headers["location"], headers={"Range": "bytes=100-"})
    assert response.status_code == 200 and response.content == sandbox_file.read()
    assert "content-range" not in response.headers


def test_html_body_and_expired_url_at_storage(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    location = download(client, sandbox_file).headers["location"]
    sandbox.inject(Fault(FaultKind.HTML_BODY))
    sandbox.inject(Fault(FaultKind.EXPIRED_URL))
    html = httpx.get(location)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert html.content.startswith(b"<!DOCTYPE html>")
    expired = httpx.get(location)
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    assert httpx.get(location).content == sandbox_file.read()


def test_drop_and_delay(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.DROP))
    with pytest.raises(httpx.TransportError):
        client.get("/api/v1/me")
    assert sandbox.requests[-1].status is None
    sandbox.inject(Fault(FaultKind.DELAY, delay_s=0.3))
    started = time.monotonic()
    assert client.get("/api/v1/creators").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_slow_drip_and_stopping_during_it(sandbox: CivitaiSandbox) -> None:
    sandbox_file = first_file(model_named(sandbox, "Crazy Girlfriend Mix [XL/PONY]"))
    location = download(httpx.Client(base_url=sandbox.base_url), sandbox_file).headers["location"]
    sandbox.inject(Fault(FaultKind.SLOW, rate=100_000))
    started = time.monotonic()
    assert httpx.get(location, timeout=20).content == sandbox_file.read()
    assert time.monotonic() - started >= 0.5
    sandbox.inject(Fault(FaultKind.SLOW, rate=2_000))
    got = bytearray()

    def reader() -> None:
        try:
            with httpx.stream("GET", location, timeout=20) as response:
                for chunk in response.iter_raw():
                    got.extend(chunk)
        except httpx.TransportError:
            pass

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    stopped = time.monotonic()
    sandbox.stop()
    assert time.monotonic() - stopped < 2
    thread.join(5)
    assert not thread.is_alive() and 0 < len(got) < sandbox_file.size


def test_raw_control_characters_fault_and_option(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    version = model_named(sandbox, "KawaiMix-Ultra").versions[0]
    params: dict[str, Any] = {"modelVersionId": version.id, "withMeta": "true"}
    clean = client.get("/api/v1/images", params=params)
    sandbox.inject(Fault(FaultKind.RAW_CONTROL_CHARS))
    raw = client.get("/api/v1/images", params=params)
    assert b"\x01" in raw.content and b"\x11" in raw.content and b"\x01" not in clean.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.text)
    assert body(raw) == json.loads(clean.text)
    with CivitaiSandbox(sandbox.dataset, raw_control_chars=True) as always:
        again = httpx.get(always.base_url + "/api/v1/images", params=params)
        assert b"\x18" in again.content
        assert [i["meta"] for i in body(again)["items"]] == [i["meta"] for i in json.loads(clean.text)["items"]]


def test_pagination_that_repeats_or_skips_an_item(client: httpx.Client) -> None:
    params = {"username": MAIN_CREATOR, "nsfw": "true", "limit": 4, "sort": "Newest"}
    honest = [i["id"] for i in walk(client, "/api/v1/models", params)]
    sandbox_url = str(client.base_url)
    httpx.post(sandbox_url + "/_sandbox/faults", json={"kind": "repeat_item", "times": 1})
    repeated = [i["id"] for i in walk(client, "/api/v1/models", params)]
    assert repeated[3] == repeated[4] and len(repeated) == len(honest) + 1
    assert list(dict.fromkeys(repeated)) == honest
    httpx.post(sandbox_url + "/_sandbox/faults", json={"kind": "skip_item", "times": 1})
    skipped = [i["id"] for i in walk(client, "/api/v1/models", params)]
    assert skipped == honest[:4] + honest[5:]


def test_control_endpoints(client: httpx.Client, sandbox: CivitaiSandbox) -> None:
    client.get("/api/v1/me")
    recorded = httpx.get(f"{sandbox.base_url}/_sandbox/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in recorded] == [("GET", "/api/v1/me", 401)]
    assert httpx.delete(f"{sandbox.base_url}/_sandbox/requests").json() == {"ok": True}
    assert sandbox.requests == []
    bad = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]
    ok = httpx.post(
        f"{sandbox.base_url}/_sandbox/faults",
        json={"kind": "status", "status": 502, "times": None, "paths": ["/api/v1/creators"]},
    )
    assert ok.status_code == 200
    assert client.get("/api/v1/creators").status_code == client.get("/api/v1/creators").status_code == 502
    assert client.get("/api/v1/me").status_code == 401
    httpx.delete(f"{sandbox.base_url}/_sandbox/faults")
    assert client.get("/api/v1/creators").status_code == 200
    assert httpx.get(f"{sandbox.base_url}/_sandbox/nothing").status_code == 404


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "status", "status": 200},
        {"kind": "status", "times": 0},
        {"kind": "delay", "delay_s": 9999},
        {"kind": "slow", "rate": 0},
        {"kind": "status", "paths": "/api"},
        {"kind": "status", "query": {"a": 1}},
        {"kind": "truncate", "after_bytes": "half"},
    ],
)
def test_bad_fault_descriptions(data: dict[str, Any]) -> None:
    with pytest.raises(FaultError):
        Fault.from_json(data)


def test_unknown_paths_and_methods(client: httpx.Client) -> None:
    assert client.get("/api/v1/nothing").status_code == 404
    assert client.post("/api/v1/models").status_code == 405


# --- dataset and files -------------------------------------------------------------------------------------------


def test_datasets_are_deterministic() -> None:
    first, second = default_dataset(), default_dataset()
    assert [f.hashes for f in first.files.values()] == [f.hashes for f in second.files.values()]
    assert [i.original for i in first.images.values()] == [i.original for i in second.images.values()]
    assert default_dataset(seed=1).files[next(iter(first.files))].hashes != next(iter(first.files.values())).hashes


def test_populate_and_building_rules() -> None:
    dataset = CivitaiDataset()
    made = dataset.populate("bulk", models=4, versions=2, files=2, images=3, file_size=10_000)
    assert len(made) == 4 and len(dataset.files) == 16 and len(dataset.images) == 24
    assert all(f.size == 10_000 for f in dataset.files.values())
    assert len({f.id for f in dataset.files.values()}) == 16
    with pytest.raises(ValueError, match="already"):
        dataset.add_creator("BULK")
    with pytest.raises(ValueError, match="already"):
        dataset.add_model("bulk", "x", model_id=made[0].id)
    with pytest.raises(FileSizeError):
        dataset.add_file(made[0].versions[0], size=100)
    checkpoint = dataset.add_model("bulk", "Mix: A/B", type=ModelType.CHECKPOINT)
    assert dataset.add_file(dataset.add_version(checkpoint, "v2")).name == "Mix: A/B_v2.safetensors"
    archived = dataset.add_model("bulk", "Gone", mode=ModelMode.ARCHIVED)
    assert archived.mode is ModelMode.ARCHIVED


def test_a_64_mib_file_streams_from_one_block() -> None:
    blob = SafetensorsBlob(64 << 20, 5, kohya_metadata("big"))
    owners = set()
    total = 0
    for piece in blob.iter_range(blob.data_start):
        assert len(piece) <= BLOCK_SIZE
        total += len(piece)
        if isinstance(piece, memoryview):
            owners.add(id(piece.obj))
    assert total == blob.size - blob.data_start
    assert len(owners) == 1, "every block is a view of the same 1 MiB buffer"
    fifth, sixth = (blob.data_start + BLOCK_SIZE * n for n in (5, 6))
    assert blob.read(fifth, fifth + BLOCK_SIZE) != blob.read(sixth, sixth + BLOCK_SIZE)
    assert blob.read(fifth + 8, fifth + BLOCK_SIZE) == blob.read(sixth + 8, sixth + BLOCK_SIZE)


def test_a_64_mib_download_matches_its_hash() -> None:
    dataset = CivitaiDataset()
    version = dataset.add_version(dataset.add_model(dataset.add_creator("big"), "Big"))
    big = dataset.add_file(version, size=64 << 20)
    dataset.warm_hashes()
    with CivitaiSandbox(dataset) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        location = download(http, big).headers["location"]
        digest = hashlib.sha256()
        with http.stream("GET", location) as response:
            assert response.headers["content-length"] == str(64 << 20)
            for chunk in response.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest().upper() == big.hashes.sha256


@settings(max_examples=40, deadline=None)
@given(size=st.integers(4096, 3 * BLOCK_SIZE), data=st.data())
def test_any_range_of_any_size_is_the_same_bytes(size: int, data: st.DataObject) -> None:
    blob = SafetensorsBlob(size, size, kohya_metadata("prop"))
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    whole = blob.read()
    assert len(whole) == size and blob.read(start, end) == whole[start:end]
    header_len = int.from_bytes(whole[:8], "little")
    assert whole[8:9] == b"{" and json.loads(whole[8 : 8 + header_len])["__metadata__"]["ss_output_name"] == "prop"


@given(st.text())
def test_raw_control_characters_keep_the_value(text: str) -> None:
    data = orjson.dumps({"prompt": text})
    raw = raw_control_chars(data)
    assert json.loads(raw, strict=False) == {"prompt": text}
    assert all(chr(c) not in "\t\n\r" for c in raw if c < 0x20)


# --- lifecycle -----------------------------------------------------------------------------------------------------


def test_lifecycle() -> None:
    server = CivitaiSandbox()
    with pytest.raises(SandboxError):
        _ = server.base_url
    server.start()
    port = server.port
    with pytest.raises(SandboxError, match="already"):
        server.start()
    keep_alive = httpx.Client(base_url=server.base_url)
    assert keep_alive.get("/api/v1/me").status_code == 401
    server.stop()
    server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/me", timeout=2)
    keep_alive.close()
    with pytest.raises(SandboxError, match="loopback"):
        CivitaiSandbox(host="0.0.0.0")
    with pytest.raises(SandboxError, match="port"):
        CivitaiSandbox(port=70000)


# --- peropix sandbox -----------------------------------------------------------------------------------------------


def test_command_refuses_bad_civitai_options() -> None:
    with pytest.raises(PeropixError, match="--civitai-key"):
        sandbox_cmd._run(sandbox_args(civitai_key="two words"))
    with pytest.raises(PeropixError, match="--civitai-file-mib"):
        sandbox_cmd._run(sandbox_args(civitai_file_mib=0))


def test_civitai_env_line() -> None:
    assert sandbox_cmd.civitai_env_line("http://127.0.0.1:7", "k") == (
        "PEROPIX_CIVITAI_BASE_URL=http://127.0.0.1:7 PEROPIX_CIVITAI_API_KEY=k"
    )


def test_command_serves_civitai_until_interrupted() -> None:
    options = ("--civitai-key", "my-key", "--civitai-file-mib", "0.05")
    with sandbox_process(*options, ready="PEROPIX_CIVITAI_BASE_URL=") as (process, settings_, lines):
        assert settings_["PEROPIX_CIVITAI_API_KEY"] == "my-key"
        assert any("sandbox_artist" in line for line in lines)
        base = settings_["PEROPIX_CIVITAI_BASE_URL"]
        me = httpx.get(base + "/api/v1/me", headers={"Authorization": "Bearer my-key"})
        assert me.status_code == 200
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "civitai GET /api/v1/me -> 200"
        models = httpx.get(base + "/api/v1/models", params={"username": MAIN_CREATOR, "nsfw": "true"}).json()
        size_kb = models["items"][0]["modelVersions"][0]["files"][0]["sizeKB"]
        assert size_kb == pytest.approx(0.05 * 1024, abs=1)
        interrupt(process)
