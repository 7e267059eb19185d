"""Delete parts of a prompt and put it back together so that it still reads like something a person typed.

Callers mark spans to delete (a filtered tag's words, a LoRA tag...). The rewrite then:
- drops every bracket pair and numeric section left with nothing inside (`{nude}` goes whole, `{nude, smile}`
  keeps its braces around `smile`);
- drops elements left without words, and whitespace-only ones, and keeps exactly one separator between the
  survivors (the strongest of those that stood between them: `BREAK` over `|` over `,`), spaced as typed;
- leaves every surviving element's bytes as they were, except whitespace collapsed where words inside it
  were deleted.
When nothing is deleted the text comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate

from peropix_tui.core.prompt.elements import Element, core_text, lead_text, split_elements, trail_text
from peropix_tui.core.prompt.syntax import (
    CLOSER_KINDS,
    CONTENT_KINDS,
    LORA_KINDS,
    OPENER_KINDS,
    SEPARATOR_STRENGTH,
    SpanKind,
)
from peropix_tui.core.prompt.tokens import TokenizedPrompt

_OPENER_TEXT = frozenset({"{", "[", "("})


def element_words(tokenized: TokenizedPrompt, element: Element, *, keep_loras: bool, paired: set[int]) -> Iterable[int]:
    """Span indices that deleting the element as a tag removes: words, escapes, whitespace, stray closers
    (and LoRA tags unless `keep_loras`). Brackets paired with anything are left to the pair clean-up."""
    kinds = tokenized.kinds
    for index in range(element.first, element.stop):
        kind = kinds[index]
        if kind in OPENER_KINDS or kind in CLOSER_KINDS:
            continue
        if kind is SpanKind.ERROR and index in paired:
            continue
        if keep_loras and (kind in LORA_KINDS or (kind is SpanKind.ERROR and _inside_lora(tokenized, index))):
            continue
        yield index


def paired_spans(tokenized: TokenizedPrompt) -> set[int]:
    pairs = tokenized.pairs
    return {pair.open for pair in pairs} | {pair.close for pair in pairs if pair.close >= 0}


def _inside_lora(tokenized: TokenizedPrompt, index: int) -> bool:
    at = tokenized.starts[index]
    return any(lora.start <= at < lora.end for lora in tokenized.loras)


def rewrite(tokenized: TokenizedPrompt, deleted: bytearray) -> str:
    """The prompt without the spans flagged in `deleted` (one flag per span), tidied as described above."""
    if not any(deleted):
        return tokenized.text
    kinds = tokenized.kinds
    _cancel_empty_pairs(tokenized, deleted)
    surviving = [kind in CONTENT_KINDS and not gone for kind, gone in zip(kinds, deleted, strict=True)]
    surviving_before = [0, *accumulate(surviving)]
    elements = split_elements(tokenized)
    text = tokenized.text
    out: list[str] = []
    previous = -1  # index of the last element kept
    residue: list[int] = []  # brackets left over from dropped elements since then
    deleted_before = [0, *accumulate(deleted)]
    partner = {pair.open: pair.close for pair in tokenized.pairs} | {pair.close: pair.open for pair in tokenized.pairs}
    for index, element in enumerate(elements):
        untouched = deleted_before[element.stop] == deleted_before[element.first]
        words_left = surviving_before[element.stop] > surviving_before[element.first]
        # Kept: whatever still has words, and untouched syntax-only elements (`|:0.5`); whitespace-only
        # elements go, so no doubled separators are left behind.
        if not words_left and not (untouched and not element.empty):
            # Brackets of a dropped element stay only where they balance brackets outside it; a pair wholly inside
            # goes with the element (`1.5::::nude` without `nude` leaves nothing, not `1.5::::`).
            residue.extend(
                i
                for i in range(element.first, element.stop)
                if not deleted[i]
                and _role(tokenized, i) != 0
                and not element.first <= partner.get(i, -1) < element.stop
            )
            continue
        closers, openers = _split_residue(tokenized, residue)
        if previous < 0:
            out.append(lead_text(tokenized, elements[0]))
        else:
            out.extend(text[tokenized.starts[i] : tokenized.ends[i]] for i in closers)
            out.append(_gap(tokenized, elements, previous, index, deleted))
        out.extend(text[tokenized.starts[i] : tokenized.ends[i]] for i in openers)
        out.append(_core(tokenized, element, deleted))
        previous = index
        residue = []
    if previous < 0:
        return ""
    closers, _ = _split_residue(tokenized, residue)
    out.extend(text[tokenized.starts[i] : tokenized.ends[i]] for i in closers)
    out.append(trail_text(tokenized, elements[-1]))
    return "".join(out)


def _cancel_empty_pairs(tokenized: TokenizedPrompt, deleted: bytearray) -> None:
    """Flag every pair whose scope lost words and has none left, with everything inside it."""
    kinds = tokenized.kinds
    alive = (kind in CONTENT_KINDS and not gone for kind, gone in zip(kinds, deleted, strict=True))
    content = [0, *accumulate(alive)]
    lost = [0, *accumulate(deleted)]
    for pair in tokenized.pairs:
        inside_from = pair.open + 1
        if content[pair.end] - content[inside_from] == 0 and lost[pair.end] - lost[inside_from] > 0:
            last = pair.close if pair.close >= 0 else pair.end - 1
            for index in range(pair.open, last + 1):
                deleted[index] = 1


def _role(tokenized: TokenizedPrompt, index: int) -> int:
    """1 for an opener, 2 for a closer, 0 for anything else (error spans by what they would have been)."""
    kind = tokenized.kinds[index]
    if kind in OPENER_KINDS:
        return 1
    if kind in CLOSER_KINDS:
        return 2
    if kind is SpanKind.ERROR and not _inside_lora(tokenized, index):
        piece = tokenized.span_text(index)
        if piece in _OPENER_TEXT:
            return 1
        if piece in ("}", "]", ")", "::"):
            return 2
    return 0


def _split_residue(tokenized: TokenizedPrompt, residue: list[int]) -> tuple[list[int], list[int]]:
    """Leftover brackets up to the last closer belong to the text before; the rest to the text after."""
    cut = 0
    for position, index in enumerate(residue):
        if _role(tokenized, index) == 2:
            cut = position + 1
    return residue[:cut], residue[cut:]


def _gap(tokenized: TokenizedPrompt, elements: list[Element], before: int, after: int, deleted: bytearray) -> str:
    """The one separator kept between two surviving elements, and the spacing around it."""
    candidates = [elements[i].separator for i in range(before, after)]
    alive = [i for i in candidates if not deleted[i]] or candidates
    best = max(alive, key=lambda i: SEPARATOR_STRENGTH[tokenized.kinds[i]])  # first of the strongest
    owner = elements[before + candidates.index(best)]
    # Spacing before the separator as it was typed before it (an element that is only whitespace sits wholly
    # before the separator ending it); after it, the spacing the next survivor had.
    spacing = (
        lead_text(tokenized, owner) if owner.empty else trail_text(tokenized, owner),
        lead_text(tokenized, elements[after]),
    )
    if tokenized.kinds[best] is SpanKind.BREAK:  # BREAK is only a keyword as a word of its own
        spacing = (spacing[0] or " ", spacing[1] or " ")
    return spacing[0] + tokenized.span_text(best) + spacing[1]


def _core(tokenized: TokenizedPrompt, element: Element, deleted: bytearray) -> str:
    """The element's core, minus deleted spans, with whitespace runs left by the deletion collapsed."""
    if not any(deleted[element.core_first : element.core_stop]):
        return core_text(tokenized, element)
    pieces: list[str] = []
    last_was_space = True  # drops whitespace at the start
    for index in range(element.core_first, element.core_stop):
        if deleted[index]:
            continue
        is_space = tokenized.kinds[index] is SpanKind.SPACE
        if is_space and last_was_space:
            continue
        pieces.append(tokenized.span_text(index))
        last_was_space = is_space
    if last_was_space and pieces:
        pieces.pop()
    return "".join(pieces)
