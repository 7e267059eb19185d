"""The real `peropix` offers the first-start welcome when nothing is set up; these tests start it on its screens."""

from __future__ import annotations

from pathlib import Path

import pytest

from peropix_tui.core.paths import AppDirs
from peropix_tui.screens.welcome import mark_welcome_seen, welcome_marker


@pytest.fixture(autouse=True)
def welcome_seen(isolated_dirs: tuple[Path, Path]) -> Path:
    """Mark the welcome as seen in the test's config dir (the one the started process reads)."""
    dirs = AppDirs.from_env()
    mark_welcome_seen(dirs)
    return welcome_marker(dirs)
