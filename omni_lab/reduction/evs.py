"""Efficient Video Sampling (EVS, arXiv 2510.14624) as the release runs it: transformers' own retention mask.

The keep mask is the one `transformers.models.nemotron_h_omni.modeling_nemotron_h_omni.compute_retention_mask`
gives, the function the model's forward applies with `config.video_pruning_rate`, so omni-lab prunes exactly the
tokens the model would: every token of the first tubelet, then the tokens least similar (cosine, post-projector) to
the same cell of the previous tubelet, keeping max(tokens per tubelet, int(total x (1 - rate))) in a stable order
(docs/token_reduction.md §2). `scores` are `omni_lab.kernels.evs_scores`: the very values that function sorts (the
same ops: 1 - cosine similarity in the embeddings' dtype, 255 for the first tubelet), and the mask is their stable
descending sort cut at the budget (`kernels.evs_keep`), so the similarities are computed once rather than once for
the mask and again for the scores. tests/test_kernels.py and tests/test_reducers.py check the mask against
transformers' own, bit for bit, and tests/test_parity.py the run against the model's forward at its EVS rate.
"""

from __future__ import annotations

from .base import Reduction, ReductionItem, check_rate


class EVS:
    """Prune temporally static video tokens at `rate` (the fraction to drop), exactly as the released model does."""

    modalities = ("video",)

    def __init__(self, rate: float):
        self.rate = check_rate("EVS", rate)

    def __repr__(self) -> str:
        return f"EVS(rate={self.rate})"

    def budget(self, item: ReductionItem) -> int:
        """max(tokens per tubelet, int(total x (1 - rate))), as the release computes it."""
        tubelets = item.grid[0]
        per_tubelet = item.num_tokens // tubelets
        return max(per_tubelet, int(tubelets * per_tubelet * (1 - self.rate)))

    def __call__(self, item: ReductionItem) -> Reduction:
        """Scores from `omni_lab.kernels.evs_scores`, and the keep mask transformers' `compute_retention_mask`
        would give, ranked from those scores (`kernels.evs_keep`).

        Args:
            item: a video item, embeddings `(T * H * W, D)` in tubelet-major order, grid `(T, H, W)`.
        Returns:
            `Reduction(keep (N,) bool, scores (N,) in the embeddings' dtype)`.
        """
        from .. import kernels

        tubelets = item.grid[0]
        scores = kernels.evs_scores(item.embeddings, tubelets)  # (N,)
        return Reduction(keep=kernels.evs_keep(scores, tubelets, self.rate), scores=scores)
