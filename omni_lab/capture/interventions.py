"""Interventions: change what the model computes for one run, through hooks that always come off.

    ol.ablate_tokens(modality="video", frame=3)           # zero those tokens' merged embeddings
    ol.ablate_experts(layer=13, experts=[7, 42], modality="image")
    ol.force_experts(layer=13, experts=[0, 1, 2, 3, 4, 5], selector={"modality": "audio"})
    ol.patch("llm.layers.12.attn.out", lambda value, ctx: value * 0)
    ol.set_top_k(1, layers=[13])                          # route every token to its top expert only

Each one becomes a *patch* on a hook point: a function `fn(value, context) -> value` applied where the model
produces that value. Expert interventions act on the router's output, the only place a single expert can be
touched (the experts are fused 3-D tensors, docs/model_layout.md §2): `ablate_experts` zeroes the
weight of the named experts where they were chosen (the other chosen experts keep their weights), `force_experts`
replaces the choice and gives the forced experts the weights the router would give them (their sigmoid scores,
normalised, times the routed scaling factor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import OmniLabInputError


@dataclass
class PatchContext:
    """What a patch function is told about the call it acts in.

    Attributes:
        name: the hook name.
        start, length: the LLM positions this call covers (`start .. start + length - 1`); the prompt is one call,
            each generated token another. None for tower and reduction points.
        modality: modality of each of those positions (numpy array of str), or None.
        token_map: the run's prompt token map (after reduction, before generation).
        step: 0 for the prompt, i for the i-th generated token.
        text_config: the LLM's config (router settings for expert interventions).
    """

    name: str
    start: int | None
    length: int | None
    modality: np.ndarray | None
    token_map: object
    step: int
    text_config: object = None


def _position_mask(selector, token_map) -> np.ndarray:
    """Boolean mask over the prompt's LLM positions from a token-map selector (dict, row mask or callable)."""
    if callable(selector):
        rows = np.asarray(selector(token_map), dtype=bool)
    elif isinstance(selector, dict):
        rows = token_map.rows(**selector)
    else:
        rows = np.asarray(selector, dtype=bool)
    if rows.shape == (token_map.num_positions,):
        return rows  # already a mask over positions
    if rows.shape != (len(token_map),):
        raise OmniLabInputError(
            f"token selector has shape {rows.shape}; give a dict for token_map.rows(...), a mask over its "
            f"{len(token_map)} rows or over its {token_map.num_positions} positions"
        )
    positions = token_map["position"][rows & token_map["kept"]]
    mask = np.zeros(token_map.num_positions, dtype=bool)
    mask[positions] = True
    return mask


def _call_rows(mask: np.ndarray, context: PatchContext) -> torch.Tensor:
    """Indices, within this call, of the selected positions."""
    stop = context.start + context.length
    selected = np.flatnonzero(mask[context.start : min(stop, len(mask))])
    return torch.from_numpy(selected)


@dataclass
class Intervention:
    """A patch bound to a hook point (or to a layer's router), and/or a setting of the model held for the run.

    Attributes:
        point: the hook name the patch acts at (None for a setting alone).
        function: the patch, `(value, context) -> value` (None for a setting alone).
        description: how it prints.
        configure: `model -> context manager` that changes a setting of transformers' modules for the run and
            restores it on exit, also when the run raises (`set_top_k` sets the routers' `top_k`).
    """

    point: str | None
    function: Callable | None
    description: str
    configure: Callable | None = None

    def __repr__(self) -> str:
        return self.description


def patch(hook_name: str, function: Callable) -> Intervention:
    """Replace the value at `hook_name` with `function(value, context)` (same shape) during the run."""
    if not callable(function):
        raise OmniLabInputError("patch needs a function (value, context) -> value")
    return Intervention(hook_name, function, f"patch({hook_name!r})")


def ablate_tokens(selector=None, *, value: str | float = "zero", **criteria) -> Intervention:
    """Replace the merged embeddings of selected prompt tokens before the first LLM layer.

    Args:
        selector: a dict of `token_map.rows` criteria, a mask over token-map rows or positions, or a callable
            `token_map -> mask`; keyword criteria (`modality=`, `item=`, `frame=`) are accepted instead.
        value: "zero" (the ablation), "mean" (the mean embedding of this prompt's positions) or a float.
    """
    if selector is None:
        if not criteria:
            raise OmniLabInputError("ablate_tokens needs a selector, e.g. ablate_tokens(modality='video', frame=2)")
        selector = criteria
    if not (value in ("zero", "mean") or isinstance(value, (int, float))):
        raise OmniLabInputError(f"ablate_tokens value={value!r}: use 'zero', 'mean' or a number")

    def ablate(embeds: torch.Tensor, context: PatchContext) -> torch.Tensor:
        if context.step != 0:
            return embeds
        rows = _call_rows(_position_mask(selector, context.token_map), context)
        if not len(rows):
            return embeds
        embeds = embeds.clone()
        if value == "zero":
            embeds[0, rows] = 0
        elif value == "mean":
            embeds[0, rows] = embeds[0].mean(0).to(embeds.dtype)
        else:
            embeds[0, rows] = float(value)
        return embeds

    return Intervention("llm.embed", ablate, f"ablate_tokens({selector!r}, value={value!r})")


def _router_point(layer: int) -> str:
    return f"llm.layers.{layer}.moe.router"


def ablate_experts(layer: int, experts, modality: str | None = None) -> Intervention:
    """Zero the routing weight of `experts` at MoE `layer` wherever they were chosen (for `modality` only if given).

    Generated tokens have modality "generated".
    """
    experts = torch.as_tensor(list(np.atleast_1d(experts)), dtype=torch.long)

    def ablate(router_output, context: PatchContext):
        logits, weights, indices = router_output
        hit = torch.isin(indices, experts.to(indices.device))  # (N, k)
        if modality is not None:
            keep = torch.from_numpy(np.asarray(context.modality) == modality).to(indices.device)
            hit &= keep[:, None]
        return logits, weights.masked_fill(hit, 0.0), indices

    return Intervention(_router_point(layer), ablate, f"ablate_experts({layer}, {experts.tolist()}, {modality!r})")


def force_experts(
    layer: int, experts, selector=None, *, routed_scaling_factor: float | None = None, normalize: bool = True
) -> Intervention:
    """Route the selected positions of MoE `layer` to `experts` (exactly k of them) with the router's own weights.

    Args:
        layer: MoE layer index.
        experts: k expert ids.
        selector: positions to force (as `ablate_tokens`' selector); None forces every position, generated ones too.
        routed_scaling_factor, normalize: override the router's own settings (default: the model's).
    """
    experts = torch.as_tensor(list(np.atleast_1d(experts)), dtype=torch.long)

    def force(router_output, context: PatchContext):
        logits, weights, indices = router_output
        if len(experts) != indices.shape[1]:
            raise OmniLabInputError(f"force_experts needs exactly k={indices.shape[1]} experts, got {len(experts)}")
        if selector is None:
            rows = torch.arange(indices.shape[0])
        elif context.step != 0:
            return router_output
        else:
            rows = _call_rows(_position_mask(selector, context.token_map), context)
        if not len(rows):
            return router_output
        config = context.text_config
        scale = config.routed_scaling_factor if routed_scaling_factor is None else routed_scaling_factor
        forced = experts.to(indices.device).expand(len(rows), -1)
        chosen = logits[rows].sigmoid().gather(1, forced)
        if normalize and config.norm_topk_prob:
            chosen = chosen / (chosen.sum(-1, keepdim=True) + 1e-20)
        indices, weights = indices.clone(), weights.clone()
        indices[rows] = forced
        weights[rows] = (chosen * scale).to(weights.dtype)
        return logits, weights, indices

    return Intervention(_router_point(layer), force, f"force_experts({layer}, {experts.tolist()}, {selector!r})")


def set_top_k(k: int, layers=None) -> Intervention:
    """Route every token to its top `k` experts instead of the model's own k (at the given MoE layers, default all).

    The router's own code chooses them (transformers' `NemotronHTopkRouter` with its `top_k` set to `k` for the run
    and restored after): the same selection scores (sigmoid + correction bias), the same weights (the chosen experts'
    sigmoid scores, normalised over the k, times the routed scaling factor). `set_top_k(model's k)` changes nothing.

    Args:
        k: experts per token, 1 .. the number of routed experts.
        layers: MoE layer numbers, or None for every MoE layer.
    """
    from ..presets import layers as layer_registry

    k = _whole("set_top_k k", k, low=1)
    chosen = None if layers is None else [_whole("set_top_k layer", layer, low=0) for layer in np.atleast_1d(layers)]

    def configure(model):
        moe = [info.index for info in layer_registry(model) if info.kind == "moe"]
        wanted = moe if chosen is None else chosen
        wrong = sorted(set(wanted) - set(moe))
        if wrong:
            raise OmniLabInputError(f"set_top_k layers {wrong} are not MoE layers; those are {moe}")
        experts = int(model.config.text_config.n_routed_experts)
        if k > experts:
            raise OmniLabInputError(f"set_top_k k={k}: this model routes to at most its {experts} experts")
        gates = [model.language_model.model.layers[index].mixer.gate for index in wanted]
        return _held(gates, "top_k", k)

    where = "every MoE layer" if chosen is None else f"layers {chosen}"
    return Intervention(None, None, f"set_top_k({k}, {where})", configure)


class _held:
    """Context manager: `attribute` of every module set to `value`, each restored on exit."""

    def __init__(self, modules, attribute: str, value):
        self.modules, self.attribute, self.value = modules, attribute, value
        self.saved: list = []

    def __enter__(self):
        for module in self.modules:
            self.saved.append(getattr(module, self.attribute))
            setattr(module, self.attribute, self.value)
        return self

    def __exit__(self, *exc):
        for module, value in zip(self.modules, self.saved, strict=False):
            setattr(module, self.attribute, value)
        self.saved = []


def _whole(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise OmniLabInputError(f"{name}={value!r}: give an integer >= {low}")
    return int(value)
