"""Every test runs with its own config and data dirs, and without the user's real secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The suite runs on 2-core machines next to other work: timing-based health checks and deadlines would make
# property tests flaky without finding bugs.
settings.register_profile(
    "peropix", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("peropix")

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    config_dir = tmp_path / "config"
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PEROPIX_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("PEROPIX_DATA_DIR", str(data_dir))
    for var in (
        "PEROPIX_NAI_TOKEN",
        "PEROPIX_CIVITAI_API_KEY",
        "PEROPIX_NAI_BASE_URL",
        "PEROPIX_NAI_ACCOUNT_URL",
        "PEROPIX_CIVITAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    yield config_dir, data_dir
