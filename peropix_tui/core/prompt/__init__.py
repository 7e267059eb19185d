"""One prompt language for the whole app: the editor's highlighter, the NovelAI payload builder, the local
text encoder, word filters and the vocabulary collector all read prompts through this package, so they can
never disagree about what a prompt says."""

from __future__ import annotations

from peropix_tui.core.prompt.elements import normalize_tag
from peropix_tui.core.prompt.filters import (
    DEFAULT_CATEGORIES,
    FilterError,
    FilterResult,
    WordFilter,
    default_filter_text,
    ensure_user_filters,
)
from peropix_tui.core.prompt.highlight import line_highlights
from peropix_tui.core.prompt.lora import (
    extract_loras,
    find_loras,
    move_loras_to_front,
    remove_loras,
    rename_lora,
)
from peropix_tui.core.prompt.syntax import (
    BracketPair,
    Diagnostic,
    Dialect,
    LoraRef,
    PromptError,
    Span,
    SpanKind,
)
from peropix_tui.core.prompt.tags import (
    Tag,
    UnderscoreMode,
    dedupe_tags,
    normalize_commas_nai,
    normalize_prompt,
    split_tags,
)
from peropix_tui.core.prompt.tokens import TokenizedPrompt, tokenize, weighted_chunks
from peropix_tui.core.prompt.wildcards import (
    Expander,
    Expansion,
    WildcardError,
    WildcardLibrary,
    expand_wildcards,
)

__all__ = [
    "DEFAULT_CATEGORIES",
    "BracketPair",
    "Diagnostic",
    "Dialect",
    "Expander",
    "Expansion",
    "FilterError",
    "FilterResult",
    "LoraRef",
    "PromptError",
    "Span",
    "SpanKind",
    "Tag",
    "TokenizedPrompt",
    "UnderscoreMode",
    "WildcardError",
    "WildcardLibrary",
    "WordFilter",
    "dedupe_tags",
    "default_filter_text",
    "ensure_user_filters",
    "expand_wildcards",
    "extract_loras",
    "find_loras",
    "line_highlights",
    "move_loras_to_front",
    "normalize_commas_nai",
    "normalize_prompt",
    "normalize_tag",
    "remove_loras",
    "rename_lora",
    "split_tags",
    "tokenize",
    "weighted_chunks",
]
