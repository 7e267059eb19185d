"""What the sandbox CivitAI server knows: creators, models, versions, files and images, as plain objects a
test builds in a few lines and then reads back to compute what a client should end up with.

    dataset = CivitaiDataset()
    alice = dataset.add_creator("alice")
    model = dataset.add_model(alice, "Alice Style", type=ModelType.LORA)
    version = dataset.add_version(model, "v1.0", trained_words=["alicestyle"])
    lora = dataset.add_file(version, size=64 << 20, access=FileAccess.KEY)
    dataset.add_image(version, image_format=ImageFormat.PNG, nsfw_level=NsfwLevel.R)

Ids are handed out in order from fixed starts, times from a fixed base, random choices from the dataset's
seed: two datasets built the same way are the same, byte for byte, so a rerun finds identical files.
Everything can change while a server answers from the dataset (a test adding a version between two runs);
every read and write holds the dataset's lock.
"""

from __future__ import annotations

import enum
import random
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from peropix_tui.sandbox.civitai_files import BlobHashes, SafetensorsBlob, kohya_metadata
from peropix_tui.sandbox.civitai_images import ImageFormat, original_bytes

BASE_TIME: Final = 1_719_000_000.0
"""2024-06-21: when the first sandbox model was published; later ones follow a day apart."""
DEFAULT_FILE_SIZE: Final = 64 * 1024
DEFAULT_IMAGE_SIZE: Final = (96, 144)
FIRST_MODEL_ID: Final = 100_001
FIRST_VERSION_ID: Final = 200_001
FIRST_FILE_ID: Final = 300_001
FIRST_IMAGE_ID: Final = 400_001
FIRST_USER_ID: Final = 1_001
FIRST_POST_ID: Final = 500_001
DEFAULT_META: Final[Mapping[str, Any]] = {}
"""Pass as `meta` (the default) to get generated A1111-style meta naming the version's LoRA."""


class ModelType(enum.StrEnum):
    CHECKPOINT = "Checkpoint"
    TEXTUAL_INVERSION = "TextualInversion"
    HYPERNETWORK = "Hypernetwork"
    AESTHETIC_GRADIENT = "AestheticGradient"
    LORA = "LORA"
    LOCON = "LoCon"
    DORA = "DoRA"
    CONTROLNET = "Controlnet"
    UPSCALER = "Upscaler"
    MOTION_MODULE = "MotionModule"
    VAE = "VAE"
    POSES = "Poses"
    WILDCARDS = "Wildcards"
    WORKFLOWS = "Workflows"
    DETECTION = "Detection"
    OTHER = "Other"


UPLOADED_NAME_TYPES: Final = frozenset({ModelType.LORA, ModelType.LOCON, ModelType.DORA})
"""Types whose download name is the uploaded file name; CivitAI renames the files of every other type."""


class ModelMode(enum.StrEnum):
    ARCHIVED = "Archived"
    """Listed with `files: []`; its download route answers 410."""
    TAKEN_DOWN = "TakenDown"
    """Listed with no files and no images; its download route answers 404."""


class FileAccess(enum.StrEnum):
    """What the download route does for a file (§5.2 of the API spec)."""

    PUBLIC = "public"
    KEY = "key"
    """A valid API key is needed: 401 JSON without one (the login redirect for a browser)."""
    DISABLED = "disabled"
    """The creator disabled downloads: 401 for everyone, a permanent skip."""
    NO_ACCESS = "no_access"
    """Private or paid: 401 without a key, 403 with any key."""
    MISSING = "missing"
    """Listed, but the storage resolver cannot find it: 404 `File not found`."""


class NsfwLevel(enum.IntEnum):
    PG = 1
    PG13 = 2
    R = 4
    X = 8
    EXPLICIT = 16  # the level CivitAI labels with three X

    @property
    def label(self) -> str:
        """The string `/api/v1/images` uses (X and EXPLICIT are both `X`)."""
        return {1: "None", 2: "Soft", 4: "Mature"}.get(self.value, "X")


@dataclass(eq=False)
class SandboxCreator:
    username: str
    user_id: int
    avatar: str | None = None


@dataclass(eq=False)
class SandboxFile:
    id: int
    version_id: int
    name: str
    """The download name, as the API lists it and the storage's Content-Disposition gives it."""
    blob: SafetensorsBlob
    access: FileAccess = FileAccess.PUBLIC
    primary: bool = False
    type: str = "Model"
    fp: str | None = None
    size_label: str | None = None
    api_sha256: str | None = None
    """Publish this SHA256 (and its AutoV2) instead of the true one, as the API sometimes does."""

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def hashes(self) -> BlobHashes:
        """The true hashes of the bytes served."""
        return self.blob.hashes

    @property
    def output_name(self) -> str:
        return self.blob.metadata["ss_output_name"]

    @property
    def needs_key(self) -> bool:
        return self.access in (FileAccess.KEY, FileAccess.NO_ACCESS)

    def api_hashes(self) -> dict[str, str]:
        hashes = self.hashes.api()
        if self.api_sha256 is not None:
            hashes["SHA256"] = self.api_sha256.upper()
            hashes["AutoV2"] = self.api_sha256.upper()[:10]
        return hashes

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """The served bytes (all of them by default): what a correct download must end up with."""
        return self.blob.read(start, end)


@dataclass(eq=False)
class SandboxImage:
    id: int
    uuid: str
    username: str
    """Who posted it: the model's creator for showcase images, anyone for community images."""
    version_id: int | None
    """The version it was posted to (None for a community image that only used the resource)."""
    post_id: int
    index: int
    image_format: ImageFormat
    nsfw_level: NsfwLevel
    meta: dict[str, Any] | None
    uses: tuple[int, ...]
    """Version ids of the resources detected in the image (its own version included)."""
    created_at: float
    width: int
    height: int
    reactions: int
    comments: int
    cdn_missing: bool = False
    """The image CDN answers 404 for it; only the B2 origin has the original."""
    _original: bytes | None = field(default=None, init=False, repr=False)

    @property
    def original(self) -> bytes:
        """The original file's bytes (made on first use; the same bytes every time)."""
        if self._original is None:
            self._original = original_bytes(self.id, self.image_format, self.width, self.height, self.meta)
        return self._original

    @property
    def version_ids(self) -> list[int]:
        ids = set(self.uses)
        if self.version_id is not None:
            ids.add(self.version_id)
        return sorted(ids)


@dataclass(eq=False)
class SandboxVersion:
    id: int
    model_id: int
    name: str
    base_model: str
    trained_words: list[str]
    published_at: float
    early_access_until: float | None = None
    """Epoch seconds until which downloads answer the early-access 403; None for none."""
    description: str | None = None
    files: list[SandboxFile] = field(default_factory=list)
    downloads: int = 0


@dataclass(eq=False)
class SandboxModel:
    id: int
    name: str
    type: ModelType
    username: str
    published_at: float
    description: str | None = None
    nsfw: bool = False
    minor: bool = False
    """Minor-flagged: left out of `nsfw=true` listings, as CivitAI does."""
    poi: bool = False
    """A real person: never listed, and its files answer 404."""
    mode: ModelMode | None = None
    tags: list[str] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    comments: int = 0
    collected: int = 0
    images: int = 0
    """How many images the creator posted to its versions (the `Most Images` sort)."""
    versions: list[SandboxVersion] = field(default_factory=list)


def slug(text: str) -> str:
    """`text` as a lower-case identifier, the way trainers name their output files."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


class CivitaiDataset:
    """Creators, models, versions, files and images, looked up by id; safe to change while being served."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        self.creators: dict[str, SandboxCreator] = {}
        """By lower-case username."""
        self.models: dict[int, SandboxModel] = {}
        self.versions: dict[int, SandboxVersion] = {}
        self.files: dict[int, SandboxFile] = {}
        self.images: dict[int, SandboxImage] = {}
        self._by_uuid: dict[str, SandboxImage] = {}
        self._posts: dict[tuple[str, int | None], list[int]] = {}
        """(poster, version posted to) -> [post id, images in it]."""
        self._next = {
            "model": FIRST_MODEL_ID,
            "version": FIRST_VERSION_ID,
            "file": FIRST_FILE_ID,
            "image": FIRST_IMAGE_ID,
            "user": FIRST_USER_ID,
            "post": FIRST_POST_ID,
        }

    def _id(self, kind: str, wanted: int | None, taken: Mapping[int, object]) -> int:
        if wanted is not None:
            if wanted in taken:
                raise ValueError(f"{kind} id {wanted} is already in the dataset")
            self._next[kind] = max(self._next[kind], wanted + 1)
            return wanted
        while self._next[kind] in taken:
            self._next[kind] += 1
        value = self._next[kind]
        self._next[kind] += 1
        return value

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("|".join(map(str, (self.seed, *parts))))

    # --- building ------------------------------------------------------------------------------------------

    def add_creator(self, username: str, *, user_id: int | None = None, avatar: str | None = None) -> SandboxCreator:
        if not username or username != username.strip() or "/" in username:
            raise ValueError(f"username {username!r} is not one CivitAI would accept")
        with self.lock:
            if username.lower() in self.creators:
                raise ValueError(f"creator {username!r} is already in the dataset")
            taken = {c.user_id: c for c in self.creators.values()}
            creator = SandboxCreator(username, self._id("user", user_id, taken), avatar)
            self.creators[username.lower()] = creator
            return creator

    def add_model(
        self,
        creator: SandboxCreator | str,
        name: str,
        *,
        type: ModelType = ModelType.LORA,
        nsfw: bool = False,
        minor: bool = False,
        poi: bool = False,
        mode: ModelMode | None = None,
        description: str | None = None,
        tags: Iterable[str] = ("anime", "character"),
        published_at: float | None = None,
        model_id: int | None = None,
    ) -> SandboxModel:
        with self.lock:
            owner = self._creator(creator)
            ident = self._id("model", model_id, self.models)
            rng = self._rng("model", ident)
            model = SandboxModel(
                id=ident,
                name=name,
                type=ModelType(type),
                username=owner.username,
                published_at=BASE_TIME + 86_400.0 * len(self.models) if published_at is None else published_at,
                description=description if description is not None else f"<p>{name}, made for the sandbox.</p>",
                nsfw=nsfw,
                minor=minor,
                poi=poi,
                mode=mode,
                tags=list(tags),
                downloads=rng.randrange(100, 20_000),
                likes=rng.randrange(10, 3_000),
                comments=rng.randrange(0, 80),
                collected=rng.randrange(0, 900),
            )
            self.models[ident] = model
            return model

    def add_version(
        self,
        model: SandboxModel,
        name: str = "v1.0",
        *,
        base_model: str = "Illustrious",
        trained_words: Iterable[str] = (),
        early_access_until: float | None = None,
        description: str | None = None,
        published_at: float | None = None,
        version_id: int | None = None,
    ) -> SandboxVersion:
        with self.lock:
            ident = self._id("version", version_id, self.versions)
            version = SandboxVersion(
                id=ident,
                model_id=model.id,
                name=name,
                base_model=base_model,
                trained_words=list(trained_words),
                published_at=model.published_at + 3_600.0 * len(model.versions)
                if published_at is None
                else published_at,
                early_access_until=early_access_until,
                description=description,
                downloads=self._rng("version", ident).randrange(50, 10_000),
            )
            # The API lists a model's versions newest first.
            model.versions.insert(0, version)
            self.versions[ident] = version
            return version

    def add_file(
        self,
        version: SandboxVersion,
        *,
        name: str | None = None,
        size: int = DEFAULT_FILE_SIZE,
        access: FileAccess = FileAccess.PUBLIC,
        primary: bool | None = None,
        output_name: str | None = None,
        type: str = "Model",
        fp: str | None = None,
        size_label: str | None = None,
        api_sha256: str | None = None,
        file_id: int | None = None,
    ) -> SandboxFile:
        """A safetensors file of exactly `size` bytes; the first file of a version is its primary one."""
        with self.lock:
            model = self.models[version.model_id]
            ident = self._id("file", file_id, self.files)
            trained = output_name or slug(model.name) or f"model_{model.id}"
            if name is None:
                name = _download_name(model, version, trained, len(version.files))
            metadata = kohya_metadata(trained, base_model=version.base_model, seed=self.seed * 1_000_003 + ident)
            sandbox_file = SandboxFile(
                id=ident,
                version_id=version.id,
                name=name,
                blob=SafetensorsBlob(size, self._rng("file", ident).getrandbits(63), metadata),
                access=FileAccess(access),
                primary=not version.files if primary is None else primary,
                type=type,
                fp=fp,
                size_label=size_label,
                api_sha256=api_sha256,
            )
            version.files.append(sandbox_file)
            self.files[ident] = sandbox_file
            return sandbox_file

    def add_image(
        self,
        version: SandboxVersion | None,
        *,
        username: str | None = None,
        image_format: ImageFormat = ImageFormat.PNG,
        nsfw_level: NsfwLevel = NsfwLevel.PG,
        meta: Mapping[str, Any] | None = DEFAULT_META,
        uses: Iterable[int] = (),
        cdn_missing: bool = False,
        size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        image_id: int | None = None,
    ) -> SandboxImage:
        """An image posted to `version` by `username` (the model's creator by default).

        A `username` other than the creator's makes a community image: it only *used* the version, so it
        shows up in `/api/v1/images?modelVersionId=` but not among the version's showcase images.
        """
        with self.lock:
            model = self.models[version.model_id] if version is not None else None
            poster = username if username is not None else (model.username if model is not None else "")
            if not poster:
                raise ValueError("an image without a version needs a username")
            own = model is not None and poster.lower() == model.username.lower()
            posted_to = version.id if own and version is not None else None
            used = set(uses)
            if version is not None:
                used.add(version.id)
            ident = self._id("image", image_id, self.images)
            rng = self._rng("image", ident)
            post = self._posts.setdefault((poster.lower(), posted_to), [self._id("post", None, {}), 0])
            index = post[1]
            post[1] += 1
            if meta is DEFAULT_META:
                meta = _generated_meta(model, version, rng, size)
            image = SandboxImage(
                id=ident,
                uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                username=poster,
                version_id=posted_to,
                post_id=post[0],
                index=index,
                image_format=ImageFormat(image_format),
                nsfw_level=NsfwLevel(nsfw_level),
                meta=dict(meta) if meta is not None else None,
                uses=tuple(sorted(used)),
                created_at=(version.published_at if version is not None else BASE_TIME) + 60.0 * (index + 1),
                width=size[0],
                height=size[1],
                reactions=rng.randrange(0, 5_000),
                comments=rng.randrange(0, 40),
                cdn_missing=cdn_missing,
            )
            self.images[ident] = image
            self._by_uuid[image.uuid] = image
            if own and model is not None:
                model.images += 1
            return image

    def populate(
        self,
        username: str,
        *,
        models: int = 3,
        versions: int = 1,
        files: int = 1,
        images: int = 2,
        file_size: int = DEFAULT_FILE_SIZE,
        type: ModelType = ModelType.LORA,
        access: FileAccess = FileAccess.PUBLIC,
    ) -> list[SandboxModel]:
        """A creator (made if new) with `models` plain models, each with versions, files and images."""
        with self.lock:
            creator = self.creators.get(username.lower()) or self.add_creator(username)
            made = []
            for m in range(models):
                model = self.add_model(creator, f"{creator.username} model {m + 1}", type=type)
                for v in range(versions):
                    version = self.add_version(model, f"v{v + 1}.0", trained_words=[f"{slug(model.name)}_v{v + 1}"])
                    for _ in range(files):
                        self.add_file(version, size=file_size, access=access)
                    formats = list(ImageFormat)
                    for i in range(images):
                        self.add_image(version, image_format=formats[i % len(formats)])
                made.append(model)
            return made

    # --- reading -------------------------------------------------------------------------------------------

    def _creator(self, creator: SandboxCreator | str) -> SandboxCreator:
        if isinstance(creator, SandboxCreator):
            return creator
        found = self.creators.get(creator.lower())
        if found is None:
            raise KeyError(f"no creator {creator!r} in the dataset")
        return found

    def creator(self, username: str) -> SandboxCreator | None:
        with self.lock:
            return self.creators.get(username.lower())

    def creator_by_id(self, user_id: int) -> SandboxCreator | None:
        with self.lock:
            return next((c for c in self.creators.values() if c.user_id == user_id), None)

    def image_by_uuid(self, image_uuid: str) -> SandboxImage | None:
        with self.lock:
            return self._by_uuid.get(image_uuid)

    def model_of(self, version: SandboxVersion) -> SandboxModel:
        with self.lock:
            return self.models[version.model_id]

    def models_of(self, username: str) -> list[SandboxModel]:
        """Every model of a creator, listed or not (POI ones included), oldest first."""
        with self.lock:
            return [m for m in self.models.values() if m.username.lower() == username.lower()]

    def showcase(self, version: SandboxVersion) -> list[SandboxImage]:
        """The creator's own images posted to `version`, in post order."""
        with self.lock:
            mine = [i for i in self.images.values() if i.version_id == version.id]
            return sorted(mine, key=lambda i: (i.post_id, i.index))

    def warm_hashes(self) -> None:
        """Compute every file's hashes now, so the first listing does not pay for them."""
        with self.lock:
            files = list(self.files.values())
        for sandbox_file in files:
            _ = sandbox_file.hashes


def _download_name(model: SandboxModel, version: SandboxVersion, trained: str, position: int) -> str:
    """The download name CivitAI gives a file: the uploaded name for LoRA-like types, else one it makes."""
    suffix = "" if position == 0 else f"_{position + 1}"
    if model.type in UPLOADED_NAME_TYPES:
        return f"{trained}{suffix}.safetensors"
    if model.type is ModelType.TEXTUAL_INVERSION and version.trained_words:
        return f"{version.trained_words[0]}{suffix}.safetensors"
    return f"{model.name}_{version.name}{suffix}.safetensors"


def _generated_meta(
    model: SandboxModel | None, version: SandboxVersion | None, rng: random.Random, size: tuple[int, int]
) -> dict[str, Any]:
    """A1111-style meta as CivitAI stores it, naming the version's LoRA in the prompt and the resources."""
    words = ", ".join(version.trained_words) if version is not None and version.trained_words else "1girl"
    weight = rng.choice((0.6, 0.7, 0.8, 1.0))
    meta: dict[str, Any] = {
        "prompt": f"masterpiece, best quality, {words}, solo, looking at viewer",
        "negativePrompt": "lowres, bad anatomy, bad hands, worst quality",
        "steps": rng.choice((20, 25, 28, 30)),
        "sampler": rng.choice(("Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras")),
        "cfgScale": rng.choice((5, 6, 7)),
        "seed": rng.randrange(1 << 32),
        "Size": f"{size[0] * 8}x{size[1] * 8}",
        "Clip skip": "2",
        "Model": "illustriousXL_v01",
        "Model hash": "aa7b4e1b2c",
    }
    if model is not None and version is not None and model.type in UPLOADED_NAME_TYPES:
        trained = version.files[0].output_name if version.files else slug(model.name) or f"model_{model.id}"
        meta["prompt"] += f", <lora:{trained}:{weight}>"
        meta["resources"] = [
            {"name": trained, "type": "lora", "weight": weight},
            {"hash": "aa7b4e1b2c", "name": "illustriousXL_v01", "type": "model"},
        ]
        meta["civitaiResources"] = [{"type": "lora", "weight": weight, "modelVersionId": version.id}]
    return meta
