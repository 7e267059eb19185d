"""One generation as a job: the request sent, each streamed step reported, every image saved and indexed.

The TUI and `peropix generate` save images the same way, through `save_output`: the file goes into the outputs
folder with the provider recorded in its metadata, then into the history store with a thumbnail. An image that
cannot be indexed is still saved (the history can be rebuilt from the folder); one that cannot be saved fails
the job, since nothing else would keep it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.history import HistoryStore, make_thumbnail
from peropix_tui.core.jobs import JobContext
from peropix_tui.core.outputs import save_image
from peropix_tui.engine.nai.client import NovelAIClient, stream_steps
from peropix_tui.engine.types import GeneratedImage, GenerationRequest, ProgressEvent

log = logging.getLogger(__name__)

HistoryOpener = Callable[[], HistoryStore]
"""Returns the history store (opening it on first use); raises PeropixError when it cannot be used."""


@dataclass(frozen=True, slots=True)
class SavedOutput:
    """An image written into the outputs folder; `entry_id` is None when it could not be indexed."""

    path: Path
    seed: int
    index: int
    entry_id: int | None = None
    problem: str | None = None
    """Why the image is not in the history, as one line to show; None when it is."""


def save_output(
    image: GeneratedImage, *, outputs_dir: Path, provider: str, history: HistoryOpener | None
) -> SavedOutput:
    """Save `image` and index it (blocking: run it in an executor). Raises PeropixError only when the file
    cannot be written; an indexing failure is reported in `problem`."""
    app_fields = {"provider": provider}
    path = save_image(image.data, seed=image.seed, outputs_dir=outputs_dir, extra_peropix=app_fields, fmt=image.format)
    if history is None:
        return SavedOutput(path, image.seed, image.index)
    try:
        store = history()
        meta = dataclasses.replace(image.metadata, peropix={**image.metadata.peropix, **app_fields})
        entry_id = store.add(path, meta, provider=provider, thumbnail=make_thumbnail(image.data))
    except PeropixError as exc:
        log.warning("%s was saved but not indexed: %s", path, exc)
        return SavedOutput(path, image.seed, image.index, problem=f"{path} was saved but not indexed: {exc}")
    return SavedOutput(path, image.seed, image.index, entry_id)


async def run_generation(
    ctx: JobContext,
    client: NovelAIClient,
    request: GenerationRequest,
    *,
    outputs_dir: Path,
    provider: str,
    history: HistoryOpener | None,
    on_saved: Callable[[SavedOutput], None],
) -> list[SavedOutput]:
    """Generate `request` streamed, reporting each step as job progress (with the preview frame under the
    `preview` key), then save every image in the io pool and hand each to `on_saved` (on the loop thread)."""
    steps = stream_steps(request)
    total = steps * request.n

    def progress(event: ProgressEvent) -> None:
        done = event.sample_index * steps + min(event.step, steps)
        if event.preview is None:
            ctx.progress(done, total)
        else:
            ctx.progress(done, total, preview=event.preview)

    images = await client.generate(request, on_progress=progress, stream=True)
    saved: list[SavedOutput] = []
    for image in images:
        save = partial(save_output, image, outputs_dir=outputs_dir, provider=provider, history=history)
        output = await ctx.run_in("io", save)
        saved.append(output)
        on_saved(output)
    return saved
