"""Listing everything of a creator: models (with versions and files) and each version's images.

User listings are known to come back incomplete (§2.4 of the API notes): NSFW models vanish without
`nsfw=true`, minor-flagged ones vanish *with* it, cursor bugs have dropped items, pages repeat items. So the
walk follows cursors only (deep page numbers are refused by the API), runs once with `nsfw=true` and once
without and merges by id, then compares the total with the creator's `modelCount` and, when short, walks
again in another sort order. A cursor that comes back twice ends the walk instead of looping forever.
Types are filtered here, after the count check, since `modelCount` counts every type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from peropix_tui.civitai.client import CivitaiClient
from peropix_tui.civitai.errors import ApiError
from peropix_tui.civitai.urls import split_url

log = logging.getLogger(__name__)

MODELS_PATH = "/api/v1/models"
IMAGES_PATH = "/api/v1/images"
CREATORS_PATH = "/api/v1/creators"
VERSION_PATH = "/api/v1/model-versions/{}"
MODELS_PAGE = 100
IMAGES_PAGE = 200
ALL_LEVELS = 31
MAX_PAGES = 10_000
DEFAULT_TYPES: tuple[str, ...] = ("LORA", "LoCon", "DoRA")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"(\d+)")

Warn = Callable[[str], None]


@dataclass(slots=True)
class ModelListing:
    """A creator's models by id (already type-filtered), and what the cross-check found."""

    models: dict[int, dict[str, Any]]
    listed: int
    expected: int | None
    warnings: list[str] = field(default_factory=list)


def _item_id(item: Any) -> int | None:
    if not isinstance(item, dict):
        return None
    value = item.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


async def walk(
    client: CivitaiClient, path: str, params: Mapping[str, Any], *, what: str, warn: Warn
) -> AsyncIterator[dict[str, Any]]:
    """Every item of a cursor-paged list, in order, each id once.

    `nextCursor` is followed with our own parameters (so `withMeta` and friends are never lost); a bare
    `nextPage` URL is followed as given. A repeated cursor or page ends the walk with a warning.
    """
    seen_ids: set[int] = set()
    seen_cursors: set[str] = set()
    url: str = path
    query: Mapping[str, Any] | None = params
    for page_number in range(1, MAX_PAGES + 1):
        page = await client.get_json(url, query, what=f"{what} (page {page_number})")
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            raise ApiError(f"{what}: page {page_number} has no item list", reason="bad_json")
        for item in items:
            ident = _item_id(item)
            if ident is None:
                warn(f"{what}: skipped an item without a numeric id on page {page_number}")
                continue
            if ident in seen_ids:
                continue
            seen_ids.add(ident)
            yield item
        metadata = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
        cursor = metadata.get("nextCursor")
        next_page = metadata.get("nextPage")
        if cursor not in (None, ""):
            marker = f"cursor:{cursor}"
            url, query = path, {**params, "cursor": cursor}
        elif isinstance(next_page, str) and next_page:
            marker = f"page:{next_page}"
            url, query = next_page, None
        else:
            return
        if marker in seen_cursors:
            warn(f"{what}: the API sent the same cursor twice; stopped after page {page_number}")
            return
        seen_cursors.add(marker)
    warn(f"{what}: stopped after {MAX_PAGES} pages")


async def _walk_models(
    client: CivitaiClient, username: str, sort: str, nsfw: bool, into: dict[int, dict[str, Any]], warn: Warn
) -> None:
    params: dict[str, Any] = {"username": username, "limit": MODELS_PAGE, "sort": sort}
    if nsfw:
        params["nsfw"] = "true"
    label = f"models of {username} ({sort}{', nsfw' if nsfw else ''})"
    async for item in walk(client, MODELS_PATH, params, what=label, warn=warn):
        ident = _item_id(item)
        if ident is not None:
            into.setdefault(ident, item)


async def creator_model_count(client: CivitaiClient, username: str) -> int | None:
    """`modelCount` of the creator named exactly `username` (ignoring case), from /api/v1/creators."""
    try:
        page = await client.get_json(
            CREATORS_PATH, {"query": username, "limit": 100}, what=f"creator record of {username}"
        )
    except ApiError as exc:
        log.info("no model count for %s: %s", username, exc)
        return None
    items = page.get("items") if isinstance(page, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and str(item.get("username", "")).casefold() == username.casefold():
            count = item.get("modelCount")
            return count if isinstance(count, int) and not isinstance(count, bool) else None
    return None


def type_matches(model: Mapping[str, Any], types: Iterable[str] | None) -> bool:
    """Whether a model's type is wanted; None wants every type."""
    if types is None:
        return True
    wanted = {t.casefold() for t in types}
    return str(model.get("type", "")).casefold() in wanted


async def list_models(client: CivitaiClient, username: str, *, types: Iterable[str] | None, warn: Warn) -> ModelListing:
    """All models of `username`: nsfw and default walks merged, count-checked, re-walked when short."""
    found: dict[int, dict[str, Any]] = {}
    await _walk_models(client, username, "Newest", True, found, warn)
    await _walk_models(client, username, "Newest", False, found, warn)
    expected = await creator_model_count(client, username)
    warnings: list[str] = []
    if expected is not None and len(found) < expected:
        log.info("%s: listed %d of %d models; walking again oldest first", username, len(found), expected)
        await _walk_models(client, username, "Oldest", True, found, warn)
        await _walk_models(client, username, "Oldest", False, found, warn)
        if len(found) < expected:
            warnings.append(
                f"{username}: CivitAI lists {len(found)} models but counts {expected}; "
                "the missing ones are hidden from the API (POI, or not yet visible)"
            )
    wanted = types if types is None else list(types)
    models = {ident: item for ident, item in sorted(found.items()) if type_matches(item, wanted)}
    return ModelListing(models, len(found), expected, warnings)


async def version_details(client: CivitaiClient, version_id: int, warn: Warn) -> dict[str, Any] | None:
    """/api/v1/model-versions/{id} (the showcase images with their meta), None when it cannot be had."""
    try:
        document = await client.get_json(VERSION_PATH.format(version_id), what=f"version {version_id}")
    except ApiError as exc:
        warn(f"version {version_id}: details unavailable ({exc})")
        return None
    return document if isinstance(document, dict) else None


async def version_images(client: CivitaiClient, version_id: int, username: str, warn: Warn) -> list[dict[str, Any]]:
    """The creator's images of one version, every browsing level, with flat generation meta."""
    params = {
        "modelVersionId": version_id,
        "username": username,
        "browsingLevel": ALL_LEVELS,
        "withMeta": "true",
        "flatMeta": "true",
        "sort": "Oldest",
        "limit": IMAGES_PAGE,
    }
    return [item async for item in walk(client, IMAGES_PATH, params, what=f"images of version {version_id}", warn=warn)]


def image_uuid(url: str) -> str | None:
    """The storage key (a UUID) inside a CivitAI image URL."""
    parts = split_url(url)
    match = _UUID.search(parts.path) if parts is not None else None
    return match.group(0) if match else None


def original_url(url: str) -> str:
    """The `original=true` form of an image CDN URL (`/<uuid>/width=450/<name>` -> `/<uuid>/original=true/<name>`)."""
    parts = split_url(url)
    if parts is None:
        return url
    segments = parts.path.split("/")
    for index, segment in enumerate(segments[:-2]):
        if _UUID.fullmatch(segment):
            options = segments[index + 1]
            if "=" in options and options != "original=true":
                segments[index + 1] = "original=true"
                return parts._replace(path="/".join(segments)).geturl()
            break
    return url


def b2_url(url: str, b2_origin: str) -> str | None:
    """The B2 origin address of an image (`<origin>/file/civitai-media-cache/<uuid>/original`), if it has a UUID."""
    uuid = image_uuid(url)
    return f"{b2_origin.rstrip('/')}/file/civitai-media-cache/{uuid}/original" if uuid else None


def id_from_url(url: str) -> int | None:
    """The image id a showcase URL carries as its file name (`…/17269828.jpeg`)."""
    parts = split_url(url)
    if parts is None:
        return None
    name = parts.path.rsplit("/", 1)[-1]
    match = _DIGITS.fullmatch(name.split(".", 1)[0])
    return int(match.group(1)) if match else None


def showcase_images(listed_version: Mapping[str, Any], details: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The version's own showcase images by id: the listing's (ids, no meta) merged with the details' (meta)."""
    shown: dict[int, dict[str, Any]] = {}
    sources = [listed_version.get("images"), details.get("images") if details else None]
    for images in sources:
        for image in images if isinstance(images, list) else []:
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                continue
            ident = _item_id(image) or id_from_url(image["url"])
            if ident is None:
                continue
            merged = shown.setdefault(ident, {})
            for key, value in image.items():
                if value is not None or key not in merged:
                    merged[key] = value
            merged["id"] = ident
    return shown
