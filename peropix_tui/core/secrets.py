"""The NovelAI token and the CivitAI API key: a 0600 JSON file beside the settings, environment overrides.

Every secret loaded here is registered with the redactor, so no log line can carry it whatever code logs it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import ConfigError
from peropix_tui.core.redact import SECRETS, redact

log = logging.getLogger(__name__)

SecretName = Literal["nai_token", "civitai_api_key"]
SECRET_NAMES: tuple[SecretName, ...] = ("nai_token", "civitai_api_key")
SECRET_LABELS: dict[SecretName, str] = {"nai_token": "NovelAI token", "civitai_api_key": "CivitAI API key"}
SECRET_ENV: dict[SecretName, str] = {
    "nai_token": "PEROPIX_NAI_TOKEN",
    "civitai_api_key": "PEROPIX_CIVITAI_API_KEY",
}


@dataclass(frozen=True, slots=True)
class SecretValue:
    value: str
    source: str  # "file" or the environment variable's name

    def __str__(self) -> str:  # so an f-string or a repr in a traceback never shows it
        return redact(self.value)

    __repr__ = __str__


def validate_secret(name: SecretName, value: str) -> str:
    """Trim and check a secret typed or pasted by a user; raise ConfigError with the reason."""
    value = value.strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    label = SECRET_LABELS[name]
    if not value:
        raise ConfigError(f"{label} is empty")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(f"{label} must be one word without spaces or control characters")
    if len(value) < 8:
        raise ConfigError(f"{label} is too short to be real ({len(value)} characters)")
    return value


class SecretStore:
    """Reads and writes `secrets.json` (mode 0600); the environment wins over the file."""

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self._environ = os.environ if environ is None else environ
        self._file: dict[str, str] = {}
        self.problem: str | None = None
        self._read()
        for name in SECRET_NAMES:
            found = self.get(name)
            if found:
                SECRETS.add(found.value)

    def _read(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            try:
                os.chmod(self.path, 0o600)
                log.warning("secrets: %s was readable by others; its mode is now 0600", self.path)
            except OSError as exc:
                log.warning("secrets: %s is readable by others and chmod failed: %s", self.path, exc.strerror)
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            self.problem = f"{self.path}: cannot read secrets ({type(exc).__name__}); they are ignored"
            log.warning("secrets: %s", self.problem)
            return
        if not isinstance(raw, dict):
            self.problem = f"{self.path}: must hold a JSON object; secrets ignored"
            log.warning("secrets: %s", self.problem)
            return
        self._file = {k: v for k, v in raw.items() if isinstance(v, str)}

    def get(self, name: SecretName) -> SecretValue | None:
        env_name = SECRET_ENV[name]
        if env_value := self._environ.get(env_name, "").strip():
            return SecretValue(env_value, env_name)
        if file_value := self._file.get(name, "").strip():
            return SecretValue(file_value, "file")
        return None

    def value(self, name: SecretName) -> str | None:
        found = self.get(name)
        return found.value if found else None

    def set(self, name: SecretName, value: str | None) -> None:
        """Store (or with None, remove) a secret in the file, atomically and with mode 0600."""
        if self.problem:
            raise ConfigError(f"{self.problem}; fix or remove the file before saving secrets")
        updated = dict(self._file)
        if value is None:
            updated.pop(name, None)
        else:
            value = validate_secret(name, value)
            SECRETS.add(value)
            updated[name] = value
        atomic_write_bytes(self.path, orjson.dumps(updated, option=orjson.OPT_INDENT_2) + b"\n", mode=0o600)
        self._file = updated
        log.info("secrets: %s %s", SECRET_LABELS[name], "removed" if value is None else f"saved ({redact(value)})")

    def describe(self, name: SecretName) -> str:
        """What the user may see: source and redacted value, or 'not set'."""
        found = self.get(name)
        if not found:
            return "not set"
        where = "secrets file" if found.source == "file" else f"${found.source}"
        return f"{redact(found.value)} (from {where})"
