"""Real commands run with known secrets: the secrets appear in no output and in no log line, only redacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NAI = "pst-LeakCanaryNovelAIToken000000000000000000000000000000000000Zz"
CIVITAI = "c1v1ta1LeakCanaryApiKey0123456789abcdef"
IMAGE = Path(__file__).resolve().parents[1] / "fixtures" / "images" / "nai__LlmKira_novelai-python__sample-0316.png"


def run(
    *args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PEROPIX_NAI_TOKEN=NAI, PEROPIX_CIVITAI_API_KEY=CIVITAI, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "peropix_tui", "-v", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def assert_clean(text: str) -> None:
    for secret in (NAI, CIVITAI):
        assert secret not in text
        assert secret[6:-4] not in text  # not even most of it


def test_commands_never_print_or_log_secrets(isolated_dirs: tuple[Path, Path]) -> None:
    config_dir, data_dir = isolated_dirs
    outputs = [
        run("secrets", "show"),
        run("config", "show"),
        run("config", "show", "--json"),
        run("meta", "show", str(IMAGE)),
        run("meta", "show", "--json", str(IMAGE), str(config_dir / "missing.png")),
        # storing a secret from stdin, then showing it from the file (env unset for that one)
        run("secrets", "set", "nai_token", "--stdin", stdin=NAI + "\n"),
        run("secrets", "set", "civitai_api_key", "--stdin", stdin="bad key with spaces\n"),
        run("config", "set", "endpoints.nai_base_url", f"https://example.com/?token={NAI}"),
    ]
    shown = outputs[0].stdout
    assert "pst-Le…Zz" in shown and "c1…ef" in shown  # redacted stubs are how secrets are shown
    assert outputs[5].returncode == 0 and "saved" in outputs[5].stdout
    assert outputs[6].returncode == 1 and "without spaces" in outputs[6].stderr
    for done in outputs:
        assert_clean(done.stdout)
        assert_clean(done.stderr)
    log = (data_dir / "logs" / "peropix.log").read_text(encoding="utf-8")
    assert "secrets: NovelAI token saved" in log  # the log did record the events…
    assert_clean(log)  # …without the values
    stored = (config_dir / "secrets.json").read_text()
    assert NAI in stored  # the file itself holds the secret, readable by its owner only
    assert oct((config_dir / "secrets.json").stat().st_mode & 0o777) == "0o600"
