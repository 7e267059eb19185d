from __future__ import annotations

import logging
import stat
from pathlib import Path

import orjson
import pytest

from peropix_tui.core.errors import ConfigError
from peropix_tui.core.logs import setup_logging
from peropix_tui.core.redact import redact, scrub
from peropix_tui.core.secrets import SecretStore

TOKEN = "pst-Zq8ExampleSecretToken0123456789abcdefXY"


def test_redact_keeps_prefix_and_ends_only() -> None:
    assert redact(TOKEN) == "pst-Zq…XY"
    assert redact("0123456789abcdef0123") == "01…23"
    assert redact("short") == "****"
    assert redact("") == ""
    assert TOKEN[6:-2] not in redact(TOKEN)


def test_scrub_removes_known_secrets_bearer_and_query_tokens(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json", environ={"PEROPIX_NAI_TOKEN": TOKEN})
    assert store.value("nai_token") == TOKEN
    text = f"sent {TOKEN} with Authorization: Bearer abcdefghijklmnop1234 to https://x/y?token=qwertyuiopasdfgh&a=1"
    out = scrub(text)
    assert TOKEN not in out and "abcdefghijklmnop1234" not in out and "qwertyuiopasdfgh" not in out
    assert "pst-Zq…XY" in out and "&a=1" in out


def test_file_is_0600_and_env_wins(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "secrets.json"
    store = SecretStore(path, environ={})
    store.set("civitai_api_key", "  0123456789abcdef0123456789abcdef \n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes()) == {"civitai_api_key": "0123456789abcdef0123456789abcdef"}
    env = {"PEROPIX_CIVITAI_API_KEY": "ffffffffffffffffffffffffffffffff"}
    overridden = SecretStore(path, environ=env)
    assert overridden.value("civitai_api_key") == "f" * 32
    assert "PEROPIX_CIVITAI_API_KEY" in overridden.describe("civitai_api_key")
    assert "f" * 10 not in overridden.describe("civitai_api_key")
    overridden.set("civitai_api_key", None)
    assert orjson.loads(path.read_bytes()) == {}


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text('{"nai_token": "pst-abcdefghijklmnopqrstuvwxyz"}')
    path.chmod(0o644)
    store = SecretStore(path, environ={})
    assert store.value("nai_token") == "pst-abcdefghijklmnopqrstuvwxyz"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_bad_values_refused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json", environ={})
    with pytest.raises(ConfigError, match="NovelAI token is empty"):
        store.set("nai_token", "   ")
    with pytest.raises(ConfigError, match="without spaces"):
        store.set("nai_token", "pst-abc def ghijkl")
    assert not (tmp_path / "s.json").exists()


def test_unreadable_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{broken")
    path.chmod(0o600)
    store = SecretStore(path, environ={})
    assert store.problem and "cannot read secrets" in store.problem
    with pytest.raises(ConfigError, match="fix or remove the file"):
        store.set("nai_token", TOKEN)
    assert path.read_text() == "{broken"


def test_secret_never_reaches_log_file_even_in_tracebacks(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "p.log"
    setup_logging(log_file)
    SecretStore(tmp_path / "s.json", environ={"PEROPIX_NAI_TOKEN": TOKEN})
    logger = logging.getLogger("peropix_tui.test")
    logger.info("token is %s", TOKEN)
    logger.warning("header %s", {"Authorization": f"Bearer {TOKEN}"})
    try:
        raise ValueError(f"request failed for {TOKEN}")
    except ValueError:
        logger.exception("boom")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "pst-Zq…XY" in text and "request failed for" in text
    assert TOKEN not in text
    assert "ExampleSecretToken" not in text
