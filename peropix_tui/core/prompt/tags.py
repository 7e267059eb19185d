"""Tags: the comma-separated elements of a prompt, and the whole-prompt clean-ups built on them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from peropix_tui.core.prompt.elements import (
    Element,
    core_text,
    element_normalized,
    element_weight,
    split_elements,
)
from peropix_tui.core.prompt.rewrite import element_words, paired_spans, rewrite
from peropix_tui.core.prompt.syntax import (
    LORA_KINDS,
    SEPARATOR_STRENGTH,
    WORD_KINDS,
    Dialect,
    LoraRef,
    SpanKind,
)
from peropix_tui.core.prompt.tokens import TokenizedPrompt, tokenize

UnderscoreMode = Literal["keep", "spaces", "underscores"]

_COMMA_RULE = re.compile(r" ?, ?")
_SPACES = re.compile(r"\s+")
# Danbooru emoticon tags keep their underscore: it is part of the face, not a word separator.
_EMOTICON = re.compile(r"(?:[^\w\s]|[oOuUxXtTqQ0-9]){1,2}_+(?:[^\w\s]|[oOuUxXtTqQ0-9]){1,2}")
_JOINERS = {SpanKind.COMMA: ", ", SpanKind.PIPE: " | ", SpanKind.BREAK: " BREAK "}


@dataclass(frozen=True, slots=True)
class Tag:
    """One separator-delimited element of a prompt.

    `text` is the element without surrounding whitespace, `start`/`end` its character span in the prompt,
    `normalized` its matching form (see `normalize_tag`; emphasis, weights and LoRA tags left out), `weight`
    the effective weight of its first word, `loras` the LoRA tags inside it.
    """

    text: str
    start: int
    end: int
    normalized: str
    weight: float
    loras: tuple[LoraRef, ...]


def split_tags(text: str, dialect: Dialect = Dialect.NAI) -> list[Tag]:
    """The tags of a prompt in order; elements holding no words and no LoRA tag are skipped."""
    tokenized = tokenize(text, dialect)
    tags: list[Tag] = []
    for element in split_elements(tokenized):
        if element.empty:
            continue
        start = tokenized.starts[element.core_first]
        end = tokenized.ends[element.core_stop - 1]
        loras = tuple(lora for lora in tokenized.loras if start <= lora.start < end)
        normalized = element_normalized(tokenized, element)
        if not normalized and not loras:
            continue
        tags.append(Tag(text[start:end], start, end, normalized, element_weight(tokenized, element), loras))
    return tags


def normalize_commas_nai(text: str) -> str:
    """NovelAI's web client comma rule: drop at most one ASCII space before each comma and make sure one
    ASCII space follows it. Nothing else changes (no trimming), because the server sees every byte: the same
    seed with different comma spacing gives a different image."""
    return _COMMA_RULE.sub(", ", text)


def normalize_prompt(text: str, *, underscores: UnderscoreMode = "keep", dialect: Dialect = Dialect.NAI) -> str:
    """Tidy a prompt: tags trimmed, whitespace runs inside tags collapsed to one space, empty tags dropped,
    tags rejoined with ", " (" | " and " BREAK " where those separated them).

    `underscores`: "spaces" turns `long_hair` into `long hair`, "underscores" does the reverse between words;
    emoticon tags (`^_^`, `>_<`...) and LoRA tags are never changed. Bracket and weight syntax stays as typed.
    """
    tokenized = tokenize(text, dialect)
    kinds = tokenized.kinds
    parts: list[str] = []
    separator: SpanKind | None = None  # strongest separator since the last tag written
    for element in split_elements(tokenized):
        tag = _tidy(tokenized, element, underscores) if not element.empty else ""
        if tag:
            if parts:
                parts.append(_JOINERS[separator or SpanKind.COMMA])
            parts.append(tag)
            separator = None
        if element.separator >= 0 and parts:
            kind = kinds[element.separator]
            if separator is None or SEPARATOR_STRENGTH[kind] > SEPARATOR_STRENGTH[separator]:
                separator = kind
    return "".join(parts)


def _tidy(tokenized: TokenizedPrompt, element: Element, underscores: UnderscoreMode) -> str:
    """The element's core tidied, or the closest tidier spelling that still means the same: collapsing
    whitespace or converting underscores must never create or break syntax (`BREAK_` would turn into the
    keyword, `<lora:\n>` into a LoRA tag)."""
    kinds = tokenized.kinds
    core = range(element.core_first, element.core_stop)
    original = core_text(tokenized, element)
    words = "".join(tokenized.span_text(i) for i in core if kinds[i] is SpanKind.TEXT)
    candidates = [_tidy_pieces(tokenized, core, "keep")]
    if underscores != "keep" and not _EMOTICON.fullmatch(words):
        candidates.insert(0, _tidy_pieces(tokenized, core, underscores))
    syntax: list[str] | None = None
    for candidate in candidates:
        if candidate == original:
            return candidate
        if syntax is None:
            syntax = _syntax(original, tokenized.dialect)
        if _syntax(candidate, tokenized.dialect) == syntax:
            return candidate
    return original


def _tidy_pieces(tokenized: TokenizedPrompt, core: range, underscores: UnderscoreMode) -> str:
    kinds = tokenized.kinds
    pieces: list[str] = []
    protected: list[bool] = []
    for index in core:
        kind = kinds[index]
        piece = tokenized.span_text(index)
        if kind is SpanKind.SPACE:
            between_words = kinds[index - 1] in WORD_KINDS and kinds[index + 1] in WORD_KINDS
            piece = "_" if underscores == "underscores" and between_words else " "
        elif kind is SpanKind.TEXT and underscores == "spaces":
            piece = piece.replace("_", " ")
        pieces.append(piece)
        protected.append(kind in LORA_KINDS)
    return _collapse(pieces, protected).strip()


def _syntax(tag: str, dialect: Dialect) -> list[str]:
    """The tag's syntax tokens (everything but words and spaces), to compare two spellings of it."""
    tokenized = tokenize(tag, dialect)
    plain = (SpanKind.TEXT, SpanKind.SPACE)
    return [tokenized.span_text(i) for i, kind in enumerate(tokenized.kinds) if kind not in plain]


def _collapse(pieces: list[str], protected: list[bool]) -> str:
    """Concatenate, collapsing whitespace runs to one space except inside LoRA tags (names keep theirs)."""
    out: list[str] = []
    run: list[str] = []
    for piece, keep in zip(pieces, protected, strict=True):
        if keep:
            out.append(_SPACES.sub(" ", "".join(run)))
            out.append(piece)
            run = []
        else:
            run.append(piece)
    out.append(_SPACES.sub(" ", "".join(run)))
    return "".join(out)


def dedupe_tags(text: str, dialect: Dialect = Dialect.NAI) -> str:
    """Drop every tag whose normalized form (and LoRA tags) already appeared; the first one stays, and the
    rest of the prompt keeps its exact bytes."""
    tokenized = tokenize(text, dialect)
    deleted = bytearray(len(tokenized.kinds))
    paired = paired_spans(tokenized)
    seen: set[tuple[str, tuple[tuple[str, str, float, float], ...]]] = set()
    for element in split_elements(tokenized):
        if element.empty:
            continue
        start = tokenized.starts[element.core_first]
        end = tokenized.ends[element.core_stop - 1]
        loras = tuple(
            (lora.keyword, lora.name, lora.te_weight, lora.unet_weight)
            for lora in tokenized.loras
            if start <= lora.start < end
        )
        key = (element_normalized(tokenized, element), loras)
        if key == ("", ()):
            continue
        if key in seen:
            for index in element_words(tokenized, element, keep_loras=False, paired=paired):
                deleted[index] = 1
        else:
            seen.add(key)
    return rewrite(tokenized, deleted)
