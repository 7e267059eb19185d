"""Separator-delimited elements of a tokenized prompt: the unit that tags, filters and LoRA tools work on.

Commas, `|` and `BREAK` end an element wherever they sit, also inside brackets, so `{nude, smile}` is the two
elements `{nude` and ` smile}`; the brackets stay with the text they were typed next to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peropix_tui.core.prompt.syntax import SEPARATOR_KINDS, SpanKind
from peropix_tui.core.prompt.tokens import TokenizedPrompt

_ESCAPED = re.compile(r"\\([()\[\]{}\\])")


@dataclass(frozen=True, slots=True)
class Element:
    """Span index ranges of one element: `[first, stop)` all of it, `[core_first, core_stop)` without the
    whitespace around it (empty when the element is only whitespace); `separator` is the span that ends it,
    -1 for the last element."""

    first: int
    stop: int
    core_first: int
    core_stop: int
    separator: int

    @property
    def empty(self) -> bool:
        return self.core_first == self.core_stop


def split_elements(tokenized: TokenizedPrompt) -> list[Element]:
    kinds = tokenized.kinds
    elements: list[Element] = []
    first = 0
    core_first = -1
    core_stop = -1
    space = SpanKind.SPACE
    for index, kind in enumerate(kinds):
        if kind in SEPARATOR_KINDS:
            elements.append(_element(first, index, core_first, core_stop, index))
            first = index + 1
            core_first = core_stop = -1
        elif kind is not space:
            if core_first < 0:
                core_first = index
            core_stop = index + 1
    elements.append(_element(first, len(kinds), core_first, core_stop, -1))
    return elements


def _element(first: int, stop: int, core_first: int, core_stop: int, separator: int) -> Element:
    if core_first < 0:
        return Element(first, stop, stop, stop, separator)
    return Element(first, stop, core_first, core_stop, separator)


def lead_text(tokenized: TokenizedPrompt, element: Element) -> str:
    """Whitespace before the element's core (all of it for an empty element)."""
    if element.first == element.core_first:
        return ""
    return tokenized.text[tokenized.starts[element.first] : tokenized.ends[element.core_first - 1]]


def trail_text(tokenized: TokenizedPrompt, element: Element) -> str:
    if element.empty or element.core_stop == element.stop:
        return ""
    return tokenized.text[tokenized.starts[element.core_stop] : tokenized.ends[element.stop - 1]]


def core_text(tokenized: TokenizedPrompt, element: Element) -> str:
    if element.empty:
        return ""
    return tokenized.text[tokenized.starts[element.core_first] : tokenized.ends[element.core_stop - 1]]


def normalize_tag(text: str) -> str:
    """Matching form of a plain tag: escapes undone, case folded, `_` as space, whitespace collapsed."""
    return " ".join(_ESCAPED.sub(r"\1", text).casefold().replace("_", " ").split())


def element_normalized(tokenized: TokenizedPrompt, element: Element) -> str:
    """`normalize_tag` of the element's words: emphasis, weight syntax and LoRA tags left out."""
    text = tokenized.text
    kinds = tokenized.kinds
    starts = tokenized.starts
    ends = tokenized.ends
    pieces: list[str] = []
    for index in range(element.core_first, element.core_stop):
        kind = kinds[index]
        if kind is SpanKind.TEXT:
            pieces.append(text[starts[index] : ends[index]])
        elif kind is SpanKind.ESCAPE:
            pieces.append(text[starts[index] + 1 : ends[index]])
        elif kind is SpanKind.SPACE:
            pieces.append(" ")
    return normalize_tag("".join(pieces))


def element_weight(tokenized: TokenizedPrompt, element: Element) -> float:
    """Weight of the element's first word; 1.0 when it has none (a bare LoRA tag)."""
    kinds = tokenized.kinds
    for index in range(element.core_first, element.core_stop):
        if kinds[index] is SpanKind.TEXT or kinds[index] is SpanKind.ESCAPE:
            return tokenized.weights[index]
    return 1.0
