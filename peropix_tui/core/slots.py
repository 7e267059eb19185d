"""Slot mode: named prompt parts, each added to the base prompt, queued together as one batch of variations.

A slot set is an ordered list of slots and a repeat count. "Queue all" makes one job per unlocked slot and
round (round by round, so the first round shows every variation early); a locked slot is kept but not queued.
Sets are saved as small versioned JSON files in `<config dir>/slots/<name>.json`: keys this version does not
know are ignored, so a newer file still loads, and a damaged file is refused with a one-line error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.capped_read import read_capped
from peropix_tui.core.errors import PeropixError
from peropix_tui.core.prompt import SpanKind, tokenize
from peropix_tui.core.saved_documents import MAX_NAME as MAX_NAME
from peropix_tui.core.saved_documents import check_name, dump_document, json_type, list_field, load_document

SLOTS_FOLDER: Final = "slots"
FORMAT: Final = "peropix-slots"
VERSION: Final = 1
MAX_SLOTS: Final = 500
MAX_REPEAT: Final = 100
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_TRIMMED: Final = frozenset({SpanKind.SPACE, SpanKind.COMMA})
# Characters a file name cannot hold on one of the systems peropix runs on.
_FILE_NAME_BAD: Final = re.compile(r'[/\\:*?"<>|]')


class SlotError(PeropixError):
    """A slot or slot set that cannot be used, or a slot-set file that cannot be read or written."""


def _trim_separators(text: str, *, head: bool, tail: bool) -> str:
    """`text` without the spaces and commas at its start (`head`) and end (`tail`), read by the prompt
    tokenizer: a comma inside an unclosed bracket or a LoRA tag is not a separator, so it is kept."""
    tokenized = tokenize(text)
    kinds = tokenized.kinds
    first, last = 0, len(kinds) - 1
    while head and first <= last and kinds[first] in _TRIMMED:
        first += 1
    while tail and last >= first and kinds[last] in _TRIMMED:
        last -= 1
    if first > last:
        return ""
    return text[tokenized.starts[first] : tokenized.ends[last]]


def join_prompt(*parts: str) -> str:
    """Join prompt parts with ", ". Parts holding nothing but separators are skipped, and the separators and
    spaces at each seam are trimmed, so "a, " + ", b" gives "a, b"; the outer ends stay as typed (NovelAI sees
    every byte), so an empty slot leaves the base prompt exactly as it is."""
    pieces = [part for part in parts if _trim_separators(part, head=True, tail=True)]
    last = len(pieces) - 1
    return ", ".join(_trim_separators(piece, head=i > 0, tail=i < last) for i, piece in enumerate(pieces))


@dataclass(frozen=True, slots=True)
class Slot:
    """One variation: `prompt` is added to the base prompt and `negative` to the base negative prompt. A locked
    slot is kept in the set but not queued."""

    name: str
    prompt: str = ""
    negative: str = ""
    locked: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", check_name(self.name, "slot name", SlotError))
        for what, value in (("prompt", self.prompt), ("negative", self.negative)):
            if not isinstance(value, str):
                raise SlotError(f"slot {self.name!r}: {what} must be text, not {json_type(value)}")
        if not isinstance(self.locked, bool):
            raise SlotError(f"slot {self.name!r}: locked must be true or false, not {self.locked!r}")

    def compose(self, prompt: str, negative: str) -> tuple[str, str]:
        """The base prompt and negative prompt with this slot's parts added."""
        return join_prompt(prompt, self.prompt), join_prompt(negative, self.negative)


@dataclass(frozen=True, slots=True)
class SlotJob:
    """One job of a "queue all": the slot, its round (0-based) and the composed prompts."""

    slot: Slot
    round: int
    prompt: str
    negative: str


@dataclass(frozen=True, slots=True)
class SlotSet:
    """Slots in order (names unique, compared without case) and how many rounds "queue all" makes."""

    slots: tuple[Slot, ...] = ()
    repeat: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or not 1 <= self.repeat <= MAX_REPEAT:
            raise SlotError(f"repeat must be a whole number from 1 to {MAX_REPEAT}, not {self.repeat!r}")
        if len(self.slots) > MAX_SLOTS:
            raise SlotError(f"a slot set holds at most {MAX_SLOTS} slots, not {len(self.slots)}")
        seen: set[str] = set()
        for slot in self.slots:
            key = slot.name.casefold()
            if key in seen:
                raise SlotError(f"two slots are named {slot.name!r}")
            seen.add(key)

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def locked_count(self) -> int:
        return sum(slot.locked for slot in self.slots)

    @property
    def unlocked(self) -> tuple[Slot, ...]:
        return tuple(slot for slot in self.slots if not slot.locked)

    @property
    def job_count(self) -> int:
        return len(self.unlocked) * self.repeat

    def summary(self) -> str:
        """One line for the Generate screen: "Slots: 4 (1 locked) × 2"."""
        locked = f" ({self.locked_count} locked)" if self.locked_count else ""
        return f"Slots: {len(self.slots)}{locked} × {self.repeat}"

    def jobs(self, prompt: str, negative: str) -> list[SlotJob]:
        """Every job "queue all" makes from these base prompts: each unlocked slot, round after round."""
        composed = [(slot, *slot.compose(prompt, negative)) for slot in self.unlocked]
        return [SlotJob(slot, n, p, neg) for n in range(self.repeat) for slot, p, neg in composed]

    # Editing: each returns a new set, so a failed edit leaves the set as it was ---------------------------------

    def index(self, name: str) -> int:
        key = name.strip().casefold()
        for i, slot in enumerate(self.slots):
            if slot.name.casefold() == key:
                return i
        raise SlotError(f"no slot is named {name!r}")

    def free_name(self, base: str) -> str:
        """`base`, or `base 2`, `base 3`… — the first name no slot has."""
        base = check_name(base, "slot name", SlotError)
        taken = {slot.name.casefold() for slot in self.slots}
        if base.casefold() not in taken:
            return base
        stem = re.sub(r" \d+$", "", base) or base
        number = 2
        while f"{stem} {number}".casefold() in taken:
            number += 1
        return check_name(f"{stem[: MAX_NAME - len(str(number)) - 1]} {number}", "slot name", SlotError)

    def added(self, slot: Slot, at: int | None = None) -> SlotSet:
        """`slot` inserted at `at` (default: the end)."""
        slots = list(self.slots)
        slots.insert(len(slots) if at is None else at, slot)
        return replace(self, slots=tuple(slots))

    def replaced(self, index: int, slot: Slot) -> SlotSet:
        slots = list(self.slots)
        slots[self._check_index(index)] = slot
        return replace(self, slots=tuple(slots))

    def removed(self, index: int) -> SlotSet:
        slots = list(self.slots)
        del slots[self._check_index(index)]
        return replace(self, slots=tuple(slots))

    def moved(self, index: int, offset: int) -> SlotSet:
        """The slot at `index` moved `offset` places (clamped to the ends)."""
        slots = list(self.slots)
        slot = slots.pop(self._check_index(index))
        slots.insert(max(0, min(len(slots), index + offset)), slot)
        return replace(self, slots=tuple(slots))

    def duplicated(self, index: int) -> SlotSet:
        """A copy of the slot at `index`, under a free name, right after it."""
        original = self.slots[self._check_index(index)]
        return self.added(replace(original, name=self.free_name(original.name)), index + 1)

    def with_repeat(self, repeat: int) -> SlotSet:
        return replace(self, repeat=repeat)

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self.slots):
            raise SlotError(f"no slot number {index + 1} (the set has {len(self.slots)})")
        return index


# JSON files ------------------------------------------------------------------------------------------------------


def slot_set_to_json(slot_set: SlotSet) -> bytes:
    slots = [{"name": s.name, "prompt": s.prompt, "negative": s.negative, "locked": s.locked} for s in slot_set.slots]
    return dump_document(FORMAT, VERSION, {"repeat": slot_set.repeat, "slots": slots})


def slot_set_from_json(data: bytes, source: str) -> SlotSet:
    """Parse a slot-set document; `source` (the file) starts every error message."""
    document = load_document(data, source, SlotError, version=VERSION)
    entries = list_field(document, "slots", source, SlotError) or []
    try:
        slots = tuple(_slot_from_json(entry, n) for n, entry in enumerate(entries, 1))
        return SlotSet(slots, document.get("repeat", 1))
    except SlotError as exc:
        raise SlotError(f"{source}: {exc}") from None


def _slot_from_json(entry: object, number: int) -> Slot:
    if not isinstance(entry, dict):
        raise SlotError(f"slot {number} must be an object")
    values: dict[str, Any] = {k: entry[k] for k in ("name", "prompt", "negative", "locked") if k in entry}
    if "name" not in values:
        raise SlotError(f"slot {number} has no name")
    return Slot(**values)


@dataclass(frozen=True, slots=True)
class SlotLibrary:
    """The saved slot sets: one JSON file per set in `folder` (`<config dir>/slots`)."""

    folder: Path

    @classmethod
    def in_config_dir(cls, config_dir: Path) -> SlotLibrary:
        return cls(config_dir / SLOTS_FOLDER)

    def path(self, name: str) -> Path:
        """The file of the set called `name`; the name must be usable as a file name."""
        name = check_name(name, "slot set name", SlotError)
        if _FILE_NAME_BAD.search(name) or name.startswith("."):
            raise SlotError(f"slot set name {name!r} cannot hold / \\ : * ? \" < > | or start with '.'")
        return self.folder / f"{name}.json"

    def names(self) -> list[str]:
        """Saved set names, sorted without case."""
        return sorted(self._files(), key=str.casefold)

    def _files(self) -> Iterator[str]:
        try:
            for entry in self.folder.iterdir():
                if entry.suffix == ".json" and not entry.name.startswith(".") and entry.is_file():
                    yield entry.stem
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SlotError(f"cannot list slot sets in {self.folder}: {exc.strerror or exc}") from None

    def save(self, name: str, slot_set: SlotSet) -> Path:
        path = self.path(name)
        atomic_write_bytes(path, slot_set_to_json(slot_set))
        return path

    def load(self, name: str) -> SlotSet:
        path = self.path(name)
        missing = f"no slot set {name!r} ({path} does not exist)"
        data = read_capped(path, MAX_FILE_BYTES, SlotError, what="a slot set", missing=missing)
        return slot_set_from_json(data, str(path))

    def delete(self, name: str) -> None:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise SlotError(f"no slot set {name!r} ({path} does not exist)") from None
        except OSError as exc:
            raise SlotError(f"cannot delete {path}: {exc.strerror or exc}") from None
