"""Stable hook names over transformers' module tree, and a context manager whose hooks always come off.

Hook names are omni-lab's own and do not change with transformers' module paths (../shared/DESIGN.md):

    vision.patch_embed  vision.blocks.{i}  vision.out  vision.projector
    audio.subsampling   audio.blocks.{i}   audio.projector
    reduce.{modality}.{item}                      (omni-lab's reduction stage, see forward.apply_reducers)
    llm.embed  llm.layers.{i}.in
    llm.layers.{i}.mamba.{in_proj|conv|ssm|out}    (Mamba-2 layers)
    llm.layers.{i}.moe.{router|shared|routed|out}  (MoE layers)
    llm.layers.{i}.attn.{q|k|v|out}                (attention layers)
    llm.norm  llm.logits

Layer numbers are the LLM's own (0-51 on the released model). Each name resolves to a `HookPoint`: the module,
whether its value is the module's output or its first input, and how to read the value out of what the module
returns. `mamba.conv` is derived (the depthwise causal conv + SiLU that transformers computes with a function, not
a module) and can be cached but not patched. Hooks are registered inside `HookSession`, which removes every one of
them when the block ends, also when it raises (TransformerLens' `hooks()` context manager is the model).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import OmniLabInputError

MIXER_KIND = {"M": "mamba", "E": "moe", "*": "attn", "-": "mlp"}
MIXER_POINTS = {
    "mamba": ("in_proj", "conv", "ssm", "out"),
    "moe": ("router", "shared", "routed", "out"),
    "attn": ("q", "k", "v", "out"),
    "mlp": ("out",),
}


@dataclass(frozen=True)
class HookPoint:
    """Where a hook name lives.

    Attributes:
        name: the stable name.
        module: the module to hook (None for points omni-lab records itself: `reduce.*`, derived `mamba.conv`).
        on_input: the value is the module's first positional input (a forward pre-hook) instead of its output.
        pick: reads the value from the module's output (e.g. `.features` of the RADIO output); None = as is.
        patchable: a `patch(...)` intervention may replace the value.
        layer: LLM layer index, or None.
    """

    name: str
    module: torch.nn.Module | None
    on_input: bool = False
    pick: Callable | None = None
    patchable: bool = True
    layer: int | None = None


def layer_pattern(model) -> str:
    return model.config.text_config.hybrid_override_pattern


def hook_points(model, prompt=None) -> dict[str, HookPoint]:
    """Every hook point of `model` (and the `reduce.*` points of `prompt`'s media, when given)."""
    points: dict[str, HookPoint] = {}

    def add(name, module, **kwargs):
        points[name] = HookPoint(name, module, **kwargs)

    vision = model.vision_model
    add("vision.patch_embed", vision.embeddings)
    for index, block in enumerate(vision.encoder.layer):
        add(f"vision.blocks.{index}", block)
    add("vision.out", vision, pick=lambda output: output.features, patchable=False)
    add("vision.projector", model.multi_modal_projector)
    if model.audio_tower is not None:
        add("audio.subsampling", model.audio_tower.subsampling)
        for index, block in enumerate(model.audio_tower.layers):
            add(f"audio.blocks.{index}", block)
        add("audio.projector", model.embed_audio)
    if prompt is not None:
        for modality, items in (("image", prompt.images), ("video", prompt.videos), ("audio", prompt.audios)):
            for index in range(len(items)):
                add(f"reduce.{modality}.{index}", None)

    language = model.language_model
    layers = language.model.layers
    add("llm.embed", layers[0], on_input=True)
    for index, (layer, kind) in enumerate(zip(layers, layer_pattern(model), strict=True)):
        add(f"llm.layers.{index}.in", layer, on_input=True, layer=index)
        mixer = layer.mixer
        prefix = f"llm.layers.{index}.{MIXER_KIND[kind]}"
        if kind == "M":
            add(f"{prefix}.in_proj", mixer.in_proj, layer=index)
            add(f"{prefix}.conv", None, patchable=False, layer=index)
            add(f"{prefix}.ssm", mixer.norm, on_input=True, layer=index)
            add(f"{prefix}.out", mixer.out_proj, layer=index)
        elif kind == "E":
            add(f"{prefix}.router", mixer.gate, layer=index)
            add(f"{prefix}.shared", mixer.shared_experts, layer=index)
            add(f"{prefix}.routed", mixer.experts, layer=index)
            add(f"{prefix}.out", mixer, layer=index)
        elif kind == "*":
            add(f"{prefix}.q", mixer.q_proj, layer=index)
            add(f"{prefix}.k", mixer.k_proj, layer=index)
            add(f"{prefix}.v", mixer.v_proj, layer=index)
            add(f"{prefix}.out", mixer.o_proj, layer=index)
        else:
            add(f"{prefix}.out", mixer, layer=index)
    add("llm.norm", language.model.norm_f)
    add("llm.logits", language.lm_head)
    return points


def expand_names(requested, available: dict[str, HookPoint]) -> list[str]:
    """Resolve names and glob patterns (`llm.layers.*.moe.router`) to hook names, in model order."""
    if requested is None:
        return []
    if isinstance(requested, str):
        requested = [requested]
    chosen: list[str] = []
    for pattern in requested:
        matches = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            close = [name for name in available if name.split(".")[0] == str(pattern).split(".")[0]][:6]
            raise OmniLabInputError(
                f"hook name {pattern!r} matches nothing; names look like {', '.join(close) or 'llm.layers.0.in'} "
                f"(lab.hook_names() lists them all; * is a wildcard)"
            )
        chosen += [name for name in matches if name not in chosen]
    return chosen


def layer_index(name: str) -> int | None:
    found = re.match(r"llm\.layers\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def first_tensor(value):
    """The tensor a module returned (attention mixers return (output, weights))."""
    return value[0] if isinstance(value, tuple) and not isinstance(value, torch.Tensor) else value


class HookSession:
    """Register forward hooks; all are removed on exit, whatever happens inside."""

    def __init__(self):
        self._handles = []

    def on_output(self, module: torch.nn.Module, function: Callable) -> None:
        """`function(module, inputs, output)`; a non-None return replaces the output."""
        self._handles.append(module.register_forward_hook(function))

    def on_input(self, module: torch.nn.Module, function: Callable) -> None:
        """`function(module, args, kwargs)`; a non-None return `(args, kwargs)` replaces the inputs."""
        self._handles.append(module.register_forward_pre_hook(function, with_kwargs=True))

    def __enter__(self) -> HookSession:
        return self

    def __exit__(self, *exc) -> None:
        while self._handles:
            self._handles.pop().remove()
