"""Time the prompt tokenizer on a realistic 2,000-character prompt against the least any tokenizer must do.

The reference is a plain `re.split(r"\\s*,\\s*")` plus `str.strip` pass: it only finds tags, with no weights,
brackets, LoRA tags, byte offsets or diagnostics. Run: `python bench/bench_tokenizer.py`.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

from peropix_tui.core.prompt import Dialect, TokenizedPrompt, line_highlights, tokenize, weighted_chunks

_TAGS = [
    "masterpiece",
    "best quality",
    "{{very aesthetic}}",
    "1girl",
    "solo",
    "hatsune miku (vocaloid)",
    "long hair",
    "twintails",
    "[[blue eyes]]",
    "1.3::looking at viewer::",
    "smile",
    "open mouth",
    "<lora:miku_v2-final:0.8>",
    "{detached sleeves}",
    "necktie",
    "-1::censored::",
    "outdoors",
    "cherry blossoms",
    "1.2:: 1990s (style) ::",
    "depth of field",
    "<lyco:anime lineart.v3:0.6:0.4>",
    "{{{sparkle}}}",
    "wind",
    "petals",
    "dynamic angle",
    "0.8::{soft lighting}::",
    "upper body",
    "hand up",
    "très jolie",
    "^_^",
]


def build_prompt(length: int = 2000) -> str:
    tags: list[str] = []
    i = 0
    while len(", ".join(tags)) < length:
        tags.append(_TAGS[i % len(_TAGS)])
        if i % 7 == 6:
            tags.append("\n")
        i += 1
    return ", ".join(tags)[:length]


def reference(text: str) -> list[str]:
    return [tag.strip() for tag in re.split(r"\s*,\s*", text)]


def median_us(func: Callable[[], object], runs: int) -> float:
    for _ in range(20):
        func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    runs = 2000
    for dialect in Dialect:
        text = build_prompt()
        if dialect is Dialect.SD:
            text = text.replace("{", "(").replace("}", ")").replace("(style)", r"\(style\)")
        tokenized = tokenize(text, dialect)

        def ref(text: str = text) -> object:
            return reference(text)

        def ours(text: str = text, dialect: Dialect = dialect) -> object:
            return tokenize(text, dialect)

        def with_spans(text: str = text, dialect: Dialect = dialect) -> object:
            return tokenize(text, dialect).spans

        def one_edit(text: str = text, dialect: Dialect = dialect) -> object:
            return line_highlights(tokenize(text, dialect), bracket_levels=3)

        def chunks(tokenized: TokenizedPrompt = tokenized) -> object:
            return weighted_chunks(tokenized)

        ref_us = median_us(ref, runs)
        print(
            f"{dialect.name}: {len(text)} chars, {len(tokenized.kinds)} spans, {len(tokenized.loras)} LoRA tags, "
            f"{len(tokenized.diagnostics)} diagnostics; median of {runs} runs"
        )
        print(f"  reference re.split + strip            {ref_us:8.1f} us")
        for label, func in (
            ("tokenize", ours),
            ("tokenize + Span objects", with_spans),
            ("tokenize + line_highlights (an edit)", one_edit),
            ("weighted_chunks", chunks),
        ):
            took = median_us(func, runs)
            print(f"  {label:<37} {took:8.1f} us   ratio {took / ref_us:5.1f}x")


if __name__ == "__main__":
    main()
