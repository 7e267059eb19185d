"""`--sandbox` sessions: both sandbox servers in-process, the environment pointed at them and restored, and the
CivitAI library kept apart from real downloads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from peropix_tui.civitai.client import CivitaiClient
from peropix_tui.civitai.errors import ApiKeyRejected
from peropix_tui.core.config import Config
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SecretStore
from peropix_tui.engine.nai.client import NovelAIClient
from peropix_tui.sandbox.civitai_credentials import SANDBOX_API_KEY, SANDBOX_USERNAME
from peropix_tui.sandbox.civitai_dataset import FileAccess, SandboxFile
from peropix_tui.sandbox.civitai_default import MAIN_CREATOR
from peropix_tui.sandbox.civitai_server import CivitaiSandbox
from peropix_tui.sandbox.nai_accounts import SANDBOX_TOKEN
from peropix_tui.sandbox.nai_faults import SUBSCRIPTION_PATH
from peropix_tui.sandbox.session import (
    ENV_KEYS,
    SandboxSession,
    active_session,
    civitai_root,
    sandbox_session,
    vibe_cache_dir,
)

REAL_NAI_TOKEN = "pst-real-user-token-0123456789"
REAL_CIVITAI_KEY = "0123456789abcdef0123456789abcdef"
REAL_CIVITAI_URL = "https://civitai.example"


def env_of(session: SandboxSession) -> dict[str, str]:
    return {
        "PEROPIX_NAI_BASE_URL": session.base_url,
        "PEROPIX_NAI_ACCOUNT_URL": session.account_url,
        "PEROPIX_NAI_TOKEN": session.token,
        "PEROPIX_CIVITAI_BASE_URL": session.civitai_url,
        "PEROPIX_CIVITAI_API_KEY": session.civitai_key,
    }


def key_file(server: CivitaiSandbox) -> SandboxFile:
    """A file of the default dataset that downloads with a key and only with one."""
    dataset = server.dataset
    for sandbox_file in dataset.files.values():
        version = dataset.versions[sandbox_file.version_id]
        model = dataset.model_of(version)
        if (
            sandbox_file.access is FileAccess.KEY
            and sandbox_file.api_sha256 is None
            and version.early_access_until is None
            and model.mode is None
            and not model.poi
        ):
            return sandbox_file
    raise AssertionError("the default dataset has no plain key-only file")


def test_environment_names_both_sandboxes_and_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEROPIX_NAI_TOKEN", REAL_NAI_TOKEN)
    monkeypatch.setenv("PEROPIX_CIVITAI_API_KEY", REAL_CIVITAI_KEY)
    monkeypatch.setenv("PEROPIX_CIVITAI_BASE_URL", REAL_CIVITAI_URL)
    before = {name: os.environ.get(name) for name in ENV_KEYS}
    with sandbox_session() as session:
        assert active_session() is session
        assert {name: os.environ[name] for name in ENV_KEYS} == env_of(session)
        assert session.token == SANDBOX_TOKEN and session.civitai_key == SANDBOX_API_KEY
        assert session.civitai_url == session.civitai_server.base_url != session.base_url
        assert session.civitai_url.startswith("http://127.0.0.1:")
        nai, civitai = session.server, session.civitai_server
        assert [nai.running, civitai.running] == [True, True]
    assert {name: os.environ.get(name) for name in ENV_KEYS} == before
    assert os.environ["PEROPIX_CIVITAI_API_KEY"] == REAL_CIVITAI_KEY
    assert "PEROPIX_NAI_BASE_URL" not in os.environ
    assert active_session() is None
    assert [nai.running, civitai.running] == [False, False]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{session.civitai_url}/api/v1/me", timeout=5)


def test_environment_comes_back_when_the_block_fails() -> None:
    environ = {"PEROPIX_CIVITAI_API_KEY": REAL_CIVITAI_KEY, "UNRELATED": "kept"}
    with pytest.raises(RuntimeError, match="boom"), sandbox_session(environ=environ) as session:
        assert environ["PEROPIX_CIVITAI_API_KEY"] == SANDBOX_API_KEY
        raise RuntimeError("boom")
    assert environ == {"PEROPIX_CIVITAI_API_KEY": REAL_CIVITAI_KEY, "UNRELATED": "kept"}
    assert active_session() is None and not session.civitai_server.running and not session.server.running


def test_both_servers_answer_over_http() -> None:
    with sandbox_session(environ={}) as session:
        account = httpx.get(
            session.base_url + SUBSCRIPTION_PATH, headers={"Authorization": f"Bearer {session.token}"}, timeout=20
        )
        assert account.status_code == 200 and account.json()["active"] is True
        models = httpx.get(
            f"{session.civitai_url}/api/v1/models", params={"username": MAIN_CREATOR, "limit": 100}, timeout=20
        )
        assert models.status_code == 200
        listed = models.json()["items"]
        assert listed and {item["creator"]["username"] for item in listed} == {MAIN_CREATOR}

        wanted = key_file(session.civitai_server)
        download = f"{session.civitai_url}/api/download/models/{wanted.version_id}"
        anonymous = httpx.get(download, params={"fileId": wanted.id}, timeout=20)
        assert anonymous.status_code == 401
        auth = {"Authorization": f"Bearer {session.civitai_key}"}
        redirect = httpx.get(download, params={"fileId": wanted.id}, headers=auth, timeout=20)
        assert redirect.status_code == 307
        body = httpx.get(redirect.headers["location"], timeout=20)
        assert body.status_code == 200 and len(body.content) == wanted.size
        assert hashlib.sha256(body.content).hexdigest().upper() == wanted.hashes.sha256.upper()
        assert session.civitai_server.key_leaks() == []


async def test_settings_and_secrets_loaded_inside_reach_the_sandboxes(tmp_path: Path) -> None:
    dirs = AppDirs.from_env()
    SecretStore(dirs.secrets_file, environ={}).set("civitai_api_key", REAL_CIVITAI_KEY)
    SecretStore(dirs.secrets_file, environ={}).set("nai_token", REAL_NAI_TOKEN)
    saved = Config.load(dirs, environ={})
    saved.set("endpoints.civitai_base_url", REAL_CIVITAI_URL)
    saved.save()
    with sandbox_session() as session:
        config = Config.load(dirs)
        secrets = SecretStore(dirs.secrets_file)
        base_url = config.get("endpoints.civitai_base_url")
        assert base_url == session.civitai_url
        assert secrets.value("civitai_api_key") == session.civitai_key
        async with CivitaiClient(base_url, secrets.value("civitai_api_key"), spacing_s=0.0) as civitai:
            me = await civitai.me()
        assert me is not None and me["username"] == SANDBOX_USERNAME
        async with NovelAIClient.from_config(config, secrets) as nai:
            subscription = await nai.subscription()
        assert subscription.active and subscription.account.balance > 0
    assert [r.path for r in session.civitai_server.requests] == ["/api/v1/me"]
    assert Config.load(dirs).get("endpoints.civitai_base_url") == REAL_CIVITAI_URL
    assert SecretStore(dirs.secrets_file).value("civitai_api_key") == REAL_CIVITAI_KEY


async def test_a_chosen_civitai_key_is_the_only_one_accepted() -> None:
    own = "my-own-sandbox-key-42"
    with sandbox_session(civitai_key=own, environ={}) as session:
        assert session.civitai_key == own
        async with CivitaiClient(session.civitai_url, own, spacing_s=0.0) as good:
            me = await good.me()
        assert me is not None and me["username"] == SANDBOX_USERNAME
        async with CivitaiClient(session.civitai_url, SANDBOX_API_KEY, spacing_s=0.0) as other:
            with pytest.raises(ApiKeyRejected):
                await other.me()


@pytest.mark.parametrize("bad", ["", "two words"])
def test_an_unusable_civitai_key_starts_nothing(bad: str) -> None:
    environ = {"PEROPIX_CIVITAI_API_KEY": REAL_CIVITAI_KEY}
    with pytest.raises(PeropixError, match="API key"), sandbox_session(civitai_key=bad, environ=environ):
        pass
    assert environ == {"PEROPIX_CIVITAI_API_KEY": REAL_CIVITAI_KEY} and active_session() is None


async def test_a_second_session_is_refused_and_the_first_keeps_working() -> None:
    environ: dict[str, str] = {}
    with sandbox_session(environ=environ) as first:
        expected = env_of(first)
        refused = f"already running in this process at {first.base_url}"
        with pytest.raises(PeropixError, match=refused), sandbox_session(environ=environ):
            pass
        assert active_session() is first and environ == expected
        async with CivitaiClient(first.civitai_url, first.civitai_key, spacing_s=0.0) as civitai:
            assert await civitai.me() is not None
    assert environ == {}
    with sandbox_session(environ=environ) as again:
        assert active_session() is again and again.civitai_server is not first.civitai_server
    assert active_session() is None


def test_civitai_root_is_the_sandbox_folder_only_inside_a_session(tmp_path: Path) -> None:
    dirs = AppDirs.from_env()
    config = Config.load(dirs)
    chosen = tmp_path / "picked"
    sandbox_root = dirs.data_dir / "sandbox" / "civitai"

    assert civitai_root(config) == config.civitai_root == dirs.data_dir / "civitai"
    assert civitai_root(config, chosen) == chosen
    with sandbox_session(environ={}):
        inside = civitai_root(config)
        assert inside == sandbox_root
        assert not inside.is_relative_to(config.civitai_root) and not config.civitai_root.is_relative_to(inside)
        assert inside != vibe_cache_dir(config)
        assert civitai_root(config, chosen) == chosen
    assert civitai_root(config) == dirs.data_dir / "civitai"


def test_a_configured_library_is_still_set_aside_in_a_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    dirs = AppDirs.from_env()
    config = Config.load(dirs)
    configured = tmp_path / "real-library"
    config.set("paths.civitai_root", str(configured))
    assert civitai_root(config) == configured
    assert civitai_root(config, Path("~/lib")) == tmp_path / "home" / "lib"
    with sandbox_session(environ={}):
        assert civitai_root(config) == dirs.data_dir / "sandbox" / "civitai"
        assert civitai_root(config, Path("~/lib")) == tmp_path / "home" / "lib"
    assert civitai_root(config) == configured
