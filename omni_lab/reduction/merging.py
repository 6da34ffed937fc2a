"""Token merging between the projector and the LLM: ToMe (arXiv 2210.09461) and AudioMerge (adjacent merging in time).

ToMe (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023) follows `bipartite_soft_matching` and
`merge_wavg` of `tome/merge.py` in github.com/facebookresearch/ToMe:

- the tokens alternate into sets A (even positions) and B (odd positions);
- each A token draws one edge to its most cosine-similar B token;
- the r edges of highest similarity merge their A token into its B token (several may land on one B token), with
  r at most half the tokens (`min(r, t // 2)`);
- a merged token is the size-weighted average of what it absorbed (`merge_wavg`: sum of size x value over the sum of
  sizes), and the next round's similarities are taken between those averages.

ToMe merges r tokens in every ViT layer; here it runs once on the post-projector embeddings, in rounds, until exactly
the budget is left: each round merges min(r, t // 2, tokens still to remove). Two differences from tome/merge.py:
between rounds the groups stay in sequence order (of their kept token) instead of "unmerged A, then B", so the
alternation keeps pairing sequence neighbours; and the edge sort is stable, so ties go to the earlier A token. A
group's kept token is the one B token in it that was never merged away.

AudioMerge is the adjacent-merging reducer the reference suggests for the Parakeet stream
(docs/token_reduction.md §3, audio: "adjacent-merge (ToMe-style in time)"; cf. SA-MAP's adjacent
merging and LTBM's locality-constrained matching): repeatedly merge the most similar pair of adjacent groups (cosine of
their size-weighted means; ties to the earliest pair) until the budget is left. Groups stay contiguous in time and
each is kept as its first token, so the kept tokens keep their order.

For both, `merged_into` points every dropped token at the kept token of its final group (chains resolved), so a
kept token stands for 1 + the tokens merged into it and the sizes sum to N. Scores: a token merged away scores
1 - the cosine similarity of the merge that absorbed it (low = redundant); a kept token scores `KEPT_SCORE` = 2, above
any cosine distance.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OmniLabInputError
from ..modalities import VISUAL
from .base import Reduction, ReductionItem, check_modality, check_rate, rate_budget

KEPT_SCORE = 2.0  # above every cosine distance: never merged away
CHUNK_ELEMENTS = 2**24  # similarity entries held at once in a bipartite matching


@dataclass
class MergeGroups:
    """The outcome of a merging pass over N tokens into K groups.

    Attributes:
        group_of: `(N,)` long, each token's group in 0..K-1.
        kept: `(K,)` long, the token kept for each group, ascending.
        scores: `(N,)`, 1 - the similarity at which the token was merged away, `KEPT_SCORE` for kept tokens.
        means: `(K, D)`, each group's size-weighted mean as the merging tracked it.
    """

    group_of: torch.Tensor
    kept: torch.Tensor
    scores: torch.Tensor
    means: torch.Tensor

    def reduction(self) -> Reduction:
        """`Reduction` with keep `(N,)`, scores `(N,)` and merged_into `(N,)` (-1 for kept tokens)."""
        keep = torch.zeros(len(self.group_of), dtype=torch.bool)
        keep[self.kept.cpu()] = True
        merged_into = self.kept.cpu()[self.group_of.cpu()]  # (N,)
        merged_into[keep] = -1
        return Reduction(keep=keep, scores=self.scores.float().cpu(), merged_into=merged_into)


class ToMe:
    """Merge image or video tokens by ToMe's bipartite soft matching until `rate` of them are gone.

    Args:
        rate: fraction of tokens to drop, in [0, 1): keeps max(1, int(N x (1 - rate))).
        r: tokens merged per round at most (ToMe's r); None merges as many as one matching allows (half).
    """

    modalities = VISUAL

    def __init__(self, rate: float, r: int | None = None):
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise OmniLabInputError(f"ToMe r (tokens merged per round) must be an int >= 1 or None, got {r!r}")
        self.rate = check_rate("ToMe", rate)
        self.r = r

    def __repr__(self) -> str:
        return f"ToMe(rate={self.rate})" if self.r is None else f"ToMe(rate={self.rate}, r={self.r})"

    def budget(self, item: ReductionItem) -> int:
        """max(1, int(N x (1 - rate)))."""
        check_modality(self, item)
        return rate_budget(item.num_tokens, self.rate)

    def __call__(self, item: ReductionItem) -> Reduction:
        return bipartite_merge(item.embeddings, self.budget(item), self.r).reduction()


class AudioMerge:
    """Merge the most similar adjacent audio tokens (in time) until `rate` of them are gone.

    Args:
        rate: fraction of tokens to drop, in [0, 1): keeps max(1, int(N x (1 - rate))) contiguous groups.
    """

    modalities = ("audio",)

    def __init__(self, rate: float):
        self.rate = check_rate("AudioMerge", rate)

    def __repr__(self) -> str:
        return f"AudioMerge(rate={self.rate})"

    def budget(self, item: ReductionItem) -> int:
        """max(1, int(N x (1 - rate)))."""
        check_modality(self, item)
        return rate_budget(item.num_tokens, self.rate)

    def __call__(self, item: ReductionItem) -> Reduction:
        return adjacent_merge(item.embeddings, self.budget(item)).reduction()


def _work_dtype(embeddings: torch.Tensor) -> torch.dtype:
    return torch.float64 if embeddings.dtype == torch.float64 else torch.float32


def bipartite_merge(embeddings: torch.Tensor, count: int, r: int | None = None) -> MergeGroups:
    """ToMe's bipartite soft matching, repeated until `count` groups are left.

    Args:
        embeddings: `(N, D)`; merged in float32 (float64 stays float64) on its own device.
        count: groups to leave, 1 <= count <= N.
        r: merges per round at most; None for half the groups.
    Returns:
        `MergeGroups` (on the embeddings' device).
    """
    values = embeddings.detach().to(_work_dtype(embeddings))
    device = values.device
    total = values.shape[0]
    sums = values.clone()  # (G, D) size-weighted sums of the current groups
    sizes = torch.ones(total, dtype=values.dtype, device=device)  # (G,)
    group_of = torch.arange(total, device=device)  # (N,)
    kept = torch.arange(total, device=device)  # (G,)
    scores = torch.full((total,), KEPT_SCORE, dtype=values.dtype, device=device)
    while len(kept) > count:
        groups = len(kept)
        merges = min(groups // 2, groups - count, r or groups)
        unit = F.normalize(sums / sizes[:, None], dim=-1)  # (G, D)
        similarity, match = _best_matches(unit[0::2], unit[1::2])  # (|A|,), (|A|,)
        edges = torch.argsort(similarity, descending=True, stable=True)[:merges]
        source = 2 * edges  # (merges,) A groups merged away
        target = 2 * match[edges] + 1  # (merges,) the B groups they join
        scores[kept[source]] = 1 - similarity[edges]
        sums.index_add_(0, target, sums[source])
        sizes.index_add_(0, target, sizes[source])
        destination = torch.arange(groups, device=device)
        destination[source] = target
        survives = torch.ones(groups, dtype=torch.bool, device=device)
        survives[source] = False
        renumber = torch.cumsum(survives, 0) - 1  # (G,) new index of each surviving group
        group_of = renumber[destination[group_of]]
        sums, sizes, kept = sums[survives], sizes[survives], kept[survives]
    return MergeGroups(group_of, kept, scores, sums / sizes[:, None])


def _best_matches(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `a` `(A, D)`, the largest dot product with a row of `b` `(B, D)` and that row (first on ties)."""
    best = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    index = torch.empty(a.shape[0], dtype=torch.long, device=a.device)
    step = max(1, CHUNK_ELEMENTS // max(1, b.shape[0]))
    for start in range(0, a.shape[0], step):
        best[start : start + step], index[start : start + step] = (a[start : start + step] @ b.T).max(dim=-1)
    return best, index


def adjacent_merge(embeddings: torch.Tensor, count: int) -> MergeGroups:
    """Greedy agglomeration of adjacent groups: merge the most cosine-similar neighbouring pair until `count` remain.

    A heap of neighbouring pairs, with stale entries skipped, makes it O(N log N) pair evaluations.

    Args:
        embeddings: `(N, D)` in time order; merged in float32 (float64 stays float64) on the CPU.
        count: groups to leave, 1 <= count <= N.
    Returns:
        `MergeGroups` (on the CPU); each group is a contiguous run kept as its first token.
    """
    values = embeddings.detach().to(_work_dtype(embeddings)).cpu().numpy()
    total = len(values)
    sums = values.copy()  # (N, D) indexed by each group's first token
    sizes = np.ones(total)
    following = np.arange(1, total + 1)  # first token of the next group (total = none)
    preceding = np.arange(-1, total - 1)  # first token of the previous group (-1 = none)
    alive = np.ones(total, dtype=bool)
    version = np.zeros(total, dtype=np.int64)  # bumped when a group grows, to retire its old heap entries
    scores = np.full(total, KEPT_SCORE)
    unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    initial = (unit[:-1] * unit[1:]).sum(axis=1)  # (N - 1,)
    heap = [(-float(similarity), left, left + 1, 0, 0) for left, similarity in enumerate(initial)]
    heapq.heapify(heap)
    groups = total
    while groups > count:
        negative, left, right, left_version, right_version = heapq.heappop(heap)
        if not (alive[left] and alive[right] and version[left] == left_version and version[right] == right_version):
            continue
        sums[left] += sums[right]
        sizes[left] += sizes[right]
        alive[right] = False
        scores[right] = 1 + negative  # 1 - similarity
        version[left] += 1
        following[left] = following[right]
        if following[left] < total:
            preceding[following[left]] = left
        for first, second in ((preceding[left], left), (left, following[left])):
            if first >= 0 and second < total:
                similarity = _cosine(sums[first] / sizes[first], sums[second] / sizes[second])
                heapq.heappush(heap, (-similarity, int(first), int(second), version[first], version[second]))
        groups -= 1
    kept = np.flatnonzero(alive)
    group_of = np.cumsum(alive) - 1  # (N,) contiguous groups, each opened by its kept first token
    means = sums[kept] / sizes[kept, None]
    return MergeGroups(
        torch.from_numpy(group_of), torch.from_numpy(kept), torch.from_numpy(scores), torch.from_numpy(means)
    )


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-24))
