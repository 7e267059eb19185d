"""One generation as a job: the request sent, each streamed step reported, every image saved and indexed.

A job runs on any `GenerationBackend`: the NovelAI client or the local engine. The TUI and `peropix generate`
save images the same way, through `save_output`: the file goes into the outputs folder with the provider
("nai", "sandbox" or "local") recorded in its metadata, then into the history store with a thumbnail. An image that
cannot be indexed is still saved (the history can be rebuilt from the folder); one that cannot be saved fails
the job, since nothing else would keep it. With auto-save off the server's image goes into the unsaved folder
instead, still indexed, and `save_unsaved` later moves it into the outputs folder with the saving settings.

Both also expand wildcards the same way, through `expand_request`: each job (each request of a command) draws
its own variation, and what was drawn, from which templates and with which seed, is saved with its images.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.history import HistoryError, HistoryStore, make_thumbnail
from peropix_tui.core.image_format import sniff_image_format
from peropix_tui.core.jobs import JobContext
from peropix_tui.core.metadata.reader import MAX_FILE_BYTES
from peropix_tui.core.outputs import NameFields, OutputError, SaveOptions, save_image
from peropix_tui.core.prompt import Dialect
from peropix_tui.core.prompt.wildcards import RECORD_KEY, Expander, WildcardLibrary
from peropix_tui.engine.types import GeneratedImage, GenerationRequest, ProgressEvent

log = logging.getLogger(__name__)

HistoryOpener = Callable[[], HistoryStore]
"""Returns the history store (opening it on first use); raises PeropixError when it cannot be used."""

_SAVING_UNSAVED = threading.Lock()
"""One `save_unsaved` at a time: a key pressed twice must not save the same image twice."""


class GenerationBackend(Protocol):
    """What a job needs of a backend: NovelAIClient and LocalEngine are both one. Cancelling the job cancels the
    awaiting task; each backend stops its own work on that (the local engine at its next model call)."""

    async def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        stream: bool = True,
    ) -> list[GeneratedImage]: ...


@dataclass(frozen=True, slots=True)
class SavedOutput:
    """An image written into the outputs folder (or the unsaved one); `entry_id` is None when it could not be
    indexed."""

    path: Path
    seed: int
    index: int
    entry_id: int | None = None
    problem: str | None = None
    """Why the image is not in the history, as one line to show; None when it is."""
    unsaved: bool = False
    """True when the image waits in the unsaved folder (auto-save off) rather than in the outputs folder."""


@dataclass(frozen=True, slots=True)
class ExpandedRequest:
    """A request with its wildcards drawn, and the record of the draw (None when there were none)."""

    request: GenerationRequest
    record: dict[str, Any] | None = None

    @property
    def peropix_fields(self) -> dict[str, Any]:
        """What the images of this request add to their `peropix` metadata."""
        return {} if self.record is None else {RECORD_KEY: self.record}


def expand_request(
    request: GenerationRequest, library: WildcardLibrary | None, seed: int, *, dialect: Dialect = Dialect.NAI
) -> ExpandedRequest:
    """`request` with the wildcards of its prompt, negative and character prompts drawn, in that order, by one
    `random.Random(seed)`. Raises WildcardError (one line, naming the file) when one cannot be drawn."""
    expander = Expander(library, seed, dialect=dialect)
    prompt = expander.expand(request.prompt, field="prompt")
    negative = expander.expand(request.negative, field="negative")
    characters = tuple(
        dataclasses.replace(
            character,
            prompt=expander.expand(character.prompt, field=f"character {number}"),
            negative=expander.expand(character.negative, field=f"character {number} negative"),
        )
        for number, character in enumerate(request.characters, 1)
    )
    record = expander.record()
    if record is None:
        return ExpandedRequest(request)
    expanded = dataclasses.replace(request, prompt=prompt, negative=negative, characters=characters)
    return ExpandedRequest(expanded, record)


def save_output(
    image: GeneratedImage,
    *,
    outputs_dir: Path,
    provider: str,
    history: HistoryOpener | None,
    options: SaveOptions | None = None,
    unsaved_dir: Path | None = None,
    extra_peropix: Mapping[str, Any] | None = None,
) -> SavedOutput:
    """Save `image` and index it (blocking: run it in an executor). Raises PeropixError only when the file
    cannot be written; an indexing failure is reported in `problem`.

    The file is written with `options` (as received when None). With `unsaved_dir` (auto-save off) the server's
    image is kept there as it came, to be saved later with `save_unsaved`. `extra_peropix` (such as the wildcard
    record) goes into the image's `peropix` metadata beside the provider.
    """
    app_fields = {"provider": provider, **(extra_peropix or {})}
    unsaved = unsaved_dir is not None
    names = NameFields(
        index=image.index,
        prompt=image.metadata.prompt or image.request.prompt,
        model=image.metadata.model or image.request.model,
        provider=provider,
    )
    path = save_image(
        image.data,
        seed=image.seed,
        outputs_dir=unsaved_dir if unsaved_dir is not None else outputs_dir,
        extra_peropix=app_fields,
        fmt=image.format,
        options=None if unsaved else options,
        names=names,
    )
    if history is None:
        return SavedOutput(path, image.seed, image.index, unsaved=unsaved)
    try:
        store = history()
        meta = dataclasses.replace(image.metadata, peropix={**image.metadata.peropix, **app_fields})
        entry_id = store.add(path, meta, provider=provider, thumbnail=make_thumbnail(image.data))
    except PeropixError as exc:
        log.warning("%s was saved but not indexed: %s", path, exc)
        problem = f"{path} was saved but not indexed: {exc}"
        return SavedOutput(path, image.seed, image.index, problem=problem, unsaved=unsaved)
    return SavedOutput(path, image.seed, image.index, entry_id, unsaved=unsaved)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def save_unsaved(
    store: HistoryStore, entry_id: int, *, outputs_dir: Path, unsaved_dir: Path, options: SaveOptions
) -> Path:
    """Save an image that waits in the unsaved folder into the outputs folder with `options`, point its history
    entry at the new file and delete the waiting one; returns the new path (blocking: run it in a worker).

    The name's date and time are the image's own (when it was generated), not the moment it is saved.
    """
    with _SAVING_UNSAVED:
        return _save_unsaved(store, entry_id, outputs_dir=outputs_dir, unsaved_dir=unsaved_dir, options=options)


def _save_unsaved(
    store: HistoryStore, entry_id: int, *, outputs_dir: Path, unsaved_dir: Path, options: SaveOptions
) -> Path:
    entry = store.get(entry_id)
    if entry is None:
        raise HistoryError(f"no history entry with id {entry_id}")
    if entry.deleted:
        raise OutputError(f"{entry.path.name} is in the trash; restore it first")
    if not _inside(entry.path, unsaved_dir):
        raise OutputError(f"{entry.path.name} is already saved, in {entry.path.parent}")
    try:
        with entry.path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise OutputError(f"cannot read the unsaved image {entry.path}: {exc.strerror or exc}") from exc
    kind = sniff_image_format(data[:16])
    if kind not in ("png", "webp") or len(data) > MAX_FILE_BYTES:
        raise OutputError(f"{entry.path} is not an image as the server sent it")
    meta = entry.metadata()
    seed = entry.seed if entry.seed is not None and entry.seed >= 0 else 0
    names = NameFields(prompt=meta.prompt or "", model=entry.model or "", provider=entry.provider)
    when = datetime.fromtimestamp(entry.created)
    path = save_image(data, seed=seed, outputs_dir=outputs_dir, when=when, fmt=kind, options=options, names=names)
    store.relocate(entry_id, path)
    try:
        entry.path.unlink()
    except OSError as exc:
        log.warning("%s was saved as %s but could not be deleted: %s", entry.path, path, exc.strerror or exc)
    return path


async def run_generation(
    ctx: JobContext,
    backend: GenerationBackend,
    request: GenerationRequest,
    *,
    outputs_dir: Path,
    provider: str,
    history: HistoryOpener | None,
    on_saved: Callable[[SavedOutput], None],
    options: SaveOptions | None = None,
    unsaved_dir: Path | None = None,
    extra_peropix: Mapping[str, Any] | None = None,
) -> list[SavedOutput]:
    """Generate `request` streamed on `backend`, reporting each step as job progress over the whole batch (with
    the preview frame under the `preview` key), then save every image in the io pool (see `save_output` for
    `options`, `unsaved_dir` and `extra_peropix`) and hand each to `on_saved` (on the loop thread)."""

    def progress(event: ProgressEvent) -> None:
        steps = max(event.total, 1)
        done = event.sample_index * steps + min(event.step, steps)
        if event.preview is None:
            ctx.progress(done, steps * request.n)
        else:
            ctx.progress(done, steps * request.n, preview=event.preview)

    images = await backend.generate(request, on_progress=progress, stream=True)
    saved: list[SavedOutput] = []
    for image in images:
        save = partial(
            save_output,
            image,
            outputs_dir=outputs_dir,
            provider=provider,
            history=history,
            options=options,
            unsaved_dir=unsaved_dir,
            extra_peropix=extra_peropix,
        )
        output = await ctx.run_in("io", save)
        saved.append(output)
        on_saved(output)
    return saved
