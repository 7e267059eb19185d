"""Prompt-like text for the property tests of the prompt modules.

Every module reads the same prompt syntax, so they draw from one alphabet of its pieces (separators, weights,
brackets, escapes, LoRA tags, wildcards and picks, whole and cut short) and a few tag-like words; a test module
adds the words its own feature looks for.
"""

from __future__ import annotations

from hypothesis import strategies as st

from peropix_tui.core.prompt import Dialect

WORDS = (
    "a",
    "1girl",
    "long hair",
    "long_hair",
    "blue  eyes",
    "hatsune miku",
    "Hatsune_Miku",
    "(vocaloid)",
    "1990s",
    "é",
    "日本",
    "🎨",
    "^_^",
    ">_<",
    "o_o",
)
SYNTAX = (
    ",",
    ", ",
    " ,",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "|",
    " | ",
    "BREAK",
    " BREAK ",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\\(",
    "\\)",
    "\\",
    "\\|",
    "\\>",
    "<",
    ">",
    ":",
    "::",
    "1.5::",
    "-1::",
    "0::",
    ".5::",
    ":1.2",
    ":1.3",
    ":0.5",
    "<lora:foo bar:0.8>",
    "<lora:my_lora:1>",
    "<lora:x>",
    "<lyco:x  y:0.5>",
    "<lyco:ü.v2-1:0.5:0.7>",
    "<lora:bad:abc>",
    "<lora:",
    "_",
    "__",
    "__hair__",
    "__sub/eyes-v2__",
    "<pick:",
    "<PICK:a|b>",
)
dialects = st.sampled_from(list(Dialect))


def prompt_text(*words: str, max_size: int = 30) -> st.SearchStrategy[str]:
    """Prompts of up to `max_size` pieces drawn from the shared alphabet and `words`."""
    return st.lists(st.sampled_from((*words, *WORDS, *SYNTAX)), max_size=max_size).map("".join)
