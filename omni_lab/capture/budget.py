"""Memory a run's captures will take, estimated before the run, and the refusal past a budget.

The estimate counts what the captures keep (results, kept keys / Δ, B for generated queries, cached activations)
and the largest transient block a kernel needs, for the longest sequence the run can reach (the unreduced prompt
plus `max_new_tokens`). It is an upper bound, not a measurement.
"""

from __future__ import annotations

import numpy as np

from ..errors import OmniLabInputError
from .hooks import layer_pattern
from .segments import query_groups, segment_positions
from .specs import MassSpec, ResidualSpec, RoutingSpec

BUDGET_BYTES = 8 * 2**30  # change with omni_lab.capture.budget.BUDGET_BYTES or run(..., capture_budget=...)
_FLOAT = 4


def estimate(lab, prompt, max_new_tokens: int, captures: dict, cache_names: list[str], cache_dtype=None) -> dict:
    """{part: bytes} for the captures and cached hook points of one run."""
    text = lab.config.text_config
    pattern = layer_pattern(lab.model)
    positions = len(prompt) + max_new_tokens
    parts: dict[str, int] = {}
    for name, spec in captures.items():
        if isinstance(spec, RoutingSpec):
            layers = pattern.count("E")
            per_position = text.num_experts_per_tok * (8 + _FLOAT) + _FLOAT
            if spec.scores:
                per_position += text.n_routed_experts * _FLOAT
            parts[name] = layers * positions * per_position
        elif isinstance(spec, ResidualSpec):
            parts[name] = len(pattern) * positions * 3 * _FLOAT
        elif isinstance(spec, MassSpec):
            parts[name] = _mass_bytes(lab, prompt, spec, positions, max_new_tokens)
    item_bytes = 2 if cache_dtype is not None and str(cache_dtype).endswith("16") else _FLOAT
    for name in cache_names:
        parts[f"cache {name}"] = _width(lab, prompt, name) * (positions if name.startswith("llm.") else 1) * item_bytes
    return parts


def _mass_bytes(lab, prompt, spec: MassSpec, positions: int, generated: int) -> int:
    text = lab.config.text_config
    kind = "*" if spec.kind == "attention" else "M"
    layers = len(spec.layers) if spec.layers is not None else layer_pattern(lab.model).count(kind)
    segments = segment_positions(prompt.token_map, spec.segments, spec.window_seconds, spec.regions).count + 1
    groups, names, _ = query_groups(prompt.token_map, spec.queries)
    rows = positions if groups is None else len(names)
    if spec.kind == "attention":
        heads, block = text.num_attention_heads, 256
        history = (positions * text.num_key_value_heads + generated * heads) * text.head_dim if generated else 0
        transient = heads * block * block * 2 + block * segments
    else:
        heads, block = text.mamba_num_heads, 128
        state = text.n_groups * text.ssm_state_size
        history = positions * (heads + state) + generated * state if generated else 0
        transient = heads * block * block * 3
    return layers * (heads * rows * segments + history) * _FLOAT + transient * _FLOAT


def _width(lab, prompt, name: str) -> int:
    """Elements a cached hook point stores per position (LLM points) or in total (tower and reduction points)."""
    text = lab.config.text_config
    if name.startswith("llm."):
        parts = name.split(".")
        if name == "llm.logits":
            return text.vocab_size
        if len(parts) >= 5:
            mixer = lab.model.language_model.model.layers[int(parts[2])].mixer
            point = parts[4]
            widths = {
                "in_proj": getattr(getattr(mixer, "in_proj", None), "out_features", 0),
                "conv": getattr(mixer, "conv_dim", 0),
                "ssm": getattr(mixer, "intermediate_size", 0),
                "router": text.n_routed_experts,
                "q": text.num_attention_heads * text.head_dim,
                "k": text.num_key_value_heads * text.head_dim,
                "v": text.num_key_value_heads * text.head_dim,
            }
            return widths.get(point, text.hidden_size)
        return text.hidden_size
    inputs = prompt.inputs
    if name.startswith("vision."):
        vision = lab.config.vision_config
        patches = int(inputs["image_grid_hw"].prod(-1).sum()) if "image_grid_hw" in inputs else 0
        if "pixel_values_videos" in inputs:
            videos = inputs["pixel_values_videos"]
            patches += int(np.prod(videos.shape[:2])) * (videos.shape[-2] // 16) * (videos.shape[-1] // 16)
        width = lab.config.text_config.hidden_size if name == "vision.projector" else vision.hidden_size
        return patches * width
    if name.startswith("audio."):
        frames = int(inputs["input_features"].shape[:2].numel()) if "input_features" in inputs else 0
        return frames * max(lab.config.audio_config.hidden_size, text.hidden_size)
    return len(prompt) * text.hidden_size  # reduce.*


def check(parts: dict, budget: int | None) -> None:
    """Refuse, with the estimate and cheaper alternatives, when the parts add up to more than the budget."""
    budget = BUDGET_BYTES if budget is None else budget
    total = sum(parts.values())
    if total <= budget:
        return
    largest = sorted(parts.items(), key=lambda item: -item[1])[:4]
    listing = ", ".join(f"{name} {size / 2**30:.2f} GiB" for name, size in largest)
    raise OmniLabInputError(
        f"the requested captures need about {total / 2**30:.2f} GiB (budget {budget / 2**30:.2f} GiB): {listing}. "
        "Cheaper: group the queries (attention_mass(queries='answer' or 'modality')), coarser segments "
        "(segments='modality'), fewer layers (layers=[...]), routing without scores, cache_dtype=torch.float16 or "
        "fewer cached hook names; or raise the budget with run(..., capture_budget=bytes)."
    )


__all__ = ["BUDGET_BYTES", "check", "estimate"]
