"""Best-effort settings from a ComfyUI `prompt` chunk (the API graph: node id -> class_type + inputs).

A graph has no single "prompt" field, so the final sampler is located (the one no other sampler consumes)
and its inputs are followed upstream: positive/negative to the text encoders, model to the checkpoint loader
(collecting LoRA loaders on the way), latent to the empty-latent size. Custom nodes that do not fit these
shapes simply leave the field empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from peropix_tui.core.metadata.jsonutil import loads_object

_TEXT_INPUTS = ("text", "text_g", "prompt", "string", "value", "text_l")
_CONDITIONING_SKIP = frozenset({"clip", "clip_vision_output", "image", "pixels", "vae", "mask", "control_net"})
_MAX_VISITS = 10_000
MAX_NODES = 10_000  # real workflows have hundreds; bounds the work a hostile graph can cause
_MAX_SAMPLERS = 64

# ComfyUI sampler names whose NovelAI id is the same name with a `k_` prefix.
_K_SAMPLERS = frozenset(
    {
        "euler",
        "euler_ancestral",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_sde",
        "dpmpp_2s_ancestral",
        "dpmpp_3m_sde",
        "lms",
        "dpm_2",
        "dpm_2_ancestral",
        "dpm_fast",
        "dpm_adaptive",
    }
)


def sampler_to_nai(name: str) -> str:
    """NovelAI id for a ComfyUI sampler name (`euler_ancestral` -> `k_euler_ancestral`); others unchanged."""
    return f"k_{name}" if name in _K_SAMPLERS else name


@dataclass(slots=True)
class ComfySettings:
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    denoise: float | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)  # (file stem, model strength)


Graph = dict[str, dict[str, Any]]


def _inputs(node: dict[str, Any]) -> dict[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _link(graph: Graph, value: object) -> str | None:
    """The node id a `[node_id, output_index]` input points at, when it points into the graph."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        target = str(value[0])
        if target in graph:
            return target
    return None


def _is_sampler(node: dict[str, Any]) -> bool:
    inputs = _inputs(node)
    if "positive" not in inputs or "negative" not in inputs:
        return False
    return "Sampler" in str(node.get("class_type", "")) or "steps" in inputs


def _upstream(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack and len(seen) < _MAX_VISITS:
        node_id = stack.pop()
        for value in _inputs(graph[node_id]).values():
            target = _link(graph, value)
            if target is not None and target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _final_sampler(graph: Graph) -> str | None:
    samplers = [nid for nid, node in graph.items() if _is_sampler(node)][:_MAX_SAMPLERS]
    if not samplers:
        return None
    ancestry = {nid: _upstream(graph, nid) for nid in samplers}
    consumed = set().union(*(ancestry[nid] for nid in samplers))
    finals = [nid for nid in samplers if nid not in consumed] or samplers
    return max(finals, key=lambda nid: sum(1 for s in samplers if s in ancestry[nid]))


def _scalar(graph: Graph, value: object, kind: type[int] | type[float], depth: int = 0) -> Any:
    """A number given directly or through a primitive node (seed/int/float/value widgets)."""
    if isinstance(value, bool):
        return None
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is int and isinstance(value, int):
        return value
    target = _link(graph, value)
    if target is None or depth > 8:
        return None
    for name in ("seed", "noise_seed", "value", "int", "float", "steps", "cfg"):
        found = _inputs(graph[target]).get(name)
        if found is not None:
            return _scalar(graph, found, kind, depth + 1)
    return None


def _string(graph: Graph, value: object, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return value
    target = _link(graph, value)
    if target is None or depth > 8:
        return None
    inputs = _inputs(graph[target])
    for name in _TEXT_INPUTS:
        if name in inputs:
            found = _string(graph, inputs[name], depth + 1)
            if found is not None:
                return found
    return None


def _conditioning_text(graph: Graph, start: object, side: str) -> str | None:
    """Depth-first from a conditioning input to the first node that carries prompt text.

    `side` ("positive"/"negative") also matches loader nodes that take the prompt as a plain string input.
    """
    seen: set[str] = set()
    stack = [start]
    while stack and len(seen) < _MAX_VISITS:
        node_id = _link(graph, stack.pop())
        if node_id is None or node_id in seen:
            continue
        seen.add(node_id)
        inputs = _inputs(graph[node_id])
        for name in (*_TEXT_INPUTS, side):
            if name in inputs:
                text = _string(graph, inputs[name])
                if text is not None:
                    return text
        followed = [v for k, v in inputs.items() if k not in _CONDITIONING_SKIP and _link(graph, v)]
        stack.extend(reversed(followed))
    return None


def _lora_name(path: str) -> str:
    """`loras/style/foo.safetensors` or `loras\\foo.safetensors` -> `foo`."""
    return PureWindowsPath(PurePosixPath(path).name).stem


def _model_chain(graph: Graph, start: object, settings: ComfySettings) -> None:
    seen: set[str] = set()
    node_id = _link(graph, start)
    while node_id is not None and node_id not in seen and len(seen) < _MAX_VISITS:
        seen.add(node_id)
        inputs = _inputs(graph[node_id])
        for key in ("ckpt_name", "unet_name", "model_name"):
            if isinstance(inputs.get(key), str):
                settings.model = inputs[key]
                return
        lora = inputs.get("lora_name")
        if isinstance(lora, str):
            strength = _scalar(graph, inputs.get("strength_model", 1.0), float)
            settings.loras.append((_lora_name(lora), 1.0 if strength is None else strength))
        node_id = _link(graph, inputs.get("model"))


def _latent_size(graph: Graph, start: object, settings: ComfySettings) -> None:
    seen: set[str] = set()
    node_id = _link(graph, start)
    while node_id is not None and node_id not in seen and len(seen) < _MAX_VISITS:
        seen.add(node_id)
        inputs = _inputs(graph[node_id])
        width = _scalar(graph, inputs.get("width"), int)
        height = _scalar(graph, inputs.get("height"), int)
        if width is not None and height is not None:
            settings.width, settings.height = width, height
            return
        node_id = next(
            (
                target
                for key in ("samples", "latent_image", "latent", "latent_a")
                if (target := _link(graph, inputs.get(key))) is not None
            ),
            None,
        )


def parse_graph(text: str) -> Graph | None:
    """The API graph in a `prompt` chunk, or None when the text is not one."""
    data = loads_object(text)
    if not data or len(data) > MAX_NODES:
        return None
    graph = {str(k): v for k, v in data.items() if isinstance(v, dict) and "class_type" in v}
    return graph or None


def extract_settings(graph: Graph) -> ComfySettings | None:
    """Settings of the graph's final sampler; None when the graph has no recognisable sampler."""
    sampler_id = _final_sampler(graph)
    if sampler_id is None:
        return None
    inputs = _inputs(graph[sampler_id])
    settings = ComfySettings(
        prompt=_conditioning_text(graph, inputs.get("positive"), "positive"),
        negative_prompt=_conditioning_text(graph, inputs.get("negative"), "negative"),
        seed=_scalar(graph, inputs.get("seed", inputs.get("noise_seed")), int),
        steps=_scalar(graph, inputs.get("steps"), int),
        cfg=_scalar(graph, inputs.get("cfg"), float),
        denoise=_scalar(graph, inputs.get("denoise"), float),
    )
    for key, attr in (("sampler_name", "sampler"), ("scheduler", "scheduler")):
        value = _string(graph, inputs.get(key))
        if value is not None:
            setattr(settings, attr, value)
    _model_chain(graph, inputs.get("model"), settings)
    _latent_size(graph, inputs.get("latent_image"), settings)
    settings.loras.reverse()  # loaders were met walking upstream; report them in application order
    return settings
