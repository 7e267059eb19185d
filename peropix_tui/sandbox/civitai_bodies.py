"""The JSON the sandbox CivitAI server answers, shaped like the live API's bodies, quirks included:

- `/api/v1/models` items: versions newest first, `primary` only on the primary file, showcase images (at
  most 20, the creator's own posts) without `meta`; archived models list no files, taken-down ones no files
  and no images; without `nsfw=true` only PG previews are shown.
- `/api/v1/models/{id}`: the same item, every level, images without `id`.
- `/api/v1/model-versions/{id}`: 10 showcase images *with* `meta` and without `id`; `primary: false` on
  the other files.
- `/api/v1/images` items: `nsfwLevel` as a string, `browsingLevel` as the bit, and an all-digit username as
  a JSON number (leading zeros lost), as the search-backed route does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final
from urllib.parse import quote

from peropix_tui.sandbox.civitai_dataset import (
    CivitaiDataset,
    ModelMode,
    NsfwLevel,
    SandboxFile,
    SandboxImage,
    SandboxModel,
    SandboxVersion,
)
from peropix_tui.sandbox.civitai_faults import B2_PREFIX, CDN_PREFIX, DOWNLOAD_PREFIX
from peropix_tui.sandbox.civitai_images import blurhash_like

LIST_IMAGES: Final = 20
VERSION_IMAGES: Final = 10
SCANNED_AT: Final = "2024-06-21T12:00:00.000Z"


def iso(seconds: float) -> str:
    """Epoch seconds as CivitAI writes times: ISO 8601 in UTC with milliseconds and a `Z`."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def image_url(base_url: str, image: SandboxImage, name: str) -> str:
    return f"{base_url}{CDN_PREFIX}{image.uuid}/original=true/{name}"


def b2_url(base_url: str, image: SandboxImage) -> str:
    """The B2 origin of an image's original, the fallback when the CDN fails."""
    return f"{base_url}{B2_PREFIX}{image.uuid}/original"


def download_url(base_url: str, version: SandboxVersion, sandbox_file: SandboxFile | None = None) -> str:
    url = f"{base_url}{DOWNLOAD_PREFIX}{version.id}"
    if sandbox_file is None or sandbox_file.primary:
        return url
    size = f"&size={quote(sandbox_file.size_label)}" if sandbox_file.size_label else ""
    fp = f"&fp={quote(sandbox_file.fp)}" if sandbox_file.fp else ""
    return f"{url}?type={quote(sandbox_file.type)}&format=SafeTensor{size}{fp}"


def api_username(username: str) -> str | int:
    """A username as the search-backed routes send it: all digits become a number."""
    return int(username) if username.isascii() and username.isdigit() else username


def _levels(images: list[SandboxImage]) -> int:
    level = 0
    for image in images:
        level |= image.nsfw_level
    return level or NsfwLevel.PG


def file_item(base_url: str, version: SandboxVersion, sandbox_file: SandboxFile, *, explicit: bool) -> dict[str, Any]:
    """One `files[]` entry; `explicit` writes `primary: false` on the others (the version route does)."""
    item: dict[str, Any] = {
        "id": sandbox_file.id,
        "sizeKB": sandbox_file.size / 1024,
        "name": sandbox_file.name,
        "type": sandbox_file.type,
        "pickleScanResult": "Success",
        "pickleScanMessage": "No Pickle imports",
        "virusScanResult": "Success",
        "virusScanMessage": None,
        "scannedAt": SCANNED_AT,
        "metadata": {"format": "SafeTensor", "size": sandbox_file.size_label, "fp": sandbox_file.fp},
        "hashes": sandbox_file.api_hashes(),
        "downloadUrl": download_url(base_url, version, sandbox_file),
    }
    if sandbox_file.primary or explicit:
        item["primary"] = sandbox_file.primary
    return item


def _preview(base_url: str, image: SandboxImage, *, with_id: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"id": image.id} if with_id else {}
    prompt = image.meta.get("prompt") if image.meta is not None else None
    item |= {
        "url": image_url(base_url, image, f"{image.id}.jpeg"),
        "nsfwLevel": int(image.nsfw_level),
        "width": image.width,
        "height": image.height,
        "hash": blurhash_like(image.id),
        "type": "image",
        "minor": False,
        "poi": False,
        "hasMeta": image.meta is not None,
        "hasPositivePrompt": bool(prompt),
        "onSite": False,
        "remixOfId": None,
    }
    return item


def _version_stats(version: SandboxVersion) -> dict[str, int]:
    return {
        "downloadCount": version.downloads,
        "ratingCount": 0,
        "rating": 0,
        "thumbsUpCount": version.downloads // 7,
        "thumbsDownCount": 0,
    }


def version_in_list(
    dataset: CivitaiDataset,
    base_url: str,
    model: SandboxModel,
    version: SandboxVersion,
    *,
    pg_only: bool,
    image_ids: bool,
    primary_only: bool,
    now: float,
) -> dict[str, Any]:
    showcase = dataset.showcase(version)
    shown = [i for i in showcase if not pg_only or i.nsfw_level is NsfwLevel.PG]
    files = [] if model.mode is not None else version.files
    if primary_only:
        files = [f for f in files if f.primary]
    early = version.early_access_until is not None and version.early_access_until > now
    item: dict[str, Any] = {
        "id": version.id,
        "index": model.versions.index(version),
        "name": version.name,
        "baseModel": version.base_model,
        "baseModelType": "Standard",
        "publishedAt": iso(version.published_at),
        "availability": "EarlyAccess" if early else "Public",
        "nsfwLevel": _levels(showcase),
        "description": version.description,
        "trainedWords": list(version.trained_words),
        "stats": _version_stats(version),
        "supportsGeneration": False,
        "files": [file_item(base_url, version, f, explicit=False) for f in files],
        "images": []
        if model.mode is ModelMode.TAKEN_DOWN
        else [_preview(base_url, i, with_id=image_ids) for i in shown[:LIST_IMAGES]],
    }
    if early and version.early_access_until is not None:
        item["earlyAccessEndsAt"] = iso(version.early_access_until)
    if model.mode is None:
        item["downloadUrl"] = download_url(base_url, version)
    return item


def model_item(
    dataset: CivitaiDataset,
    base_url: str,
    model: SandboxModel,
    *,
    pg_only: bool = False,
    image_ids: bool = True,
    primary_only: bool = False,
    now: float,
) -> dict[str, Any]:
    """A `/api/v1/models` item (or, with `image_ids=False`, the `/api/v1/models/{id}` body)."""
    with dataset.lock:
        creator = dataset.creator(model.username)
        images = [i for v in model.versions for i in dataset.showcase(v)]
        item: dict[str, Any] = {
            "id": model.id,
            "name": model.name,
            "description": model.description,
            "allowNoCredit": True,
            "allowCommercialUse": ["Image", "RentCivit"],
            "allowDerivatives": True,
            "allowDifferentLicense": True,
            "type": model.type.value,
            "minor": model.minor,
            "sfwOnly": False,
            "poi": model.poi,
            "nsfw": model.nsfw,
            "nsfwLevel": _levels(images),
            "availability": "Public",
            "cosmetic": None,
            "supportsGeneration": False,
        }
        if model.mode is not None:
            item["mode"] = model.mode.value
        item |= {
            "stats": {
                "downloadCount": model.downloads,
                "favoriteCount": 0,
                "thumbsUpCount": model.likes,
                "thumbsDownCount": 0,
                "commentCount": model.comments,
                "ratingCount": 0,
                "rating": 0,
                "tippedAmountCount": 0,
            },
            "creator": {
                "username": model.username,
                "image": creator.avatar if creator is not None else None,
            },
            "tags": list(model.tags),
            "modelVersions": [
                version_in_list(
                    dataset,
                    base_url,
                    model,
                    v,
                    pg_only=pg_only,
                    image_ids=image_ids,
                    primary_only=primary_only,
                    now=now,
                )
                for v in model.versions
            ],
        }
        return item


def version_body(dataset: CivitaiDataset, base_url: str, version: SandboxVersion, *, now: float) -> dict[str, Any]:
    """The `/api/v1/model-versions/{id}` body."""
    with dataset.lock:
        model = dataset.model_of(version)
        showcase = dataset.showcase(version)
        early = version.early_access_until is not None and version.early_access_until > now
        model_part: dict[str, Any] = {
            "name": model.name,
            "type": model.type.value,
            "nsfw": model.nsfw,
            "poi": model.poi,
        }
        if model.mode is not None:
            model_part["mode"] = model.mode.value
        body: dict[str, Any] = {
            "id": version.id,
            "modelId": model.id,
            "name": version.name,
            "createdAt": iso(version.published_at - 600),
            "updatedAt": iso(version.published_at),
            "status": "Published",
            "publishedAt": iso(version.published_at),
            "trainedWords": list(version.trained_words),
            "trainingStatus": None,
            "trainingDetails": None,
            "baseModel": version.base_model,
            "baseModelType": "Standard",
            "earlyAccessTimeFrame": 7 if early else 0,
            "earlyAccessEndsAt": iso(version.early_access_until) if early and version.early_access_until else None,
            "description": version.description,
            "stats": _version_stats(version),
            "model": model_part,
            "files": [file_item(base_url, version, f, explicit=True) for f in version.files],
            "images": [
                {
                    "url": image_url(base_url, image, f"{image.id}.jpeg"),
                    "nsfwLevel": int(image.nsfw_level),
                    "width": image.width,
                    "height": image.height,
                    "hash": blurhash_like(image.id),
                    "type": "image",
                    "metadata": {
                        "hash": blurhash_like(image.id),
                        "size": len(image.original),
                        "width": image.width,
                        "height": image.height,
                    },
                    "availability": "Public",
                    "meta": image.meta,
                }
                for image in showcase[:VERSION_IMAGES]
            ],
            "downloadUrl": download_url(base_url, version),
        }
        return body


def image_item(
    dataset: CivitaiDataset, base_url: str, image: SandboxImage, *, with_meta: bool, nested: bool
) -> dict[str, Any]:
    """A `/api/v1/images` item; `meta` is null without `withMeta`, `{id, meta}` when `nested`."""
    with dataset.lock:
        posted_to = image.version_id if image.version_id is not None else next(iter(image.uses), None)
        version = dataset.versions.get(posted_to) if posted_to is not None else None
        base_model = version.base_model if version is not None else None
    meta: Any = None
    if with_meta:
        meta = {"id": image.id, "meta": image.meta} if nested else image.meta
    return {
        "id": image.id,
        "url": image_url(base_url, image, f"{image.uuid}.jpeg"),
        "hash": blurhash_like(image.id),
        "width": image.width,
        "height": image.height,
        "type": "image",
        "nsfw": image.nsfw_level >= NsfwLevel.R,
        "nsfwLevel": image.nsfw_level.label,
        "browsingLevel": int(image.nsfw_level),
        "createdAt": iso(image.created_at),
        "postId": image.post_id,
        "username": api_username(image.username),
        "baseModel": base_model,
        "modelVersionIds": image.version_ids,
        "stats": {
            "cryCount": image.reactions // 20,
            "laughCount": image.reactions // 10,
            "likeCount": image.reactions // 2,
            "dislikeCount": 0,
            "heartCount": image.reactions // 4,
            "commentCount": image.comments,
        },
        "meta": meta,
    }


def creator_item(base_url: str, username: str, model_count: int, avatar: str | None) -> dict[str, Any]:
    return {
        "username": username,
        "modelCount": model_count,
        "link": f"{base_url}/api/v1/models?username={quote(username)}",
        "image": avatar,
    }


def me_body(user_id: int, username: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": username,
        "tier": "free",
        "status": "active",
        "isMember": False,
        "subscriptions": [],
    }
