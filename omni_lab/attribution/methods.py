"""Occlusion and exact modality Shapley values over the merged embeddings, with captum.

    occlusion(lab, prompt, unit="region", baseline="remove")     captum FeatureAblation, one unit at a time
    modality_shapley(lab, prompt, groups="modality")             captum ShapleyValues (exact), up to 8 groups

Both perturb the sequence the LLM sees after the merge (and the reducer, when one is given): the media are encoded
once. captum drives the perturbations through `perturb.EmbeddingPerturbation` (one presence switch per covered
position, the feature mask from the token map); its attribution of a unit is f(prompt) - f(prompt without the unit)
for FeatureAblation, the unit's Shapley value for ShapleyValues. Upstream: captum/attr/_core/feature_ablation.py,
captum/attr/_core/shapley_value.py (captum 0.9).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..targets import resolve_target
from .perturb import EmbeddingPerturbation, baseline_fill, check_baseline, describe_baseline, unit_positions
from .result import Attribution, row_scores
from .scoring import Scorer, check_batch_size, check_budget, estimate
from .units import build_units, unit_details

MAX_SHAPLEY_GROUPS = 8  # captum's exact ShapleyValues walks n * n! orderings: 322,560 at 8 groups


def cheaper_unit(unit, grid, seconds) -> str:
    """A suggestion for fewer units than `unit`."""
    if unit == "text_token":
        return "unit='word'"
    if unit == "region":
        rows, cols = grid
        return f"a coarser grid, e.g. grid=({max(1, rows // 2)}, {max(1, cols // 2)})"
    if unit == "audio_window":
        return f"longer windows, e.g. seconds={2 * float(seconds):g}"
    if unit in ("frame", "tubelet"):
        return "unit='item' or a modality=... filter"
    return "fewer groups (unit='modality' or 'item') or a modality=... filter"


def _prepare(lab, prompt, target, reducer, encoded, batch_size):
    prompt = lab.as_prompt(prompt)
    check_batch_size(batch_size)
    resolved = resolve_target(lab, prompt, target, reducer)
    prepared = lab.prepare(prompt, reducer=reducer, encoded=encoded)
    return prompt, resolved, prepared


def occlusion(
    lab,
    prompt,
    target=None,
    *,
    unit="region",
    baseline="remove",
    grid=(4, 4),
    seconds: float = 0.5,
    modality=None,
    reducer=None,
    encoded=None,
    batch_size: int = 16,
    budget: int | None = None,
    progress: bool = True,
) -> Attribution:
    """Occlude one unit at a time in the merged embeddings (captum FeatureAblation) and score the target's drop.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` (or a string for a text-only prompt).
        target: `Target`, an answer string / ids, or None for the model's own greedy answer.
        unit: a unit kind ("region", "tubelet", "audio_window", "text_token", "word", "item", "modality") or
            {name: mask} groups; units must share no token (see `units.build_units`).
        baseline: "remove" (drop the unit's tokens from the sequence, as a pruner does), "zero", "mean", or a token
            id whose embedding replaces them.
        grid, seconds, modality: unit options (region grid, audio window length, keep one modality's units).
        reducer: the reducer the sequence is prepared with (default None: every token is present).
        encoded: `lab.encode(prompt)`, to skip the encoders.
        batch_size: perturbations per forward pass (captum's perturbations_per_eval).
        budget: most forward passes allowed (default `scoring.BUDGET_FORWARD_PASSES`).
        progress: show a progress bar.
    Returns:
        `Attribution`: a unit's score is f(prompt) - f(prompt with the unit occluded); positive = supports the target.
    """
    from captum.attr import FeatureAblation

    check_baseline(lab, baseline)
    prompt, resolved, prepared = _prepare(lab, prompt, target, reducer, encoded, batch_size)
    units = build_units(prepared.token_map, unit, grid=grid, seconds=seconds, modality=modality)
    units.require_disjoint("occlusion")
    cost = estimate("occlusion", len(units), continuations=resolved.passes)
    check_budget(
        cost, budget, f"occlusion over {len(units)} {units.grouping.name} units", cheaper_unit(unit, grid, seconds)
    )
    positions, feature_ids = unit_positions(prepared.token_map, units)
    scorer = Scorer(lab, resolved, batch_size, progress, cost.forward_passes, f"occlusion ({units.grouping.name})")
    forward = EmbeddingPerturbation(
        scorer,
        prepared.embeds,
        prepared.token_map,
        positions,
        baseline_fill(lab, prepared.embeds, prepared.token_map, baseline),
    )
    presence = torch.ones(1, len(positions), dtype=torch.float64)
    try:
        attributions = FeatureAblation(forward).attribute(
            presence,
            baselines=0.0,
            feature_mask=torch.from_numpy(feature_ids)[None],
            perturbations_per_eval=batch_size,
        )
    finally:
        scorer.close()
    unit_scores = _per_unit(attributions[0].numpy(), feature_ids, len(units))
    return Attribution(
        token_map=prepared.token_map,
        scores=row_scores(prepared.token_map, units, unit_scores),
        units=units,
        unit_scores=unit_scores,
        method="occlusion",
        target=resolved.describe(),
        baseline=describe_baseline(baseline),
        target_value=forward.value(np.ones(len(positions), dtype=bool)),
        forward_passes=scorer.forward_passes,
        details={**unit_details(units, modality), "batch_size": batch_size},
    )


def modality_shapley(
    lab,
    prompt,
    target=None,
    *,
    groups="modality",
    baseline="remove",
    grid=(2, 2),
    seconds: float = 1.0,
    modality=None,
    reducer=None,
    encoded=None,
    batch_size: int = 16,
    budget: int | None = None,
    progress: bool = True,
) -> Attribution:
    """Exact Shapley values of up to 8 groups of tokens (captum ShapleyValues with a feature mask).

    A coalition S is the prompt with only the groups in S present (the others removed, zeroed, ...); the value of
    a group is its average marginal contribution f(S + group) - f(S) over all orderings, so the values sum to
    f(all groups) - f(no group) (recorded as `completeness_gap`, 0 up to rounding). captum walks all n * n!
    orderings; the 2^n distinct coalitions are evaluated once each, batched.

    Args:
        groups: "modality" (text, image, video, audio present in the prompt), "item", another unit kind with few
            units, or {name: mask} groups (at most 8, sharing no token).
        baseline: what an absent group becomes: "remove" (default), "zero", "mean" or a token id.
        other arguments: as `occlusion`.
    Returns:
        `Attribution` with `baseline_value` = f(no group).
    """
    from captum.attr import ShapleyValues

    check_baseline(lab, baseline)
    prompt, resolved, prepared = _prepare(lab, prompt, target, reducer, encoded, batch_size)
    units = build_units(prepared.token_map, groups, grid=grid, seconds=seconds, modality=modality)
    units.require_disjoint("modality_shapley")
    count = len(units)
    if count > MAX_SHAPLEY_GROUPS:
        raise OmniLabInputError(
            f"exact Shapley values over {count} groups need {2**count} forward passes and captum walks "
            f"{count} x {count}! orderings; use at most {MAX_SHAPLEY_GROUPS} groups (groups='modality' or 'item', "
            "a modality=... filter, or fewer {name: mask} groups), or occlusion(unit=...) for many units"
        )
    cost = estimate("modality_shapley", count, continuations=resolved.passes)
    check_budget(cost, budget, f"exact Shapley values over {count} groups", "fewer groups")
    positions, feature_ids = unit_positions(prepared.token_map, units)
    scorer = Scorer(lab, resolved, batch_size, progress, cost.forward_passes, "modality Shapley")
    forward = EmbeddingPerturbation(
        scorer,
        prepared.embeds,
        prepared.token_map,
        positions,
        baseline_fill(lab, prepared.embeds, prepared.token_map, baseline),
    )
    subsets = (np.arange(2**count)[:, None] >> np.arange(count)[None, :]) & 1  # (2^n, n) every coalition
    presence = torch.ones(1, len(positions), dtype=torch.float64)
    try:
        forward.prefetch(subsets[:, feature_ids].astype(bool))
        attributions = ShapleyValues(forward).attribute(
            presence,
            baselines=0.0,
            feature_mask=torch.from_numpy(feature_ids)[None],
            perturbations_per_eval=count,
        )
    finally:
        scorer.close()
    unit_scores = _per_unit(attributions[0].numpy(), feature_ids, count)
    full = forward.value(np.ones(len(positions), dtype=bool))
    empty = forward.value(np.zeros(len(positions), dtype=bool))
    return Attribution(
        token_map=prepared.token_map,
        scores=row_scores(prepared.token_map, units, unit_scores),
        units=units,
        unit_scores=unit_scores,
        method="modality_shapley",
        target=resolved.describe(),
        baseline=describe_baseline(baseline),
        target_value=full,
        baseline_value=empty,
        completeness_gap=float(unit_scores.sum() - (full - empty)),
        forward_passes=scorer.forward_passes,
        details={**unit_details(units, modality)},
    )


def _per_unit(position_attributions: np.ndarray, feature_ids: np.ndarray, count: int) -> np.ndarray:
    """`(U,)` unit scores from captum's per-position attributions (every position of a unit carries its score)."""
    first = np.array([np.flatnonzero(feature_ids == unit)[0] for unit in range(count)])
    return position_attributions[first].astype(np.float64)
