"""The Collect tab's fields read as the collector needs them: creators and batch files, model types."""

from __future__ import annotations

from pathlib import Path

import pytest

from peropix_tui.civitai.urls import CreatorRef
from peropix_tui.core.errors import PeropixError
from peropix_tui.screens.downloads import parse_creators_field


def test_creators_urls_names_and_batch_files() -> None:
    creators, batches = parse_creators_field(
        "  alice https://civitai.red/user/Bob/models\n@carol ALICE ~/lists/night.txt ./more.txt /srv/all.txt"
    )
    assert creators == [CreatorRef("alice"), CreatorRef("Bob", "https://civitai.red"), CreatorRef("carol")]
    assert batches == [Path.home() / "lists" / "night.txt", Path("./more.txt"), Path("/srv/all.txt")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "no creators: give CivitAI profile URLs or usernames, or a batch file path"),
        ("alice https://civitai.com/models/12", "is a model page"),
        ("https://example.com/user/x", "is not on civitai.com or civitai.red"),
    ],
)
def test_creators_that_cannot_be_collected(text: str, message: str) -> None:
    with pytest.raises(PeropixError, match=message):
        parse_creators_field(text)
