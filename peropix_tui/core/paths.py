"""Where peropix keeps its files: platformdirs defaults, overridable by environment for scripts and tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "peropix"

ENV_CONFIG_DIR = "PEROPIX_CONFIG_DIR"
ENV_DATA_DIR = "PEROPIX_DATA_DIR"


@dataclass(frozen=True, slots=True)
class AppDirs:
    """The two roots every other path hangs from."""

    config_dir: Path
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def secrets_file(self) -> Path:
        return self.config_dir / "secrets.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "peropix.log"

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> AppDirs:
        env = os.environ if environ is None else environ
        config = env.get(ENV_CONFIG_DIR) or str(platformdirs.user_config_path(APP_NAME))
        data = env.get(ENV_DATA_DIR) or str(platformdirs.user_data_path(APP_NAME))
        return cls(config_dir=Path(config).expanduser(), data_dir=Path(data).expanduser())
