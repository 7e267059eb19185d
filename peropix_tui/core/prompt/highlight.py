"""Spans to per-line highlight ranges, in the form Textual's TextArea draws: UTF-8 byte columns within a line.

Only whitespace spans can hold a line break (the scanner never lets another kind cross one), so the walk only
looks inside those and stays linear in the number of spans.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from peropix_tui.core.prompt.syntax import SpanKind
from peropix_tui.core.prompt.tokens import LINE_BREAKS, TokenizedPrompt

_BREAK_RE = re.compile(rf"\r\n|[{LINE_BREAKS}]")
_BRACKETS = frozenset({SpanKind.OPEN, SpanKind.CLOSE})


def line_highlights(
    tokenized: TokenizedPrompt,
    *,
    skip: Collection[SpanKind] = frozenset({SpanKind.SPACE}),
    bracket_levels: int = 0,
) -> list[tuple[int, int, int, str]]:
    """`(line, byte_start, byte_end, name)` for every span not in `skip`, lines split like `str.splitlines`.

    `name` is the span kind's value (a `SpanKind`, which is a `str`). With `bracket_levels` > 0, matched
    brackets are named `"bracket.open.N"` / `"bracket.close.N"` with N = (depth - 1) % bracket_levels, so a
    theme can colour nesting levels in turn. Leaving plain words unstyled (`skip={SPACE, TEXT}`) saves most of
    the work, since they are most of any prompt.
    """
    text = tokenized.text
    result: list[tuple[int, int, int, str]] = []
    append = result.append
    breaks = [found.span() for found in _BREAK_RE.finditer(text)]
    breaks.append((len(text) + 1, len(text) + 1))  # sentinel
    next_break = 0  # index into breaks
    line = 0
    line_byte = 0  # byte offset of the current line's first character
    space = SpanKind.SPACE
    skip_space = space in skip
    for kind, start, end, byte_start, byte_end, depth in zip(
        tokenized.kinds,
        tokenized.starts,
        tokenized.ends,
        tokenized.byte_starts,
        tokenized.byte_ends,
        tokenized.depths,
        strict=True,
    ):
        if kind is space:
            piece_start = start
            piece_byte = byte_start
            while breaks[next_break][0] < end:
                break_start, break_end = breaks[next_break]
                break_byte = piece_byte + _bytes(text, piece_start, break_start)
                if not skip_space and break_byte > piece_byte:
                    append((line, piece_byte - line_byte, break_byte - line_byte, kind))
                piece_byte = break_byte + _bytes(text, break_start, break_end)
                piece_start = break_end
                line += 1
                line_byte = piece_byte
                next_break += 1
            if not skip_space and byte_end > piece_byte:
                append((line, piece_byte - line_byte, byte_end - line_byte, kind))
            continue
        if kind in skip:
            continue
        name: str = kind
        if bracket_levels > 0 and kind in _BRACKETS:
            name = f"{kind.value}.{(depth - 1) % bracket_levels}"
        append((line, byte_start - line_byte, byte_end - line_byte, name))
    return result


def _bytes(text: str, start: int, end: int) -> int:
    piece = text[start:end]
    return len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))
