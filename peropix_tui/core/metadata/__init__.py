"""Image generation metadata: read it from PNG/WebP/JPEG generators, write NovelAI-compatible PNGs, strip it.

Sources understood: NovelAI text chunks and alpha-channel stealth payload, A1111/Forge `parameters`, ComfyUI
graphs, and EXIF UserComment in WebP/JPEG. Everything is normalised into `ImageMetadata`.
"""

from __future__ import annotations

from peropix_tui.core.metadata.a1111 import A1111Parameters, format_parameters, parse_parameters
from peropix_tui.core.metadata.errors import MetadataError
from peropix_tui.core.metadata.model import (
    CharacterPrompt,
    ImageMetadata,
    from_a1111,
    from_nai_comment,
    to_a1111,
    to_a1111_parameters,
    to_nai_comment,
)
from peropix_tui.core.metadata.reader import read_metadata
from peropix_tui.core.metadata.writer import (
    StripResult,
    add_peropix_fields,
    nai_fields,
    strip_metadata,
    write_metadata,
)

__all__ = [
    "A1111Parameters",
    "CharacterPrompt",
    "ImageMetadata",
    "MetadataError",
    "StripResult",
    "add_peropix_fields",
    "format_parameters",
    "from_a1111",
    "from_nai_comment",
    "nai_fields",
    "parse_parameters",
    "read_metadata",
    "strip_metadata",
    "to_a1111",
    "to_a1111_parameters",
    "to_nai_comment",
    "write_metadata",
]
