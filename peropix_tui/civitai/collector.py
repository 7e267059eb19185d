"""One collector run: for each creator, plan, then model files and images through bounded pools.

Per creator: list the models (see `listing`), open the creator's log, give every model a folder and every
file a name (remembered in the log, saved before the first byte is fetched), then run two bounded pools side
by side: model files (`download_workers`) and images (`image_workers`). A producer walks each version's
details and image list through the spaced metadata gate and feeds the image pool; queues are bounded, so a
creator with 100 000 images never holds them all as pending tasks.

What is skipped: a success whose file is still there with its size (the log is checked against the disk,
never believed alone); a file on disk the log does not know is adopted when its SHA256 matches (model files)
or it has its final name (images, which only ever get it by atomic rename). Failures are retried when due
(see `log.due`). The download quota 429 stops model files for the rest of the run; images go on.

Ctrl-C (task cancellation) unwinds through every `finally`: partial files stay as `.part` for the next run
and the log is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from peropix_tui.civitai.client import CivitaiClient
from peropix_tui.civitai.download import (
    QUOTA_DEFER_HOURS,
    FileJob,
    ImageDownloader,
    ImageFailure,
    ModelDownloader,
    Outcome,
)
from peropix_tui.civitai.errors import CivitaiError
from peropix_tui.civitai.events import (
    VERIFIED,
    CreatorFinished,
    CreatorPlanned,
    CreatorStarted,
    Event,
    EventSink,
    FileProgress,
    FileQueued,
    FileStarted,
    ImagesFound,
    ImageStarted,
    ItemFinished,
    Notice,
    Phase,
    Tally,
    item_key,
)
from peropix_tui.civitai.jsonio import dump_json
from peropix_tui.civitai.layout import (
    DESCRIPTION_HTML,
    MODEL_JSON,
    image_id_of,
    inside,
    model_file_name,
    model_folder_name,
    sidecar_name,
    trigger_words_name,
    user_dir,
    version_json_name,
)
from peropix_tui.civitai.listing import (
    b2_url,
    list_models,
    original_url,
    showcase_images,
    version_details,
    version_images,
)
from peropix_tui.civitai.log import DownloadLog, Entry, ModelRecord, Status, defer_until, due, utc_now, verified
from peropix_tui.civitai.sidecars import LORA_TYPES, ModelFileRef, SidecarContext, build_sidecar, unwrap_meta
from peropix_tui.civitai.urls import CreatorRef, host_of, is_civitai_host, split_url
from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import DiskFullError, PeropixError
from peropix_tui.core.jobs import Executors, ExecutorSizes
from peropix_tui.core.prompt import WordFilter
from peropix_tui.core.safetensors import compute_hashes

log = logging.getLogger(__name__)

B2_ORIGIN: Final = "https://image-b2.civitai.com"
_MODEL_FILE_TYPES: Final = frozenset({"model", "pruned model"})
_STOP: Final = object()


@dataclass(frozen=True, slots=True)
class CollectOptions:
    """What to collect and how hard; `types` None means every model type."""

    root: Path
    types: tuple[str, ...] | None = ("LORA", "LoCon", "DoRA")
    models: bool = True
    images: bool = True
    dry_run: bool = False
    retry_failed: bool = False
    download_workers: int = 4
    image_workers: int = 6
    save_interval_s: float = 2.0


@dataclass(slots=True)
class _FileTask:
    job: FileJob
    model_type: str
    model_id: int
    name: str
    adopt: bool
    model_name: str


@dataclass(slots=True)
class _ImageTask:
    image: dict[str, Any]
    meta: dict[str, Any] | None
    context: SidecarContext
    folder: Path
    showcase: bool
    urls: list[str]
    on_disk: dict[int, str]

    @property
    def ident(self) -> int:
        return int(self.image["id"])


@dataclass(slots=True)
class _ModelPlan:
    model: dict[str, Any]
    folder: Path
    record: ModelRecord
    versions: list[dict[str, Any]]
    on_disk: dict[int, str] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _CreatorRun:
    username: str
    site: str
    client: CivitaiClient
    book: DownloadLog
    tally: Tally
    plans: list[_ModelPlan]
    file_tasks: list[_FileTask]


def seed_type(model_type: str) -> str:
    """The log's `type` for a model file: `lora` for LoRA-like models (as the collection always wrote it)."""
    lowered = model_type.lower()
    return "lora" if lowered in LORA_TYPES else lowered or "model"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _versions(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    versions = model.get("modelVersions")
    return (
        [v for v in versions if isinstance(v, dict) and _int(v.get("id")) is not None]
        if isinstance(versions, list)
        else []
    )


def _files(version: Mapping[str, Any]) -> list[dict[str, Any]]:
    files = version.get("files")
    return (
        [f for f in files if isinstance(f, dict) and _int(f.get("id")) is not None] if isinstance(files, list) else []
    )


def _expected_size(file: Mapping[str, Any]) -> int | None:
    size = file.get("sizeKB")
    if isinstance(size, int | float) and not isinstance(size, bool) and size > 0:
        return int(size * 1024)
    return None


def _sha256(file: Mapping[str, Any]) -> str | None:
    hashes = file.get("hashes")
    value = hashes.get("SHA256") if isinstance(hashes, dict) else None
    return value.upper() if isinstance(value, str) and len(value) == 64 else None


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically unless the file already holds exactly `data` (reruns then touch nothing)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)


def _scan_images(folder: Path) -> dict[int, str]:
    """Image files already in a model folder (final names only), by image id."""
    found: dict[int, str] = {}
    try:
        with os.scandir(folder) as listing:
            for item in listing:
                image_id = image_id_of(item.name)
                if image_id is not None and item.is_file():
                    found[image_id] = item.name
    except FileNotFoundError:
        return found
    return found


class Collector:
    """Runs collections; one instance per run (it owns the executors and the quota state)."""

    def __init__(
        self,
        client: CivitaiClient,
        options: CollectOptions,
        *,
        filters: WordFilter,
        on_event: EventSink | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.filters = filters
        self._sink = on_event
        self.executors = Executors(
            ExecutorSizes(io=min(64, options.download_workers + options.image_workers + 1), hash=2)
        )
        self.quota_hit = False
        self.total = Tally()

    def emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.emit(Notice(message, "warning"))

    # The run -----------------------------------------------------------------------------------------------

    async def run(self, creators: Iterable[CreatorRef]) -> Tally:
        """Check the key once, then collect each creator; a creator that cannot be listed is reported and
        skipped. Returns the tally of everything (also in `total`)."""
        try:
            self.emit(Phase("checking the CivitAI API key"))
            me = await self.client.me()
            if me is not None:
                self.emit(Notice(f"API key accepted for {me.get('username') or 'your account'}"))
            else:
                self.emit(Notice("no CivitAI API key: public items only; files that need a key are logged"))
            for creator in creators:
                await self._creator(creator)
        finally:
            self.executors.shutdown(wait=True)
        return self.total

    def site_for(self, creator: CreatorRef) -> str:
        """The API origin for a creator: the host its URL named when the configured one is CivitAI's own."""
        configured = self.client.base_url
        if creator.site and is_civitai_host(host_of(configured)):
            return creator.site
        return configured

    async def _creator(self, creator: CreatorRef) -> None:
        username = creator.username
        site = self.site_for(creator)
        client = self.client.for_site(site)
        tally = Tally()
        self.emit(CreatorStarted(username, site))
        try:
            listing = await list_models(client, username, types=self.options.types, warn=self.warn)
        except CivitaiError as exc:
            message = f"{username}: cannot list models: {exc}"
            self.emit(Notice(message, "error"))
            tally.creator_errors.append(message)
            self._finish(username, tally)
            return
        for warning in listing.warnings:
            self.warn(warning)
        if not listing.models:
            kinds = "models" if self.options.types is None else "/".join(self.options.types) + " models"
            self.emit(Notice(f"{username}: no {kinds} found ({listing.listed} models listed in all)", "warning"))
        book = await self.executors.run(
            "io",
            lambda: DownloadLog.open(
                self.options.root, username, site=site, save_interval_s=self.options.save_interval_s
            ),
        )
        if book.problem:
            self.warn(book.problem)
        try:
            state = await self._plan(username, site, client, book, listing.models, tally)
            if self.options.dry_run:
                await self._dry_images(state)
            else:
                await self.executors.run("io", book.save)
                await self._execute(state)
        finally:
            # Also on the way out of a cancelled run, so it is done here rather than through an executor.
            book.save()
            self._finish(username, tally)

    def _finish(self, username: str, tally: Tally) -> None:
        self.total.merge(tally)
        self.emit(CreatorFinished(username, tally))

    # Planning ---------------------------------------------------------------------------------------------------

    async def _plan(
        self,
        username: str,
        site: str,
        client: CivitaiClient,
        book: DownloadLog,
        models: Mapping[int, dict[str, Any]],
        tally: Tally,
    ) -> _CreatorRun:
        base = user_dir(self.options.root, username)
        assigned = book.folders()
        plans: list[_ModelPlan] = []
        file_tasks: list[_FileTask] = []
        counts = {"todo": 0, "bytes": 0, "verified": 0, "waiting": 0, "versions": 0}
        now = utc_now()
        for model_id, model in models.items():
            name = str(model.get("name") or f"model {model_id}")
            folder_name = model_folder_name(model_id, name, assigned)
            assigned[model_id] = folder_name
            old = book.model(model_id)
            record = ModelRecord(name, folder_name, dict(old.files) if old else {}, [])
            folder = inside(base, folder_name)
            versions = _versions(model)
            record.versions = [int(v["id"]) for v in versions]
            counts["versions"] += len(versions)
            plan = _ModelPlan(model, folder, record, versions)
            plans.append(plan)
            model_type = str(model.get("type") or "")
            for version in versions:
                version_id = int(version["id"])
                for file in _files(version):
                    file_id = int(file["id"])
                    if file_id not in record.files:
                        taken = [n for fid, n in record.files.items() if fid != file_id]
                        record.files[file_id] = model_file_name(file_id, str(file.get("name") or ""), taken)
                    if not self.options.models:
                        continue
                    target = inside(folder, record.files[file_id])
                    job = FileJob(version_id, file_id, target, _sha256(file), _expected_size(file))
                    entry = book.get("model", file_id) or book.done_at(target)
                    label = record.files[file_id]
                    if entry is not None and entry.status is Status.DONE:
                        if await self.executors.run("io", verified, entry):
                            counts["verified"] += 1
                            self._settled(
                                tally, ItemFinished("model", file_id, label, VERIFIED, size=entry.size, model=name)
                            )
                            continue
                    elif entry is not None and not due(
                        entry, now=now, retry_failed=self.options.retry_failed, have_key=bool(client.api_key)
                    ):
                        counts["waiting"] += 1
                        self._settled(
                            tally,
                            ItemFinished(
                                "model",
                                file_id,
                                label,
                                entry.status.value,
                                entry.reason,
                                entry.info,
                                model=name,
                                retry_after=entry.retry_after,
                            ),
                        )
                        continue
                    adopt = entry is None and job.expected_sha256 is not None
                    counts["todo"] += 1
                    counts["bytes"] += job.expected_size or 0
                    file_tasks.append(_FileTask(job, model_type, model_id, label, adopt, name))
            book.set_model(model_id, record)
        self.emit(
            CreatorPlanned(
                username,
                len(plans),
                counts["versions"],
                counts["todo"],
                counts["bytes"],
                counts["verified"],
                counts["waiting"],
            )
        )
        return _CreatorRun(username, site, client, book, tally, plans, file_tasks)

    def _settled(self, tally: Tally, event: ItemFinished) -> None:
        tally.add(event)
        self.emit(event)

    # Running ----------------------------------------------------------------------------------------------------

    async def _execute(self, state: _CreatorRun) -> None:
        file_queue: asyncio.Queue[object] = asyncio.Queue(maxsize=self.options.download_workers * 2)
        image_queue: asyncio.Queue[object] = asyncio.Queue(maxsize=self.options.image_workers * 4)
        models = ModelDownloader(state.client, self.executors)
        images = ImageDownloader(state.client, self.executors)
        for task in state.file_tasks:
            key = item_key("model", task.job.file_id)
            self.emit(FileQueued(key, "model", task.name, task.model_name, task.job.expected_size))

        async def feed_files() -> None:
            try:
                for task in state.file_tasks:
                    await file_queue.put(task)
            finally:
                for _ in range(self.options.download_workers):
                    await file_queue.put(_STOP)

        async def feed_images() -> None:
            try:
                await self._walk_models(state, image_queue)
            finally:
                for _ in range(self.options.image_workers):
                    await image_queue.put(_STOP)

        async def file_worker() -> None:
            while (task := await file_queue.get()) is not _STOP:
                assert isinstance(task, _FileTask)
                await self._file(state, models, task)

        async def image_worker() -> None:
            while (task := await image_queue.get()) is not _STOP:
                assert isinstance(task, _ImageTask)
                await self._image(state, images, task)

        await _all(
            [
                feed_files(),
                feed_images(),
                *(file_worker() for _ in range(self.options.download_workers)),
                *(image_worker() for _ in range(self.options.image_workers)),
            ]
        )

    def _write_model_files(self, plan: _ModelPlan) -> None:
        plan.folder.mkdir(parents=True, exist_ok=True)
        _write_if_changed(plan.folder / MODEL_JSON, dump_json(plan.model))
        description = plan.model.get("description")
        _write_if_changed(
            plan.folder / DESCRIPTION_HTML, (description if isinstance(description, str) else "").encode("utf-8")
        )
        plan.on_disk = _scan_images(plan.folder)

    def _write_version_files(
        self, plan: _ModelPlan, version: Mapping[str, Any], details: Mapping[str, Any] | None
    ) -> None:
        version_id = int(version["id"])
        _write_if_changed(plan.folder / version_json_name(version_id), dump_json(details or version))
        words = (details or {}).get("trainedWords") or version.get("trainedWords") or []
        lines = [w.strip() for w in words if isinstance(w, str) and w.strip()] if isinstance(words, list) else []
        _write_if_changed(
            plan.folder / trigger_words_name(version_id), "".join(f"{w}\n" for w in lines).encode("utf-8")
        )

    async def _file(self, state: _CreatorRun, downloader: ModelDownloader, task: _FileTask) -> None:
        job = task.job
        key = item_key("model", job.file_id)
        base = Entry(
            "model",
            str(job.file_id),
            seed_type(task.model_type),
            Status.FAILED,
            path=str(job.target),
            sha256_expected=job.expected_sha256,
            model_id=task.model_id,
            version_id=job.version_id,
        )
        if task.adopt and await self.executors.run("io", job.target.is_file):
            hashes = await self.executors.run("hash", compute_hashes, job.target)
            if hashes.sha256 == job.expected_sha256:
                base.status, base.size, base.sha256 = Status.DONE, hashes.size, hashes.sha256
                state.book.record(base)
                finished = ItemFinished(
                    "model", job.file_id, task.name, VERIFIED, size=hashes.size, model=task.model_name
                )
                self._settled(state.tally, finished)
                return
        if self.quota_hit:
            outcome = Outcome(
                Status.DEFERRED,
                "quota",
                "not tried: the download quota was reached earlier in this run",
                attempts=0,
                retry_after=defer_until(QUOTA_DEFER_HOURS),
            )
        else:
            self.emit(FileStarted(key, task.name, job.expected_size))
            last = [0.0]

            def progress(done: int, total: int | None) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.1 or (total is not None and done >= total):
                    last[0] = now
                    self.emit(FileProgress(key, done, total))

            outcome = await downloader.download(job, progress)
            if outcome.quota and not self.quota_hit:
                self.quota_hit = True
                self.warn("CivitAI's download quota is reached: no more model files this run (images go on)")
        base.status = outcome.status
        base.reason = outcome.reason
        base.info = outcome.info
        base.size = outcome.size
        base.sha256 = outcome.sha256
        base.retry_after = outcome.retry_after
        base.http_status = outcome.http_status
        base.attempts = outcome.attempts
        if outcome.status not in (Status.DONE, Status.HASH_MISMATCH):
            base.path = None
        state.book.record(base)
        self._settled(
            state.tally,
            ItemFinished(
                "model",
                job.file_id,
                task.name,
                outcome.status.value,
                outcome.reason,
                outcome.info,
                outcome.size,
                key,
                model=task.model_name,
                retry_after=outcome.retry_after,
            ),
        )

    async def _walk_models(self, state: _CreatorRun, queue: asyncio.Queue[object]) -> None:
        """Per model: its JSON and description; per version: its JSON and trigger words, and (unless images
        are off) its images, settled from disk or queued for download. Runs beside the file downloads."""
        for plan in state.plans:
            self.emit(Phase(f"{state.username}: images of {plan.record.name}"))
            await self.executors.run("io", self._write_model_files, plan)
            for version in plan.versions:
                if not self.options.images:
                    await self.executors.run("io", self._write_version_files, plan, version, None)
                    continue
                tasks = await self._version_tasks(state, plan, version)
                if tasks is None:
                    continue
                todo = count = 0
                for task in tasks:
                    if task.ident in plan.queued:
                        continue
                    plan.queued.add(task.ident)
                    count += 1
                    settled = await self.executors.run("io", self._settle_offline, state, task)
                    if settled is not None:
                        self._settled(state.tally, settled)
                        continue
                    todo += 1
                    self.emit(FileQueued(item_key("image", task.ident), "image", str(task.ident), plan.record.name))
                    await queue.put(task)
                self.emit(ImagesFound(state.username, int(version["id"]), count, todo))

    async def _dry_images(self, state: _CreatorRun) -> None:
        todo = verified_count = waiting = 0
        if self.options.images:
            for plan in state.plans:
                plan.on_disk = await self.executors.run("io", _scan_images, plan.folder)
                for version in plan.versions:
                    for task in await self._version_tasks(state, plan, version, write=False) or []:
                        if task.ident in plan.queued:
                            continue
                        plan.queued.add(task.ident)
                        entry = state.book.get("image", task.ident)
                        if task.ident in plan.on_disk or (entry is not None and self._verified_here(entry, task)):
                            verified_count += 1
                        elif entry is not None and entry.status is not Status.DONE and not self._due(state, entry):
                            waiting += 1
                        else:
                            todo += 1
        model_counts = state.tally.counts
        self.emit(
            CreatorPlanned(
                state.username,
                len(state.plans),
                sum(len(p.versions) for p in state.plans),
                len(state.file_tasks),
                sum(t.job.expected_size or 0 for t in state.file_tasks),
                state.tally.count(VERIFIED, "model"),
                sum(n for (k, s), n in model_counts.items() if k == "model" and s != VERIFIED),
                todo,
                verified_count,
                waiting,
            )
        )

    def _due(self, state: _CreatorRun, entry: Entry) -> bool:
        return due(entry, now=utc_now(), retry_failed=self.options.retry_failed, have_key=bool(state.client.api_key))

    def _version_refs(self, plan: _ModelPlan, version: Mapping[str, Any]) -> list[ModelFileRef]:
        refs: list[tuple[int, ModelFileRef]] = []
        for file in _files(version):
            kind = str(file.get("type") or "Model").lower()
            if kind not in _MODEL_FILE_TYPES:
                continue
            file_id = int(file["id"])
            hashes = file.get("hashes")
            ref = ModelFileRef(
                file_id,
                str(file.get("name") or ""),
                plan.record.files.get(file_id, str(file.get("name") or "")),
                {k: v for k, v in hashes.items() if isinstance(v, str)} if isinstance(hashes, dict) else {},
            )
            refs.append((0 if file.get("primary") else 1, ref))
        return [ref for _, ref in sorted(refs, key=lambda pair: pair[0])]

    async def _version_tasks(
        self,
        state: _CreatorRun,
        plan: _ModelPlan,
        version: dict[str, Any],
        *,
        write: bool = True,
    ) -> list[_ImageTask] | None:
        """The version's images (the creator's list, plus the showcase) as tasks; None when it cannot be listed."""
        version_id = int(version["id"])
        details = await version_details(state.client, version_id, self.warn)
        if write:
            await self.executors.run("io", self._write_version_files, plan, version, details)
        try:
            listed = await version_images(state.client, version_id, state.username, self.warn)
        except CivitaiError as exc:
            message = f"{state.username}: images of version {version_id} cannot be listed: {exc}"
            self.emit(Notice(message, "error"))
            state.tally.listing_errors += 1
            return None
        showcase = showcase_images(version, details)
        by_id: dict[int, dict[str, Any]] = {}
        for image in listed:
            by_id[int(image["id"])] = image
        for ident, image in showcase.items():
            by_id.setdefault(ident, image)
        model = plan.model
        context = SidecarContext(
            model_id=int(model["id"]),
            model_name=str(model.get("name") or ""),
            model_type=str(model.get("type") or ""),
            version_id=version_id,
            version_name=str(version.get("name") or ""),
            base_model=str(version.get("baseModel") or ""),
            files=self._version_refs(plan, version),
            site=state.site if is_civitai_host(host_of(state.site)) else "https://civitai.com",
            creator=state.username,
        )
        tasks: list[_ImageTask] = []
        for ident, image in by_id.items():
            url = image.get("url")
            if not isinstance(url, str) or not url:
                continue
            meta = unwrap_meta(image.get("meta"))
            if meta is None and ident in showcase:
                meta = unwrap_meta(showcase[ident].get("meta"))
            urls = self._image_urls(url)
            tasks.append(_ImageTask(image, meta, context, plan.folder, ident in showcase, urls, plan.on_disk))
        return tasks

    @staticmethod
    def _image_urls(url: str) -> list[str]:
        """The original's address and, for a UUID-keyed CivitAI image, its B2 origin copy; an image served
        from elsewhere (a mirror, the sandbox) looks for the B2 path on its own host."""
        original = original_url(url)
        parts = split_url(original)
        if parts is None or parts.scheme not in ("http", "https"):
            return []
        origin = B2_ORIGIN if is_civitai_host(parts.hostname or "") else f"{parts.scheme}://{parts.netloc}"
        fallback = b2_url(original, origin)
        return [original, fallback] if fallback and fallback != original else [original]

    @staticmethod
    def _verified_here(entry: Entry, task: _ImageTask) -> bool:
        """A success entry whose file is in this task's folder, still there with its size."""
        return entry.path is not None and Path(entry.path).parent == task.folder and verified(entry)

    def _settle_offline(self, state: _CreatorRun, task: _ImageTask) -> ItemFinished | None:
        """Runs on an I/O thread: settle an image that needs no download (verified, found on disk, or not due)
        and return its event; None when it must be downloaded."""
        ident = task.ident
        entry = state.book.get("image", ident)
        if entry is not None and self._verified_here(entry, task):
            self._ensure_sidecar(task, entry.path or "")
            model = task.context.model_name
            return ItemFinished("image", ident, Path(entry.path or "").name, VERIFIED, size=entry.size, model=model)
        if ident in task.on_disk:
            path = task.folder / task.on_disk[ident]
            try:
                size = path.stat().st_size
            except OSError:
                return None
            if entry is None or entry.status is not Status.DONE or not verified(entry):
                found = Entry(
                    "image",
                    str(ident),
                    "image",
                    Status.DONE,
                    path=str(path),
                    size=size,
                    model_id=task.context.model_id,
                    version_id=task.context.version_id,
                )
                state.book.record(found)
            self._ensure_sidecar(task, task.urls[0])
            return ItemFinished("image", ident, path.name, VERIFIED, size=size, model=task.context.model_name)
        if entry is not None and entry.status is not Status.DONE and not self._due(state, entry):
            return ItemFinished(
                "image",
                ident,
                str(ident),
                entry.status.value,
                entry.reason,
                entry.info,
                model=task.context.model_name,
                retry_after=entry.retry_after,
            )
        return None

    def _ensure_sidecar(self, task: _ImageTask, url: str) -> None:
        if not (task.folder / sidecar_name(task.ident)).exists():
            self._write_sidecar(task, task.urls[0])

    def _write_sidecar(self, task: _ImageTask, url: str) -> None:
        document = build_sidecar(
            task.image, task.meta, task.context, self.filters, image_url=url, showcase=task.showcase
        )
        atomic_write_bytes(task.folder / sidecar_name(int(task.image["id"])), dump_json(document))

    async def _image(self, state: _CreatorRun, downloader: ImageDownloader, task: _ImageTask) -> None:
        ident = int(task.image["id"])
        self.emit(ImageStarted(item_key("image", ident)))
        entry = Entry(
            "image",
            str(ident),
            "image",
            Status.DONE,
            model_id=task.context.model_id,
            version_id=task.context.version_id,
            attempts=1,
        )
        try:
            result = await downloader.fetch(ident, task.urls, task.folder)
        except ImageFailure as failure:
            entry.status, entry.reason, entry.info, entry.http_status = (
                Status.FAILED,
                failure.reason,
                failure.info,
                failure.http_status,
            )
            state.book.record(entry)
            failed = ItemFinished(
                "image", ident, str(ident), "failed", failure.reason, failure.info, model=task.context.model_name
            )
            self._settled(state.tally, failed)
            return
        try:
            await self.executors.run("io", self._write_sidecar, task, result.url)
        except DiskFullError:
            raise
        except PeropixError as exc:  # the image is there; its sidecar is retried by the next run
            entry.status, entry.reason, entry.info = Status.FAILED, "copy_failed", f"sidecar of {ident}: {exc}"
        entry.path, entry.size = str(result.path), result.size
        state.book.record(entry)
        self._settled(
            state.tally,
            ItemFinished(
                "image",
                ident,
                result.path.name,
                entry.status.value,
                entry.reason,
                entry.info,
                result.size,
                model=task.context.model_name,
            ),
        )


async def _all(jobs: list[Awaitable[None]]) -> None:
    """Run jobs together; the first failure (or a cancellation) cancels the rest, which are awaited."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
