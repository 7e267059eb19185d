"""Listing a creator's models and images against the sandbox server: cursor walks, the nsfw union, the count
cross-check, repeated and skipped items."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from civitai_helpers import FAST, KEY, SleepRecorder

from peropix_tui.civitai.client import CivitaiClient
from peropix_tui.civitai.listing import (
    b2_url,
    id_from_url,
    image_uuid,
    list_models,
    original_url,
    showcase_images,
    version_images,
)
from peropix_tui.sandbox.civitai_dataset import BASE_TIME, CivitaiDataset, ModelType, NsfwLevel
from peropix_tui.sandbox.civitai_faults import Fault, FaultKind
from peropix_tui.sandbox.civitai_server import CivitaiSandbox

PLAIN = 150


def bob_dataset() -> CivitaiDataset:
    dataset = CivitaiDataset(seed=3)
    bob = dataset.add_creator("bob")
    for n in range(PLAIN):
        model = dataset.add_model(bob, f"bob lora {n}", type=ModelType.LORA)
        dataset.add_file(dataset.add_version(model))
    # The NSFW model sits where the second page of the newest-first nsfw walk starts (after 100 items).
    for name, kwargs in (
        ("bob nsfw", {"nsfw": True, "published_at": BASE_TIME + 86_400.0 * 50 + 1}),
        ("bob minor", {"minor": True}),
        ("bob poi", {"poi": True}),
    ):
        model = dataset.add_model(bob, name, type=ModelType.LORA, **kwargs)
        dataset.add_file(dataset.add_version(model))
    checkpoint = dataset.add_model(bob, "bob mix", type=ModelType.CHECKPOINT)
    version = dataset.add_version(checkpoint)
    dataset.add_file(version)
    for level in (NsfwLevel.PG, NsfwLevel.R, NsfwLevel.EXPLICIT):
        dataset.add_image(version, nsfw_level=level)
    dataset.add_creator("fan")
    dataset.add_image(version, username="fan")
    return dataset


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(bob_dataset()) as server:
        yield server


def api(sandbox: CivitaiSandbox) -> CivitaiClient:
    return CivitaiClient(sandbox.base_url, KEY, spacing_s=0.0, policy=FAST, sleep=SleepRecorder())


def expected_ids(sandbox: CivitaiSandbox, *types: str) -> set[int]:
    return {m.id for m in sandbox.dataset.models.values() if not m.poi and (not types or m.type.value in types)}


async def test_union_of_nsfw_and_default_walks_by_cursor(sandbox: CivitaiSandbox) -> None:
    warnings: list[str] = []
    async with api(sandbox) as client:
        listing = await list_models(client, "bob", types=None, warn=warnings.append)
    assert set(listing.models) == expected_ids(sandbox)
    assert listing.expected == PLAIN + 3 == listing.listed
    assert listing.warnings == [] and warnings == []
    model_calls = [r for r in sandbox.requests if r.path == "/api/v1/models"]
    assert all("page" not in r.query for r in model_calls)
    assert any("cursor" in r.query for r in model_calls)
    assert {r.query.get("nsfw", ["-"])[0] for r in model_calls} == {"true", "-"}
    # No re-walk was needed: the count matched.
    assert all(r.query["sort"] == ["Newest"] for r in model_calls)


async def test_types_are_filtered_after_the_count_check(sandbox: CivitaiSandbox) -> None:
    async with api(sandbox) as client:
        listing = await list_models(client, "BOB", types=["lora", "LoCon"], warn=lambda _m: None)
    assert set(listing.models) == expected_ids(sandbox, "LORA")
    assert all("types" not in r.query for r in sandbox.requests)


async def test_skipped_items_trigger_a_rewalk_in_another_order(sandbox: CivitaiSandbox) -> None:
    # The nsfw walk drops the NSFW model (the default walk never lists it): only a re-walk finds it.
    sandbox.inject(Fault(FaultKind.SKIP_ITEM, query={"nsfw": "true"}), times=1)
    async with api(sandbox) as client:
        listing = await list_models(client, "bob", types=None, warn=lambda _m: None)
    assert sandbox.faults.fired(FaultKind.SKIP_ITEM) == 1
    assert set(listing.models) == expected_ids(sandbox)
    assert any(r.query.get("sort") == ["Oldest"] for r in sandbox.requests if r.path == "/api/v1/models")


async def test_repeated_items_are_deduplicated(sandbox: CivitaiSandbox) -> None:
    sandbox.inject(Fault(FaultKind.REPEAT_ITEM), times=None)
    async with api(sandbox) as client:
        listing = await list_models(client, "bob", types=None, warn=lambda _m: None)
    assert set(listing.models) == expected_ids(sandbox)
    assert listing.listed == len(listing.models)


async def test_short_listing_is_reported(sandbox: CivitaiSandbox) -> None:
    # NSFW and minor-flagged: counted by /creators, hidden from both walks.
    sandbox.dataset.add_model("bob", "bob hidden", nsfw=True, minor=True)
    async with api(sandbox) as client:
        listing = await list_models(client, "bob", types=None, warn=lambda _m: None)
    assert (listing.listed, listing.expected) == (PLAIN + 3, PLAIN + 4)
    assert len(listing.warnings) == 1 and "lists 153 models but counts 154" in listing.warnings[0]


async def test_version_images_are_the_creators_at_every_level_with_meta(sandbox: CivitaiSandbox) -> None:
    version = next(v for v in sandbox.dataset.versions.values() if sandbox.dataset.models[v.model_id].name == "bob mix")
    async with api(sandbox) as client:
        images = await version_images(client, version.id, "bob", lambda _m: None)
    levels = {image["browsingLevel"] for image in images}
    assert levels == {1, 4, 16}
    assert {str(image["username"]) for image in images} == {"bob"}
    assert all(isinstance(image.get("meta"), dict) for image in images)
    [request] = [r for r in sandbox.requests if r.path == "/api/v1/images"]
    for key, value in {"browsingLevel": "31", "withMeta": "true", "flatMeta": "true", "username": "bob"}.items():
        assert request.query[key] == [value]


def test_image_url_helpers() -> None:
    uuid = "f8e79643-c92a-4337-bd19-8e4935af2f54"
    base = "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA"
    assert original_url(f"{base}/{uuid}/width=450/123.jpeg") == f"{base}/{uuid}/original=true/123.jpeg"
    assert original_url(f"{base}/{uuid}/original=true/123.jpeg") == f"{base}/{uuid}/original=true/123.jpeg"
    assert original_url("https://x/y.png") == "https://x/y.png"
    assert image_uuid(f"{base}/{uuid}/width=450/123.jpeg") == uuid
    assert b2_url(f"{base}/{uuid}/a/b.jpeg", "https://image-b2.civitai.com") == (
        f"https://image-b2.civitai.com/file/civitai-media-cache/{uuid}/original"
    )
    assert b2_url("https://x/no-uuid.png", "https://b2") is None
    assert id_from_url(f"{base}/{uuid}/width=450/8202736.jpeg") == 8202736
    assert id_from_url(f"{base}/{uuid}/width=450/{uuid}.jpeg") is None
    for broken in ("http://[oops/x.png", "https://host:99999/a", ""):  # addresses from the API are not trusted
        assert original_url(broken) == broken
        assert image_uuid(broken) is None and id_from_url(broken) is None


def test_showcase_merges_listing_ids_with_detail_meta() -> None:
    url = "https://image.civitai.com/p/0e2d0c0a-0000-4000-8000-000000000001/width=450/77.jpeg"
    listed = {"images": [{"id": 77, "url": url, "nsfwLevel": 4}]}
    details = {"images": [{"url": url, "meta": {"prompt": "p"}}, {"url": "https://x/88.jpeg", "meta": None}]}
    shown = showcase_images(listed, details)
    assert shown[77] == {"id": 77, "url": url, "nsfwLevel": 4, "meta": {"prompt": "p"}}
    assert shown[88]["id"] == 88


def test_real_models_page_showcase_and_original_urls() -> None:
    path = (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "civitai"
        / "models__Stepwisecliche_civitai-api__limit10-cursor-page1.json"
    )
    page = json.loads(path.read_text(encoding="utf-8"), strict=False)
    assert page["metadata"]["nextCursor"] == "37169|338034|122359"
    checked = 0
    for model in page["items"]:
        for version in model["modelVersions"]:
            shown = showcase_images(version, None)
            assert set(shown) == {image["id"] for image in version["images"]}
            for ident, image in shown.items():
                url = original_url(image["url"])
                assert "/original=true/" in url and "width=" not in url
                assert image_uuid(url) is not None and id_from_url(url) == ident
                checked += 1
    assert checked == 721
