"""The local provider without a generation: request validation, names kept in step with the engine's
registries, checkpoint scans of header-only files, settings from a local image, the engine made once per settings,
and the one line a missing torch gives."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from peropix_tui.core.config import Config
from peropix_tui.core.errors import ConfigError, PeropixError
from peropix_tui.core.metadata import CharacterPrompt as MetaCharacter
from peropix_tui.core.metadata import ImageMetadata
from peropix_tui.core.paths import AppDirs
from peropix_tui.engine.local_names import (
    LOCAL_SAMPLERS,
    LOCAL_SCHEDULERS,
    SAMPLER_ALIASES,
    SCHEDULER_ALIASES,
    local_sampler,
    local_scheduler,
)
from peropix_tui.engine.local_provider import (
    INSTALL_HINT,
    LocalEngineSlot,
    LocalSettings,
    local_settings_from_metadata,
    scan_checkpoints,
)
from peropix_tui.engine.types import (
    LOCAL,
    NOVELAI,
    CharacterPrompt,
    CharacterReference,
    GenerationRequest,
    RequestError,
    UcPreset,
    VibeRef,
)

ROOT = Path(__file__).resolve().parents[2]
UNET = "model.diffusion_model."


def local(**fields: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "1girl", "model": "animagine", "provider": LOCAL, **fields})


# --- requests -------------------------------------------------------------------------------------------------


def test_novelai_stays_the_default_and_keeps_its_names_and_presets() -> None:
    request = GenerationRequest("1girl", sampler="k_dpmpp_2m", smea=True)
    assert request.provider == NOVELAI
    assert (request.sampler, request.quality_tags, request.uc_preset) == ("k_dpmpp_2m", True, UcPreset.HEAVY)


def test_a_local_request_takes_novelai_spellings_and_drops_novelai_prompt_additions() -> None:
    request = local(sampler=" K_DPMPP_2M_SDE ", scheduler="polyexponential", quality_tags=True)
    assert (request.sampler, request.scheduler) == ("dpmpp_2m_sde", "exponential")
    assert (request.quality_tags, request.uc_preset) == (False, None)
    assert dataclasses.replace(request, steps=5).sampler == "dpmpp_2m_sde"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"provider": "comfy"}, "provider", "must be one of novelai, local, not 'comfy'"),
        ({"sampler": "k_euler_a"}, "sampler", "no sampler 'k_euler_a'; use one of euler, euler_ancestral"),
        ({"scheduler": "karras_exp"}, "scheduler", "no scheduler 'karras_exp'; use one of normal, karras"),
        ({"smea": True}, "smea", "NovelAI setting"),
        ({"variety": True}, "variety", "NovelAI setting"),
        ({"dataset": "fur"}, "dataset", "NovelAI setting"),
        ({"vibes": (VibeRef(encoding=b"x"),)}, "vibes", "NovelAI setting"),
        ({"character_reference": CharacterReference(b"png")}, "character_reference", "NovelAI setting"),
        ({"image": b"png", "noise": 0.2}, "noise", "NovelAI setting"),
        ({"characters": (CharacterPrompt("boy"), CharacterPrompt("girl", position="c3"))}, "characters", "at C3"),
    ],
)
def test_what_the_local_engine_cannot_take_is_refused_naming_the_field(
    fields: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(RequestError) as caught:
        local(**fields)
    assert caught.value.field == field
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_characters_without_a_place_and_disabled_placed_ones_are_fine_locally() -> None:
    characters = (CharacterPrompt("boy"), CharacterPrompt("girl", position="B2", enabled=False))
    assert local(characters=characters).characters == characters


@given(
    name=st.sampled_from([*LOCAL_SAMPLERS, *SAMPLER_ALIASES]),
    upper=st.booleans(),
    pad=st.sampled_from(["", " ", "\t"]),
)
def test_every_sampler_spelling_resolves_to_a_local_name(name: str, upper: bool, pad: str) -> None:
    canonical = local_sampler(pad + (name.upper() if upper else name) + pad)
    assert canonical in LOCAL_SAMPLERS
    assert canonical == SAMPLER_ALIASES.get(name, name)


@given(name=st.sampled_from([*LOCAL_SCHEDULERS, *SCHEDULER_ALIASES]), upper=st.booleans())
def test_every_scheduler_spelling_resolves_to_a_local_name(name: str, upper: bool) -> None:
    assert local_scheduler(name.upper() if upper else name) == SCHEDULER_ALIASES.get(name, name)


def test_the_names_are_the_engines_registries() -> None:
    pytest.importorskip("torch")
    from peropix_tui.engine.local import sampling, schedules

    assert tuple(sampling.SAMPLERS) == LOCAL_SAMPLERS
    assert dict(sampling.SAMPLER_ALIASES) == dict(SAMPLER_ALIASES)
    assert tuple(schedules.SCHEDULERS) == LOCAL_SCHEDULERS
    assert dict(schedules.SCHEDULER_ALIASES) == dict(SCHEDULER_ALIASES)


# --- settings -------------------------------------------------------------------------------------------------


def test_local_engine_settings_are_validated(tmp_path: Path) -> None:
    config = Config.load(AppDirs.from_env())
    assert (config.get("local.device"), config.get("local.dtype")) == ("auto", "auto")
    assert config.set("local.device", "cuda:1", from_text=True) == "cuda:1"
    with pytest.raises(ConfigError, match=r"local\.device: must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        config.set("local.device", "gpu", from_text=True)
    with pytest.raises(ConfigError, match=r"local\.dtype"):
        config.set("local.dtype", "int8", from_text=True)
    config.set("local.dtype", "bf16", from_text=True)
    config.set("paths.checkpoint_dirs", f"{tmp_path}, ~/models", from_text=True)
    settings = LocalSettings.from_config(config)
    assert settings.checkpoint_dirs == (tmp_path, Path.home() / "models")
    assert (settings.device, settings.dtype) == ("cuda:1", "bf16")


# --- checkpoints ----------------------------------------------------------------------------------------------


def header_checkpoint(path: Path, *, context: int = 2048, adm: int | None = 2816, channels: int = 4) -> Path:
    """A file whose header is an SDXL (or SD 1.5) checkpoint's; the tensors are tiny and all zero."""
    tensors = {
        UNET + "input_blocks.0.0.weight": np.zeros((8, channels, 3, 3), np.float16),
        UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": np.zeros((8, context), np.float16),
        "first_stage_model.decoder.conv_out.weight": np.zeros((3, 8, 3, 3), np.float16),
    }
    if adm is not None:
        tensors[UNET + "label_emb.0.0.weight"] = np.zeros((16, adm), np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def test_a_scan_names_each_checkpoint_as_the_engine_resolves_it(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from peropix_tui.engine.local.engine import LocalEngine

    first, second = tmp_path / "a", tmp_path / "b"
    header_checkpoint(first / "animagine.safetensors")
    header_checkpoint(first / "sd" / "anything.safetensors", context=768, adm=None, channels=9)
    header_checkpoint(first / "old" / "pony.safetensors")
    header_checkpoint(second / "pony.safetensors")
    header_checkpoint(first / "xl" / "same.safetensors")
    header_checkpoint(second / "xl" / "same.safetensors")
    save_file({"lora_unet_x.lora_down.weight": np.zeros((4, 4), np.float16)}, str(first / "style.safetensors"))
    scan = scan_checkpoints([first, second, tmp_path / "missing"])
    assert scan.names == [
        "animagine",
        "old/pony.safetensors",
        "anything",
        str(first / "xl" / "same.safetensors"),
        "pony.safetensors",
        str(second / "xl" / "same.safetensors"),
    ]
    sd15 = scan.find("anything")
    assert sd15 is not None and sd15.family == "sd15" and sd15.inpainting
    assert sd15.describe().startswith("SD 1.5 · eps · inpainting · 0.0 GB")
    assert len(scan.problems) == 2
    assert any("style.safetensors" in p and "LoRA" in p for p in scan.problems)
    assert any("missing" in p and "does not exist" in p for p in scan.problems)
    assert scan.find("animagine.safetensors") is scan.find("animagine") is not None
    assert scan.find("pony") is None  # two files: the name says which
    engine = LocalEngine(checkpoint_dirs=[first, second], lora_dirs=[], device="cpu")
    try:
        for checkpoint in scan.checkpoints:
            assert engine.resolve_model(checkpoint.name).resolve() == checkpoint.path.resolve()
    finally:
        engine.close()


def test_no_checkpoint_folder_is_a_problem_not_an_error() -> None:
    scan = scan_checkpoints([])
    assert scan.checkpoints == () and "paths.checkpoint_dirs" in scan.problems[0]


def test_the_app_keeps_one_engine_per_settings(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    slot = LocalEngineSlot()
    settings = LocalSettings((tmp_path,), (), device="cpu")
    try:
        engine = slot.get(settings)
        assert slot.get(LocalSettings((tmp_path,), (), device="cpu")) is engine
        other = slot.get(dataclasses.replace(settings, dtype="fp32"))
        assert other is not engine and other.checkpoint_dirs == (tmp_path,)
        with pytest.raises(PeropixError, match="device 'cuda:7'"):
            slot.get(dataclasses.replace(settings, device="cuda:7"))
        assert slot.get(settings) is not other  # a failed engine replaced nothing it can hand back
    finally:
        slot.close()


def test_without_torch_the_local_provider_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pathlib import Path\n"
        "from peropix_tui.engine.local_provider import LocalSettings, open_local_engine, scan_checkpoints\n"
        "for attempt in (lambda: open_local_engine(LocalSettings((Path('.'),), ())), "
        "lambda: scan_checkpoints([Path('.')])):\n"
        "    try:\n"
        "        attempt()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"LocalEngineMissing {INSTALL_HINT}"] * 2


# --- an image's settings --------------------------------------------------------------------------------------


def test_a_local_images_settings_come_back_as_recorded() -> None:
    meta = ImageMetadata(
        prompt="1girl, <lora:ink:0.8>, masterpiece",
        negative_prompt="lowres",
        model="animagine-xl",
        seed=2**40,
        steps=30,
        cfg=6.5,
        cfg_rescale=0.2,
        sampler="k_dpmpp_2m",
        scheduler="karras",
        width=1024,
        height=1536,
        characters=[MetaCharacter("boy", "hat", ((0.1, 0.9),))],
    )
    settings = local_settings_from_metadata(meta)
    assert settings.fields == {
        "prompt": "1girl, <lora:ink:0.8>, masterpiece",
        "negative": "lowres",
        "model": "animagine-xl",
        "seed": 2**40,
        "steps": 30,
        "scale": 6.5,
        "cfg_rescale": 0.2,
        "sampler": "dpmpp_2m",
        "scheduler": "karras",
        "width": 1024,
        "height": 1536,
        "characters": (CharacterPrompt("boy", "hat"),),
    }
    assert settings.warnings == []
    request = GenerationRequest(**settings.fields, provider=LOCAL)
    assert request.characters[0].position is None
    assert local_settings_from_metadata(meta, model="pony").fields["model"] == "pony"


def test_what_the_local_engine_cannot_take_from_an_image_is_left_out_with_a_warning() -> None:
    meta = ImageMetadata(
        prompt="x", sampler="nai_smea_dyn", scheduler="karras", width=1000, height=1000, steps=0, cfg=250.0, smea=True
    )
    settings = local_settings_from_metadata(meta)
    assert set(settings.fields) == {"prompt", "negative", "scheduler"}
    assert len(settings.warnings) == 5
    assert any("sampler 'nai_smea_dyn'" in w for w in settings.warnings)
    assert any("1000x1000" in w for w in settings.warnings)
    with pytest.raises(PeropixError, match="no generation settings"):
        local_settings_from_metadata(ImageMetadata())
