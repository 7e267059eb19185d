"""LoRA tag tools: list, rename, remove, and move to the front (what prompt curation does to CivitAI prompts).

LoRA tags look the same in both dialects; `dialect` only decides which brackets around them are emphasis
(and so vanish with them when a LoRA tag was all they held). CivitAI prompts are A1111 syntax, hence the SD
default.
"""

from __future__ import annotations

from peropix_tui.core.prompt.rewrite import rewrite
from peropix_tui.core.prompt.syntax import Dialect, LoraRef, PromptError, SpanKind
from peropix_tui.core.prompt.tokens import LINE_BREAKS, tokenize

_FORBIDDEN_IN_NAME = frozenset("<>:" + LINE_BREAKS)


def find_loras(text: str) -> list[LoraRef]:
    """Every well-formed `<lora:...>` / `<lyco:...>` tag, in order."""
    return tokenize(text, Dialect.SD).loras


def extract_loras(text: str) -> list[tuple[str, str]]:
    """`[(full_tag, name)]` in order, e.g. `("<lora:foo bar:0.8>", "foo bar")`."""
    return [(lora.text, lora.name) for lora in find_loras(text)]


def remove_loras(text: str, *, dialect: Dialect = Dialect.SD) -> str:
    """The prompt without its LoRA tags; tags and brackets left empty go too, no comma is left dangling.

    A tag that only forms once another is gone (`<lora:<lora:x:1>>` leaves `<lora:>`) is removed as well.
    """
    tokenized = tokenize(text, dialect)
    while tokenized.loras:
        deleted = bytearray(len(tokenized.kinds))
        loras = iter(tokenized.loras)
        current = next(loras, None)
        for index, start in enumerate(tokenized.starts):
            while current is not None and start >= current.end:
                current = next(loras, None)
            if current is None:
                break
            if start >= current.start:
                deleted[index] = 1
        tokenized = tokenize(rewrite(tokenized, deleted), dialect)
    return tokenized.text


def move_loras_to_front(text: str, *, dialect: Dialect = Dialect.SD) -> str:
    """All LoRA tags first, in their original order and joined by ", ", then the rest of the prompt."""
    loras = find_loras(text)
    if not loras:
        return text
    front = ", ".join(lora.text for lora in loras)
    rest = remove_loras(text, dialect=dialect).lstrip()
    return f"{front}, {rest}" if rest.strip() else front


def rename_lora(text: str, old_name: str, new_name: str) -> str:
    """Every LoRA tag named `old_name` renamed to `new_name`; weights, spacing and the rest untouched."""
    if not new_name.strip() or _FORBIDDEN_IN_NAME.intersection(new_name):
        raise PromptError(
            f"cannot rename LoRA {old_name!r} to {new_name!r}: "
            "a LoRA name needs text without '<', '>', ':' or line breaks"
        )
    old_name = old_name.strip()
    tokenized = tokenize(text, Dialect.SD)
    kinds = tokenized.kinds
    pieces: list[str] = []
    done = 0
    for index, kind in enumerate(kinds):
        if kind is SpanKind.LORA_NAME and tokenized.span_text(index) == old_name:
            pieces.append(text[done : tokenized.starts[index]])
            pieces.append(new_name.strip())
            done = tokenized.ends[index]
    pieces.append(text[done:])
    return "".join(pieces)
