"""The prompt tools on real CivitAI prompts (tests/fixtures/prompt, see SOURCES.md there)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from peropix_tui.core.prompt import (
    Dialect,
    SpanKind,
    WordFilter,
    extract_loras,
    move_loras_to_front,
    normalize_prompt,
    split_tags,
    tokenize,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prompt"


def _prompts(node: Any, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("prompt", "negativePrompt") and isinstance(value, str):
                found.append(value)
            else:
                _prompts(value, found)
    elif isinstance(node, list):
        for value in node:
            _prompts(value, found)
    return found


def load(name: str) -> list[str]:
    return _prompts(json.loads((FIXTURES / name).read_text(encoding="utf-8")), [])


ALL = [prompt for path in sorted(FIXTURES.glob("*.json")) for prompt in load(path.name)]
PONY = load("model-versions__OwenTruong_civitdl__399893.json")


def test_fixtures_hold_the_interesting_prompts() -> None:
    assert len(ALL) >= 20
    assert any("\x0c" in p for p in ALL) and any("\x18" in p for p in ALL)
    assert sum("<lora:" in p for p in ALL) >= 4


@pytest.mark.parametrize("prompt", ALL)
def test_real_prompts_tokenize_and_survive_every_tool(prompt: str) -> None:
    tokenized = tokenize(prompt, Dialect.SD)
    assert "".join(tokenized.span_text(i) for i in range(len(tokenized.kinds))) == prompt
    loras = Counter(tag for tag, _ in extract_loras(prompt))
    filters = WordFilter.load(None)
    filtered = filters.apply(prompt, Dialect.SD)
    assert filters.apply(filtered.text, Dialect.SD).text == filtered.text
    assert Counter(tag for tag, _ in extract_loras(filtered.text)) == loras
    moved = move_loras_to_front(prompt)
    assert Counter(tag for tag, _ in extract_loras(moved)) == loras
    tidy = normalize_prompt(prompt, underscores="spaces", dialect=Dialect.SD)
    assert normalize_prompt(tidy, underscores="spaces", dialect=Dialect.SD) == tidy


def test_pony_prompt_details() -> None:
    prompt = PONY[0]
    tokenized = tokenize(prompt, Dialect.SD)
    assert tokenized.diagnostics == []
    restaurant = next(i for i in range(len(tokenized.kinds)) if tokenized.span_text(i) == "family")
    assert tokenized.weights[restaurant] == pytest.approx(1.2)
    assert SpanKind.BREAK in tokenized.kinds
    assert extract_loras(prompt) == [("<lora:fukawa_miku_pony_ver1:0.7>", "fukawa_miku_pony_ver1")]
    moved = move_loras_to_front(prompt)
    assert moved.startswith("<lora:fukawa_miku_pony_ver1:0.7>, 1girl, cowboy shot, (family restaurant:1.2),")
    assert ", pink skirt, score_9," in moved
    clothes = WordFilter.load(None, ["clothes"]).apply(prompt, Dialect.SD)
    assert {"short sleeves", "apron"} <= set(clothes.removed)
    assert "apron" not in {t.normalized for t in split_tags(clothes.text, Dialect.SD)}
    assert "waitress, pink skirt, <lora:fukawa_miku_pony_ver1:0.7>" in clothes.text


def test_lora_without_comma_is_moved_and_the_tag_before_it_kept() -> None:
    prompts = [
        p
        for p in load(
            "other__dfanr_CivitaiModelList__models-item-93270-ctrl-x10-x11-in-meta-Model-and-resource-name.json"
        )
        if "clenched teeth <lora:art_numahana:1>" in p
    ]
    assert prompts
    moved = move_loras_to_front(prompts[0])
    assert moved.startswith("<lora:art_numahana:1>, ")
    assert moved.endswith("clenched teeth")
