"""Wildcards: prompt templates that draw a different variation for every job, reproducibly.

Two forms, read by the shared tokenizer (so the editor highlights exactly what gets expanded), neither of which
can be taken for NovelAI's `{…}`/`[…]` emphasis or a `<lora:…>` tag:

- `__name__` is a random line of `<config dir>/wildcards/name.txt`. Names hold letters, digits, `.`, `-`, `/`
  and single underscores (none at either end); `/` reaches into sub-folders, never out of the wildcards folder
  (symbolic links the user put inside it are followed). Files are UTF-8, a BOM is fine; each line, stripped,
  is one choice, except blank lines and lines starting with `#`.
- `<pick:a|b|c>` is one of its choices, stripped of the spaces around it. Inside a pick `\\|` and `\\>` are a
  literal `|` and `>`; a choice may be empty (`<pick:smile|>`), and repeating a choice makes it likelier
  (`<pick:red|red|blue>`).

What is drawn is expanded in turn (a line may hold `__other__` or a pick), up to `MAX_DEPTH` levels; a wildcard
that comes back to itself is an error naming the chain. Should drawn pieces spell a new wildcard or pick together
(`_<pick:_hair_|x>_`), the result is drawn again, so an expanded prompt never holds either.

One `random.Random(seed)` makes every draw of a job, so the same templates, files and seed always give the same
prompts; the seed, the templates and each choice go into the image's metadata (`record`), while the prompt sent
(and stored) is the expanded one.

Files are indexed on first use (the byte offsets of their usable lines, not the lines) and the index is kept
while the file's size and modification time stay the same; a draw reads just the line it picked.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import stat
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from peropix_tui.core.prompt.syntax import Dialect, PromptError, SpanKind
from peropix_tui.core.prompt.tokens import TokenizedPrompt, tokenize

WILDCARDS_FOLDER: Final = "wildcards"
SUFFIX: Final = ".txt"
RECORD_KEY: Final = "wildcards"
"""Key of the draw record in an image's `peropix` metadata."""
MAX_DEPTH: Final = 16
"""Levels of picks and wildcards inside drawn text."""
MAX_DRAWS: Final = 10_000
MAX_CHARS: Final = 100_000
"""Longest expansion of one field: far beyond any prompt, short of a runaway."""
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
MAX_CACHED_FILES: Final = 256
MAX_NAMES: Final = 20_000
MAX_FOLDERS: Final = 2_000
"""Folders `names` walks: enough for any collection, bounded if a link points somewhere huge."""
MAX_RECORDED: Final = 500
"""Choices kept in an image's metadata; the seed and the templates still reproduce the rest."""
SEED_LIMIT: Final = 2**32

# Mirrors the tokenizer's `wild` group: what a `__name__` may hold.
_NAME_RE: Final = re.compile(r"(?:[^\W_]|[./-])(?:_?(?:[^\W_]|[./-]))*")
_MAYBE: Final = re.compile(r"__|<(?i:pick):")
_BOM: Final = b"\xef\xbb\xbf"
_PICK_OPEN_TEXT: Final = "<pick:"


class WildcardError(PromptError):
    """A wildcard or pick that cannot be expanded: a missing or unreadable file, a bad name, a cycle."""


ChoiceKind = Literal["wildcard", "pick"]


@dataclass(frozen=True, slots=True)
class Choice:
    """One draw: from which wildcard or pick, which of how many, and what it gave (as written, before the
    wildcards in it were expanded in turn)."""

    kind: ChoiceKind
    source: str
    """`__name__`, or the pick as written: `<pick:red|blue>`."""
    index: int
    """0-based, among the file's usable lines or the pick's choices."""
    count: int
    value: str
    field: str = "prompt"

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "kind": self.kind,
            "source": self.source,
            "index": self.index,
            "count": self.count,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True)
class Expansion:
    text: str
    choices: tuple[Choice, ...]


def fresh_seed() -> int:
    """A new seed for a job's draws."""
    return secrets.randbelow(SEED_LIMIT)


# --- files ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Index:
    key: tuple[int, int]  # (mtime_ns, size) of the file it was built from
    spans: array[int]  # start, end byte offsets of each usable line, one after the other

    @property
    def count(self) -> int:
        return len(self.spans) // 2


class WildcardLibrary:
    """The wildcard files under one folder; safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, _Index] = OrderedDict()

    @classmethod
    def in_config_dir(cls, config_dir: Path) -> WildcardLibrary:
        return cls(config_dir / WILDCARDS_FOLDER)

    def path_for(self, name: str) -> Path:
        """The file of `__name__`; a name that is not one, or would leave the folder, is refused."""
        parts = name.split("/")
        if not _NAME_RE.fullmatch(name) or any(part in ("", ".", "..") for part in parts):
            raise WildcardError(f"wildcard name {name!r} does not name a file inside {self.root}")
        return self.root.joinpath(*parts[:-1], parts[-1] + SUFFIX)

    def draw(self, name: str, rng: random.Random) -> tuple[int, int, str]:
        """(index, count, line) of a random usable line of `__name__`'s file."""
        path = self.path_for(name)
        index = self._index(path, name)
        drawn = rng.randrange(index.count)
        start, end = index.spans[2 * drawn], index.spans[2 * drawn + 1]
        try:
            with path.open("rb") as file:
                file.seek(start)
                raw = file.read(end - start)
        except OSError as exc:
            raise WildcardError(f"cannot read wildcard file {path}: {exc.strerror or exc}") from exc
        try:
            return drawn, index.count, raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise WildcardError(f"wildcard file {path} changed while it was read; try again") from None

    def count(self, name: str) -> int:
        """How many lines `__name__` draws from."""
        return self._index(self.path_for(name), name).count

    def _index(self, path: Path, name: str) -> _Index:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise WildcardError(f"no wildcard file {path} for __{name}__") from None
        except OSError as exc:
            raise WildcardError(f"cannot read wildcard file {path}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise WildcardError(f"wildcard {path} for __{name}__ is not a file")
        key = (info.st_mtime_ns, info.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.key == key:
                self._cache.move_to_end(path)
                return cached
        if info.st_size > MAX_FILE_BYTES:
            raise WildcardError(
                f"wildcard file {path} is {info.st_size} bytes, more than the {MAX_FILE_BYTES} a wildcard file may be"
            )
        index = _Index(key, _usable_lines(path))
        if not index.count:
            raise WildcardError(
                f"wildcard file {path} has no lines to draw from (blank lines and # comments do not count)"
            )
        with self._lock:
            self._cache[path] = index
            self._cache.move_to_end(path)
            while len(self._cache) > MAX_CACHED_FILES:
                self._cache.popitem(last=False)
        return index

    def names(self, limit: int = MAX_NAMES) -> list[str]:
        """The names of the folder's wildcard files that `__name__` can spell, sorted; at most `limit`."""
        found: list[str] = []
        seen: set[tuple[int, int]] = set()
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            if len(seen) >= MAX_FOLDERS:
                break
            try:
                info = Path(folder).stat()
            except OSError:
                dirs.clear()
                continue
            if (info.st_dev, info.st_ino) in seen:  # a link back up the tree
                dirs.clear()
                continue
            seen.add((info.st_dev, info.st_ino))
            dirs.sort()
            prefix = Path(folder).relative_to(self.root).parts
            for file in sorted(files):
                if not file.endswith(SUFFIX):
                    continue
                name = "/".join((*prefix, file[: -len(SUFFIX)]))
                if _NAME_RE.fullmatch(name):
                    found.append(name)
                    if len(found) >= limit:
                        return sorted(found)
        return sorted(found)


def _usable_lines(path: Path) -> array[int]:
    spans = array("q")
    offset = 0
    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, 1):
                start = offset
                offset += len(raw)
                if number == 1 and raw.startswith(_BOM):
                    start += len(_BOM)
                    raw = raw[len(_BOM) :]
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise WildcardError(f"wildcard file {path} line {number} is not UTF-8 text") from None
                if line and not line.startswith("#"):
                    spans.append(start)
                    spans.append(offset)
    except OSError as exc:
        raise WildcardError(f"cannot read wildcard file {path}: {exc.strerror or exc}") from exc
    return spans


# --- expansion -----------------------------------------------------------------------------------------------


class Expander:
    """Expands the fields of one job with one `random.Random(seed)`, field after field in the order asked."""

    def __init__(self, library: WildcardLibrary | None, seed: int, *, dialect: Dialect = Dialect.NAI) -> None:
        self.library = library
        self.seed = seed
        self.dialect = dialect
        self.choices: list[Choice] = []
        self.templates: dict[str, str] = {}
        """The fields that held wildcards, as written."""
        self._rng = random.Random(seed)
        self._field = ""
        self._draws = 0
        self._chars = 0

    def expand(self, text: str, *, field: str = "prompt") -> str:
        """`text` with every wildcard and pick drawn; text without any comes back as it is."""
        if _MAYBE.search(text) is None:
            return text
        self._field = field
        before = len(self.choices)
        expanded = text
        for _ in range(MAX_DEPTH):
            self._chars = 0
            out: list[str] = []
            self._expand_text(expanded, out, (), 0, f"the {field}")
            expanded = "".join(out)
            if not _holds_wildcards(expanded, self.dialect):
                break
        else:
            raise WildcardError(f"the {field} still holds wildcards after {MAX_DEPTH} rounds of drawing")
        if len(self.choices) > before:
            self.templates[field] = text
        return expanded

    def record(self) -> dict[str, Any] | None:
        """What went into the image's metadata under `RECORD_KEY`; None when nothing was drawn."""
        if not self.choices:
            return None
        record: dict[str, Any] = {
            "seed": self.seed,
            "template": dict(self.templates),
            "choices": [choice.to_json() for choice in self.choices[:MAX_RECORDED]],
        }
        if len(self.choices) > MAX_RECORDED:
            record["choices_left_out"] = len(self.choices) - MAX_RECORDED
        return record

    def _expand_text(self, text: str, out: list[str], chain: tuple[str, ...], depth: int, where: str) -> None:
        if _MAYBE.search(text) is None:
            self._emit(out, text)
            return
        tokenized = tokenize(text, self.dialect)
        picks = _pick_structure(tokenized)
        self._expand_spans(tokenized, picks, 0, len(tokenized.kinds), out, chain, depth, where)

    def _expand_spans(
        self,
        tokenized: TokenizedPrompt,
        picks: Mapping[int, list[int]],
        first: int,
        stop: int,
        out: list[str],
        chain: tuple[str, ...],
        depth: int,
        where: str,
    ) -> None:
        text = tokenized.text
        kinds = tokenized.kinds
        starts = tokenized.starts
        ends = tokenized.ends
        index = first
        while index < stop:
            kind = kinds[index]
            start, end = starts[index], ends[index]
            if kind is SpanKind.WILDCARD:
                self._wildcard(text[start + 2 : end - 2], out, chain, depth, where)
            elif kind is SpanKind.PICK_OPEN:
                bounds = picks[index]
                self._pick(tokenized, picks, bounds, out, chain, depth, where)
                index = bounds[-1]
            elif kind is SpanKind.PICK_ESCAPE:
                self._emit(out, text[start + 1 : end])
            elif kind is SpanKind.ERROR and text[start:end].lower() == _PICK_OPEN_TEXT:
                raise WildcardError(f"'<pick:' at {start} in {where} is never closed with '>'")
            else:
                self._emit(out, text[start:end])
            index += 1

    def _pick(
        self,
        tokenized: TokenizedPrompt,
        picks: Mapping[int, list[int]],
        bounds: list[int],
        out: list[str],
        chain: tuple[str, ...],
        depth: int,
        where: str,
    ) -> None:
        """`bounds`: span indices of the pick's opener, separators and closer."""
        text, starts, ends = tokenized.text, tokenized.starts, tokenized.ends
        if depth >= MAX_DEPTH:
            raise WildcardError(f"picks and wildcards nest deeper than {MAX_DEPTH} levels in {where}")
        count = len(bounds) - 1
        drawn = self._draw(count)
        before, after = bounds[drawn], bounds[drawn + 1]
        source = text[starts[bounds[0]] : ends[bounds[-1]]]
        self._record("pick", source, drawn, count, text[ends[before] : starts[after]].strip())
        mark = len(out)
        self._expand_spans(tokenized, picks, before + 1, after, out, chain, depth + 1, where)
        out[mark:] = ["".join(out[mark:]).strip()]

    def _wildcard(self, name: str, out: list[str], chain: tuple[str, ...], depth: int, where: str) -> None:
        if name in chain:
            raise WildcardError("wildcard cycle: " + " → ".join(f"__{n}__" for n in (*chain, name)))
        if depth >= MAX_DEPTH:
            path = " → ".join(f"__{n}__" for n in (*chain, name))
            raise WildcardError(f"wildcards nest deeper than {MAX_DEPTH} levels: {path}")
        if self.library is None:
            raise WildcardError(f"__{name}__ in {where}: no wildcards folder to draw from")
        self._count_draw()
        drawn, count, line = self.library.draw(name, self._rng)
        self._record("wildcard", f"__{name}__", drawn, count, line)
        self._expand_text(line, out, (*chain, name), depth + 1, f"a line of __{name}__")

    def _draw(self, count: int) -> int:
        self._count_draw()
        return self._rng.randrange(count)

    def _count_draw(self) -> None:
        self._draws += 1
        if self._draws > MAX_DRAWS:
            raise WildcardError(f"more than {MAX_DRAWS} wildcard draws for one job; do the wildcard files repeat?")

    def _record(self, kind: ChoiceKind, source: str, index: int, count: int, value: str) -> None:
        self.choices.append(Choice(kind, source, index, count, value, self._field))

    def _emit(self, out: list[str], piece: str) -> None:
        self._chars += len(piece)
        if self._chars > MAX_CHARS:
            raise WildcardError(f"the {self._field} grows past {MAX_CHARS} characters as its wildcards expand")
        out.append(piece)


def _holds_wildcards(text: str, dialect: Dialect) -> bool:
    """Whether drawing `text` would change it: a wildcard, a pick, or a pick that is never closed."""
    if _MAYBE.search(text) is None:
        return False
    tokenized = tokenize(text, dialect)
    kinds = set(tokenized.kinds)
    if SpanKind.WILDCARD in kinds or SpanKind.PICK_OPEN in kinds:
        return True
    return SpanKind.ERROR in kinds and any(
        kind is SpanKind.ERROR and tokenized.span_text(index).lower() == _PICK_OPEN_TEXT
        for index, kind in enumerate(tokenized.kinds)
    )


def _pick_structure(tokenized: TokenizedPrompt) -> dict[int, list[int]]:
    """For each pick's opener: the span indices of its opener, its own separators and its closer."""
    kinds = tokenized.kinds
    if SpanKind.PICK_OPEN not in kinds:
        return {}
    structure: dict[int, list[int]] = {}
    open_picks: list[list[int]] = []
    for index, kind in enumerate(kinds):
        if kind is SpanKind.PICK_OPEN:
            open_picks.append([index])
        elif not open_picks:
            continue  # a separator of a pick that is never closed (an error span now)
        elif kind is SpanKind.PICK_SEP:
            open_picks[-1].append(index)
        elif kind is SpanKind.PICK_CLOSE:
            bounds = open_picks.pop()
            bounds.append(index)
            structure[bounds[0]] = bounds
    return structure


def expand_wildcards(
    text: str, library: WildcardLibrary | None, seed: int, *, dialect: Dialect = Dialect.NAI, field: str = "prompt"
) -> Expansion:
    """`text` with its wildcards and picks drawn by `random.Random(seed)`, and the choices made."""
    expander = Expander(library, seed, dialect=dialect)
    return Expansion(expander.expand(text, field=field), tuple(expander.choices))


def recorded_templates(peropix: Mapping[str, Any]) -> dict[str, str]:
    """The templates an image's prompts were drawn from, by field, from its `peropix` metadata (empty when
    there are none or the record is not one)."""
    record = peropix.get(RECORD_KEY)
    templates = record.get("template") if isinstance(record, dict) else None
    if not isinstance(templates, dict):
        return {}
    return {str(key): value for key, value in templates.items() if isinstance(value, str)}
