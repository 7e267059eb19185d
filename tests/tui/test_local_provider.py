"""Choosing the local engine on the Generate screen: the Provider row offered while checkpoint folders are set, the
checkpoints listed by a scan in a thread, NovelAI-only controls hidden, presets and an image's settings bringing
their provider back, and a local job queued, run on the app's engine and saved to the history as "local"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Select

from peropix_tui.app import PeropixApp
from peropix_tui.core.config import Config
from peropix_tui.core.jobs import JobState
from peropix_tui.core.metadata import ImageMetadata, read_metadata
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.presets import ParameterPreset
from peropix_tui.engine.local_names import LOCAL_SAMPLERS, LOCAL_SCHEDULERS
from peropix_tui.engine.nai.models import DEFAULT_MODEL, model_spec
from peropix_tui.messages import ApplySettings
from peropix_tui.widgets.job_queue import JobQueue
from peropix_tui.widgets.parameter_form import ParameterForm

from .helpers import SIZE, bar_text, cell, generate_screen, generation_ids, notifications, wait_until

pytest.importorskip("torch")

NOVELAI_ONLY = ("#param-model", "#param-variety", "#param-quality", "#param-smea", "#param-smea-dyn")


def header_checkpoint(path: Path, *, context: int = 2048, adm: int | None = 2816) -> None:
    """A file whose header is an SDXL (or SD 1.5) checkpoint's; its tensors are tiny zeros."""
    import numpy as np
    from safetensors.numpy import save_file

    unet = "model.diffusion_model."
    tensors = {
        unet + "input_blocks.0.0.weight": np.zeros((8, 4, 3, 3), np.float16),
        unet + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": np.zeros((8, context), np.float16),
    }
    if adm is not None:
        tensors[unet + "label_emb.0.0.weight"] = np.zeros((16, adm), np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def local_app(folder: Path | None) -> PeropixApp:
    config = Config.load(AppDirs.from_env())
    if folder is not None:
        config.set("paths.checkpoint_dirs", [str(folder)])
    config.set("local.device", "cpu")
    return PeropixApp(config=config, image_widget="halfcell")


async def the_form(pilot: Pilot[Any]) -> ParameterForm:
    app = pilot.app
    assert isinstance(app, PeropixApp)
    await wait_until(pilot, lambda: generate_screen(app).side_mounted, "the parameter form")
    await wait_until(pilot, lambda: "…" not in bar_text(app), "the price line")
    return generate_screen(app).query_one(ParameterForm)


async def choose_local(pilot: Pilot[Any], form: ParameterForm) -> Select[str]:
    form.query_one("#param-provider", Select).value = "local"
    checkpoint: Select[str] = form.query_one("#param-checkpoint", Select)
    await wait_until(pilot, lambda: isinstance(checkpoint.value, str), "the checkpoint scan", limit=30)
    return checkpoint


def shown(form: ParameterForm, selector: str) -> bool:
    return form.query_one(selector).display


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    checkpoints = tmp_path / "checkpoints"
    header_checkpoint(checkpoints / "animagine.safetensors")
    header_checkpoint(checkpoints / "sd15" / "anything.safetensors", context=768, adm=None)
    return checkpoints


async def test_local_lists_the_checkpoints_and_hides_what_only_novelai_has(folder: Path) -> None:
    app = local_app(folder)
    async with app.run_test(size=SIZE) as pilot:
        form = await the_form(pilot)
        assert shown(form, "#param-provider") and shown(form, "#param-model")
        assert not shown(form, "#param-checkpoint") and "Price" in bar_text(app)
        sampler, schedule = form.query_one("#param-sampler", Select), form.query_one("#param-schedule", Select)
        sampler.value = "k_dpmpp_2m"

        checkpoint = await choose_local(pilot, form)
        await pilot.pause()
        assert [option[1] for option in checkpoint._options if isinstance(option[1], str)] == [
            "animagine",
            "anything",
        ]
        assert checkpoint.value == "animagine"
        assert shown(form, "#param-checkpoint") and shown(form, "#param-local-hint")
        assert not any(shown(form, selector) for selector in NOVELAI_ONLY)
        assert [option[1] for option in sampler._options] == list(LOCAL_SAMPLERS)
        assert [option[1] for option in schedule._options] == list(LOCAL_SCHEDULERS)
        await wait_until(pilot, lambda: bar_text(app) == "local · free", "the free line")
        checkpoint.value = "anything"
        request = form.request("1girl", "lowres")
        assert (request.provider, request.model, request.sampler, request.scheduler) == (
            "local",
            "anything",
            "euler_ancestral",
            "normal",
        )
        assert (request.quality_tags, request.uc_preset) == (False, None)
        local_preset = form.parameter_preset("mine")
        assert (local_preset.model, local_preset.sampler, local_preset.quality_tags) == (
            "anything",
            "euler_ancestral",
            None,
        )

        form.query_one("#param-provider", Select).value = "novelai"
        await pilot.pause()
        assert shown(form, "#param-model") and not shown(form, "#param-checkpoint")
        assert sampler.value == "k_dpmpp_2m"  # the NovelAI choice comes back
        assert form.request("1girl", "").provider == "novelai"
        await wait_until(pilot, lambda: "Price" in bar_text(app), "the price again")

        # a preset holding a checkpoint brings Local back, one holding a NovelAI model NovelAI
        assert form.apply_parameter_preset(local_preset) == []
        await pilot.pause()
        assert form.provider == "local" and checkpoint.value == "anything"
        skipped = form.apply_parameter_preset(ParameterPreset("nai", model=DEFAULT_MODEL, sampler="k_euler"))
        assert skipped == [] and form.provider == "novelai" and sampler.value == "k_euler"
        skipped = form.apply_parameter_preset(ParameterPreset("gone", model="deleted-model", variety=True))
        assert skipped[0] == "checkpoint deleted-model (not in the checkpoint folders)"
        assert "Variety+ (NovelAI only)" in skipped and form.provider == "local"


async def test_without_checkpoint_folders_only_novelai_is_offered() -> None:
    app = local_app(None)
    async with app.run_test(size=SIZE) as pilot:
        form = await the_form(pilot)
        assert not shown(form, "#param-provider") and shown(form, "#param-model")
        form.set_provider("local")
        assert form.provider == "novelai"
        await pilot.press("ctrl+o")
        assert app.focused is form.query_one("#param-model")


async def test_an_images_settings_bring_its_provider_back(folder: Path) -> None:
    app = local_app(folder)
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        form = await the_form(pilot)
        made_locally = ImageMetadata(
            prompt="1girl, masterpiece",
            negative_prompt="lowres",
            model="anything",
            seed=2**40,
            steps=31,
            cfg=6.5,
            sampler="k_dpmpp_2m_sde",
            scheduler="karras",
            width=1024,
            height=1024,
            peropix={"provider": "local"},
        )
        app.post_message(ApplySettings(made_locally, "all", "local.png"))
        checkpoint = form.query_one("#param-checkpoint", Select)
        await wait_until(pilot, lambda: checkpoint.value == "anything", "the image's checkpoint", limit=30)
        request = form.request("x", "")
        assert (request.provider, request.seed, request.steps, request.scale, request.sampler) == (
            "local",
            2**40,
            31,
            6.5,
            "dpmpp_2m_sde",
        )
        assert (request.width, request.height, request.quality_tags) == (1024, 1024, False)
        assert generate_screen(app).query_one("#prompt-editor").text == "1girl, masterpiece"  # type: ignore[attr-defined]

        from_novelai = ImageMetadata(prompt="1boy", model=DEFAULT_MODEL, sampler="k_euler", seed=5, steps=20)
        app.post_message(ApplySettings(from_novelai, "all", "nai.png"))
        await wait_until(pilot, lambda: form.provider == "novelai", "NovelAI again")
        request = form.request("1boy", "")
        assert (request.model, request.sampler, request.seed) == (DEFAULT_MODEL, "k_euler", 5)
        assert request.sampler in model_spec(DEFAULT_MODEL).samplers
        assert not notifications(messages, "error")


async def test_a_local_job_runs_on_the_apps_engine_and_lands_in_the_history(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from unit.local.tiny_checkpoint import tiny_checkpoint

    shared = tmp_path_factory.getbasetemp() / "tiny_checkpoints"
    shared.mkdir(exist_ok=True)
    folder = tmp_path / "models"
    tiny_checkpoint(shared, folder / "tiny_xl.safetensors", sdxl=True, seed=0)
    app = local_app(folder)
    messages: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        form = await the_form(pilot)
        await choose_local(pilot, form)
        form.set_size(64, 64)
        form.query_one("#param-steps").value = "2"  # type: ignore[attr-defined]
        await pilot.press(*"a cat")
        await pilot.press("f5")  # no NovelAI token is needed
        queue = generate_screen(app).query_one(JobQueue)
        await wait_until(pilot, lambda: queue.row_count == 1, "the job's row")
        [job_id] = generation_ids(app)
        assert app.jobs.get(job_id).group == "local"
        assert cell(queue, job_id, "price") == "local"
        await wait_until(pilot, lambda: app.jobs.get(job_id).state.terminal, "the local job", limit=120)
        assert app.jobs.get(job_id).state is JobState.DONE, notifications(messages, "error")
        [output] = app.jobs.get(job_id).result
        entry = app.open_history().get(output.entry_id)
        assert entry is not None and entry.provider == "local"
        meta = read_metadata(output.path)
        assert (meta.peropix["provider"], meta.model, meta.width, meta.steps) == ("local", "tiny_xl", 64, 2)
        assert meta.prompt == "a cat"
        steps = [m.event for m in messages if isinstance(m, JobQueue.Updated) and m.event.kind == "progress"]
        assert [e.progress.done for e in steps][-1] == 2 and {e.progress.total for e in steps} == {2}
