"""The single prompt tokenizer: one linear pass that every other prompt feature builds on.

A compiled alternation regex walks the text once (alternatives only ever look at one token), and a small
state machine tracks brackets and numeric sections. Span objects are built only when someone asks for them:
the editor's highlighter reads the flat columns, which keeps a keystroke well under a millisecond.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right

from peropix_tui.core.prompt.syntax import (
    LORA_KINDS,
    BracketPair,
    Diagnostic,
    Dialect,
    LoraRef,
    Span,
    SpanKind,
)

# Characters `str.splitlines` (and so Textual's document) breaks lines on.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_LORA = (
    rf"|(?P<lora><(?P<lkw>(?i:lora|lyco)):(?P<lbody>[^<>{LINE_BREAKS}]*)>)"
    r"|(?P<lorabad><(?i:lora|lyco):)"
)
# Wildcards and picks, in both dialects. A wildcard name holds letters, digits, `.`, `-`, `/` and single
# underscores, with none at either end.
_WILD_CHAR = r"(?:[^\W_]|[./-])"
_WILDCARDS = (
    rf"|(?P<wild>__{_WILD_CHAR}(?:_?{_WILD_CHAR})*__)"
    r"|(?P<pick><(?i:pick):)"
    r"|(?P<gt>>)"
    r"|(?P<pesc>\\[|>])"
)
_NAI_STOP = r"\s,|{}\[\]<>:(\\"
_SD_STOP = r"\s,|()\[\]<>:\\"


def _words(stop: str, not_first: str, *, before_wildcards: bool) -> tuple[str, str]:
    """Bodies of the `text` and `text2` groups. With `before_wildcards` a word stops before `__`, where a
    wildcard may start; that costs a little per underscore, so it is used only on text that holds a `__`."""
    if not before_wildcards:
        return rf"[^{stop}{not_first}][^{stop}]*", rf"[^{stop}]+"
    rest = rf"[^{stop}_]*(?:_(?!_)[^{stop}_]*)*"
    return rf"[^{stop}{not_first}_]{rest}", rf"[^{stop}_]{rest}"


def _nai_pattern(*, before_wildcards: bool) -> re.Pattern[str]:
    text, text2 = _words(_NAI_STOP, r"\-.0-9", before_wildcards=before_wildcards)
    return re.compile(
        rf"(?P<ws>\s+)"
        rf"|(?P<text>{text})"
        r"|(?P<comma>,)"
        r"|(?P<open>[{\[])"
        r"|(?P<close>[}\]])"
        rf"|(?P<prefix>(?<![\w.])-?{_NUM}::)"
        r"|(?P<sclose>::)"
        rf"|(?P<pweight>:(?P<pws>\s*)(?P<pnum>-?{_NUM})(?=\s*(?:\||\Z)))"
        r"|(?P<pipe>\|)"
        rf"{_LORA}"
        rf"{_WILDCARDS}"
        rf"|(?P<text2>{text2})"
        r"|(?P<other>.)",
        re.DOTALL,
    )


def _sd_pattern(*, before_wildcards: bool) -> re.Pattern[str]:
    text, text2 = _words(_SD_STOP, "B", before_wildcards=before_wildcards)
    return re.compile(
        rf"(?P<ws>\s+)"
        rf"|(?P<text>{text})"
        r"|(?P<comma>,)"
        r"|(?P<open>[(\[])"
        r"|(?P<close>[)\]])"
        r"|(?P<escape>\\[()\[\]{}\\])"
        rf"|(?P<suffix>:(?P<sws>\s*)(?P<snum>[+-]?{_NUM})(?=\s*\)))"
        r"|(?P<brk>\bBREAK\b)"
        r"|(?P<pipe>\|)"
        rf"{_LORA}"
        rf"{_WILDCARDS}"
        rf"|(?P<text2>{text2})"
        r"|(?P<other>.)",
        re.DOTALL,
    )


_PLAIN_GROUPS = {
    "ws": SpanKind.SPACE,
    "text": SpanKind.TEXT,
    "text2": SpanKind.TEXT,
    "other": SpanKind.TEXT,
    "comma": SpanKind.COMMA,
    "escape": SpanKind.ESCAPE,
    "brk": SpanKind.BREAK,
}


def _scan_table(pattern: re.Pattern[str]) -> tuple[re.Pattern[str], list[SpanKind | None]]:
    """The pattern with, per group number, the kind of a plain token (None: needs `_Scanner.special`)."""
    plain: list[SpanKind | None] = [None] * (pattern.groups + 1)
    for name, index in pattern.groupindex.items():
        plain[index] = _PLAIN_GROUPS.get(name)
    return pattern, plain


# (NAI?, text holds "__"?) -> scan table
_SCANS = {
    (nai, before): _scan_table(_nai_pattern(before_wildcards=before) if nai else _sd_pattern(before_wildcards=before))
    for nai in (True, False)
    for before in (True, False)
}
_WEIGHT_RE = re.compile(rf"[+-]?{_NUM}")
_INT_RE = re.compile(r"\d+")

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

_NAI_STEP = 1.05
_SD_STEP = 1.1
_CLOSER_FOR = {"}": "{", "]": "[", ")": "("}
_LORA_POSITIONS = {1: "te", 2: "unet", 3: "dyn"}


class TokenizedPrompt:
    """The result of `tokenize`: spans tiling the text, plus diagnostics, LoRA tags and bracket pairs.

    The span columns (`kinds`, `starts`, `ends`, `weights`, `depths`, and `byte_starts`/`byte_ends`, worked
    out on first use) are tuples indexed like `spans`; hot paths read them instead of building Span objects.
    """

    __slots__ = (
        "_bytes",
        "_spans",
        "depths",
        "diagnostics",
        "dialect",
        "ends",
        "kinds",
        "loras",
        "pairs",
        "starts",
        "text",
        "weights",
    )

    def __init__(
        self,
        text: str,
        dialect: Dialect,
        columns: tuple[tuple[SpanKind, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...], tuple[int, ...]],
        diagnostics: list[Diagnostic],
        loras: list[LoraRef],
        pairs: list[BracketPair],
    ) -> None:
        self.text = text
        self.dialect = dialect
        self.kinds, self.starts, self.ends, self.weights, self.depths = columns
        self.diagnostics = diagnostics
        self.loras = loras
        self.pairs = pairs
        self._bytes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._spans: list[Span] | None = None

    @property
    def byte_starts(self) -> tuple[int, ...]:
        return self._byte_columns()[0]

    @property
    def byte_ends(self) -> tuple[int, ...]:
        return self._byte_columns()[1]

    def _byte_columns(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self._bytes is None:
            if self.text.isascii():
                self._bytes = (self.starts, self.ends)
            else:
                self._bytes = _byte_offsets(self.text, self.ends)
        return self._bytes

    @property
    def spans(self) -> list[Span]:
        """The spans in text order; built on first use and shared afterwards (treat as read-only)."""
        if self._spans is None:
            byte_starts, byte_ends = self._byte_columns()
            self._spans = list(
                map(
                    Span,
                    self.kinds,
                    self.starts,
                    self.ends,
                    byte_starts,
                    byte_ends,
                    self.weights,
                    self.depths,
                )
            )
        return self._spans

    def span_text(self, index: int) -> str:
        return self.text[self.starts[index] : self.ends[index]]

    def __repr__(self) -> str:
        return (
            f"TokenizedPrompt({self.text!r}, {self.dialect.name}, spans={len(self.kinds)}, "
            f"diagnostics={len(self.diagnostics)}, loras={len(self.loras)})"
        )


def tokenize(text: str, dialect: Dialect = Dialect.NAI) -> TokenizedPrompt:
    """Split `text` into spans that tile it exactly; never raises, whatever the string holds."""
    return _Scanner(text, dialect).run()


class _Scanner:
    """One tokenize call's mutable state; `run` is the whole pass.

    While scanning, the weight column holds a *mark*: the weight itself in NAI (it never changes after the
    fact), and in SD the id of the bracket frame the span sits in, because `(text:1.3)` rescales text that was
    already scanned. Frame weights are resolved once at the end, so the pass stays linear.
    """

    def __init__(self, text: str, dialect: Dialect) -> None:
        self.text = text
        self.nai = dialect is Dialect.NAI
        self.dialect = dialect
        self.mixing = "|" in text  # NAI `:0.5` part weights only mean something between `|` parts
        self.kinds: list[SpanKind] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.marks: list[float] = []
        self.depths: list[int] = []
        self.diagnostics: list[Diagnostic] = []
        self.loras: list[LoraRef] = []
        self.pairs: list[BracketPair] = []
        self.stack: list[tuple[str, int]] = []  # open brackets: (char, span index)
        self.picks: list[tuple[int, int]] = []  # open `<pick:`s: (span index, bracket depth there)
        self.mark = 1.0 if self.nai else 0.0
        # NAI state: curly minus square levels and the running numeric section.
        self.net = 0
        self.section = 1.0
        self.section_at = -1
        # SD state: bracket frames as a tree (parent, multiplier); frame 0 is the top level.
        self.frame = 0
        self.frame_parent = [0]
        self.frame_multiplier = [1.0]

    def emit(self, kind: SpanKind, start: int, end: int) -> None:
        self.kinds.append(kind)
        self.starts.append(start)
        self.ends.append(end)
        self.marks.append(self.mark)
        self.depths.append(len(self.stack))

    def run(self) -> TokenizedPrompt:
        """The scan loop: plain tokens are appended inline (they are most of any prompt), the rest goes
        through `special`; local copies of the mark and depth are refreshed after each special token."""
        kinds = self.kinds
        starts = self.starts
        ends = self.ends
        marks = self.marks
        depths = self.depths
        add_kind = kinds.append
        add_start = starts.append
        add_end = ends.append
        add_mark = marks.append
        add_depth = depths.append
        text_kind = SpanKind.TEXT
        space_kind = SpanKind.SPACE
        pattern, plain = _SCANS[self.nai, "__" in self.text]
        mark = self.mark
        depth = 0
        for m in pattern.finditer(self.text):
            kind = plain[m.lastindex]  # type: ignore[index]
            if kind is None:
                self.special(m)
                mark = self.mark
                depth = len(self.stack)
                continue
            start, end = m.span()
            if (
                (kind is text_kind or kind is space_kind)
                and kinds
                and kinds[-1] is kind
                and marks[-1] == mark
                and depths[-1] == depth
            ):
                ends[-1] = end
            else:
                add_kind(kind)
                add_start(start)
                add_end(end)
                add_mark(mark)
                add_depth(depth)
        return self.finish()

    def special(self, m: re.Match[str]) -> None:
        group = m.lastgroup
        start, end = m.span()
        if group == "open":
            self.open_bracket(self.text[start], start)
        elif group == "close":
            self.close_bracket(self.text[start], start)
        elif group == "lora":
            self.lora(m)
        elif group == "lorabad":
            self.diagnostics.append(Diagnostic(start, end, f"LoRA tag at {start} is not closed with '>'"))
            self.emit(SpanKind.ERROR, start, start + 1)
            self.emit(SpanKind.TEXT, start + 1, end)
        elif group == "prefix":
            self.open_section(start, end)
        elif group == "sclose":
            self.close_section(start, end)
        elif group == "pipe":
            if self.picks:
                self.pick_boundary(SpanKind.PICK_SEP, start)
            else:
                self.emit(SpanKind.PIPE, start, end)
        elif group == "pweight":
            kind = SpanKind.PART_WEIGHT if self.mixing and not self.picks else SpanKind.TEXT
            self.weighted_value(kind, start, m.start("pws"), m.start("pnum"), end)
        elif group == "suffix":
            self.suffix(start, m.start("sws"), m.start("snum"), end, float(m.group("snum")))
        elif group == "wild":
            self.emit(SpanKind.WILDCARD, start, end)
        elif group == "pick":
            self.picks.append((len(self.kinds), len(self.stack)))
            self.emit(SpanKind.PICK_OPEN, start, end)
        elif group == "gt":
            if self.picks:
                self.pick_boundary(SpanKind.PICK_CLOSE, start)
                self.picks.pop()
            else:
                self.text_run(start, end)
        else:  # pesc: `\|` or `\>`, an escape only inside a pick
            if self.picks:
                self.emit(SpanKind.PICK_ESCAPE, start, end)
                return
            self.text_run(start, start + 1)
            if self.text[start + 1] == "|":
                self.emit(SpanKind.PIPE, start + 1, end)
            else:
                self.text_run(start + 1, end)

    def pick_boundary(self, kind: SpanKind, at: int) -> None:
        """A `|` or `>` of the innermost pick; each choice is drawn alone, so its brackets must balance."""
        opened, depth = self.picks[-1]
        if depth >= 0 and len(self.stack) != depth:  # said once per pick (depth -1 afterwards)
            where = self.starts[opened]
            message = f"a bracket in the <pick:> at {where} does not close within its choice"
            self.diagnostics.append(Diagnostic(at, at + 1, message))
            self.picks[-1] = (opened, -1)
        self.emit(kind, at, at + 1)

    def text_run(self, start: int, end: int) -> None:
        kinds = self.kinds
        if kinds and kinds[-1] is SpanKind.TEXT and self.marks[-1] == self.mark and self.depths[-1] == len(self.stack):
            self.ends[-1] = end
        else:
            self.emit(SpanKind.TEXT, start, end)

    def weighted_value(self, kind: SpanKind, colon: int, ws: int, number: int, end: int) -> None:
        """`:` [spaces] number, as one span when there are no spaces; plain text when `kind` is TEXT."""
        plain = kind is SpanKind.TEXT
        if ws == number:
            if plain:
                self.text_run(colon, end)
            else:
                self.emit(kind, colon, end)
            return
        if plain:
            self.text_run(colon, ws)
        else:
            self.emit(kind, colon, ws)
        self.emit(SpanKind.SPACE, ws, number)
        self.emit(kind, number, end)

    def nai_reweigh(self) -> None:
        try:
            self.mark = self.section * _NAI_STEP**self.net
        except OverflowError:  # thousands of nested braces
            self.mark = math.inf * self.section

    def open_bracket(self, char: str, at: int) -> None:
        if self.nai:
            self.net += 1 if char == "{" else -1
            self.stack.append((char, len(self.kinds)))
            self.nai_reweigh()
        else:
            self.frame_parent.append(self.frame)
            self.frame_multiplier.append(_SD_STEP if char == "(" else 1 / _SD_STEP)
            self.frame = self.mark = len(self.frame_parent) - 1
            self.stack.append((char, len(self.kinds)))
        self.emit(SpanKind.OPEN, at, at + 1)

    def close_bracket(self, char: str, at: int) -> None:
        stack = self.stack
        if not stack or stack[-1][0] != _CLOSER_FOR[char]:
            still_open = f"; '{stack[-1][0]}' is still open" if stack else ""
            self.diagnostics.append(Diagnostic(at, at + 1, f"unmatched '{char}' at {at}{still_open}"))
            self.emit(SpanKind.ERROR, at, at + 1)
            return
        self.emit(SpanKind.CLOSE, at, at + 1)
        closed = len(self.kinds) - 1
        self.pairs.append(BracketPair(stack.pop()[1], closed, closed))
        if self.nai:
            self.net -= 1 if char == "}" else -1
            self.nai_reweigh()
        else:
            self.frame = self.mark = self.frame_parent[self.frame]

    def open_section(self, start: int, end: int) -> None:
        index = len(self.kinds)
        if self.section_at >= 0:
            # A new numeric weight replaces the running one: sections do not nest.
            self.pairs.append(BracketPair(self.section_at, -1, index))
        self.section = float(self.text[start : end - 2])
        self.section_at = index
        self.nai_reweigh()
        self.emit(SpanKind.WEIGHT_PREFIX, start, end)

    def close_section(self, start: int, end: int) -> None:
        if self.section_at < 0:
            self.diagnostics.append(Diagnostic(start, end, f"'::' at {start} closes no numeric weight"))
            self.emit(SpanKind.ERROR, start, end)
            return
        self.emit(SpanKind.SECTION_CLOSE, start, end)
        closed = len(self.kinds) - 1
        self.pairs.append(BracketPair(self.section_at, closed, closed))
        self.section_at = -1
        self.section = 1.0
        self.nai_reweigh()

    def suffix(self, colon: int, ws: int, number: int, end: int, value: float) -> None:
        """SD `(text:1.3)`: the group's x1.1 becomes x1.3, for the text already scanned too."""
        if not self.stack or self.stack[-1][0] != "(":
            self.weighted_value(SpanKind.TEXT, colon, ws, number, end)
            return
        self.frame_multiplier[self.frame] = value
        self.weighted_value(SpanKind.WEIGHT_SUFFIX, colon, ws, number, end)

    def lora(self, m: re.Match[str]) -> None:
        start, end = m.span()
        keyword = m.group("lkw")
        emit = self.emit
        emit(SpanKind.LORA_OPEN, start, start + 1)
        emit(SpanKind.LORA_KEYWORD, start + 1, start + 1 + len(keyword))
        pos = m.start("lbody")
        emit(SpanKind.LORA_SEP, pos - 1, pos)
        name = ""
        values: dict[str, str] = {}
        for position, part in enumerate(m.group("lbody").split(":")):
            if position:
                emit(SpanKind.LORA_SEP, pos - 1, pos)
            value = part.strip()
            lead = pos + len(part) - len(part.lstrip())
            value_end = lead + len(value)
            if lead > pos:
                emit(SpanKind.SPACE, pos, lead)
            kind = SpanKind.LORA_NAME
            if position == 0:
                name = value
                if not value:
                    self.diagnostics.append(Diagnostic(start, end, f"LoRA tag at {start} has no name"))
            else:
                problem = _lora_value(value, position, lead, values)
                kind = SpanKind.ERROR if problem else SpanKind.LORA_WEIGHT
                if problem:
                    self.diagnostics.append(Diagnostic(lead, max(value_end, lead + 1), problem))
            if value:
                emit(kind, lead, value_end)
            if value_end < pos + len(part):
                emit(SpanKind.SPACE, value_end, pos + len(part))
            pos += len(part) + 1
        emit(SpanKind.LORA_CLOSE, end - 1, end)
        te = float(values.get("te", "1"))
        self.loras.append(
            LoraRef(
                text=m.group("lora"),
                keyword=keyword.lower(),
                name=name,
                te_weight=te,
                unet_weight=float(values["unet"]) if "unet" in values else te,
                dyn=int(values["dyn"]) if "dyn" in values else None,
                start=start,
                end=end,
            )
        )

    def finish(self) -> TokenizedPrompt:
        count = len(self.kinds)
        kinds = self.kinds
        for char, index in self.stack:
            kinds[index] = SpanKind.ERROR
            at = self.starts[index]
            self.diagnostics.append(Diagnostic(at, at + 1, f"'{char}' at {at} is never closed"))
            self.pairs.append(BracketPair(index, -1, count))
        for index, _ in self.picks:
            kinds[index] = SpanKind.ERROR
            at = self.starts[index]
            self.diagnostics.append(Diagnostic(at, self.ends[index], f"'<pick:' at {at} is never closed with '>'"))
        if self.section_at >= 0:
            at = self.starts[self.section_at]
            message = f"numeric weight at {at} is never closed with '::'"
            self.diagnostics.append(Diagnostic(at, self.ends[self.section_at], message))
            self.pairs.append(BracketPair(self.section_at, -1, count))
        self.diagnostics.sort(key=lambda d: d.start)
        if self.nai:
            weights = tuple(self.marks)
        else:
            frame_weight = self.frame_multiplier[:]
            parents = self.frame_parent
            for frame in range(1, len(frame_weight)):  # parents are always older frames
                frame_weight[frame] *= frame_weight[parents[frame]]
            weights = tuple([frame_weight[int(mark)] for mark in self.marks])
        return TokenizedPrompt(
            self.text,
            self.dialect,
            (tuple(kinds), tuple(self.starts), tuple(self.ends), weights, tuple(self.depths)),
            self.diagnostics,
            self.loras,
            self.pairs,
        )


def _lora_value(value: str, position: int, at: int, values: dict[str, str]) -> str:
    """Record one `:value` of a LoRA tag in `values`; return a problem description, or "" when it is fine."""
    key, equals, raw = value.rpartition("=")
    key = key.strip().lower() if equals else _LORA_POSITIONS.get(position, "")
    raw = raw.strip()
    if key in ("te", "unet"):
        if not _WEIGHT_RE.fullmatch(raw):
            return f"LoRA weight {raw!r} at {at} is not a number"
    elif key == "dyn":
        if not _INT_RE.fullmatch(raw):
            return f"LoRA dyn value {raw!r} at {at} is not a whole number"
    elif equals:
        return f"unknown LoRA parameter {value!r} at {at}"
    else:
        return f"too many values in LoRA tag at {at}"
    values[key] = raw
    return ""


def _byte_offsets(text: str, ends: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """UTF-8 offsets of the span boundaries, in bulk between non-ASCII runs (where the offset is the character
    offset plus a constant); lone surrogates count as the 3 bytes `surrogatepass` gives them."""
    byte_ends: list[int] = []
    extra = 0  # bytes beyond one per character so far
    done = 0  # boundaries converted
    for run in _NON_ASCII.finditer(text):
        run_start, run_end = run.span()
        cut = bisect_right(ends, run_start, done)
        byte_ends.extend([end + extra for end in ends[done:cut]])
        done = bisect_left(ends, run_end, cut)
        position = run_start
        for end in ends[cut:done]:  # boundaries inside the run
            extra += _extra_bytes(text, position, end)
            position = end
            byte_ends.append(end + extra)
        extra += _extra_bytes(text, position, run_end)
    byte_ends.extend([end + extra for end in ends[done:]])
    return (0, *byte_ends[:-1]) if byte_ends else (), tuple(byte_ends)


def _extra_bytes(text: str, start: int, end: int) -> int:
    return len(text[start:end].encode("utf-8", "surrogatepass")) - (end - start)


_STRIPPED_KINDS = LORA_KINDS | {
    SpanKind.OPEN,
    SpanKind.CLOSE,
    SpanKind.WEIGHT_PREFIX,
    SpanKind.SECTION_CLOSE,
    SpanKind.WEIGHT_SUFFIX,
    SpanKind.PART_WEIGHT,
    SpanKind.ERROR,
}


def weighted_chunks(tokenized: TokenizedPrompt) -> list[tuple[str, float]]:
    """Text pieces with their effective weights: brackets, weight syntax, LoRA tags and error spans removed.

    Neighbouring pieces of equal weight are merged. An SD `BREAK` stays a chunk of its own, `("BREAK", w)`,
    so a text encoder can start a new window there.
    """
    text = tokenized.text
    chunks: list[tuple[str, float]] = []
    pending: list[str] = []
    pending_weight = 1.0
    for kind, start, end, weight in zip(
        tokenized.kinds, tokenized.starts, tokenized.ends, tokenized.weights, strict=True
    ):
        if kind in _STRIPPED_KINDS:
            continue
        piece = text[start + 1 : end] if kind is SpanKind.ESCAPE else text[start:end]
        if kind is SpanKind.BREAK:
            if pending:
                chunks.append(("".join(pending), pending_weight))
                pending = []
            chunks.append((piece, weight))
            continue
        if pending and weight != pending_weight:
            chunks.append(("".join(pending), pending_weight))
            pending = []
        pending.append(piece)
        pending_weight = weight
    if pending:
        chunks.append(("".join(pending), pending_weight))
    return chunks
