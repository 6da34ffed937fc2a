"""Stable hook names over transformers' module tree, and a context manager whose hooks always come off.

Hook names are omni-lab's own and do not change with transformers' module paths (docs/model_layout.md §2):

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
them when the block ends, also when it raises (TransformerLens' `hooks()` context manager is the model). `Calls`
counts the language model's forward calls, so a hook can tell which positions its tensor covers.
"""

from __future__ import annotations

import contextlib
import fnmatch
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..presets import layers


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
        width: elements the value holds per token (LLM and `reduce.*` points) or per patch / audio frame (towers).
    """

    name: str
    module: torch.nn.Module | None
    on_input: bool = False
    pick: Callable | None = None
    patchable: bool = True
    layer: int | None = None
    width: int = 0

    @property
    def stage(self) -> str:
        """ "vision", "audio", "reduce" or "llm": where in the pipeline the value is produced."""
        return self.name.split(".", 1)[0]


def hook_points(model, prompt=None) -> dict[str, HookPoint]:
    """Every hook point of `model` (and the `reduce.*` points of `prompt`'s media, when given), in model order."""
    encoders, llm = _model_points(model)
    points = dict(encoders)
    if prompt is not None:
        hidden = model.config.text_config.hidden_size
        for modality, items in (("image", prompt.images), ("video", prompt.videos), ("audio", prompt.audios)):
            for index in range(len(items)):
                name = f"reduce.{modality}.{index}"
                points[name] = HookPoint(name, None, width=hidden)
    points.update(llm)
    return points


_MODEL_POINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_points(model) -> tuple[dict[str, HookPoint], dict[str, HookPoint]]:
    """The model's own points, before and after the reduction stage: built once per model (every run opens a capture
    session, and walking the module tree each time cost about 0.4 ms of a run on the random presets)."""
    if model not in _MODEL_POINTS:
        _MODEL_POINTS[model] = _walk(model)
    return _MODEL_POINTS[model]


def _walk(model) -> tuple[dict[str, HookPoint], dict[str, HookPoint]]:
    points: dict[str, HookPoint] = {}
    config, text = model.config, model.config.text_config
    hidden = text.hidden_size

    def add(name, module, **kwargs):
        points[name] = HookPoint(name, module, **kwargs)

    vision = model.vision_model
    width = config.vision_config.hidden_size
    add("vision.patch_embed", vision.embeddings, width=width)
    for index, block in enumerate(vision.encoder.layer):
        add(f"vision.blocks.{index}", block, width=width)
    add("vision.out", vision, pick=lambda output: output.features, patchable=False, width=width)
    add("vision.projector", model.multi_modal_projector, width=hidden)
    if model.audio_tower is not None:
        width = max(config.audio_config.hidden_size, hidden)  # per mel frame: an upper bound after subsampling
        add("audio.subsampling", model.audio_tower.subsampling, width=width)
        for index, block in enumerate(model.audio_tower.layers):
            add(f"audio.blocks.{index}", block, width=width)
        add("audio.projector", model.embed_audio, width=width)
    encoders, points = points, {}

    language = model.language_model
    modules = language.model.layers
    add("llm.embed", modules[0], on_input=True, width=hidden)
    for info, layer in zip(layers(model), modules, strict=True):
        index, mixer, prefix = info.index, layer.mixer, info.hook_prefix
        add(f"llm.layers.{index}.in", layer, on_input=True, layer=index, width=hidden)
        if info.kind == "mamba":
            add(f"{prefix}.in_proj", mixer.in_proj, layer=index, width=mixer.in_proj.out_features)
            add(f"{prefix}.conv", None, patchable=False, layer=index, width=mixer.conv_dim)
            add(f"{prefix}.ssm", mixer.norm, on_input=True, layer=index, width=mixer.intermediate_size)
            add(f"{prefix}.out", mixer.out_proj, layer=index, width=hidden)
        elif info.kind == "moe":
            add(f"{prefix}.router", mixer.gate, layer=index, width=text.n_routed_experts)  # cached: the logits
            add(f"{prefix}.shared", mixer.shared_experts, layer=index, width=hidden)
            add(f"{prefix}.routed", mixer.experts, layer=index, width=hidden)
            add(f"{prefix}.out", mixer, layer=index, width=hidden)
        elif info.kind == "attention":
            add(f"{prefix}.q", mixer.q_proj, layer=index, width=mixer.q_proj.out_features)
            add(f"{prefix}.k", mixer.k_proj, layer=index, width=mixer.k_proj.out_features)
            add(f"{prefix}.v", mixer.v_proj, layer=index, width=mixer.v_proj.out_features)
            add(f"{prefix}.out", mixer.o_proj, layer=index, width=hidden)
        else:
            add(f"{prefix}.out", mixer, layer=index, width=hidden)
    add("llm.norm", language.model.norm_f, width=hidden)
    add("llm.logits", language.lm_head, width=text.vocab_size)
    return encoders, points


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


@dataclass
class Calls:
    """Position bookkeeping: the language model's forward call number `step` covers positions `start` ..
    `start + length - 1` (the prompt is call 0, each generated token one more call); `seen` positions so far.

    A sequence that shrinks inside the LLM: an in-LLM reducer (FastV, PyramidDrop, SparseVLM) cuts prompt positions
    out of the prefill after some layers. `drops` (set by the capture session) returns its decisions so far, each
    with `layer` and `keep` over the prompt positions; `positions(layer)` is then the prompt positions a layer's
    tensors really cover, and `spread` puts per-position values back on the prompt's positions, the dropped ones
    marked absent. Every capture kind reads its per-position values through these (one mechanism for all kinds).
    """

    seen: int = 0
    start: int = 0
    length: int = 0
    step: int = -1
    drops: Callable | None = None

    def positions(self, layer: int | None = None) -> np.ndarray:
        """The LLM positions the current call's tensors cover at LLM layer `layer` (its input, its mixer, its
        output): `start .. start + length - 1`, less, at the prefill, the prompt positions an in-LLM reducer dropped
        after an earlier layer. `layer=None`: after every drop so far (the final norm, the head)."""
        every = np.arange(self.start, self.start + self.length)
        if self.step != 0 or self.drops is None:
            return every
        keep = np.ones(self.length, dtype=bool)
        for drop in _as_drops(self.drops()):
            if layer is None or drop.layer < layer:
                keep &= np.asarray(drop.keep, dtype=bool)
        return every if keep.all() else every[keep]

    def spread(self, values: torch.Tensor, layer: int | None, fill) -> torch.Tensor:
        """`values` over the positions `positions(layer)` (first axis) put back on all `length` positions of the
        call, `fill` (NaN, -1) on the positions that are absent at that layer; `values` itself when none is."""
        covered = self.positions(layer)
        if len(covered) == self.length:
            return values
        out = values.new_full((self.length, *values.shape[1:]), fill)
        out[torch.from_numpy(covered - self.start).to(values.device)] = values
        return out

    def locate(self, layer: int | None, position: int) -> int:
        """Index of LLM position `position` in the current call's tensors at `layer` (it must be present)."""
        covered = self.positions(layer)
        index = int(np.searchsorted(covered, position))
        if index >= len(covered) or covered[index] != position:
            raise RuntimeError(f"position {position} is not in the sequence at layer {layer}")
        return index

    def count(self, module, args, kwargs) -> None:
        """Forward pre-hook for the language model: advance to the call that is starting."""
        value = kwargs.get("inputs_embeds")
        if value is None:
            value = kwargs.get("input_ids", args[0] if args else None)
        self.start = self.seen
        self.length = int(value.shape[1])
        self.seen += self.length
        self.step += 1


class HookSession:
    """Register forward hooks (and hold module settings); all are removed (restored) on exit, whatever happens
    inside."""

    def __init__(self):
        self._handles = []
        self._settings = contextlib.ExitStack()

    def hold(self, setting) -> None:
        """Enter a context manager now (a module setting an intervention holds); it exits with the session."""
        self._settings.enter_context(setting)

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
        self._settings.close()


def _as_drops(decision) -> list:
    """An in-LLM reducer's decision (None, one `LLMDrop`, or a sequence of `LLMStage`s) as a list."""
    if decision is None:
        return []
    return list(decision) if isinstance(decision, (tuple, list)) else [decision]
