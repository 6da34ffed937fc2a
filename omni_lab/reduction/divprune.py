"""DivPrune: diversity-based token pruning (Alvar et al., CVPR 2025, arXiv 2503.02175).

Keeps the subset of an item's post-projector embeddings that greedily maximises the minimum pairwise cosine distance
among the kept tokens (a max-min diversity problem). The selection follows the official implementation, `DivPrune` in
`LLaVA/llava/model/llava_arch.py` of github.com/vbdi/divprune:

- distance = 1 - cosine similarity;
- first token: the one whose nearest other token is farthest, i.e. the argmax over tokens of the second-smallest
  entry of its distance column (`torch.topk(m2, 2, dim=0, largest=False).values[1, :]`; the smallest is its own
  zero distance);
- then, repeatedly, the token whose minimum distance to the tokens selected so far is largest (the paper's Eq. 3);
  ties go to the lowest index, as `torch.argmax` gives.

Two deliberate differences, neither of which changes the choice on tokens with distinct directions: tokens already
selected are excluded from later picks (the official loop relies on their zero self-distance, so once only duplicates
of selected tokens remain it can pick a token twice and keep fewer than its budget), and the N x N distance matrix is
never held: the first pick computes nearest-neighbour distances in column chunks and the greedy keeps a running
`(N,)` minimum. Memory is O(N) beyond one chunk; time is O(N^2 D) for the first pick and O(N k D) for the other k - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modalities import MEDIA
from .base import Reduction, ReductionItem, check_modality, check_rate, rate_budget

CHUNK_ELEMENTS = 2**24  # distance entries held at once while finding nearest neighbours


class DivPrune:
    """Keep the max-min diverse subset (cosine distance) of each item's embeddings, dropping `rate` of them."""

    modalities = MEDIA

    def __init__(self, rate: float):
        self.rate = check_rate("DivPrune", rate)

    def __repr__(self) -> str:
        return f"DivPrune(rate={self.rate})"

    def budget(self, item: ReductionItem) -> int:
        """max(1, int(N x (1 - rate)))."""
        check_modality(self, item)
        return rate_budget(item.num_tokens, self.rate)

    def __call__(self, item: ReductionItem) -> Reduction:
        """Returns: `Reduction` with `keep` `(N,)` and `scores` `(N,)`.

        A kept token's score is its minimum cosine distance to the tokens picked before it (for the first pick, to its
        nearest neighbour: the quantity the official rule maximises); a dropped token's score is its minimum cosine
        distance to the kept set, which never exceeds the score of any pick after the first.
        """
        order, gains, min_distance = divprune_order(item.embeddings, self.budget(item))
        keep = torch.zeros(item.num_tokens, dtype=torch.bool, device=order.device)
        keep[order] = True
        scores = min_distance.clone()
        scores[order] = gains
        return Reduction(keep=keep.cpu(), scores=scores.float().cpu())


def divprune_order(embeddings: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy max-min diverse selection of `count` rows of `embeddings` under cosine distance.

    Args:
        embeddings: `(N, D)`; computed in float32 (float64 stays float64) on its own device.
        count: how many rows to select, 1 <= count <= N.
    Returns:
        order `(count,)` long: the selected rows in the order picked; gains `(count,)`: each pick's minimum distance to
        the earlier picks (the first pick's: to its nearest neighbour, 0 when N = 1); min_distance `(N,)`: every
        row's minimum distance to the selected set.
    """
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    unit = F.normalize(embeddings.to(dtype), dim=-1)  # (N, D)
    total = unit.shape[0]
    order = torch.empty(count, dtype=torch.long, device=unit.device)
    gains = torch.empty(count, dtype=dtype, device=unit.device)
    nearest = _nearest_neighbour_distance(unit)  # (N,)
    order[0] = torch.argmax(nearest)
    gains[0] = nearest[order[0]]
    selected = torch.zeros(total, dtype=torch.bool, device=unit.device)
    selected[order[0]] = True
    min_distance = 1 - unit @ unit[order[0]]  # (N,)
    for step in range(1, count):
        candidates = min_distance.masked_fill(selected, -torch.inf)  # (N,)
        pick = torch.argmax(candidates)
        order[step], gains[step] = pick, candidates[pick]
        selected[pick] = True
        min_distance = torch.minimum(min_distance, 1 - unit @ unit[pick])
    return order, gains, min_distance


def _nearest_neighbour_distance(unit: torch.Tensor) -> torch.Tensor:
    """`(N,)`: the second-smallest cosine distance of each unit row to all rows (its own ~0 is the smallest)."""
    total = unit.shape[0]
    if total == 1:
        return torch.zeros(1, dtype=unit.dtype, device=unit.device)
    nearest = torch.empty(total, dtype=unit.dtype, device=unit.device)
    step = max(1, CHUNK_ELEMENTS // total)
    for start in range(0, total, step):
        distance = 1 - unit @ unit[start : start + step].T  # (N, chunk)
        nearest[start : start + step] = torch.topk(distance, 2, dim=0, largest=False).values[1]
    return nearest
