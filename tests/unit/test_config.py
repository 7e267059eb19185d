from __future__ import annotations

import json
import logging
from pathlib import Path

import orjson
import pytest

from peropix_tui.core.config import LEAVES, Config
from peropix_tui.core.errors import ConfigError
from peropix_tui.core.paths import AppDirs


def dirs(tmp_path: Path) -> AppDirs:
    return AppDirs(config_dir=tmp_path / "cfg", data_dir=tmp_path / "data")


def test_env_dirs_override_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEROPIX_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("PEROPIX_DATA_DIR", str(tmp_path / "d"))
    d = AppDirs.from_env()
    assert d.config_file == tmp_path / "c" / "config.json"
    assert d.secrets_file == tmp_path / "c" / "secrets.json"
    assert d.log_file == tmp_path / "d" / "logs" / "peropix.log"


def test_defaults_without_file(tmp_path: Path) -> None:
    cfg = Config.load(dirs(tmp_path), environ={})
    assert cfg.issues == []
    assert cfg.get("executors.gpu") == 1
    assert cfg.get("ui.image_renderer") == "auto"
    assert cfg.outputs_dir == tmp_path / "data" / "outputs"
    assert not cfg.path.exists()


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = Config.load(dirs(tmp_path), environ={})
    cfg.set("executors.io", 7)
    cfg.set("ui.image_renderer", "halfcell")
    cfg.set("paths.lora_dirs", "/models/lora, /more/lora", from_text=True)
    cfg.set("civitai.request_spacing_s", "2.5", from_text=True)
    cfg.save()
    again = Config.load(dirs(tmp_path), environ={})
    assert again.issues == []
    assert again.get("executors.io") == 7
    assert again.get("ui.image_renderer") == "halfcell"
    assert again.get("paths.lora_dirs") == ["/models/lora", "/more/lora"]
    assert again.get("civitai.request_spacing_s") == 2.5
    # every known key is written so the file documents the options
    on_disk = orjson.loads(cfg.path.read_bytes())
    assert {f"{s}.{k}" for s, sec in on_disk.items() for k in sec} == set(LEAVES)


def test_unknown_keys_are_preserved(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    d.config_dir.mkdir(parents=True)
    d.config_file.write_text(json.dumps({"ui": {"theme": "nord", "future_knob": [1, 2]}, "plugins": {"x": True}}))
    cfg = Config.load(d, environ={})
    assert cfg.get("ui.theme") == "nord"
    cfg.set("ui.mouse", False)
    cfg.save()
    raw = json.loads(d.config_file.read_text())
    assert raw["plugins"] == {"x": True}
    assert raw["ui"]["future_knob"] == [1, 2]
    assert raw["ui"]["mouse"] is False
    assert raw["ui"]["theme"] == "nord"


def test_invalid_value_reports_key_and_file_uses_default_and_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = dirs(tmp_path)
    d.config_dir.mkdir(parents=True)
    d.config_file.write_text(json.dumps({"executors": {"io": "lots", "metadata": 0}, "ui": {"image_renderer": "x"}}))
    with caplog.at_level(logging.WARNING):
        cfg = Config.load(d, environ={})
    messages = [str(i) for i in cfg.issues]
    assert any("executors.io" in m and "whole number" in m and str(d.config_file) in m for m in messages)
    assert any("executors.metadata" in m and "at least 1" in m for m in messages)
    assert any("ui.image_renderer" in m and "'halfcell'" in m for m in messages)
    assert cfg.get("executors.io") == 4
    assert "executors.io" in caplog.text
    # saving after changing another key must not clobber the user's (invalid) values
    cfg.set("ui.theme", "gruvbox")
    cfg.save()
    raw = json.loads(d.config_file.read_text())
    assert raw["executors"]["io"] == "lots"
    assert raw["ui"]["image_renderer"] == "x"
    assert raw["ui"]["theme"] == "gruvbox"
    # once the user sets the key, the fixed value is written
    cfg.set("executors.io", 3)
    cfg.save()
    assert json.loads(d.config_file.read_text())["executors"]["io"] == 3


def test_unparseable_file_is_never_clobbered(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    d.config_dir.mkdir(parents=True)
    garbage = b'{"ui": {"theme": "nord",,,}'
    d.config_file.write_bytes(garbage)
    cfg = Config.load(d, environ={})
    assert len(cfg.issues) == 1 and "not valid JSON" in str(cfg.issues[0])
    assert cfg.get("ui.theme") == "textual-dark"
    assert d.config_file.read_bytes() == garbage  # loading never writes
    cfg.set("ui.theme", "nord")
    cfg.save()
    backups = list(d.config_dir.glob("config.json.unreadable-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == garbage
    assert json.loads(d.config_file.read_text())["ui"]["theme"] == "nord"


def test_set_refuses_bad_values_with_key_in_message(tmp_path: Path) -> None:
    cfg = Config.load(dirs(tmp_path), environ={})
    with pytest.raises(ConfigError, match=r"executors.gpu: must be 1"):
        cfg.set("executors.gpu", 2)
    with pytest.raises(ConfigError, match=r"endpoints.nai_base_url: must be an http\(s\) URL"):
        cfg.set("endpoints.nai_base_url", "ftp://x")
    with pytest.raises(ConfigError, match=r"unknown setting 'ui\.nope'"):
        cfg.set("ui.nope", 1)
    with pytest.raises(ConfigError, match="true or false"):
        cfg.set("ui.mouse", "maybe", from_text=True)
    assert cfg.get("executors.gpu") == 1


def test_env_endpoint_overrides_apply_but_are_never_saved(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    env = {"PEROPIX_NAI_BASE_URL": "http://127.0.0.1:9999", "PEROPIX_CIVITAI_BASE_URL": "not a url"}
    cfg = Config.load(d, environ=env)
    assert cfg.get("endpoints.nai_base_url") == "http://127.0.0.1:9999"
    assert cfg.overridden == {"endpoints.nai_base_url": "PEROPIX_NAI_BASE_URL"}
    assert any("PEROPIX_CIVITAI_BASE_URL" in str(i) for i in cfg.issues)
    cfg.save()
    raw = json.loads(d.config_file.read_text())
    assert "nai_base_url" not in raw["endpoints"]
    assert raw["endpoints"]["civitai_base_url"] == "https://civitai.com"
