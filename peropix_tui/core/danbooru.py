"""The Danbooru tag list (shipped with the package) as completion candidates.

Each tag carries its category and post count; its aliases complete to the tag itself, so typing `boobs`
offers `breasts`. Tags are stored with underscores; `style` decides whether they are inserted with spaces
(NovelAI and most prompts) or underscores.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Literal

from peropix_tui.core.vocabulary import Candidate, Vocabulary

log = logging.getLogger(__name__)

CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}
TagStyle = Literal["spaces", "underscores"]


def _styled(tag: str, style: TagStyle) -> str:
    return tag if style == "underscores" else tag.replace("_", " ")


def parse_tag_csv(text: str, style: TagStyle = "spaces") -> Iterator[Candidate]:
    """Candidates from `tag,category,post_count,"alias1,alias2"` lines; malformed lines are skipped."""
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 3 or not row[0]:
            continue
        try:
            category = int(row[1])
            count = int(row[2])
        except ValueError:
            continue
        tag = _styled(row[0], style)
        detail = f"{CATEGORIES.get(category, 'tag')} · {count:,}"
        yield Candidate(tag, "tag", count, detail=detail)
        if len(row) > 3 and row[3]:
            for alias in row[3].split(","):
                alias = alias.strip()
                if alias and not alias.startswith("/"):
                    yield Candidate(tag, "tag", count, detail=f"{detail} · alias {alias}", match=_styled(alias, style))


@lru_cache(maxsize=2)
def danbooru_vocabulary(style: TagStyle = "spaces") -> Vocabulary:
    """The shipped list as a vocabulary (about a second to build: call it off the UI thread)."""
    raw = resources.files("peropix_tui.data.tags").joinpath("danbooru.csv.gz").read_bytes()
    vocabulary = Vocabulary(parse_tag_csv(gzip.decompress(raw).decode("utf-8"), style))
    log.debug("danbooru tags: %d completion entries", len(vocabulary))
    return vocabulary
