"""A generation as a job: streamed steps as job progress, every image saved and indexed, failures that keep files.

Runs the real client against the sandbox server inside a real job manager.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sandbox_nai_helpers import MakeClient, small

from peropix_tui.core.errors import PeropixError
from peropix_tui.core.history import HistoryError, HistoryStore
from peropix_tui.core.jobs import JobContext, JobEvent, JobManager, JobState
from peropix_tui.core.metadata import read_metadata
from peropix_tui.engine.nai.errors import NaiPaymentError
from peropix_tui.engine.run import SavedOutput, run_generation, save_output
from peropix_tui.engine.types import GeneratedImage
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN, SandboxAccount
from peropix_tui.sandbox.nai_server import NaiSandbox


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


async def generated(make_client: MakeClient) -> GeneratedImage:
    async with make_client() as client:
        [image] = await client.generate(small(), stream=False)
    return image


async def test_a_job_streams_steps_then_saves_and_indexes_every_image(make_client: MakeClient, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    store = HistoryStore(tmp_path / "history.sqlite3")
    saved: list[SavedOutput] = []
    events: list[JobEvent] = []
    async with JobManager(limits={"nai": 1}) as jobs:
        jobs.subscribe(events.append)
        client = make_client()

        async def job(ctx: JobContext) -> list[SavedOutput]:
            return await run_generation(
                ctx,
                client,
                small(n=2, seed=500),
                outputs_dir=outputs,
                provider="nai",
                history=lambda: store,
                on_saved=saved.append,
            )

        submitted = jobs.submit(job, name="two", kind="nai-generate", group="nai")
        finished = await jobs.wait(submitted.id)
    assert finished.state is JobState.DONE
    assert finished.result == saved
    assert [(s.seed, s.index) for s in saved] == [(500, 0), (501, 1)]
    steps = [e for e in events if e.kind == "progress"]
    # 4 steps per image, two images: the second image's steps continue after the first's
    assert [e.progress.done for e in steps] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {e.progress.total for e in steps} == {8}
    assert all(isinstance(e.extra["preview"], bytes) and e.extra["preview"][:2] == b"\xff\xd8" for e in steps)
    for output in saved:
        assert output.path.parent.parent == outputs and output.problem is None
        assert read_metadata(output.path).peropix["provider"] == "nai"
        assert output.entry_id is not None
        entry = store.get(output.entry_id)
        assert entry is not None and entry.path == output.path.resolve() and entry.seed == output.seed
        assert store.thumbnail(output.entry_id)
    store.close()


async def test_a_server_refusal_fails_the_job_with_the_server_words_and_saves_nothing(
    sandbox: NaiSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    sandbox.set_account(SANDBOX_TOKEN, SandboxAccount(fixed_anlas=1))
    async with JobManager() as jobs:
        client = make_client()

        async def job(ctx: JobContext) -> list[SavedOutput]:
            return await run_generation(
                ctx, client, small(steps=28), outputs_dir=tmp_path, provider="nai", history=None, on_saved=print
            )

        finished = await jobs.wait(jobs.submit(job, name="poor", kind="nai-generate").id)
    assert finished.state is JobState.FAILED and finished.failure is not None
    assert isinstance(finished.failure.exception, NaiPaymentError)
    assert "balance is 1" in finished.failure.message
    assert not pngs(tmp_path)


async def test_cancelling_while_frames_arrive_ends_cancelled_with_nothing_saved(
    sandbox: NaiSandbox, make_client: MakeClient, tmp_path: Path
) -> None:
    sandbox.delay_s = 5.0
    frames = asyncio.Event()
    async with JobManager() as jobs:
        jobs.subscribe(lambda e: frames.set() if e.kind == "progress" else None)
        client = make_client()

        async def job(ctx: JobContext) -> list[SavedOutput]:
            return await run_generation(
                ctx, client, small(steps=28), outputs_dir=tmp_path, provider="nai", history=None, on_saved=print
            )

        submitted = jobs.submit(job, name="slow", kind="nai-generate")
        await asyncio.wait_for(frames.wait(), 10)
        assert jobs.cancel(submitted.id)
        finished = await jobs.wait(submitted.id)
    assert finished.state is JobState.CANCELLED
    assert not pngs(tmp_path)


async def test_saved_without_a_history(make_client: MakeClient, tmp_path: Path) -> None:
    image = await generated(make_client)
    output = save_output(image, outputs_dir=tmp_path, provider="sandbox", history=None)
    assert output.path.exists() and output.entry_id is None and output.problem is None
    assert read_metadata(output.path).peropix["provider"] == "sandbox"


async def test_an_image_that_cannot_be_indexed_is_still_saved(make_client: MakeClient, tmp_path: Path) -> None:
    image = await generated(make_client)

    def broken() -> HistoryStore:
        raise HistoryError("history database is locked")

    output = save_output(image, outputs_dir=tmp_path, provider="nai", history=broken)
    assert output.path.exists() and output.entry_id is None
    assert output.problem is not None
    assert str(output.path) in output.problem and "history database is locked" in output.problem


async def test_an_image_that_cannot_be_saved_raises(make_client: MakeClient, tmp_path: Path) -> None:
    image = await generated(make_client)
    in_the_way = tmp_path / "outputs"
    in_the_way.write_text("a file where the folder should be")
    with pytest.raises(PeropixError, match="outputs"):
        save_output(image, outputs_dir=in_the_way, provider="nai", history=None)
