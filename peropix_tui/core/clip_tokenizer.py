"""The CLIP BPE tokenizer (SD1.x/SDXL text encoders), without torch.

Used for live token counts in the prompt editor (75-token chunks) and by the local engine. The merges file ships
in the package (`data/clip/`), so nothing is downloaded. Text is cleaned as CLIP does: HTML entities unescaped
twice, whitespace collapsed, lowercased.
"""

from __future__ import annotations

import gzip
import html
import itertools
import threading
from functools import lru_cache
from importlib import resources

import regex

BOS = 49406
EOS = 49407
CHUNK = 75  # tokens per 77-token window, between BOS and EOS
VOCAB_SIZE = 49408

_PATTERN = regex.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_SPACES = regex.compile(r"\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte→printable-character map BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class ClipTokenizer:
    """Byte-level BPE with `</w>` end-of-word markers; ids match the released CLIP vocabulary."""

    def __init__(self, merges_gz: bytes) -> None:
        lines = gzip.decompress(merges_gz).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        self.byte_encoder = _bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def _bpe_word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            best = min((self.ranks.get(pair, 1 << 30), i) for i, pair in enumerate(itertools.pairwise(parts)))
            if best[0] == 1 << 30:
                break
            i = best[1]
            first, second = parts[i], parts[i + 1]
            merged: list[str] = []
            j = 0
            while j < len(parts):
                if j < len(parts) - 1 and parts[j] == first and parts[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        ids = [self.encoder[p] for p in parts]
        with self._lock:
            if len(self._cache) < 100_000:
                self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids without BOS/EOS."""
        cleaned = _SPACES.sub(" ", html.unescape(html.unescape(text))).strip().lower()
        ids: list[int] = []
        for piece in _PATTERN.findall(cleaned):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8", "surrogatepass"))
            ids.extend(self._bpe_word(word))
        return ids

    def count(self, text: str) -> int:
        return len(self.encode(text))


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipTokenizer:
    """The shared tokenizer, built once (about 0.2 s) from the packaged merges file."""
    data = resources.files("peropix_tui.data.clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    return ClipTokenizer(data)


def chunk_count(tokens: int) -> int:
    """How many 77-token windows a prompt of `tokens` tokens needs (at least one)."""
    return max(1, -(-tokens // CHUNK))
