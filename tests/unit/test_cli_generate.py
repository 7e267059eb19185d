"""`peropix generate` and `--sandbox` through the real CLI entry point, over real HTTP to the sandbox server."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import Result, cli_sandbox, generated, one_line, png, run
from PIL import Image

from peropix_tui.commands.generate_plan import parse_character, parse_model, parse_size, parse_vibe
from peropix_tui.commands.generate_run import request_body
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.history import HistoryStore
from peropix_tui.core.metadata import read_metadata
from peropix_tui.engine.nai.cost import OPUS_TIER, Account, estimate_cost
from peropix_tui.engine.nai.image_settings import settings_from_metadata
from peropix_tui.engine.nai.models import grid_cell, position_center
from peropix_tui.engine.nai.payload import build_payload, redacted_payload
from peropix_tui.engine.nai.vibe_files import make_vibe_file, save_vibes
from peropix_tui.engine.types import CharacterPrompt, CharacterReference, GenerationRequest, UcPreset
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN, SandboxAccount
from peropix_tui.sandbox.nai_faults import ENCODE_PATH, GENERATE_PATH, STREAM_PATH, Fault, FaultKind
from peropix_tui.sandbox.nai_server import NaiSandbox
from peropix_tui.sandbox.session import active_session

TOKEN = "pst-cli-generate-test-token-000000000001"
CANARY = "pst-LeakCanaryGenerateToken00000000000000000000000000000Qq"
ROOT = Path(__file__).resolve().parents[2]
PROMPT = "1girl, solo, silver hair"
V45 = "nai-diffusion-4-5-full"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[NaiSandbox]:
    accounts = {TOKEN: SandboxAccount(fixed_anlas=10_000), CANARY: SandboxAccount(fixed_anlas=10_000)}
    with cli_sandbox(monkeypatch, TOKEN, accounts) as server:
        yield server


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    return run(capsys, "generate", *args)


def images_in(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs").rglob("*.png"))


# --- parsing ------------------------------------------------------------------------------------------------


def test_size_parsing_and_its_messages() -> None:
    assert parse_size("832x1216") == (832, 1216)
    assert parse_size(" 1024 X 1024 ") == (1024, 1024)
    with pytest.raises(PeropixError, match="nearest valid size is 1088x1920"):
        parse_size("1080x1920")
    with pytest.raises(PeropixError, match="use WIDTHxHEIGHT"):
        parse_size("portrait")
    with pytest.raises(PeropixError, match="at least 64"):
        parse_size("0x512")


@pytest.mark.parametrize("cell", [f"{c}{r}" for c in "ABCDE" for r in "12345"])
def test_every_grid_cell_comes_back_from_its_center(cell: str) -> None:
    assert grid_cell(*position_center(cell)) == (cell, True)


def test_off_grid_centers_snap_to_the_nearest_cell() -> None:
    assert grid_cell(0.25, 0.75) in {("A4", False), ("B4", False)}
    assert grid_cell(0.0, 1.0) == ("A5", False)


def test_character_spec_keeps_at_signs_that_are_not_cells() -> None:
    assert parse_character("girl, red hair@C3") == ("girl, red hair", "C3")
    assert parse_character("girl @b5") == ("girl", "B5")
    assert parse_character("girl, @_@") == ("girl, @_@", None)
    assert parse_character("mail@F9") == ("mail@F9", None)


def test_vibe_spec_numbers_and_paths_with_colons(tmp_path: Path) -> None:
    image = png(tmp_path / "ref.png")
    spec = parse_vibe(f"{image}:0.4:0.8")
    assert (spec.path, spec.strength, spec.information_extracted) == (image, 0.4, 0.8)
    assert parse_vibe(f"{image}:.5").strength == 0.5
    odd = png(tmp_path / "a:1.png")
    assert parse_vibe(str(odd)).path == odd
    with pytest.raises(PeropixError, match="does not exist"):
        parse_vibe(str(tmp_path / "missing.png:0.5"))


def test_model_short_names() -> None:
    assert parse_model("v4.5") == V45
    assert parse_model("v4-curated") == "nai-diffusion-4-curated-preview"
    assert parse_model("nai-diffusion-3-inpainting") == "nai-diffusion-3"
    with pytest.raises(PeropixError, match="short names"):
        parse_model("sdxl-base")


# --- generation over HTTP ----------------------------------------------------------------------------------


def test_txt2img_saves_every_image_with_metadata_seeds_and_history(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]
) -> None:
    _config_dir, data_dir = isolated_dirs
    result = generate(capsys, "--prompt", PROMPT, "--n", "3", "--seed", "100", "--size", "512x512", "--json")
    assert result.code == 0, result.err
    document = result.json()
    paths = [Path(image["path"]) for image in document["images"]]
    assert [image["seed"] for image in document["images"]] == [100, 101, 102]
    assert sorted(paths) == images_in(data_dir)
    for path, seed in zip(paths, [100, 101, 102], strict=True):
        assert path.name.endswith(f"_{seed}.png") and path.parent.parent == data_dir / "outputs"
        meta = read_metadata(path)
        assert meta.seed == seed
        assert meta.prompt == PROMPT + ", very aesthetic, masterpiece, no text"
        assert meta.peropix["provider"] == "nai"
    # one request of three, priced as the web prices it, and the balance read back after
    assert [body["parameters"]["n_samples"] for body in generated(sandbox)] == [3]
    price = estimate_cost(GenerationRequest(PROMPT, width=512, height=512, n=3, seed=100), Account(2, True)).total
    assert document["cost"] == price == 10_000 - sandbox.balance(TOKEN)
    assert document["balance"] == sandbox.balance(TOKEN) and document["tier"] == "Scroll"
    with HistoryStore(data_dir / "history.sqlite3") as history:
        entries = history.page(0, 10)
        assert sorted(e.seed for e in entries) == [100, 101, 102]
        assert {e.provider for e in entries} == {"nai"}
        assert all(history.thumbnail(e.id) for e in entries)


def test_plain_output_lists_paths_seeds_cost_and_balance(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    result = generate(capsys, "--prompt", PROMPT, "--n", "2", "--seed", "7", "--size", "256x256")
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith("saved ") and lines[0].endswith("_7.png  seed 7")
    assert lines[1].endswith("_8.png  seed 8")
    assert lines[2] == f"cost 4 Anlas, balance {sandbox.balance(TOKEN)} Anlas (Scroll)"


@pytest.mark.parametrize(
    ("flags", "path"),
    [([], STREAM_PATH), (["--sse"], STREAM_PATH), (["--no-stream"], GENERATE_PATH)],
)
def test_large_runs_go_out_in_batches_with_following_seeds(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], flags: list[str], path: str
) -> None:
    result = generate(capsys, "--prompt", PROMPT, "--n", "3", "--seed", "50", "--size", "1024x1536", *flags)
    assert result.code == 0, result.err
    requests = [r for r in sandbox.requests if r.path != "/user/subscription"]
    assert {r.path for r in requests} == {path}
    assert [(r.body["parameters"]["seed"], r.body["parameters"]["n_samples"]) for r in requests] == [(50, 2), (52, 1)]
    if flags == ["--sse"]:
        assert all(r.body["parameters"]["stream"] == "sse" for r in requests)


def test_images_are_numbered_across_the_batches_of_a_run(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    result = generate(capsys, "--prompt", PROMPT, "--n", "3", "--seed", "50", "--size", "1024x1536", "--json")
    assert result.code == 0, result.err
    assert [(i["index"], i["seed"]) for i in result.json()["images"]] == [(0, 50), (1, 51), (2, 52)]
    assert [b["parameters"]["n_samples"] for b in generated(sandbox)] == [2, 1]


def test_separate_sends_one_request_per_image(sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    result = generate(capsys, "--prompt", PROMPT, "--n", "3", "--seed", "9", "--size", "256x256", "--separate")
    assert result.code == 0
    assert [b["parameters"]["seed"] for b in generated(sandbox)] == [9, 10, 11]


def test_img2img_and_inpaint_send_the_source_at_the_request_size(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = png(tmp_path / "source.png", (300, 200))
    mask = png(tmp_path / "mask.png", (300, 200), (255, 255, 255))
    result = generate(capsys, "--prompt", PROMPT, "--image", str(source), "--strength", "0.5", "--json")
    assert result.code == 0, result.err
    body = generated(sandbox)[-1]
    assert body["action"] == "img2img" and body["parameters"]["strength"] == 0.5
    # no --size: the source's own size on the 64 grid
    assert (body["parameters"]["width"], body["parameters"]["height"]) == (320, 192)
    with Image.open(io.BytesIO(base64.b64decode(body["parameters"]["image"]))) as sent:
        assert sent.size == (320, 192)
    result = generate(capsys, "--prompt", PROMPT, "--image", str(source), "--mask", str(mask), "--size", "320x192")
    assert result.code == 0, result.err
    body = generated(sandbox)[-1]
    assert (body["action"], body["model"]) == ("infill", "nai-diffusion-4-5-full-inpainting")


# The web's Enhance presets (spec §1.6): magnitude -> (strength, noise), and the prompt suffix it adds.
ENHANCE_PRESETS = {1: (0.2, 0), 2: (0.4, 0), 3: (0.5, 0), 4: (0.6, 0), 5: (0.7, 0.1)}
ENHANCE_TAIL = ", very aesthetic, masterpiece, no text, -2::upscaled, blurry::,"


@pytest.mark.parametrize("magnitude", sorted(ENHANCE_PRESETS))
@pytest.mark.parametrize(("factor", "size"), [("1", (512, 768)), ("1.5", (768, 1152))])
def test_enhance_dry_run_sends_the_web_presets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, magnitude: int, factor: str, size: tuple[int, int]
) -> None:
    source = png(tmp_path / "done.png", (512, 768))
    args = ["--prompt", PROMPT, "--image", str(source), "--enhance", factor, "--magnitude", str(magnitude)]
    result = generate(capsys, *args, "--seed", "77", "--dry-run", "--json")
    assert result.code == 0, result.err
    body = result.json()["requests"][0]["body"]
    params = body["parameters"]
    assert body["action"] == "img2img" and body["input"].rstrip() == PROMPT + ENHANCE_TAIL  # comma rule: ", "
    assert (params["strength"], params["noise"]) == ENHANCE_PRESETS[magnitude]
    assert (params["width"], params["height"]) == size
    assert params["qualityToggle"] is False and params["extra_noise_seed"] == 76
    assert params["image"].startswith("<image data, ")


def test_enhance_magnitude_defaults_to_three_and_odd_sizes_snap_to_the_grid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = png(tmp_path / "odd.png", (300, 200))
    result = generate(capsys, "--prompt", PROMPT, "--image", str(source), "--enhance", "1.5", "--dry-run", "--json")
    assert result.code == 0, result.err
    params = result.json()["requests"][0]["body"]["parameters"]
    assert (params["strength"], params["noise"]) == ENHANCE_PRESETS[3]
    assert (params["width"], params["height"]) == (448, 320)  # 450x300 on the 64 grid


def test_enhance_run_sends_the_source_upscaled_and_saves_the_image(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path, isolated_dirs: tuple[Path, Path]
) -> None:
    source = png(tmp_path / "done.png", (256, 256))
    args = ["--prompt", PROMPT, "--image", str(source), "--enhance", "1.5", "--magnitude", "5", "--seed", "31"]
    result = generate(capsys, *args, "--json")
    assert result.code == 0, result.err
    [body] = generated(sandbox)
    params = body["parameters"]
    assert (params["width"], params["height"], params["strength"], params["noise"]) == (384, 384, 0.7, 0.1)
    with Image.open(io.BytesIO(base64.b64decode(params["image"]))) as sent:
        assert sent.size == (384, 384)
    [saved] = images_in(isolated_dirs[1])
    assert [image["path"] for image in result.json()["images"]] == [str(saved)]
    with Image.open(saved) as image:
        assert image.size == (384, 384)


def test_enhance_refuses_what_it_sets_itself(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = str(png(tmp_path / "s.png"))
    for args, message in (
        (["--enhance", "1"], "--enhance needs --image (the image to enhance)"),
        (["--image", source, "--magnitude", "2"], "--magnitude needs --enhance 1 or --enhance 1.5"),
        (["--image", source, "--enhance", "1", "--strength", "0.3", "--size", "256x256"], "drop --size, --strength"),
        (["--image", source, "--enhance", "1.5", "--mask", source], "cannot inpaint; drop --mask"),
    ):
        result = generate(capsys, "--prompt", PROMPT, *args, "--dry-run")
        assert result.code == 1, args
        assert message in one_line(result), args


def test_vibes_are_encoded_once_and_then_come_from_the_cache(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reference = png(tmp_path / "vibe.png", (128, 128), (20, 200, 60))
    args = ["--prompt", PROMPT, "--size", "256x256", "--vibe", f"{reference}:0.5:0.7", "--json"]
    first = generate(capsys, *args)
    assert first.code == 0, first.err
    before = sandbox.balance(TOKEN)
    dry = generate(capsys, *args, "--dry-run")
    assert dry.json()["cost"]["vibe_encodings"] == 0
    second = generate(capsys, *args)
    assert second.code == 0, second.err
    assert [r.path for r in sandbox.requests].count(ENCODE_PATH) == 1
    assert first.json()["cost"] == second.json()["cost"] + 2  # the encode was paid the first time only
    assert before - sandbox.balance(TOKEN) == second.json()["cost"]
    bodies = generated(sandbox)
    assert bodies[0]["parameters"]["reference_image_multiple"] == bodies[1]["parameters"]["reference_image_multiple"]
    assert bodies[1]["parameters"]["reference_strength_multiple"] == [0.5]
    assert bodies[1]["parameters"]["reference_information_extracted_multiple"] == [0.7]


def test_naiv4vibe_files_bring_their_own_encoding(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = png(tmp_path / "v.png").read_bytes()
    encoding = bytes(range(256)) * 8
    vibe_file = tmp_path / "hero.naiv4vibe"
    save_vibes(vibe_file, [make_vibe_file(image, [(V45, 1.0, encoding)], strength=0.35)])
    result = generate(capsys, "--prompt", PROMPT, "--size", "256x256", "--vibe", str(vibe_file))
    assert result.code == 0, result.err
    assert ENCODE_PATH not in [r.path for r in sandbox.requests]
    params = generated(sandbox)[0]["parameters"]
    assert params["reference_image_multiple"] == [base64.b64encode(encoding).decode()]
    assert params["reference_strength_multiple"] == [0.35]


# --- dry run -----------------------------------------------------------------------------------------------


DRY_RUNS = [
    (
        ["--prompt", PROMPT, "--seed", "42"],
        GenerationRequest(PROMPT, seed=42),
    ),
    (
        [
            "--prompt",
            "2girls, garden",
            "--negative",
            "bad hands",
            "--seed",
            "5",
            "--uc-preset",
            "light",
            "--char",
            "girl, red hair@B2",
            "--char-negative",
            "hat",
            "--char",
            "girl, @_@",
            "--variety",
            "--cfg-rescale",
            "0.2",
            "--sampler",
            "k_dpmpp_2m",
            "--schedule",
            "exponential",
            "--steps",
            "23",
        ],
        GenerationRequest(
            "2girls, garden",
            "bad hands",
            seed=5,
            uc_preset=UcPreset.LIGHT,
            characters=(CharacterPrompt("girl, red hair", "hat", "B2"), CharacterPrompt("girl, @_@")),
            variety=True,
            cfg_rescale=0.2,
            sampler="k_dpmpp_2m",
            scheduler="exponential",
            steps=23,
        ),
    ),
    (
        ["--prompt", PROMPT, "--model", "v3", "--seed", "3", "--smea", "--smea-dyn", "--size", "1024x1024"],
        GenerationRequest(PROMPT, model="nai-diffusion-3", seed=3, smea=True, smea_dyn=True, width=1024, height=1024),
    ),
    (
        ["--prompt", PROMPT, "--model", "v5", "--seed", "8", "--no-quality", "--uc-preset", "off"],
        GenerationRequest(PROMPT, model="nai-diffusion-5-full", seed=8, scale=7.0, quality_tags=False, uc_preset=None),
    ),
]


@pytest.mark.parametrize(("args", "request_"), DRY_RUNS)
def test_dry_run_prints_the_exact_body_and_the_web_price(
    capsys: pytest.CaptureFixture[str], args: list[str], request_: GenerationRequest, isolated_dirs: tuple[Path, Path]
) -> None:
    result = generate(capsys, *args, "--dry-run", "--json")  # no token, no server: nothing is sent
    assert result.code == 0, result.err
    document = result.json()
    expected = build_payload(request_)
    expected["parameters"]["stream"] = "msgpack"
    [entry] = document["requests"]
    assert entry == {"method": "POST", "url": "https://image.novelai.net/ai/generate-image-stream", "body": expected}
    assert document["cost"]["anlas"] == estimate_cost(request_).total
    assert document["cost"]["opus_anlas"] == estimate_cost(request_, Account(OPUS_TIER, True)).total
    assert not (isolated_dirs[1] / "outputs").exists()


def test_dry_run_elides_image_data_and_marks_vibes_still_to_encode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = png(tmp_path / "s.png", (832, 1216))
    vibe = png(tmp_path / "v.png")
    result = generate(capsys, "--prompt", PROMPT, "--image", str(source), "--vibe", str(vibe), "--dry-run")
    assert result.code == 0, result.err
    head, _, rest = result.out.partition("\n")
    assert head == "POST https://image.novelai.net/ai/generate-image-stream"
    body_text, _, cost_line = rest.rstrip("\n").rpartition("\n")
    params = json.loads(body_text)["parameters"]
    assert params["image"].startswith("<image data, ") and params["image"].endswith(" bytes>")
    assert params["reference_image_multiple"] == ["<vibe encoding, made when sent (2 Anlas)>"]
    request = GenerationRequest(PROMPT, image=source, seed=1)
    assert (
        cost_line == f"cost: {estimate_cost(request).total + 2} Anlas for 1 image (with an active Opus subscription: 2)"
    )


def test_dry_run_of_a_character_reference(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    face = png(tmp_path / "face.png", (300, 500))
    args = ["--prompt", PROMPT, "--seed", "4", "--charref", str(face), "--fidelity", "0.25", "--no-style-aware"]
    result = generate(capsys, *args, "--dry-run", "--json")
    assert result.code == 0, result.err
    body = result.json()["requests"][0]["body"]
    request = GenerationRequest(PROMPT, seed=4, character_reference=CharacterReference(face, 0.25, False))
    assert body == redacted_payload(request_body(request, stream="msgpack"))
    assert body["parameters"]["director_reference_secondary_strength_values"] == [0.75]
    refused = generate(capsys, *args, "--model", "v4", "--dry-run")
    assert refused.code == 1
    assert (
        refused.err == "peropix: character_reference: only V4.5 models take a character reference, not "
        "NAI Diffusion V4 Full\n"
    )


# --- the metadata round trip -----------------------------------------------------------------------------------


ROUND_TRIPS = [
    [
        "--seed",
        "11",
        "--negative",
        "bad hands",
        "--uc-preset",
        "light",
        "--char",
        "girl, red hair@B2",
        "--char-negative",
        "hat",
        "--char",
        "boy",
        "--variety",
        "--cfg-rescale",
        "0.2",
        "--steps",
        "20",
    ],
    ["--seed", "12", "--model", "v3", "--smea", "--uc-preset", "none", "--scale", "6.5"],
    ["--seed", "13", "--model", "v4-curated", "--no-quality", "--sampler", "k_euler"],
    ["--seed", "14", "--model", "v5", "--uc-preset", "human_focus", "--dataset", "background"],
    ["--seed", "15", "--dataset", "fur", "--uc-preset", "furry_focus", "--char", "wolf@E5"],
]


@pytest.mark.parametrize("flags", ROUND_TRIPS)
def test_generate_read_from_image_gives_the_identical_payload(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    made = generate(capsys, "--prompt", PROMPT, "--size", "256x384", *flags, "--json")
    assert made.code == 0, made.err
    [sent] = generated(sandbox)
    path = Path(made.json()["images"][0]["path"])
    # the image's settings, read back, build exactly the body that made it...
    settings = settings_from_metadata(read_metadata(path))
    assert request_body(GenerationRequest(**settings.fields), stream="msgpack") == sent
    assert settings.warnings == []
    # ...and so does the command line, with the quality tags and UC preset not doubled
    again = generate(capsys, "--from-image", str(path), "--dry-run", "--json")
    assert again.code == 0 and again.err == ""
    assert again.json()["requests"][0]["body"] == redacted_payload(sent)


def test_round_trip_keeps_vibes(sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    vibe = png(tmp_path / "v.png", (64, 64), (1, 2, 3))
    made = generate(capsys, "--prompt", PROMPT, "--size", "256x256", "--seed", "21", "--vibe", f"{vibe}:0.45", "--json")
    assert made.code == 0, made.err
    sent = generated(sandbox)[-1]
    path = Path(made.json()["images"][0]["path"])
    settings = settings_from_metadata(read_metadata(path))
    assert request_body(GenerationRequest(**settings.fields), stream="msgpack") == sent
    again = generate(capsys, "--from-image", str(path), "--json")  # reuses the encoding: no new encode
    assert again.code == 0, again.err
    assert [r.path for r in sandbox.requests].count(ENCODE_PATH) == 1
    assert generated(sandbox)[-1] == sent


def test_flags_override_the_image_settings(sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    made = generate(capsys, "--prompt", PROMPT, "--size", "256x256", "--seed", "31", "--steps", "20", "--json")
    path = made.json()["images"][0]["path"]
    again = generate(capsys, "--from-image", path, "--prompt", "1boy", "--seed", "random", "--dry-run", "--json")
    params = again.json()["requests"][0]["body"]["parameters"]
    body = again.json()["requests"][0]["body"]
    assert body["input"] == "1boy, very aesthetic, masterpiece, no text"
    assert params["steps"] == 20 and (params["width"], params["height"]) == (256, 256)
    assert params["seed"] != 31


def test_from_image_of_an_img2img_warns_that_the_source_is_not_stored(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = png(tmp_path / "s.png", (256, 256))
    made = generate(capsys, "--prompt", PROMPT, "--image", str(source), "--strength", "0.4", "--json")
    path = made.json()["images"][0]["path"]
    plain = generate(capsys, "--from-image", path, "--dry-run", "--json")
    assert plain.code == 0
    assert "pass --image SRC" in plain.err
    assert plain.json()["requests"][0]["body"]["action"] == "generate"
    with_source = generate(capsys, "--from-image", path, "--image", str(source), "--dry-run", "--json")
    assert with_source.json()["requests"][0]["body"]["parameters"]["strength"] == 0.4


REAL = Path(__file__).resolve().parents[1] / "fixtures" / "images"


@pytest.mark.parametrize(
    "name",
    [
        "nai__enslo_sd-metadata__novelai-full-3char.png",  # V4.5 full, three positioned characters
        "nai__LlmKira_novelai-python__sample-0316.png",  # V3, SMEA DYN
        "webp__enslo_sd-metadata__novelai-curated.webp",  # V4.5 curated, quality tags of an older web version
    ],
)
def test_real_novelai_images_give_back_their_own_prompts(name: str) -> None:
    meta = read_metadata(REAL / name)
    settings = settings_from_metadata(meta)
    body = build_payload(GenerationRequest(**settings.fields))
    params = body["parameters"]
    assert body["input"] == meta.prompt
    assert params["negative_prompt"] == meta.negative_prompt
    assert (params["seed"], params["steps"], params["sampler"]) == (meta.seed, meta.steps, meta.sampler)
    assert (params["width"], params["height"], params["scale"]) == (meta.width, meta.height, meta.cfg)
    assert (params["sm"], params["sm_dyn"]) == (meta.smea, meta.smea_dyn)
    if "v4_prompt" in meta.extra:
        for block in ("v4_prompt", "v4_negative_prompt"):
            assert params[block]["caption"] == meta.extra[block]["caption"]
        assert (params["skip_cfg_above_sigma"] is not None) == (meta.extra["skip_cfg_above_sigma"] is not None)


def test_other_tools_images_are_fitted_to_novelai_with_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    stealth = REAL / "a1111__d3x-at_sd-parsers__automatic1111_stealth.png"
    cropped = REAL / "a1111__d3x-at_sd-parsers__automatic1111_cropped.png"
    result = generate(capsys, "--from-image", str(stealth), "--dry-run", "--json")
    assert result.code == 0, result.err
    assert "scheduler 'native' is not offered by NAI Diffusion V4.5 Full; using the default" in result.err
    assert result.json()["requests"][0]["body"]["parameters"]["noise_schedule"] == "karras"
    result = generate(capsys, "--from-image", str(cropped), "--dry-run", "--json")
    assert result.code == 0, result.err
    meta = read_metadata(cropped)
    params = result.json()["requests"][0]["body"]["parameters"]
    assert f"size {meta.width}x{meta.height} is not a NovelAI size" in result.err
    assert params["width"] % 64 == 0 and params["height"] % 64 == 0 and params["seed"] == meta.seed


def test_from_image_remembers_the_character_reference_settings(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    face = png(tmp_path / "face.png", (200, 300))
    args = ["--prompt", PROMPT, "--size", "256x256", "--charref", str(face), "--fidelity", "0.3", "--no-style-aware"]
    made = generate(capsys, *args, "--json")
    assert made.code == 0, made.err
    sent = generated(sandbox)[-1]
    path = made.json()["images"][0]["path"]
    without = generate(capsys, "--from-image", path, "--dry-run", "--json")
    assert "pass --charref IMG" in without.err
    assert "director_reference_images" not in without.json()["requests"][0]["body"]["parameters"]
    again = generate(capsys, "--from-image", path, "--charref", str(face), "--dry-run", "--json")
    assert again.err == ""
    assert again.json()["requests"][0]["body"] == redacted_payload(sent)


def test_from_image_without_settings_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bare = png(tmp_path / "bare.png")
    result = generate(capsys, "--from-image", str(bare), "--dry-run")
    assert result.code == 1
    assert result.err == f"peropix: --from-image {bare}: the image holds no generation settings to reuse\n"


# --- errors ------------------------------------------------------------------------------------------------


def test_bad_token_is_401_and_nothing_is_saved(
    sandbox: NaiSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    isolated_dirs: tuple[Path, Path],
) -> None:
    monkeypatch.setenv("PEROPIX_NAI_TOKEN", "pst-not-a-known-token-at-all")
    result = generate(capsys, "--prompt", PROMPT)
    assert result.code == 1
    line = one_line(result)
    assert "did not accept the token" in line and "(HTTP 401): Invalid accessToken." in line
    assert "correlation id" in line
    assert generated(sandbox) == [] and images_in(isolated_dirs[1]) == []


def test_missing_token_points_at_the_ways_on(capsys: pytest.CaptureFixture[str]) -> None:
    result = generate(capsys, "--prompt", PROMPT)
    assert result.code == 1
    assert "no NovelAI token" in one_line(result) and "--sandbox" in result.err


def test_short_balance_is_402_and_nothing_is_charged(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]
) -> None:
    sandbox.set_account(TOKEN, SandboxAccount(fixed_anlas=5))
    result = generate(capsys, "--prompt", PROMPT)
    assert result.code == 1
    line = one_line(result)
    assert "Not enough Anlas" in line and "HTTP 402" in line
    assert sandbox.balance(TOKEN) == 5 and images_in(isolated_dirs[1]) == []


def test_invalid_size_is_refused_before_sending(sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    for size, message in (
        ("1000x1000", "sides must be multiples of 64; the nearest valid size is 1024x1024"),
        ("2048x2048", "size: 2048x2048 is more than 3145728 pixels (2048x1536 at most)"),
    ):
        result = generate(capsys, "--prompt", PROMPT, "--size", size)
        assert result.code == 1
        assert message in one_line(result)
    assert sandbox.requests == []


def test_server_validation_error_is_400_with_its_message(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.inject(Fault(FaultKind.STATUS, status=400, message="Validation error: width must be a multiple of 64"))
    result = generate(capsys, "--prompt", PROMPT, "--size", "256x256")
    assert result.code == 1
    line = one_line(result)
    assert "NovelAI rejected the request (HTTP 400): Validation error: width must be a multiple of 64" in line
    assert len(generated(sandbox)) == 1  # a 400 is not retried


def test_a_failure_midway_keeps_the_images_already_made(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]
) -> None:
    sandbox.set_account(TOKEN, SandboxAccount(fixed_anlas=2))  # a 256x256 image costs 2
    result = generate(capsys, "--prompt", PROMPT, "--size", "256x256", "--n", "2", "--separate", "--seed", "70")
    assert result.code == 1
    [saved] = images_in(isolated_dirs[1])
    assert saved.name.endswith("_70.png") and f"saved {saved}  seed 70" in result.out
    assert result.err.splitlines()[0] == "peropix: 1 of 2 images saved"
    assert "Not enough Anlas" in result.err.splitlines()[1]


def test_json_failure_still_reports_what_was_saved(sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox.set_account(TOKEN, SandboxAccount(fixed_anlas=2))
    result = generate(capsys, "--prompt", PROMPT, "--size", "256x256", "--n", "2", "--separate", "--json")
    assert result.code == 1
    document = result.json()
    assert len(document["images"]) == 1 and "Not enough Anlas" in document["error"]


def test_flag_combinations_that_need_another_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in (
        (["--prompt", "x", "--strength", "0.5"], "--strength and --noise need --image"),
        (["--prompt", "x", "--fidelity", "0.5"], "need --charref IMG"),
        ([], "--prompt is required"),
        (["--prompt", "x", "--n", "0"], "ask for 1 to 1000 images"),
        (["--prompt", "x", "--seed", "abc"], "use a whole number or 'random'"),
        (["--prompt", "x", "--uc-preset", "medium"], "use one of heavy, light"),
    ):
        result = generate(capsys, *args, "--dry-run")
        assert result.code == 1 and message in one_line(result), args


# --- --sandbox ---------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peropix_tui", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_sandbox_flag_end_to_end(isolated_dirs: tuple[Path, Path]) -> None:
    _config, data_dir = isolated_dirs
    done = run_cli("--sandbox", "generate", "--prompt", PROMPT, "--size", "256x256", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("peropix: SANDBOX: using the local fake NovelAI at http://127.0.0.1:")
    document = json.loads(done.stdout)
    assert document["provider"] == "sandbox" and document["balance"] == 10_000 - document["cost"]
    [path] = images_in(data_dir)
    assert document["images"][0]["path"] == str(path)
    assert read_metadata(path).peropix["provider"] == "sandbox"
    with HistoryStore(data_dir / "history.sqlite3") as history:
        assert [e.provider for e in history.page(0, 10)] == ["sandbox"]


def test_sandbox_flag_after_the_command_and_the_environment_is_restored(
    capsys: pytest.CaptureFixture[str],
    isolated_dirs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PEROPIX_NAI_TOKEN", "pst-the-users-real-token-0000000")
    vibe = png(tmp_path / "v.png")
    result = generate(capsys, "--sandbox", "--prompt", PROMPT, "--size", "256x256", "--vibe", str(vibe), "--json")
    assert result.code == 0, result.err
    assert "SANDBOX" in result.err and result.json()["provider"] == "sandbox"
    assert os.environ["PEROPIX_NAI_TOKEN"] == "pst-the-users-real-token-0000000"
    assert "PEROPIX_NAI_BASE_URL" not in os.environ and active_session() is None
    # the sandbox's fake vibe encodings never land in the real cache
    data_dir = isolated_dirs[1]
    assert list((data_dir / "sandbox" / "vibes").rglob("*.vibe")) and not (data_dir / "vibes").exists()


def test_sandbox_flag_works_on_other_commands(isolated_dirs: tuple[Path, Path]) -> None:
    done = run_cli("config", "show", "--json", "--sandbox")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["endpoints.nai_base_url"]["value"].startswith("http://127.0.0.1:")
    assert shown["endpoints.nai_base_url"]["source"] == "$PEROPIX_NAI_BASE_URL"
    assert run_cli("config", "show", "--json").stdout != done.stdout


# --- secrets and Ctrl-C ------------------------------------------------------------------------------------


def test_the_token_is_never_printed_or_logged(sandbox: NaiSandbox, isolated_dirs: tuple[Path, Path]) -> None:
    env = dict(os.environ, PEROPIX_NAI_TOKEN=CANARY)
    base = ["generate", "--prompt", PROMPT, "--size", "256x256"]
    runs = [
        run_cli(*base, env=env),
        run_cli("-v", *base, "--json", env=env),
        run_cli("-v", *base, "--dry-run", env=env),
    ]
    sandbox.set_account(CANARY, SandboxAccount(fixed_anlas=1))
    runs.append(run_cli("-v", *base, env=env))  # 402
    del sandbox.accounts[CANARY]
    runs.append(run_cli("-v", *base, env=env))  # 401
    assert [done.returncode for done in runs[:3]] == [0, 0, 0]
    assert runs[3].returncode == 1 and "Not enough Anlas" in runs[3].stderr
    assert runs[4].returncode == 1 and "HTTP 401" in runs[4].stderr
    assert runs[1].stderr.count("DEBUG") > 0  # -v did print debug logs…
    log = (isolated_dirs[1] / "logs" / "peropix.log").read_text(encoding="utf-8")
    assert "NovelAI POST /ai/generate-image-stream" in log  # …and the log recorded the requests…
    for text in [log, *(done.stdout for done in runs), *(done.stderr for done in runs)]:
        assert CANARY not in text and CANARY[6:-4] not in text  # …without the token


def test_ctrl_c_cancels_cleanly(sandbox: NaiSandbox, isolated_dirs: tuple[Path, Path]) -> None:
    sandbox.delay_s = 30.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "peropix_tui", "generate", "--prompt", PROMPT, "--size", "256x256"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not generated(sandbox) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert generated(sandbox), "the request never arrived"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "peropix: interrupted" and out == ""
    outputs = isolated_dirs[1] / "outputs"
    assert not outputs.exists() or [p for p in outputs.rglob("*") if p.is_file()] == []
    assert sandbox.balance(TOKEN) == 10_000


def test_sandbox_default_token_is_the_documented_one() -> None:
    from peropix_tui.sandbox.session import sandbox_session

    with sandbox_session(environ={}) as session:
        assert session.token == SANDBOX_TOKEN and active_session() is session
        with pytest.raises(PeropixError, match="already running"), sandbox_session(environ={}):
            pass
    assert active_session() is None


# --- wildcards -----------------------------------------------------------------------------------------------

WILDCARD_PROMPT = "1girl, __hair__, <pick:red|blue> dress"
HAIR_LINES = ["silver hair", "black hair", "pink hair"]


def _hair_file(config_dir: Path) -> None:
    folder = config_dir / "wildcards"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hair.txt").write_text("\n".join(HAIR_LINES) + "\n", encoding="utf-8")


def test_wildcards_are_drawn_per_request_recorded_and_repeat_with_the_seed(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]
) -> None:
    _hair_file(isolated_dirs[0])
    args = ("--prompt", WILDCARD_PROMPT, "--n", "4", "--seed", "300", "--size", "256x256", "--separate")
    result = generate(capsys, *args)
    assert result.code == 0, result.err
    sent = [body["input"] for body in generated(sandbox)]
    assert len(sent) == 4 and not any("__" in p or "<pick:" in p for p in sent)
    draws = [line for line in result.out.splitlines() if line.startswith("wildcards ")]
    assert [line.split(":")[0] for line in draws] == [f"wildcards (seed {seed})" for seed in range(300, 304)]

    images = images_in(isolated_dirs[1])
    assert len(images) == 4
    for path in images:
        meta = read_metadata(path)
        record = meta.peropix["wildcards"]
        assert record["seed"] == meta.seed  # each request's seed seeds its draw
        assert record["template"] == {"prompt": WILDCARD_PROMPT}
        hair, dress = record["choices"]
        assert hair["value"] == HAIR_LINES[hair["index"]] and dress["value"] in ("red", "blue")
        assert (meta.prompt or "").startswith(f"1girl, {hair['value']}, {dress['value']} dress, ")
        assert f"__hair__ → {hair['value']!r}" in result.out

    # the same command draws the same prompts again
    again = generate(capsys, *args)
    assert again.code == 0, again.err
    assert [body["input"] for body in generated(sandbox)][4:] == sent


def test_dry_run_shows_the_draw(capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]) -> None:
    _hair_file(isolated_dirs[0])
    args = ("--prompt", WILDCARD_PROMPT, "--negative", "<pick:lowres|blurry>", "--seed", "5", "--dry-run")
    result = generate(capsys, *args)
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith("wildcards (seed 5): __hair__ → ") and "; negative: <pick:lowres|blurry> → " in first
    document = generate(capsys, *args, "--json").json()
    [entry] = document["requests"]
    record = entry["wildcards"]
    assert record["seed"] == 5
    assert record["template"] == {"prompt": WILDCARD_PROMPT, "negative": "<pick:lowres|blurry>"}
    hair, dress, negative = (choice["value"] for choice in record["choices"])
    assert entry["body"]["input"].startswith(f"1girl, {hair}, {dress} dress, ")
    assert negative in entry["body"]["parameters"]["negative_prompt"]
    assert f"{hair!r}" in first and f"{negative!r}" in first


def test_a_wildcard_that_cannot_be_drawn_fails_before_anything_is_sent(
    sandbox: NaiSandbox, capsys: pytest.CaptureFixture[str], isolated_dirs: tuple[Path, Path]
) -> None:
    result = generate(capsys, "--prompt", "1girl, __hair__", "--seed", "1")
    assert result.code == 1
    missing = isolated_dirs[0] / "wildcards" / "hair.txt"
    assert one_line(result) == f"peropix: no wildcard file {missing} for __hair__"
    assert sandbox.requests == []
    escape = generate(capsys, "--prompt", "__../../secrets__", "--seed", "1", "--dry-run")
    assert escape.code == 1 and "does not name a file inside" in one_line(escape)
