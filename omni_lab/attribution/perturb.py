"""captum's forward function for perturbations of the merged embeddings: unit switches in, target values out.

captum's perturbation methods (FeatureAblation, ShapleyValues) perturb an input tensor with a feature mask and
read a forward function's output. Here the input is one *presence switch* per LLM position covered by a unit,
`(1, P)` ones, and the feature mask gives each position its unit's id (from the token map), so captum switches whole
units off and scatters each unit's attribution back onto its positions. `EmbeddingPerturbation` turns a batch of
switch vectors into sequences of merged embeddings:

    "remove"   the switched-off positions are dropped from the sequence (what a pruner does; each perturbation is a
               shorter sequence, batched with the others of the same length)
    "zero"     their embeddings become zeros
    "mean"     their embeddings become the mean embedding of their media item (text: of the text tokens)
    int id     their embeddings become that token's embedding (captum TextTokenInput's baseline id)

Switches rather than the `(1, L, D)` embeddings themselves are what captum perturbs because captum clones its input
per perturbation: on the released model a 33K-token video prompt's embeddings are 180 MB in bf16.

Results are memoised per switch pattern, so exact Shapley values (captum evaluates n * n! orderings) cost the 2^n
distinct coalitions, which `prefetch` evaluates in length-sorted batches before captum asks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..modalities import MEDIA
from .units import Partition, attributable_rows

BASELINES = ("remove", "zero", "mean")


def describe_baseline(baseline) -> str:
    return f"token {baseline}" if _is_token_id(baseline) else str(baseline)


def _is_token_id(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_baseline(lab, baseline) -> None:
    """OmniLabInputError unless `baseline` is "remove", "zero", "mean" or a token id of this model."""
    if isinstance(baseline, str) and baseline in BASELINES:
        return
    vocabulary = int(lab.model.get_input_embeddings().weight.shape[0])
    if _is_token_id(baseline) and 0 <= baseline < vocabulary:
        return
    raise OmniLabInputError(
        f"baseline={baseline!r}: choose 'remove' (drop the tokens), 'zero', 'mean' (the item's mean embedding) or a "
        f"token id in [0, {vocabulary}) whose embedding replaces them"
    )


def unit_positions(token_map, units: Partition) -> tuple[np.ndarray, np.ndarray]:
    """LLM positions covered by the (disjoint) units, and each one's unit id.

    Returns:
        (positions `(P,)` int64 ascending, feature ids `(P,)` int64 in 0..U-1).
    """
    positions = np.asarray(token_map["position"])
    ids = np.full(len(token_map), -1, dtype=np.int64)
    for index, unit in enumerate(units):
        ids[unit.rows] = index
    rows = np.flatnonzero(ids >= 0)
    order = np.argsort(positions[rows])
    return positions[rows][order].astype(np.int64), ids[rows][order]


def baseline_fill(lab, embeds: torch.Tensor, token_map, baseline) -> torch.Tensor | None:
    """`(L, D)` embeddings an absent position takes ("zero", "mean", token id); None for "remove"."""
    if baseline == "remove":
        return None
    base = embeds[0]
    if baseline == "zero":
        return torch.zeros_like(base)
    if _is_token_id(baseline):
        embedding = lab.model.get_input_embeddings()
        with torch.no_grad():
            token = embedding(torch.tensor([int(baseline)], device=embedding.weight.device))[0]
        return token.to(base.dtype).expand_as(base).clone()
    fill = base.clone()
    positions = np.asarray(token_map["position"])
    text = attributable_rows(token_map) & (token_map["modality"] == "text")  # the text's mean, one for all spans
    media = token_map.partition("item").only(MEDIA).restrict(token_map["kept"])  # each media item's own mean
    for rows in [text, *(unit.rows for unit in media)]:
        if rows.any():
            index = torch.from_numpy(positions[rows]).to(base.device)
            fill[index] = base[index].mean(dim=0)
    return fill


class EmbeddingPerturbation:
    """captum forward function: `(k, P)` presence switches -> `(k,)` target values (float64).

    Args:
        scorer: the `Scorer`.
        embeds: `(1, L, D)` the prompt's merged embeddings (`lab.prepare(...).embeds`).
        token_map: the prompt's reduced token map.
        positions: `(P,)` the LLM positions the switches stand for.
        fill: `(L, D)` baseline embeddings, or None to remove switched-off positions.
    """

    def __init__(self, scorer, embeds: torch.Tensor, token_map, positions: np.ndarray, fill: torch.Tensor | None):
        self.scorer = scorer
        self.embeds = embeds
        self.token_map = token_map
        self.positions = positions
        self.fill = fill
        self.cache: dict[bytes, float] = {}
        if fill is None and len(positions) == embeds.shape[1]:
            raise OmniLabInputError(
                "the units cover every token, so removing them all leaves no sequence to predict the answer from; "
                "leave some tokens (e.g. the control tokens) outside the groups or use baseline='zero'"
            )

    def key(self, present: np.ndarray) -> bytes:
        return np.packbits(present).tobytes()

    def value(self, present: np.ndarray) -> float:
        """The target with the given positions present (evaluated if not yet memoised)."""
        self.prefetch(present[None])
        return self.cache[self.key(present)]

    def __call__(self, presence: torch.Tensor) -> torch.Tensor:
        present = presence.detach().cpu().numpy() > 0.5  # (k, P)
        self.prefetch(present)
        return torch.tensor([self.cache[self.key(row)] for row in present], dtype=torch.float64)

    def prefetch(self, present: np.ndarray) -> None:
        """Evaluate every not yet memoised switch pattern of `present` `(m, P)`, batching equal lengths."""
        pending: dict[bytes, np.ndarray] = {}
        for row in present:
            key = self.key(row)
            if key not in self.cache:
                pending.setdefault(key, row)
        if not pending:
            return
        keys = list(pending)
        patterns = np.stack([pending[key] for key in keys])  # (m, P)
        lengths = self.embeds.shape[1] - (~patterns).sum(axis=1) if self.fill is None else np.zeros(len(keys))
        order = np.argsort(lengths, kind="stable")
        batch = self.scorer.batch_size
        with torch.inference_mode():
            start = 0
            while start < len(order):
                stop = start
                while stop < len(order) and stop - start < batch and lengths[order[stop]] == lengths[order[start]]:
                    stop += 1
                chosen = order[start:stop]
                embeds, token_map = self._sequences(patterns[chosen])
                values = self.scorer(embeds, token_map).double().cpu().numpy()
                for index, value in zip(chosen, values, strict=True):
                    self.cache[keys[index]] = float(value)
                start = stop

    def _sequences(self, patterns: np.ndarray):
        """`(b, L', D)` perturbed sequences and the token map they follow."""
        count, length = patterns.shape[0], self.embeds.shape[1]
        absent = np.zeros((count, length), dtype=bool)
        absent[:, self.positions] = ~patterns
        absent_tensor = torch.from_numpy(absent).to(self.embeds.device)
        if self.fill is not None:
            embeds = torch.where(absent_tensor[..., None], self.fill[None], self.embeds)  # (b, L, D)
            return embeds, self.token_map
        embeds = torch.stack([self.embeds[0][~absent_tensor[i]] for i in range(count)])  # (b, L', D)
        # Removal: rows of one batch drop different positions of the same count; with no interventions the language
        # model only needs the layout's length, so the first pattern's map stands for the batch.
        return embeds, removed_map(self.token_map, absent[0])


def removed_map(token_map, absent_positions: np.ndarray):
    """The token map with the rows at `absent_positions` (bool over positions) no longer kept."""
    positions = np.asarray(token_map["position"])
    keep = np.asarray(token_map["kept"], dtype=bool).copy()
    rows = np.flatnonzero(keep)
    keep[rows[absent_positions[positions[rows]]]] = False
    return token_map.with_reduction(keep)
