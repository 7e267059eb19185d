"""The vocabulary of the prompt language: dialects, span kinds and the value types the tokenizer returns.

Kept apart from the scanner so that tags, LoRA tools, filters and the editor can share the types without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from peropix_tui.core.errors import PeropixError


class PromptError(PeropixError):
    """A prompt operation was asked for something impossible (e.g. renaming a LoRA to a name with '>')."""


class Dialect(StrEnum):
    """Which emphasis syntax a prompt is written in.

    NAI: NovelAI, `{a}` x1.05, `[a]` /1.05, `1.5::a::` numeric sections, parentheses are literal text.
    SD: A1111/ComfyUI, `(a)` x1.1, `(a:1.3)`, `[a]` /1.1, backslash escapes, `BREAK`.
    Both read `__name__` wildcards and `<pick:a|b>` choices, which are expanded before a prompt is sent.
    """

    NAI = "nai"
    SD = "sd"


class SpanKind(StrEnum):
    """What a piece of prompt text is; the values double as TextArea highlight names."""

    TEXT = "text"
    SPACE = "space"
    COMMA = "comma"
    PIPE = "pipe"
    BREAK = "break"
    OPEN = "bracket.open"
    CLOSE = "bracket.close"
    WEIGHT_PREFIX = "weight.prefix"  # NAI `1.5::`
    SECTION_CLOSE = "weight.close"  # NAI `::`
    WEIGHT_SUFFIX = "weight.suffix"  # SD `:1.3` before `)`
    PART_WEIGHT = "weight.part"  # NAI prompt-mixing `:0.5` before `|` or the end
    ESCAPE = "escape"  # SD `\(`
    LORA_OPEN = "lora.open"  # `<`
    LORA_KEYWORD = "lora.keyword"  # `lora` / `lyco`
    LORA_SEP = "lora.sep"  # `:`
    LORA_NAME = "lora.name"
    LORA_WEIGHT = "lora.weight"
    LORA_CLOSE = "lora.close"  # `>`
    WILDCARD = "wildcard"  # `__name__`: a line drawn from wildcards/name.txt
    PICK_OPEN = "pick.open"  # `<pick:`
    PICK_SEP = "pick.sep"  # `|` between the choices of a pick
    PICK_CLOSE = "pick.close"  # `>` ending a pick
    PICK_ESCAPE = "pick.escape"  # `\|` or `\>` inside a pick: the character itself
    ERROR = "error"  # unbalanced bracket, stray `::`, bad LoRA value, unclosed `<lora:` or `<pick:`


LORA_KINDS = frozenset(
    {
        SpanKind.LORA_OPEN,
        SpanKind.LORA_KEYWORD,
        SpanKind.LORA_SEP,
        SpanKind.LORA_NAME,
        SpanKind.LORA_WEIGHT,
        SpanKind.LORA_CLOSE,
    }
)
PICK_KINDS = frozenset({SpanKind.PICK_OPEN, SpanKind.PICK_SEP, SpanKind.PICK_CLOSE, SpanKind.PICK_ESCAPE})
WILDCARD_KINDS = PICK_KINDS | {SpanKind.WILDCARD}
SEPARATOR_KINDS = frozenset({SpanKind.COMMA, SpanKind.PIPE, SpanKind.BREAK})
OPENER_KINDS = frozenset({SpanKind.OPEN, SpanKind.WEIGHT_PREFIX})
CLOSER_KINDS = frozenset({SpanKind.CLOSE, SpanKind.SECTION_CLOSE, SpanKind.WEIGHT_SUFFIX, SpanKind.PART_WEIGHT})
WORD_KINDS = frozenset({SpanKind.TEXT, SpanKind.ESCAPE})
# Spans that carry meaning of their own; a tag without any of them is empty.
CONTENT_KINDS = WORD_KINDS | LORA_KINDS | WILDCARD_KINDS
# When tags between two others disappear, the strongest separator among them is the one kept.
SEPARATOR_STRENGTH = {SpanKind.COMMA: 1, SpanKind.PIPE: 2, SpanKind.BREAK: 3}


@dataclass(frozen=True, slots=True)
class Span:
    """One piece of the prompt; the spans of a prompt tile it exactly.

    `start`/`end` are character offsets, `byte_start`/`byte_end` UTF-8 byte offsets from the start of the text
    (what Textual's TextArea highlights by). `weight` is the effective multiplicative weight of the text and
    `depth` the bracket nesting level (a bracket's own depth is the level of the group it delimits, from 1).
    """

    kind: SpanKind
    start: int
    end: int
    byte_start: int
    byte_end: int
    weight: float
    depth: int


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A syntax problem found while tokenizing; the prompt is still usable."""

    start: int
    end: int
    message: str


@dataclass(frozen=True, slots=True)
class LoraRef:
    """One `<lora:...>` or `<lyco:...>` tag.

    Values follow the A1111 convention: `<lora:name:te:unet:dyn>`, where a missing `unet` weight equals `te`,
    and named `te=`, `unet=`, `dyn=` parameters override positions.
    """

    text: str
    keyword: str
    name: str
    te_weight: float
    unet_weight: float
    dyn: int | None
    start: int
    end: int


class BracketPair(NamedTuple):
    """Span indices of an opener and what closes it.

    `close` is -1 when nothing closes it; `end` is the span index where its scope stops (the closer, a new
    numeric section, or the end of the prompt).
    """

    open: int
    close: int
    end: int
