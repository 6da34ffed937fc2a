"""Integrated gradients through the gradient path (`lab.prepare(grad=True)` / `lab.logits_from_embeds`), with captum.

    integrated_gradients(lab, prompt, at="embeddings")   captum IntegratedGradients on the merged embeddings
                                                         (1, L, D) against a baseline sequence ("mean", "zero",
                                                         a token id's embedding at every position)
    integrated_gradients(lab, prompt, at="projector")    captum LayerIntegratedGradients on the vision projector
                                                         (`model.multi_modal_projector`) and the audio projector
                                                         (`model.embed_audio`): the path runs between the
                                                         projector outputs of a blank input (grey pixels, silent
                                                         audio) and of the real one; the encoders run under
                                                         autograd at every step

IG (Sundararajan et al. 2017, arXiv 1703.01365) satisfies completeness: the attributions sum to f(x) - f(baseline)
when the path integral is exact. captum approximates it with `n_steps` points; the `completeness_gap` (captum's
convergence delta: sum of attributions - (f(x) - f(baseline))) says how far off the approximation is. Two facts of
this model shape it (measured on the toy twin, tests/test_attribution.py):
- the default baseline is "mean" (each media item's, and the text's, mean embedding), not "zero": the first layer
  normalises its input (RMSNorm is scale-invariant), so along the path from all-zero embeddings f changes only for
  alpha < 0.02, where the derivative reaches 1e16, and no quadrature catches it;
- f is not smooth along the path: on a beep-count prompt it moves by up to 1.6 between points 1/256 apart and its
  derivative swings between 2.6 and 67 at neighbouring points, which we ascribe to top-k routing switching experts
  (f jumps, the gradient does not see the jump). The gap shrinks with n_steps, though not monotonically (trapezoid
  rule: -8.0 at 8 steps, +2.9 at 16, -2.1 at 32, -2.0 at 64, of f(x) - f(b) = 10.6), and keeps a residue, as
  peer_baselines.md §6 found for captum on NemotronH (a 34-43 % gap at 16 steps).
A row's score is the sum of its embedding's attributions. Upstream: captum/attr/_core/integrated_gradients.py,
captum/attr/_core/layer/layer_integrated_gradients.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..targets import resolve_target
from .perturb import baseline_fill, describe_baseline
from .result import Attribution
from .scoring import Scorer, check_batch_size, check_budget, estimate
from .units import build_units, unit_details

PLACES = ("embeddings", "projector")
METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def integrated_gradients(
    lab,
    prompt,
    target=None,
    *,
    n_steps: int = 32,
    at: str = "embeddings",
    baseline=None,
    method: str = "gausslegendre",
    unit="modality",
    grid=(4, 4),
    seconds: float = 0.5,
    reducer=None,
    batch_size: int = 8,
    budget: int | None = None,
    progress: bool = True,
) -> Attribution:
    """Integrated gradients of the target with respect to the merged embeddings or the projectors' outputs.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` (or a string).
        target: `Target`, an answer string / ids, or None for the model's own greedy answer.
        n_steps: integration points.
        at: "embeddings" or "projector".
        baseline: at="embeddings": "mean" (default: each item's mean embedding), "zero" or a token id;
            at="projector": "blank" (grey images and frames, silent audio; the only choice).
        method: captum's integration rule ("gausslegendre", "riemann_trapezoid", ...).
        unit, grid, seconds: the units of the per-unit table (sums of their rows' scores).
        reducer: the reducer the sequence is prepared with (default None).
        batch_size: interpolation points per forward pass (captum's internal_batch_size; 1 at the projector).
        budget: most forward + backward passes allowed.
        progress: show a progress bar.
    Returns:
        `Attribution` with per-row scores, `completeness_gap`, `target_value` f(x), `baseline_value` f(baseline).
    """
    if at not in PLACES:
        raise OmniLabInputError(f"at={at!r}: choose 'embeddings' (the merged embeddings) or 'projector'")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 2:
        raise OmniLabInputError(f"n_steps={n_steps!r}: give an int of at least 2 integration points")
    if method not in METHODS:
        raise OmniLabInputError(f"method={method!r}: choose one of captum's {', '.join(METHODS)}")
    check_batch_size(batch_size)
    prompt = lab.as_prompt(prompt)
    resolved = resolve_target(lab, prompt, target, reducer)
    continuations = resolved.passes
    if at == "embeddings":
        baseline = "mean" if baseline is None else baseline
        if baseline == "remove" or baseline == "blank":
            raise OmniLabInputError(
                f"baseline={baseline!r} at the embeddings: IG needs a baseline sequence of the same length to "
                "integrate from: 'zero', 'mean' or a token id (occlusion(baseline='remove') drops tokens)"
            )
        from .perturb import check_baseline

        check_baseline(lab, baseline)
        cost = estimate("integrated_gradients", 0, continuations=continuations, n_steps=n_steps)
    else:
        if baseline not in (None, "blank"):
            raise OmniLabInputError(f"baseline={baseline!r} at the projector: the baseline is the blank input 'blank'")
        baseline = "blank"
        cost = estimate("integrated_gradients_projector", 0, continuations=continuations, n_steps=n_steps)
    check_budget(cost, budget, f"integrated gradients with n_steps={n_steps}", f"n_steps={max(2, n_steps // 2)}")
    scorer = Scorer(lab, resolved, batch_size, progress, cost.forward_passes, f"integrated gradients ({at})")
    try:
        if at == "embeddings":
            result = _at_embeddings(lab, prompt, scorer, baseline, n_steps, method, reducer, batch_size)
        else:
            result = _at_projector(lab, prompt, scorer, n_steps, method, reducer)
    finally:
        scorer.close()
    token_map, scores, gap, value, baseline_value = result
    units = build_units(token_map, unit, grid=grid, seconds=seconds)
    unit_scores = np.array(
        [np.nansum(scores[u.rows]) if np.isfinite(scores[u.rows]).any() else np.nan for u in units], dtype=np.float64
    )
    return Attribution(
        token_map=token_map,
        scores=scores,
        units=units,
        unit_scores=unit_scores,
        method="integrated_gradients",
        target=resolved.describe(),
        baseline=describe_baseline(baseline) if at == "embeddings" else "blank media (grey pixels, silence)",
        target_value=value,
        baseline_value=baseline_value,
        completeness_gap=gap,
        forward_passes=scorer.forward_passes,
        details={"at": at, "n_steps": n_steps, "method": method, **unit_details(units)},
    )


def _at_embeddings(lab, prompt, scorer, baseline, n_steps, method, reducer, batch_size):
    from captum.attr import IntegratedGradients

    prepared = lab.prepare(prompt, reducer=reducer, encoded=lab.encode(prompt), grad=True)
    token_map = prepared.token_map
    inputs = prepared.embeds.detach()  # (1, L, D)
    baselines = baseline_fill(lab, inputs, token_map, baseline)[None].detach()  # (1, L, D)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        return scorer(embeds, token_map)

    attributions, delta = IntegratedGradients(forward).attribute(
        inputs,
        baselines=baselines,
        n_steps=n_steps,
        method=method,
        internal_batch_size=batch_size,
        return_convergence_delta=True,
    )
    with torch.inference_mode():
        value, baseline_value = (float(v) for v in scorer(torch.cat([inputs, baselines]), token_map))
    per_position = attributions[0].detach().sum(dim=-1).double().cpu().numpy()  # (L,)
    scores = np.full(len(token_map), np.nan)
    scores[token_map.position_rows()] = per_position
    return token_map, scores, float(delta.sum()), value, baseline_value


def _at_projector(lab, prompt, scorer, n_steps, method, reducer):
    from captum.attr import LayerIntegratedGradients

    from .media_occlusion import blank_prompt

    model = lab.model
    if prompt.images and prompt.videos:
        raise OmniLabInputError(
            "at='projector' integrates along one call of the vision projector, and this prompt sends images and a "
            "video through it separately; use at='embeddings', or a prompt with only one of them"
        )
    layers, kinds = [], []
    if prompt.images or prompt.videos:
        layers.append(model.multi_modal_projector)
        kinds.append("image" if prompt.images else "video")
    if prompt.audios:
        layers.append(model.embed_audio)
        kinds.append("audio")
    if not layers:
        raise OmniLabInputError("at='projector' needs media in the prompt; a text-only prompt has no projector")
    blank = blank_prompt(lab, prompt)
    maps = {}

    def forward(switch: torch.Tensor) -> torch.Tensor:
        values = []
        for on in switch[:, 0].tolist():
            chosen = prompt if on > 0.5 else blank
            prepared = lab.prepare(
                chosen, reducer=reducer, encoded=None, grad=True
            )  # encoders under autograd, hooked by captum
            maps[on > 0.5] = prepared.token_map
            values.append(scorer(prepared.embeds, prepared.token_map))
        return torch.cat(values)

    # captum takes a layer output's first dimension for the batch; the vision projector's is tubelets (video) or
    # tokens (images), so captum runs one interpolation step per forward (internal_batch_size falls back to that
    # dimension, hence the warning filter) and cannot compare its attributions with the (1, 1) switch: the gap is
    # computed here, with the same definition as captum's convergence delta.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
        warnings.filterwarnings("ignore", message="Multiple layers provided")
        attributions = LayerIntegratedGradients(forward, layers).attribute(
            torch.ones(1, 1), baselines=torch.zeros(1, 1), n_steps=n_steps, method=method, internal_batch_size=1
        )
    with torch.inference_mode():
        value = float(forward(torch.ones(1, 1))[0])
        baseline_value = float(forward(torch.zeros(1, 1))[0])
    total = sum(float(attribution.detach().double().sum()) for attribution in attributions)
    gap = total - (value - baseline_value)
    token_map = maps[True]
    scores = np.full(len(token_map), np.nan)
    for kind, attribution in zip(kinds, attributions, strict=True):
        per_token = attribution.detach().sum(dim=-1).double().cpu().numpy()  # (clips or tubelets, tokens) or (tokens,)
        rows = np.flatnonzero(token_map.rows(modality=kind))
        if kind == "audio":  # (clips, frames): each clip's real frames first
            counts = [int(token_map.rows(modality="audio", item=i).sum()) for i in range(len(prompt.audios))]
            per_token = np.concatenate([per_token[i, :count] for i, count in enumerate(counts)])
        scores[rows] = per_token.reshape(-1)
    scores[~np.asarray(token_map["kept"], dtype=bool)] = np.nan
    return token_map, scores, gap, value, baseline_value
