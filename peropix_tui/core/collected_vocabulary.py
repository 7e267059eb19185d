"""The collected vocabulary: every tag the CivitAI collection's prompts use, with how many images use it.

The collection leaves one JSON sidecar per image at `<root>/Users/<user>/<model>/<image id>.txt`; its curated
`prompt` (A1111 syntax) is split into tags by the prompt package, so weights, emphasis and LoRA tags never become
words. The result is cached in `<data dir>/vocabulary/collected.json` with each sidecar's (mtime, size) and tags,
so an update only reads new or changed sidecars and forgets deleted ones: with nothing changed, an update of a
large collection is one `stat` per file. Completion reads only the cache, never the collection.

Sidecars come from strangers' uploads: one that is unreadable, not JSON, too large or without a prompt is
skipped and counted, never fatal, and remembered so it is not read again until it changes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.capped_read import read_capped
from peropix_tui.core.danbooru import TagStyle
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.prompt import Dialect, normalize_tag, split_tags
from peropix_tui.core.vocabulary import Candidate

log = logging.getLogger(__name__)

FORMAT = 1
USERS_DIR = "Users"
CACHE_SUBDIR = "vocabulary"
CACHE_NAME = "collected.json"
MAX_SIDECAR_BYTES = 1 << 20
"""A sidecar is a few KiB; anything past this is not one the collector wrote."""
MAX_CACHE_BYTES = 512 << 20
MAX_TAG_CHARS = 64
"""Longer elements are sentences of a natural-language prompt, not tags worth completing."""
MAX_TAGS_PER_IMAGE = 300
PROGRESS_EVERY = 256
CANDIDATE_KIND = "tag"
"""Collected tags complete where tags do (the editor asks for kind "tag"); the detail says where they come from."""

_SIDECAR = re.compile(r"\d+\.txt")

Progress = Callable[[int, int], None]
"""`progress(read, to_read)`: called while new and changed sidecars are read, and once at the end."""
Stamp = tuple[int, int]
"""A file's (mtime in ns, size): what tells a cache written since it was read."""

_UPDATING = threading.Lock()


class CollectedVocabularyError(PeropixError):
    """The collection root cannot be scanned or the cache cannot be written."""


class NoCollectionError(CollectedVocabularyError):
    """The collection root does not exist: nothing was collected there yet."""


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """What an update did: sidecars seen for the first time, changed since the last update, gone, and read but
    unusable (bad JSON, too large, no prompt, unreadable); folders that could not be listed keep what the cache
    knew of them."""

    added: int
    changed: int
    removed: int
    skipped: int
    unreadable_folders: int = 0

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        """One line for the CLI and the Prompt tools screen alike."""
        text = f"{self.added} new, {self.changed} changed, {self.removed} removed, {self.skipped} skipped sidecars"
        if self.unreadable_folders:
            plural = "s" if self.unreadable_folders != 1 else ""
            text += f", {self.unreadable_folders} folder{plural} could not be read (see the log)"
        return text


@dataclass(frozen=True, slots=True)
class _Entry:
    mtime_ns: int
    size: int
    tags: tuple[str, ...] | None  # None: the sidecar could not be used


def cache_path(data_dir: Path) -> Path:
    return data_dir / CACHE_SUBDIR / CACHE_NAME


def cache_stamp(path: Path) -> Stamp | None:
    """The cache file's stamp, None when there is none: one `stat` tells whether another update wrote it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def prompt_tags(prompt: str) -> set[str]:
    """The distinct tags of an A1111-style prompt in matching form (lower case, spaces, no weights)."""
    found: set[str] = set()
    for tag in split_tags(prompt, Dialect.SD):
        text = tag.normalized
        if text and len(text) <= MAX_TAG_CHARS:
            found.add(text)
            if len(found) >= MAX_TAGS_PER_IMAGE:
                break
    return found


def _sidecar_tags(path: Path) -> tuple[str, ...] | None:
    """The sorted tags of one sidecar's `prompt`, or None when the file is not a usable sidecar."""
    try:
        data = read_capped(path, MAX_SIDECAR_BYTES, CollectedVocabularyError, what="a sidecar")
        value: Any = orjson.loads(data)
    except (PeropixError, orjson.JSONDecodeError) as exc:
        log.debug("sidecar skipped: %s", exc)
        return None
    prompt = value.get("prompt") if isinstance(value, dict) else None
    if not isinstance(prompt, str):
        log.debug("sidecar skipped: %s has no prompt", path)
        return None
    return tuple(sorted(prompt_tags(prompt)))


def _walk(users: Path, unreadable: list[str]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(`user/model/id.txt`, entry) for every sidecar two folders under `users`; folders that cannot be listed
    are named in `unreadable` (as `user/` or `user/model/`) so their known sidecars are kept."""
    for user, user_key in _subfolders(users, "", unreadable):
        for model, model_key in _subfolders(Path(user.path), user_key, unreadable):
            try:
                with os.scandir(model.path) as files:
                    for entry in files:
                        if _SIDECAR.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                            yield f"{model_key}{entry.name}", entry
            except OSError as exc:
                log.warning("cannot list %s: %s", model.path, exc.strerror or exc)
                unreadable.append(model_key)


def _subfolders(folder: Path, prefix: str, unreadable: list[str]) -> list[tuple[os.DirEntry[str], str]]:
    try:
        with os.scandir(folder) as entries:
            return [(e, f"{prefix}{e.name}/") for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc.strerror or exc)
        unreadable.append(prefix)
        return []


class CollectedVocabulary:
    """The cache of one collection's tags; `update` brings it up to date, `save` writes it back."""

    def __init__(self, path: Path, *, root: str = "", entries: dict[str, _Entry] | None = None) -> None:
        self.path = path
        self.root = root
        self.problem: str | None = None
        self._entries: dict[str, _Entry] = entries or {}
        self._counts: Counter[str] = Counter(
            chain.from_iterable(e.tags for e in self._entries.values() if e.tags is not None)
        )

    @classmethod
    def load(cls, path: Path) -> CollectedVocabulary:
        """The cache at `path`; empty when there is none. A damaged cache also loads empty, with `problem` set:
        it is rebuilt from the collection by the next update."""
        if not path.exists():
            return cls(path)
        try:
            raw: Any = orjson.loads(read_capped(path, MAX_CACHE_BYTES, CollectedVocabularyError, what="a cache"))
            vocabulary = cls(path, root=raw["root"], entries=_parse_entries(raw))
        except (PeropixError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            empty = cls(path)
            empty.problem = f"{path}: damaged vocabulary cache, run an update to rebuild it ({exc})"
            log.warning("%s", empty.problem)
            return empty
        return vocabulary

    def __len__(self) -> int:
        """The number of distinct tags."""
        return len(self._counts)

    @property
    def images(self) -> int:
        """Sidecars whose prompt was read."""
        return sum(1 for e in self._entries.values() if e.tags is not None)

    def summary(self) -> str:
        return f"{len(self):,} tags from {self.images:,} images"

    def count(self, tag: str) -> int:
        """How many images use `tag` (any spelling: `Long_Hair` is `long hair`)."""
        return self._counts.get(normalize_tag(tag), 0)

    def update(self, root: Path, progress: Progress | None = None) -> UpdateReport:
        """Bring the cache up to date with the sidecars under `root` (not saved: call `save`)."""
        users = root / USERS_DIR
        try:
            if not root.is_dir():
                raise NoCollectionError(f"{root}: the CivitAI collection folder does not exist")
            root_key = str(root.resolve())
            has_users = users.is_dir()
        except OSError as exc:
            raise CollectedVocabularyError(f"{root}: cannot read the collection: {exc.strerror or exc}") from None
        if root_key != self.root:
            self._entries = {}
            self._counts = Counter()
            self.root = root_key
        unreadable: list[str] = []
        seen: set[str] = set()
        to_read: list[tuple[str, Path, int, int, bool]] = []
        walk = _walk(users, unreadable) if has_users else iter(())
        for key, entry in walk:
            seen.add(key)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                log.warning("cannot stat %s: %s", entry.path, exc.strerror or exc)
                continue
            known = self._entries.get(key)
            if known is None or known.mtime_ns != st.st_mtime_ns or known.size != st.st_size:
                to_read.append((key, Path(entry.path), st.st_mtime_ns, st.st_size, known is not None))
        gone = [k for k in self._entries if k not in seen and not k.startswith(tuple(unreadable))]
        for key in gone:
            self._forget(key)
        added = changed = skipped = 0
        for done, (key, path, mtime_ns, size, seen_before) in enumerate(to_read):
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, len(to_read))
            self._forget(key)
            tags = _sidecar_tags(path)
            self._entries[key] = _Entry(mtime_ns, size, tags)
            if tags is None:
                skipped += 1
            else:
                self._counts.update(tags)
            if seen_before:
                changed += 1
            else:
                added += 1
        if progress is not None:
            progress(len(to_read), len(to_read))
        report = UpdateReport(
            added=added, changed=changed, removed=len(gone), skipped=skipped, unreadable_folders=len(unreadable)
        )
        log.info("collected vocabulary of %s: %s, %d tags", root, report, len(self._counts))
        return report

    def _forget(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None and old.tags is not None:
            self._counts.subtract(old.tags)
            for tag in old.tags:
                if self._counts[tag] <= 0:
                    del self._counts[tag]

    def save(self) -> None:
        """Write the cache atomically; tags are stored once and files refer to them by index."""
        table = sorted(self._counts)
        index = {tag: i for i, tag in enumerate(table)}
        files = {
            key: [e.mtime_ns, e.size, None if e.tags is None else [index[t] for t in e.tags]]
            for key, e in self._entries.items()
        }
        data = orjson.dumps({"format": FORMAT, "root": self.root, "tags": table, "files": files})
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            raise CollectedVocabularyError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.problem = None

    def top(self, limit: int | None = None, prefix: str = "") -> list[tuple[str, int]]:
        """(tag, images) most used first, ties alphabetically; only tags starting with `prefix` when given."""
        wanted = normalize_tag(prefix) if prefix.strip() else ""
        rows = [(t, n) for t, n in self._counts.items() if t.startswith(wanted)]
        rows.sort(key=lambda row: (-row[1], row[0]))
        return rows if limit is None else rows[:limit]

    def candidates(self, style: TagStyle = "spaces") -> list[Candidate]:
        """Completion candidates, ranked by how many images use the tag."""
        return [
            Candidate(
                tag if style == "spaces" else tag.replace(" ", "_"),
                CANDIDATE_KIND,
                n,
                detail=f"collected · used in {n:,} image{'s' if n != 1 else ''}",
            )
            for tag, n in self._counts.items()
        ]


def update_cache(path: Path, root: Path, progress: Progress | None = None) -> tuple[CollectedVocabulary, UpdateReport]:
    """Load the cache at `path`, bring it up to date with `root` and save it. One update at a time in this
    process: two started together (a finished collection and the Prompt tools screen) would each save the other's
    work over again."""
    with _UPDATING:
        vocabulary = CollectedVocabulary.load(path)
        report = vocabulary.update(root, progress)
        vocabulary.save()
    return vocabulary, report


def _parse_entries(raw: Any) -> dict[str, _Entry]:
    if raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
    table: list[str] = raw["tags"]
    if not all(isinstance(t, str) for t in table):
        raise ValueError("a tag is not text")
    entries: dict[str, _Entry] = {}
    for key, (mtime_ns, size, ids) in raw["files"].items():
        if not isinstance(mtime_ns, int) or not isinstance(size, int):
            raise ValueError(f"bad stamp for {key}")
        if ids is not None and not all(isinstance(i, int) and 0 <= i < len(table) for i in ids):
            raise ValueError(f"bad tag index for {key}")
        tags = None if ids is None else tuple(table[i] for i in ids)
        entries[key] = _Entry(mtime_ns, size, tags)
    return entries
