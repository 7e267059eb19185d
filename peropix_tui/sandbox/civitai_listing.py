"""The query side of the sandbox CivitAI list routes: parameter checks with CivitAI's 400s, the filters of
`/api/v1/models`, `/api/v1/images` and `/api/v1/creators`, sort orders, and cursor paging.

A cursor names the first item of the next page by its sort values (`"1719000000000|100001"`), so a walk
survives items added or removed between two pages, the way CivitAI's inclusive cursors do. Page numbers
work too, up to CivitAI's cap: `page * limit > 1000` answers the 429 that says to use cursors.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from peropix_tui.sandbox.civitai_dataset import (
    CivitaiDataset,
    ModelType,
    SandboxImage,
    SandboxModel,
)

T = TypeVar("T")

MAX_PAGE_ITEMS: Final = 1000
TOO_MANY_PAGES: Final = "You've requested too many pages, please use cursors instead"
MODELS_LIMIT: Final = 100
IMAGES_LIMIT: Final = 200
IMAGES_DEFAULT_LIMIT: Final = 100
CREATORS_LIMIT: Final = 200
CREATORS_DEFAULT_LIMIT: Final = 20
PERIOD_S: Final[Mapping[str, float | None]] = {
    "AllTime": None,
    "Year": 365 * 86_400.0,
    "Month": 30 * 86_400.0,
    "Week": 7 * 86_400.0,
    "Day": 86_400.0,
}
NSFW_LEVELS: Final[Mapping[str, int]] = {"none": 1, "soft": 3, "mature": 7, "x": 31, "true": 60, "false": 1}
"""`/api/v1/images?nsfw=` to a browsing-level mask: `true` means R and above only, no SFW images."""
_TRUE: Final = frozenset({"true", "1"})
_FALSE: Final = frozenset({"false", "0"})


class ApiError(Exception):
    """An answer other than 200, with CivitAI's JSON error body."""

    def __init__(self, status: int, error: Any, **extra: Any) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.payload: dict[str, Any] = {"error": error, **extra}

    @classmethod
    def invalid(cls, param: str, message: str) -> ApiError:
        """A 400 carrying a Zod-style issue list, as CivitAI's validation answers."""
        issue = {"code": "custom", "message": message, "path": [param]}
        return cls(400, {"issues": [issue], "name": "ZodError"})


Query = Mapping[str, list[str]]


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int(query: Query, name: str, low: int, high: int, default: int | None) -> int | None:
    text = _one(query, name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError.invalid(name, f"Expected number, received {text!r}") from None
    if not low <= value <= high:
        raise ApiError.invalid(name, f"Number must be between {low} and {high}")
    return value


def _bool(query: Query, name: str) -> bool | None:
    text = _one(query, name)
    if text is None or text == "":
        return None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ApiError.invalid(name, f"Expected boolean, received {text!r}")


def _choice(query: Query, name: str, choices: Sequence[str], default: str) -> str:
    text = _one(query, name)
    if text is None or text == "":
        return default
    if text not in choices:
        raise ApiError.invalid(name, f"Invalid enum value. Expected {' | '.join(choices)}, received {text!r}")
    return text


def _many(query: Query, name: str) -> list[str]:
    """A parameter given repeated, comma-separated, or both."""
    return [part.strip() for value in query.get(name, ()) for part in value.split(",") if part.strip()]


# --- sorting and paging ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortSpec(Generic[T]):
    """An order: the values compared (the id last, to break ties) and the direction."""

    values: Callable[[T], tuple[int, ...]]
    descending: bool

    def key(self, item: T) -> tuple[int, ...]:
        values = self.values(item)
        return tuple(-v for v in values) if self.descending else values

    def cursor(self, item: T) -> str:
        return "|".join(str(v) for v in self.values(item))

    def cursor_key(self, text: str, width: int) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split("|"))
        except ValueError:
            raise ApiError.invalid("cursor", f"Invalid cursor {text!r}") from None
        if len(values) != width:
            raise ApiError.invalid("cursor", f"Invalid cursor {text!r}")
        return tuple(-v for v in values) if self.descending else values


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


MODEL_SORTS: Final[Mapping[str, SortSpec[SandboxModel]]] = {
    "Highest Rated": SortSpec(lambda m: (m.likes, m.id), descending=True),
    "Most Downloaded": SortSpec(lambda m: (m.downloads, m.id), descending=True),
    "Most Liked": SortSpec(lambda m: (m.likes, m.id), descending=True),
    "Most Discussed": SortSpec(lambda m: (m.comments, m.id), descending=True),
    "Most Collected": SortSpec(lambda m: (m.collected, m.id), descending=True),
    "Most Images": SortSpec(lambda m: (m.images, m.id), descending=True),
    "Newest": SortSpec(lambda m: (_ms(m.published_at), m.id), descending=True),
    "Oldest": SortSpec(lambda m: (_ms(m.published_at), m.id), descending=False),
}
IMAGE_SORTS: Final[Mapping[str, SortSpec[SandboxImage]]] = {
    "Most Reactions": SortSpec(lambda i: (i.reactions, i.id), descending=True),
    "Most Comments": SortSpec(lambda i: (i.comments, i.id), descending=True),
    "Most Collected": SortSpec(lambda i: (i.reactions // 3 + i.comments, i.id), descending=True),
    "Newest": SortSpec(lambda i: (_ms(i.created_at), i.id), descending=True),
    "Oldest": SortSpec(lambda i: (_ms(i.created_at), i.id), descending=False),
    "Random": SortSpec(lambda i: (i.id * 2_654_435_761 % 4_294_967_291, i.id), descending=False),
}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None
    next_page: int | None = None
    current_page: int | None = None


def cursor_page(
    ordered: list[T], sort: SortSpec[T], limit: int, cursor: str | None, *, repeat: bool = False, skip: bool = False
) -> Page[T]:
    """The page that starts at `cursor` (the first item when None) in `ordered` (sorted by `sort.key`).

    `repeat` and `skip` are the paging bugs a fault asks for: the next page starting one item early
    (the last item again) or one late (an item never listed).
    """
    keys = [sort.key(item) for item in ordered]
    start = 0
    if cursor is not None:
        width = len(keys[0]) if keys else len(cursor.split("|"))
        start = bisect.bisect_left(keys, sort.cursor_key(cursor, width))
    end = start + limit
    items = ordered[start:end]
    following = end
    if repeat and len(items) >= 2 and end < len(ordered):
        following = end - 1
    elif skip:
        following = end + 1
    next_cursor = sort.cursor(ordered[following]) if following < len(ordered) and items else None
    return Page(items, next_cursor=next_cursor)


def number_page(ordered: list[T], limit: int, page: int) -> Page[T]:
    if page * limit > MAX_PAGE_ITEMS:
        raise ApiError(429, TOO_MANY_PAGES)
    start = (page - 1) * limit
    more = start + limit < len(ordered)
    return Page(ordered[start : start + limit], next_page=page + 1 if more else None, current_page=page)


# --- /api/v1/models -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelQuery:
    username: str | None
    types: frozenset[ModelType]
    nsfw: bool
    sort: str
    period: str
    limit: int
    cursor: str | None
    page: int | None
    query: str | None
    base_models: frozenset[str]
    primary_file_only: bool
    ids: frozenset[int]


def parse_model_query(query: Query) -> ModelQuery:
    types = set()
    for name in _many(query, "types"):
        try:
            types.add(ModelType(name))
        except ValueError:
            known = " | ".join(t.value for t in ModelType)
            raise ApiError.invalid("types", f"Invalid enum value. Expected {known}, received {name!r}") from None
    ids = set()
    for text in _many(query, "ids"):
        if not text.isdigit():
            raise ApiError.invalid("ids", f"Expected number, received {text!r}")
        ids.add(int(text))
    search = _one(query, "query") or None
    page = _int(query, "page", 1, 1 << 31, None)
    cursor = _one(query, "cursor") or None
    if search is not None and page is not None and cursor is None:
        raise ApiError(400, "Cannot use page param with query search. Use cursor-based pagination.")
    return ModelQuery(
        username=_one(query, "username") or None,
        types=frozenset(types),
        nsfw=_bool(query, "nsfw") is True,
        sort=_choice(query, "sort", list(MODEL_SORTS), "Highest Rated"),
        period=_choice(query, "period", list(PERIOD_S), "AllTime"),
        limit=_int(query, "limit", 0, MODELS_LIMIT, MODELS_LIMIT) or MODELS_LIMIT,
        cursor=cursor,
        page=None if cursor is not None else page,
        query=search,
        base_models=frozenset(_many(query, "baseModels")),
        primary_file_only=_bool(query, "primaryFileOnly") is True,
        ids=frozenset(ids),
    )


def select_models(dataset: CivitaiDataset, q: ModelQuery, now: float) -> list[SandboxModel]:
    """The models the query lists, in its sort order. POI models are never listed; `nsfw=true` leaves out
    minor-flagged models and no `nsfw` leaves out NSFW ones, which is why clients walk both and merge."""
    period = PERIOD_S[q.period]
    with dataset.lock:
        chosen = []
        for model in dataset.models.values():
            if model.poi or (q.nsfw and model.minor) or (not q.nsfw and model.nsfw):
                continue
            if q.username is not None and model.username.lower() != q.username.lower():
                continue
            if q.types and model.type not in q.types:
                continue
            if q.query is not None and q.query.lower() not in model.name.lower():
                continue
            if q.base_models and not any(v.base_model in q.base_models for v in model.versions):
                continue
            if q.ids and model.id not in q.ids:
                continue
            if period is not None and model.published_at < now - period:
                continue
            chosen.append(model)
    sort = MODEL_SORTS[q.sort]
    return sorted(chosen, key=sort.key)


# --- /api/v1/images -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageQuery:
    limit: int
    cursor: str | None
    page: int | None
    version_id: int | None
    model_id: int | None
    image_id: int | None
    post_id: int | None
    username: str | None
    user_id: int | None
    levels: int
    sort: str
    period: str
    with_meta: bool
    flat_meta: bool | None

    @property
    def legacy(self) -> bool:
        """CivitAI answers `imageId=` and a bare `modelId=` from the database, with nested meta."""
        return self.version_id is None and (self.image_id is not None or self.model_id is not None)

    @property
    def nested_meta(self) -> bool:
        return self.flat_meta is False or (self.flat_meta is None and self.legacy)


def parse_image_query(query: Query) -> ImageQuery:
    levels = _int(query, "browsingLevel", 1, 63, None)
    if levels is None:
        nsfw = (_one(query, "nsfw") or "false").lower()
        if nsfw not in NSFW_LEVELS:
            raise ApiError.invalid("nsfw", "Invalid enum value. Expected None | Soft | Mature | X | true | false")
        levels = NSFW_LEVELS[nsfw]
    cursor = _one(query, "cursor") or None
    big = 1 << 31
    return ImageQuery(
        limit=_int(query, "limit", 0, IMAGES_LIMIT, IMAGES_DEFAULT_LIMIT) or IMAGES_DEFAULT_LIMIT,
        cursor=cursor,
        page=None if cursor is not None else _int(query, "page", 1, big, None),
        version_id=_int(query, "modelVersionId", 1, big, None),
        model_id=_int(query, "modelId", 1, big, None),
        image_id=_int(query, "imageId", 1, big, None),
        post_id=_int(query, "postId", 1, big, None),
        username=_one(query, "username") or None,
        user_id=_int(query, "userId", 1, big, None),
        levels=levels,
        sort=_choice(query, "sort", list(IMAGE_SORTS), "Most Reactions"),
        period=_choice(query, "period", list(PERIOD_S), "AllTime"),
        with_meta=_bool(query, "withMeta") is True,
        flat_meta=_bool(query, "flatMeta"),
    )


def select_images(dataset: CivitaiDataset, q: ImageQuery, now: float) -> list[SandboxImage]:
    """The images the query lists, in its sort order. `modelVersionId` matches the images posted to the
    version and every image that used it; add `username` to keep the creator's own."""
    period = PERIOD_S[q.period]
    with dataset.lock:
        versions: set[int] | None = None
        if q.version_id is not None:
            versions = {q.version_id}
        elif q.model_id is not None:
            model = dataset.models.get(q.model_id)
            versions = {v.id for v in model.versions} if model is not None else set()
        poster = q.username
        if q.user_id is not None:
            creator = dataset.creator_by_id(q.user_id)
            if creator is None:
                return []
            if poster is not None and poster.lower() != creator.username.lower():
                return []
            poster = creator.username
        chosen = []
        for image in dataset.images.values():
            if not image.nsfw_level & q.levels:
                continue
            if versions is not None and versions.isdisjoint(image.version_ids):
                continue
            if q.image_id is not None and image.id != q.image_id:
                continue
            if q.post_id is not None and image.post_id != q.post_id:
                continue
            if poster is not None and image.username.lower() != poster.lower():
                continue
            if period is not None and image.created_at < now - period:
                continue
            chosen.append(image)
    sort = IMAGE_SORTS[q.sort]
    return sorted(chosen, key=sort.key)


# --- /api/v1/creators ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatorQuery:
    query: str | None
    limit: int
    page: int


def parse_creator_query(query: Query) -> CreatorQuery:
    return CreatorQuery(
        query=_one(query, "query") or None,
        limit=_int(query, "limit", 0, CREATORS_LIMIT, CREATORS_DEFAULT_LIMIT) or CREATORS_DEFAULT_LIMIT,
        page=_int(query, "page", 1, 1 << 31, 1) or 1,
    )


def listed_model_count(dataset: CivitaiDataset, username: str) -> int:
    """What `/api/v1/creators` reports as a creator's `modelCount`: every model but POI ones."""
    return sum(1 for model in dataset.models_of(username) if not model.poi)


def select_creators(dataset: CivitaiDataset, q: CreatorQuery) -> list[tuple[str, int, str | None]]:
    """(username, modelCount, avatar) of the matching creators with at least one model, most models first."""
    with dataset.lock:
        found = [
            (creator.username, listed_model_count(dataset, creator.username), creator.avatar)
            for creator in dataset.creators.values()
            if q.query is None or q.query.lower() in creator.username.lower()
        ]
    return sorted((c for c in found if c[1] > 0), key=lambda c: (-c[1], c[0].lower()))
