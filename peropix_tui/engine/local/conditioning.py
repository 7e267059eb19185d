"""Prompt text → UNet conditioning (cross-attention context and, for SDXL, the pooled vector).

Choices, and why:

- Windows. The weighted chunks of the SD prompt dialect (LoRA tags stripped, `BREAK` kept) are tokenized word by
  word with the CLIP tokenizer and packed into windows of 75 tokens, each sent as BOS + 75 + EOS padded to 77.
  A word of fewer than 8 tokens never straddles two windows (it moves whole to the next one); longer words are
  cut where the window ends. `BREAK` closes the current window even when it is empty, as A1111 does, so a prompt
  copied from A1111 metadata gets the same windows. All windows are encoded in one batch and concatenated along
  the token axis; the pooled vector comes from the first window.
- Padding. CLIP-L windows are padded with EOS, CLIP-G windows with 0, as each tower was trained; no padding mask.
- Emphasis. Prompts reaching the local engine mostly come from A1111/CivitAI metadata, so weights follow A1111's
  "Original" emphasis: each window's embedding is multiplied token by token by its weight, then rescaled so its
  mean over tokens and channels is what it was before (`z *= w; z *= mean_before / mean_after`), per encoder.
  The pooled vector is not weighted.
- Empty prompt. `""` (the usual negative) is encoded as a real `[BOS, EOS, pad…]` window rather than zeros:
  that is what A1111 and ComfyUI feed SDXL and SD1.5, and what the CivitAI images being reproduced were made with.
- Layers. SDXL uses CLIP-L's and CLIP-G's penultimate layers without the final LayerNorm, concatenated to 2048
  channels, and ignores clip skip, as A1111 does. SD1.5 uses CLIP-L layer `-clip_skip` through the final
  LayerNorm (clip skip 1 = last layer, 2 = penultimate, A1111's meaning).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from peropix_tui.core.clip_tokenizer import BOS, CHUNK, EOS, clip_tokenizer
from peropix_tui.core.prompt import Dialect, tokenize, weighted_chunks
from peropix_tui.engine.local.clip import ClipOutput, ClipTextModel
from peropix_tui.engine.local.errors import LocalEngineError

WINDOW = CHUNK + 2  # BOS + 75 tokens + EOS
PAD_L = EOS  # CLIP-L windows are padded with end-of-text
PAD_G = 0  # CLIP-G (OpenCLIP) windows are padded with token 0
SMALL_WORD = 8  # words shorter than this many tokens are never split across windows
MAX_WINDOWS = 32  # 2400 tokens: far beyond any real prompt, and it bounds the encoder batch
MAX_CFG_REPEAT = 4  # beyond this, repeating a context to batch it with another costs more than a second pass


class ConditioningError(LocalEngineError):
    """A prompt or setting the text encoders cannot turn into conditioning."""


@dataclass(frozen=True)
class Window:
    """The content tokens of one 77-token window (at most 75) and the emphasis weight of each."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]

    def ids(self, pad: int) -> list[int]:
        """The full window: BOS, the tokens, EOS, then `pad` up to 77."""
        return [BOS, *self.tokens, EOS] + [pad] * (CHUNK - len(self.tokens))

    def padded_weights(self) -> list[float]:
        """One weight per window position; BOS, EOS and padding keep weight 1."""
        return [1.0, *self.weights, 1.0] + [1.0] * (CHUNK - len(self.tokens))


def prompt_windows(prompt: str) -> list[Window]:
    """Split an SD-dialect prompt into weighted token windows (see the module docstring for the rules)."""
    tokenizer = clip_tokenizer()
    windows: list[Window] = []
    tokens: list[int] = []
    weights: list[float] = []

    def close() -> None:
        if len(windows) == MAX_WINDOWS:
            raise ConditioningError(
                f"prompt needs more than {MAX_WINDOWS} windows of {CHUNK} tokens; shorten it or remove BREAKs"
            )
        windows.append(Window(tuple(tokens), tuple(weights)))
        tokens.clear()
        weights.clear()

    for text, weight in weighted_chunks(tokenize(prompt, Dialect.SD)):
        if text == "BREAK":
            close()
            continue
        if not math.isfinite(weight):
            raise ConditioningError(f"prompt weight of {text.strip()[:40]!r} is not a finite number")
        for word in text.split():
            ids = tokenizer.encode(word)
            splittable = len(ids) >= SMALL_WORD
            while ids:
                room = CHUNK - len(tokens)
                if len(ids) <= room:
                    taken, ids = ids, []
                elif splittable:
                    taken, ids = ids[:room], ids[room:]
                else:
                    taken = []
                tokens.extend(taken)
                weights.extend([weight] * len(taken))
                if ids:
                    close()
    if tokens or not windows:
        close()
    return windows


@dataclass(frozen=True)
class Conditioning:
    """`context` [1, 77·windows, channels] for cross-attention; `pooled` [1, 1280] for SDXL, None for SD1.5.

    Instances may come from the prompt cache and be shared: treat the tensors as read-only.
    """

    context: Tensor
    pooled: Tensor | None


class PromptCache:
    """A small thread-safe LRU of encoded prompts, so re-queuing a prompt does not re-run the encoders."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int, int], Conditioning] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> Conditioning | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, int, int], value: Conditioning) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(eq=False)
class TextEncoders:
    """The text encoders of one loaded checkpoint: CLIP-L, plus CLIP-G for SDXL.

    `version` counts weight changes (LoRA merged or removed); it is part of the cache key, and
    `weights_changed` bumps it and drops the now stale entries.
    """

    clip_l: ClipTextModel
    clip_g: ClipTextModel | None = None
    version: int = 0
    cache: PromptCache = field(default_factory=PromptCache, repr=False)

    def weights_changed(self) -> None:
        self.version += 1
        self.cache.clear()


@torch.inference_mode()
def encode_prompt(prompt: str, encoders: TextEncoders, *, clip_skip: int = 1) -> Conditioning:
    """Encode an SD-dialect prompt; cached per (prompt, clip skip, encoder version) on `encoders`.

    `clip_skip` (1 = last layer) applies to SD1.5 only; SDXL always uses the penultimate layers.
    """
    layers = encoders.clip_l.config.layers
    if not 1 <= clip_skip <= layers:
        raise ConditioningError(f"clip skip {clip_skip} is outside 1..{layers} for this text encoder")
    clip_g = encoders.clip_g
    key = (prompt, 0 if clip_g is not None else clip_skip, encoders.version)
    cached = encoders.cache.get(key)
    if cached is not None:
        return cached
    windows = prompt_windows(prompt)
    weighted = any(weight != 1.0 for window in windows for weight in window.weights)
    clip_l = encoders.clip_l
    weights = torch.tensor([w.padded_weights() for w in windows], dtype=torch.float32, device=clip_l.device)
    if clip_g is None:
        out_l = _run(clip_l, windows, PAD_L, -clip_skip)
        z = out_l.last if clip_skip == 1 else clip_l.final_layer_norm(out_l.hidden)
        context = _emphasize(z, weights) if weighted else z
        pooled = None
    else:
        out_l = _run(clip_l, windows, PAD_L, -2)
        out_g = _run(clip_g, windows, PAD_G, -2)
        z_l, z_g = out_l.hidden, out_g.hidden
        if weighted:
            z_l = _emphasize(z_l, weights)
            z_g = _emphasize(z_g, weights.to(z_g.device))
        context = torch.cat([z_l, z_g.to(z_l.device)], dim=-1)
        pooled = out_g.pooled[:1]
    result = Conditioning(context=context.reshape(1, -1, context.shape[-1]), pooled=pooled)
    encoders.cache.put(key, result)
    return result


def _run(model: ClipTextModel, windows: list[Window], pad: int, hidden_layer: int) -> ClipOutput:
    tokens = torch.tensor([window.ids(pad) for window in windows], dtype=torch.long, device=model.device)
    out: ClipOutput = model(tokens, hidden_layer=hidden_layer)
    return out


def _emphasize(z: Tensor, weights: Tensor) -> Tensor:
    """A1111 "Original" emphasis per window: scale tokens by their weights, then restore the window's mean."""
    z32 = z.float()
    mean_before = z32.mean(dim=(1, 2), keepdim=True)
    z32 = z32 * weights.unsqueeze(-1)
    mean_after = z32.mean(dim=(1, 2), keepdim=True)
    return (z32 * (mean_before / mean_after)).to(z.dtype)


def pad_to_same_length(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
    """Make two contexts [B, T, C] the same length so cond and uncond share one CFG batch.

    Each is repeated along the token axis to the least common multiple of the lengths; repeating every key and
    value k times leaves softmax cross-attention unchanged. Returns None when either would be repeated more than
    `MAX_CFG_REPEAT` times: two separate passes are then cheaper.
    """
    length_a, length_b = a.shape[1], b.shape[1]
    if length_a == length_b:
        return a, b
    target = math.lcm(length_a, length_b)
    if target // min(length_a, length_b) > MAX_CFG_REPEAT:
        return None
    return a.repeat(1, target // length_a, 1), b.repeat(1, target // length_b, 1)
