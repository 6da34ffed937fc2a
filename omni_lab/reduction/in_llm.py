"""Staged token dropping inside the LLM, shared by PyramidDrop and SparseVLM (FastV, one stage, is fastv.py).

A staged reducer drops media tokens after some of the LLM's attention layers (only they compute attention to rank
by on this hybrid model: 5, 12, 19, 26, 33, 42 of the release's 52). At each stage layer K the hook reads the layer's
own queries and keys (the outputs of its `q_proj` / `k_proj`, as FastV does), asks the reducer for scores, keeps each
media item's share for that stage and cuts the hidden states after the layer; every later layer, Mamba-2 included,
sees the shorter sequence. Decoding continues on the shortened caches.

Budgets are per media item, as for the reducers before the LLM: an item of n tokens entering the LLM keeps
`stage_counts(n)[s]` tokens after stage s, a geometric schedule from n to `budget = max(1, floor(n (1 - rate)))` at
the last stage, so `budget(item)` is exactly what reaches the last layers and `RandomDrop.matching(reducer)` is an
equal-budget control. The staged reducer's decision comes back as one `LLMStage` per stage (the `LLMDrop` shape:
layer, keep, scores), which the run writes into the token map's `dropped_at_layer` and the ledger's stages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import validate
from ..errors import OmniLabInputError
from ..modalities import MEDIA
from ..presets import layers
from .base import ReductionItem, check_modality, check_rate, rate_budget


@dataclass(frozen=True)
class LLMStage:
    """One stage of an in-LLM reducer: which prompt positions left the sequence after `layer`.

    Attributes:
        layer: the LLM layer after which they left.
        keep: `(prompt positions,)` bool: False for the positions that left at this stage (True for every other,
            including positions that left at an earlier stage).
        scores: `(prompt positions,)` float: the stage's score of each candidate, NaN elsewhere.
        merged_into: `(prompt positions,)` long: the prompt position a position was merged into (recycling), -1 if
            none.
        seconds: time the reducer spent on this stage (scoring and selection) inside the prefill.
        flops: the matrix products the stage's scoring and recycling added (2 x multiply-adds).
    """

    layer: int
    keep: np.ndarray
    scores: np.ndarray
    merged_into: np.ndarray
    seconds: float = 0.0
    flops: float = 0.0


def check_modalities(name: str, modalities) -> tuple[str, ...]:
    if isinstance(modalities, str):
        modalities = (modalities,)
    unknown = set(modalities) - set(MEDIA)
    if unknown or not modalities:
        raise OmniLabInputError(f"{name} modalities {sorted(unknown) or modalities}: use image, video, audio")
    return tuple(modalities)


def check_layers(name: str, chosen) -> tuple[int, ...] | None:
    if chosen is None:
        return None
    if isinstance(chosen, int):
        chosen = (chosen,)
    chosen = tuple(validate.number(f"{name} layers", layer, low=0, integer=True) for layer in chosen)
    if not chosen or list(chosen) != sorted(set(chosen)):
        raise OmniLabInputError(f"{name} layers must be distinct and ascending, got {chosen}")
    return chosen


def check_attention_implementation(reducer, model) -> None:
    """Refuse eager attention: its explicit L x L causal mask is built once for the whole prompt and cannot shrink
    after a drop (SDPA and flash attention take causality as a flag, the default on CPU and GPU)."""
    if model.language_model.config._attn_implementation == "eager":
        raise OmniLabInputError(
            f"{reducer!r} shortens the sequence inside the LLM, which eager attention's fixed L x L mask does not "
            'allow; use the default attention (lab.model.set_attn_implementation("sdpa"))'
        )


def attention_layers(model) -> list[int]:
    """The LLM's attention layers (the only ones that can rank tokens on this hybrid model)."""
    return [info.index for info in layers(model) if info.kind == "attention"]


def nearest_attention_layers(model, depths: tuple[float, ...]) -> tuple[int, ...]:
    """For each relative depth (layer / number of layers in the method's own model), the attention layer nearest that
    depth in this model (ties to the earlier), deduplicated: how a published stage schedule maps onto the pattern."""
    attention = attention_layers(model)
    total = len(layers(model))
    chosen = [min(attention, key=lambda layer: (abs(layer - depth * total), layer)) for depth in depths]
    return tuple(sorted(set(chosen)))


class StagedReducer:
    """What PyramidDrop and SparseVLM share: rate, modalities, stage layers, per-item budgets, the schedule.

    Subclasses set `name`, `default_depths` (the paper's stage depths as fractions of its model's layers) and
    implement `scores(hook, layer, q, k, mixer)` -> `(alive,)` float scores (higher = keep), adding the FLOPs of
    their matrix products to `hook.flops`.
    """

    in_llm = True
    name = "staged"
    modalities: tuple[str, ...] = ("image", "video")  # the default; an instance may choose others
    default_depths: tuple[float, ...] = ()

    def __init__(self, rate: float, layers=None, modalities=("image", "video")):
        self.rate = check_rate(self.name, rate)
        self.layers = check_layers(self.name, layers)
        self.modalities = check_modalities(self.name, modalities)

    def __repr__(self) -> str:
        layers_part = "" if self.layers is None else f", layers={list(self.layers)}"
        return f"{type(self).__name__}(rate={self.rate}{layers_part})"

    def budget(self, item) -> int:
        """Tokens of the item that reach the layers after the last stage: max(1, floor(N x (1 - rate))).

        Args:
            item: a `ReductionItem` (or a token count).
        """
        if isinstance(item, ReductionItem):
            check_modality(self, item)
            item = item.num_tokens
        return rate_budget(int(item), self.rate) if item else 0

    def stage_counts(self, tokens: int, stages: int) -> list[int]:
        """Tokens an item of `tokens` keeps after each of `stages` stages: floor(n · (1 - rate)^(s/S)), non-increasing,
        the last exactly `budget(tokens)`."""
        if not tokens:
            return [0] * stages
        keep = 1.0 - self.rate
        counts = [max(1, math.floor(tokens * keep ** ((s + 1) / stages) + 1e-9)) for s in range(stages)]
        counts[-1] = self.budget(tokens)
        for s in range(1, stages):
            counts[s] = min(counts[s], counts[s - 1])
        return counts

    def stage_layers(self, model) -> tuple[int, ...]:
        """The attention layers this reducer ranks at on `model` (its `layers`, or the paper's depths mapped)."""
        attention = attention_layers(model)
        if self.layers is not None:
            wrong = [layer for layer in self.layers if layer not in attention]
            if wrong:
                raise OmniLabInputError(f"{self!r}: layers {wrong} are not attention layers; those are {attention}")
            return self.layers
        return nearest_attention_layers(model, self.default_depths)

    def drop_layers(self, model) -> tuple[int, ...]:
        """The layers after which tokens leave (the stage layers themselves)."""
        return self.stage_layers(model)

    def install(self, hooks, model) -> StagedDropHook:
        """Register the hooks for one run on `hooks` (a `HookSession`); see `StagedDropHook`."""
        check_attention_implementation(self, model)
        return StagedDropHook(self, model, hooks, self.stage_layers(model))

    # subclasses ---------------------------------------------------------------------------------------------
    def scores(self, hook: StagedDropHook, layer: int, q: torch.Tensor, k: torch.Tensor, mixer) -> np.ndarray:
        raise NotImplementedError

    def recycle(self, hook, layer, hidden, mine, order, target, scores) -> tuple[int, dict]:
        """How many of an item's candidates stay by score, and which dropped ones merge into which.

        Args:
            hook: the `StagedDropHook`; layer: the stage layer; hidden: (1, alive, D) the layer's output.
            mine: the item's candidate indices (into alive); order: the same, best score first.
            target: the tokens the item keeps after this stage.
        Returns:
            (m, merges): the first m of `order` stay; `merges` maps dropped indices to the dropped index they merge
            into (a cluster centre, which then stays too); m + the number of centres = target.
        """
        return target, {}


class StagedDropHook:
    """One run's hooks of a staged reducer: keep each stage layer's q / k, cut the sequence after it.

    Args:
        reducer: the `StagedReducer`.
        model: transformers' `NemotronH_Omni_Reasoning_V3`.
        hooks: the run's `HookSession`.
        stage_layers: the attention layers it ranks at.
    """

    def __init__(self, reducer: StagedReducer, model, hooks, stage_layers: tuple[int, ...]):
        self.reducer, self.model = reducer, model
        self.stage_layers = tuple(stage_layers)
        self.blocks = {layer: model.language_model.model.layers[layer] for layer in self.stage_layers}
        self.position_modality: np.ndarray | None = None
        self.position_item: np.ndarray | None = None
        self.alive: np.ndarray | None = None  # prompt positions in the sequence now, ascending
        self.inputs: torch.Tensor | None = None  # (1, L, D) the LLM's input embeddings at the prefill
        self.stages: list[LLMStage] = []
        self.flops = 0.0  # matrix-product FLOPs the reducer's own scoring added so far
        self._counts: dict = {}
        self._projected: dict = {}
        hooks.on_input(model.language_model.model.layers[0], self._on_first_layer)
        for layer, block in self.blocks.items():
            hooks.on_output(block.mixer.q_proj, self._on_projection(layer, "q"))
            hooks.on_output(block.mixer.k_proj, self._on_projection(layer, "k"))
            hooks.on_output(block, self._on_block(layer))

    # ---------------------------------------------------------------------------------------------- positions
    def set_positions(self, position_modality: np.ndarray) -> None:
        """The modality of each prompt position the LLM will see (the capture session's call). Until
        `set_token_map` gives each position its item, a modality's positions share one budget."""
        modality = np.asarray(position_modality)
        items = self.position_item if self.position_item is not None else np.zeros(0, dtype=np.int64)
        self._arrange(modality, items if len(items) == len(modality) else np.zeros(len(modality), dtype=np.int64))

    def set_token_map(self, token_map) -> None:
        """The reduced token map the prefill runs on: gives each prompt position its media item (per-item budgets)."""
        self._arrange(token_map.by_position("modality"), np.asarray(token_map.by_position("item"), dtype=np.int64))

    def _arrange(self, modality: np.ndarray, items: np.ndarray) -> None:
        self.position_modality, self.position_item = np.asarray(modality), items
        self.alive = np.arange(len(self.position_modality))
        self._counts = {}
        for modality in self.reducer.modalities:
            for item in np.unique(self.position_item[self.position_modality == modality]):
                mine = int(((self.position_modality == modality) & (self.position_item == item)).sum())
                self._counts[(modality, int(item))] = self.reducer.stage_counts(mine, len(self.stage_layers))

    def decision(self):
        """The stages (`LLMStage`s, in layer order) once the prefill ran; None before."""
        return tuple(self.stages) if self.stages else None

    def candidates(self) -> np.ndarray:
        """(alive,) bool: the positions now in the sequence that compete (media of the reducer's modalities)."""
        return np.isin(self.position_modality[self.alive], self.reducer.modalities)

    # ----------------------------------------------------------------------------------------------- hooks
    def _on_first_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if self.alive is not None and hidden is not None and hidden.shape[1] == len(self.position_modality):
            self.inputs = hidden.detach()
        return None

    def _on_projection(self, layer: int, key: str):
        def hook(module, inputs, output):
            self._projected[(layer, key)] = output

        return hook

    def _on_block(self, layer: int):
        def hook(module, inputs, output):
            return self._cut(layer, output)

        return hook

    def _cut(self, layer: int, output: torch.Tensor):
        if self.alive is None or output.shape[1] != len(self.alive) or any(s.layer == layer for s in self.stages):
            return None  # decoding, or this stage already ran
        started, flops_before = time.perf_counter(), self.flops
        stage = self.stage_layers.index(layer)
        mixer = self.blocks[layer].mixer
        length = output.shape[1]
        q = self._projected.pop((layer, "q")).reshape(1, length, -1, mixer.head_dim).transpose(1, 2)
        k = self._projected.pop((layer, "k")).reshape(1, length, -1, mixer.head_dim).transpose(1, 2)
        scores = np.asarray(self.reducer.scores(self, layer, q, k, mixer), dtype=np.float64)  # (alive,)
        candidates = self.candidates()
        keep_local = np.ones(length, dtype=bool)
        merged_local = np.full(length, -1, dtype=np.int64)
        replacements: dict[int, torch.Tensor] = {}
        alive_modality = self.position_modality[self.alive]
        alive_item = self.position_item[self.alive]
        for (modality, item), counts in self._counts.items():
            mine = np.flatnonzero(candidates & (alive_modality == modality) & (alive_item == item))
            target = counts[stage]
            if len(mine) <= target:
                continue
            order = mine[np.argsort(-scores[mine], kind="stable")]
            kept_by_score, merges = self.reducer.recycle(self, layer, output, mine, order, target, scores)
            keep_local[order[kept_by_score:]] = False
            for source, into in merges.items():  # a centre maps to itself: it stays, carrying its cluster's mean
                keep_local[into] = True
                if source != into:
                    merged_local[source] = into
            for into in set(merges.values()):
                members = [into, *[source for source, centre in merges.items() if centre == into and source != into]]
                replacements[into] = output[0, members].float().mean(dim=0).to(output.dtype)
        keep = np.ones(len(self.position_modality), dtype=bool)
        keep[self.alive[~keep_local]] = False
        full_scores = np.full(len(self.position_modality), np.nan)
        full_scores[self.alive[candidates]] = scores[candidates]
        merged_into = np.full(len(self.position_modality), -1, dtype=np.int64)
        merged = merged_local >= 0
        merged_into[self.alive[merged]] = self.alive[merged_local[merged]]
        if replacements:
            output = output.clone()
            for into, value in replacements.items():
                output[0, into] = value
        seconds = time.perf_counter() - started
        self.stages.append(LLMStage(layer, keep, full_scores, merged_into, seconds, self.flops - flops_before))
        self.alive = self.alive[keep_local]
        return output[:, torch.from_numpy(keep_local).to(output.device)]


def attention_flops(q: torch.Tensor, queries: int) -> float:
    """FLOPs of `attention_from` with `queries` queries over q's L keys: 2 · H · Q · L · d_h."""
    _, heads, length, head_dim = q.shape
    return float(2 * heads * queries * length * head_dim)


def attention_from(q: torch.Tensor, k: torch.Tensor, queries: np.ndarray, scale: float) -> torch.Tensor:
    """Softmax attention of the query positions `queries` over every key they may see (causal), mean over heads.

    Args:
        q: (1, Hq, L, D) queries; k: (1, Hkv, L, D) keys (query head h reads kv head h // (Hq // Hkv)).
        queries: positions (indices into L) of the queries.
        scale: score scale.
    Returns:
        (len(queries), L) float32 probabilities averaged over heads (0 for keys after a query).
    """
    heads = q.shape[1]
    k = k.float().repeat_interleave(heads // k.shape[1], dim=1)[0]  # (Hq, L, D)
    chosen = torch.as_tensor(np.asarray(queries), dtype=torch.long, device=q.device)
    scores = q[0, :, chosen].float() @ k.transpose(-1, -2) * scale  # (Hq, Q, L)
    keys = torch.arange(k.shape[1], device=q.device)
    scores = scores.masked_fill(keys[None, None, :] > chosen[None, :, None], -math.inf)
    return torch.softmax(scores, dim=-1).mean(dim=0)  # (Q, L)
