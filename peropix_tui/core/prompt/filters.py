"""Word filters: per-category tag lists that prompt curation removes from prompts.

Each category is a text file, one tag per line, `#` starts a comment line. The user's copy in their filter
folder wins over the list shipped with the app, so people can edit them freely. Matching uses the normalized
tag form, so `{{Nude}}`, `(nude:1.2)`, `NUDE` and `1.2::nude::` all match the entry `nude`. LoRA tags are
never removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from peropix_tui.core.atomicio import atomic_write_text
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.prompt.elements import Element, element_normalized, normalize_tag, split_elements
from peropix_tui.core.prompt.rewrite import element_words, paired_spans, rewrite
from peropix_tui.core.prompt.syntax import WORD_KINDS, Dialect, SpanKind
from peropix_tui.core.prompt.tokens import TokenizedPrompt, tokenize

log = logging.getLogger(__name__)

DEFAULT_CATEGORIES = ("sex", "clothes", "etc")
_CATEGORY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MAX_FILE_BYTES = 8 * 1024 * 1024


class FilterError(PeropixError):
    """A filter list that cannot be found or read, or an unknown category."""


@dataclass(frozen=True, slots=True)
class FilterResult:
    """The filtered prompt and the words of each tag taken out, as written (without brackets or weights)."""

    text: str
    removed: list[str]


class WordFilter:
    """Loaded filter lists, by category; immutable once built."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, frozenset[str]]) -> None:
        self._entries = dict(entries)

    @classmethod
    def from_lines(cls, lines_by_category: Mapping[str, Iterable[str]]) -> WordFilter:
        """Build from file-like lines: blank lines and `#` comment lines are ignored."""
        return cls({_check_category(name): _parse(lines) for name, lines in lines_by_category.items()})

    @classmethod
    def load(cls, folder: Path | None, categories: Iterable[str] = DEFAULT_CATEGORIES) -> WordFilter:
        """Each category from `<folder>/<category>.txt` when the user has one, else the shipped default."""
        entries: dict[str, frozenset[str]] = {}
        for name in categories:
            _check_category(name)
            user_file = folder / f"{name}.txt" if folder is not None else None
            if user_file is not None and user_file.is_file():
                entries[name] = _parse(_read_user_file(user_file).splitlines())
                log.debug("filter %s: %d tags from %s", name, len(entries[name]), user_file)
            else:
                entries[name] = _parse(default_filter_text(name).splitlines())
        return cls(entries)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self, category: str) -> frozenset[str]:
        """The normalized tags of one category."""
        try:
            return self._entries[category]
        except KeyError:
            raise FilterError(
                f"unknown filter category {category!r}; loaded: {', '.join(self._entries) or 'none'}"
            ) from None

    def _union(self, categories: Iterable[str] | None) -> frozenset[str]:
        names = self._entries if categories is None else categories
        return frozenset().union(*(self.entries(name) for name in names))

    def matches(self, tag: str, categories: Iterable[str] | None = None) -> bool:
        """Whether a plain tag (no emphasis syntax) is in the chosen categories (all when None)."""
        return normalize_tag(tag) in self._union(categories)

    def apply(self, text: str, dialect: Dialect = Dialect.NAI, categories: Iterable[str] | None = None) -> FilterResult:
        """Remove every tag listed in `categories` (all loaded ones when None) from the prompt.

        A removed tag goes with its separator; brackets that held only it go too; every other tag keeps its
        exact bytes; LoRA tags stay even inside a matched tag.
        """
        banned = self._union(categories)
        tokenized = tokenize(text, dialect)
        deleted = bytearray(len(tokenized.kinds))
        paired = paired_spans(tokenized)
        removed: list[str] = []
        for element in split_elements(tokenized):
            if element.empty or element_normalized(tokenized, element) not in banned:
                continue
            removed.append(_written_words(tokenized, element))
            for index in element_words(tokenized, element, keep_loras=True, paired=paired):
                deleted[index] = 1
        return FilterResult(rewrite(tokenized, deleted), removed)


def default_filter_text(category: str) -> str:
    """The shipped list for a category, as text."""
    resource = resources.files("peropix_tui").joinpath("data", "filters", f"{_check_category(category)}.txt")
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FilterError(
            f"no filter list for category {category!r}: add {category}.txt to your filter folder"
        ) from None


def ensure_user_filters(folder: Path) -> list[Path]:
    """Copy the shipped lists into `folder` where the user has none yet; returns the files created."""
    created: list[Path] = []
    for name in DEFAULT_CATEGORIES:
        target = folder / f"{name}.txt"
        if target.exists():
            continue
        atomic_write_text(target, default_filter_text(name))
        created.append(target)
    return created


def _written_words(tokenized: TokenizedPrompt, element: Element) -> str:
    kinds = tokenized.kinds
    words = [i for i in range(element.core_first, element.core_stop) if kinds[i] in WORD_KINDS]
    pieces = (
        tokenized.span_text(i)
        for i in range(words[0], words[-1] + 1)
        if kinds[i] in WORD_KINDS or kinds[i] is SpanKind.SPACE
    )
    return " ".join("".join(pieces).split())


def _check_category(name: str) -> str:
    if not _CATEGORY_RE.fullmatch(name):
        raise FilterError(
            f"bad filter category name {name!r}: use lowercase letters, digits, '-' and '_' (the file is <name>.txt)"
        )
    return name


def _parse(lines: Iterable[str]) -> frozenset[str]:
    entries = set()
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            tag = normalize_tag(stripped)
            if tag:
                entries.add(tag)
    return frozenset(entries)


def _read_user_file(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise FilterError(f"filter list {path} is {size} bytes; the limit is {_MAX_FILE_BYTES}")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FilterError(f"filter list {path} is not UTF-8 text") from None
    except OSError as exc:
        raise FilterError(f"cannot read filter list {path}: {exc.strerror or exc}") from None
