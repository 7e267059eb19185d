"""`peropix civitai get|batch` as a user runs it: a real subprocess against the sandbox server, including a
SIGKILL in the middle of a download and the rerun that completes it."""

from __future__ import annotations

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
from civitai_helpers import KEY, alice_dataset, model_files

from peropix_tui.civitai.events import (
    CreatorPlanned,
    CreatorStarted,
    Event,
    FileProgress,
    FileStarted,
    ImagesFound,
    ItemFinished,
    Notice,
)
from peropix_tui.civitai.layout import part_path
from peropix_tui.civitai.model_types import parse_model_types
from peropix_tui.commands.civitai_cmd import LineReporter, RichReporter
from peropix_tui.core.errors import PeropixError
from peropix_tui.sandbox.civitai_dataset import CivitaiDataset, FileAccess, ModelType
from peropix_tui.sandbox.civitai_faults import Fault, FaultKind
from peropix_tui.sandbox.civitai_server import CivitaiSandbox

REPO = Path(__file__).resolve().parents[2]
BIG = 6 * 1024 * 1024 + 4321


@pytest.fixture
def sandbox() -> Iterator[CivitaiSandbox]:
    with CivitaiSandbox(alice_dataset()) as server:
        yield server


@pytest.fixture
def env(sandbox: CivitaiSandbox, isolated_dirs: tuple[Path, Path]) -> dict[str, str]:
    config_dir, _ = isolated_dirs
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps({"civitai": {"request_spacing_s": 0}}))
    return {
        **os.environ,
        "PEROPIX_CIVITAI_BASE_URL": sandbox.base_url,
        "PEROPIX_CIVITAI_API_KEY": KEY,
        "PYTHONPATH": str(REPO),
    }


def peropix(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peropix_tui", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_get_collects_and_reports_one_line_per_item(
    sandbox: CivitaiSandbox, env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    done = peropix("civitai", "get", "https://civitai.com/user/alice/models", "--root", str(root), env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    wanted = model_files(sandbox.dataset, "alice")
    assert sum(line.startswith("done model ") for line in lines) == len(wanted)
    assert any(line.startswith("done image ") for line in lines)
    assert lines[-1].startswith("summary: model files: ") or any(line.startswith("summary: ") for line in lines)
    assert KEY not in done.stdout + done.stderr
    assert (root / "download_logs" / "alice" / "alice_download_log.json").exists()
    again = peropix("civitai", "get", "alice", "--root", str(root), env=env)
    assert again.returncode == 0
    assert "verified model" in again.stdout and "done model" not in again.stdout


def test_dry_run_prints_the_plan(sandbox: CivitaiSandbox, env: dict[str, str], tmp_path: Path) -> None:
    plan = peropix("civitai", "get", "alice", "--dry-run", "--types", "all", "--root", str(tmp_path), env=env)
    assert plan.returncode == 0, plan.stderr
    everything = model_files(sandbox.dataset, "alice", types=None)
    size = sum(f.size for f in everything)
    assert f"3 models, 4 versions; files: {len(everything)} to fetch" in plan.stdout
    assert f"({size / 1024:.1f} KB)" in plan.stdout
    assert not (tmp_path / "Users").exists()


def test_rejected_key_is_one_message_before_any_download(
    sandbox: CivitaiSandbox, env: dict[str, str], tmp_path: Path
) -> None:
    result = peropix(
        "civitai", "get", "alice", "--root", str(tmp_path), env={**env, "PEROPIX_CIVITAI_API_KEY": "bad-key-0123456789"}
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("peropix:")]
    assert len(errors) == 1 and "rejected the API key" in errors[0]
    assert "bad-key-0123456789" not in result.stdout + result.stderr
    assert [r.path for r in sandbox.requests] == ["/api/v1/me"]
    assert not (tmp_path / "Users").exists()


def test_batch_reports_bad_lines_and_collects_the_rest(
    sandbox: CivitaiSandbox, env: dict[str, str], tmp_path: Path
) -> None:
    batch = tmp_path / "creators.txt"
    batch.write_text(
        "# my creators\nhttps://civitai.com/user/alice\n\nhttps://example.com/user/x\nhttps://civitai.com/models/5\n"
    )
    result = peropix("civitai", "batch", str(batch), "--root", str(tmp_path / "lib"), "--no-images", env=env)
    assert result.returncode == 1  # the bad lines count as failures
    assert f"{batch}: line 4: " in result.stderr and f"{batch}: line 5: " in result.stderr
    assert "line 2" not in result.stderr
    assert sum(line.startswith("done model ") for line in result.stdout.splitlines()) == len(
        model_files(sandbox.dataset, "alice")
    )


def test_exit_codes_say_failed_or_waiting(sandbox: CivitaiSandbox, env: dict[str, str], tmp_path: Path) -> None:
    first, second = model_files(sandbox.dataset, "alice")[:2]
    sandbox.inject(Fault(FaultKind.EARLY_ACCESS, file_id=first.id), times=None)
    waiting = peropix("civitai", "get", "alice", "--root", str(tmp_path), "--no-images", env=env)
    assert waiting.returncode == 75, waiting.stdout
    assert "early_access" in waiting.stdout
    second.access = FileAccess.KEY
    result = peropix(
        "civitai",
        "get",
        "alice",
        "--root",
        str(tmp_path / "nokey"),
        "--no-images",
        env={k: v for k, v in env.items() if k != "PEROPIX_CIVITAI_API_KEY"},
    )
    assert result.returncode == 1
    assert "need a CivitAI API key" in result.stdout
    bad = peropix("civitai", "get", "https://civitai.com/models/1", env=env)
    assert bad.returncode == 2 and "a model page" in bad.stderr
    types = peropix("civitai", "get", "alice", "--types", "LORA,Nope", env=env)
    assert types.returncode == 1 and "unknown model type Nope" in types.stderr


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_mid_download_then_the_rerun_completes_byte_identical(
    env: dict[str, str], tmp_path: Path, signum: signal.Signals
) -> None:
    dataset = CivitaiDataset(seed=21)
    dave = dataset.add_creator("dave")
    model = dataset.add_model(dave, "Dave Style", type=ModelType.LORA)
    version = dataset.add_version(model)
    big = dataset.add_file(version, size=BIG)
    image = dataset.add_image(version)
    root = tmp_path / "lib"
    target = root / "Users" / "dave" / "Dave Style" / big.name
    log_file = root / "download_logs" / "dave" / "dave_download_log.json"
    with CivitaiSandbox(dataset) as server:
        run_env = {**env, "PEROPIX_CIVITAI_BASE_URL": server.base_url}
        server.inject(Fault(FaultKind.SLOW, file_id=big.id, rate=1024 * 1024), times=1)
        process = subprocess.Popen(
            [sys.executable, "-m", "peropix_tui", "civitai", "get", "dave", "--root", str(root)],
            cwd=REPO,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            part = part_path(target)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 2 * 1024 * 1024):
                time.sleep(0.05)
            process.send_signal(signum)
        finally:
            stdout, _ = process.communicate(timeout=30)
        if signum == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
        else:
            assert process.returncode == 130
            assert "interrupted: the log is saved and partial files are kept" in stdout
            assert json.loads(log_file.read_text())["models"]  # saved on the way out
        kept = part.stat().st_size
        assert 2 * 1024 * 1024 <= kept < BIG
        assert part.read_bytes() == big.read(0, kept)
        assert not target.exists()
        server.clear_requests()
        rerun = peropix("civitai", "get", "dave", "--root", str(root), env=run_env)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert target.read_bytes() == big.read()
        assert not part.exists()
        [storage] = [r for r in server.requests if r.path.startswith("/storage/")]
        assert storage.headers["range"] == f"bytes={kept}-" and storage.bytes_sent == BIG - kept
        images = list(target.parent.glob(f"{image.id}.*"))
        assert sorted(p.suffix for p in images) == [".png", ".txt"]
        log = json.loads(log_file.read_text())
        assert {e["id"] for e in log["success"]} == {big.id, image.id}


def test_types_option() -> None:
    assert parse_model_types(None, ["LORA", "LoCon"]) == ("LORA", "LoCon")
    assert parse_model_types("lora, dora,LORA", []) == ("LORA", "DoRA")
    assert parse_model_types("lora locon", []) == ("LORA", "LoCon")
    assert parse_model_types("ALL", ["LORA"]) is None
    assert parse_model_types("LORA, all", []) is None
    with pytest.raises(PeropixError, match="--types: unknown model type Foo"):
        parse_model_types("Foo", [])
    with pytest.raises(PeropixError, match="--types is empty"):
        parse_model_types(" , ", [])
    with pytest.raises(PeropixError, match="Model types: unknown model type Lora2"):
        parse_model_types("LORA Lora2", (), field="Model types")


def reporter_events() -> list[Event]:
    return [
        Notice("API key accepted for sandbox_user"),
        CreatorStarted("alice", "https://civitai.com"),
        CreatorPlanned("alice", 2, 3, 2, 3 * 1024 * 1024, 1, 0),
        FileStarted("file:1", "a.safetensors", 2 * 1024 * 1024),
        FileProgress("file:1", 1024 * 1024, 2 * 1024 * 1024),
        ItemFinished("model", 1, "a.safetensors", "done", size=2 * 1024 * 1024, key="file:1"),
        FileStarted("file:2", "b.safetensors", 1024 * 1024),
        ItemFinished("model", 2, "b.safetensors", "failed", "needs_api_key", "needs a key", key="file:2"),
        ItemFinished("model", 3, "c.safetensors", "verified", size=10),
        ImagesFound("alice", 7, 2, 1),
        ItemFinished("image", 9, "9.png", "done", size=100),
        ItemFinished("image", 10, "10.png", "verified", size=100),
        Notice("something odd", "warning"),
    ]


@pytest.mark.parametrize("kind", ["lines", "bars"])
def test_reporters_count_and_show_failures(kind: str) -> None:
    out = io.StringIO()
    reporter = LineReporter(out) if kind == "lines" else RichReporter(out)
    for event in reporter_events():
        reporter.handle(event)
    reporter.close()
    text = out.getvalue()
    assert "failed model 2 b.safetensors" in text and "needs_api_key" in text
    assert "something odd" in text
    assert "alice: 2 models, 3 versions; files: 2 to fetch (3.0 MB), 1 already here, 0 waiting" in text
    tally = reporter.tally
    assert (tally.count("done"), tally.count("verified"), tally.count("failed")) == (2, 2, 1)
    assert tally.reasons == {"needs_api_key": 1}
    if kind == "lines":
        assert "done model 1 a.safetensors (2.0 MB)" in text
    else:
        assert isinstance(reporter, RichReporter)
        files, images = reporter.counts.tasks
        assert (files.completed, files.total) == (3, 3)
        assert (images.completed, images.total) == (2, 2)
        overall = reporter.bytes.tasks[0]
        assert (overall.completed, overall.total) == (2 * 1024 * 1024, 2 * 1024 * 1024)
