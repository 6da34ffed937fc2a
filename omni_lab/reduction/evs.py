"""Efficient Video Sampling (EVS, arXiv 2510.14624) as the release runs it: transformers' own retention mask.

The keep mask comes from `transformers.models.nemotron_h_omni.modeling_nemotron_h_omni.compute_retention_mask`, the
function the model's forward applies with `config.video_pruning_rate`, so omni-lab prunes exactly the tokens the
model would: every token of the first tubelet, then the tokens least similar (cosine, post-projector) to the same
cell of the previous tubelet, keeping max(tokens per tubelet, int(total x (1 - rate))) in a stable order.
`scores` reports the quantity that mask ranks (1 - cosine similarity; 255 for the first tubelet).
"""

from __future__ import annotations

import torch

from ..errors import OmniLabInputError
from .base import Reduction, ReductionItem


class EVS:
    """Prune temporally static video tokens at `rate` (the fraction to drop), exactly as the released model does."""

    modalities = ("video",)

    def __init__(self, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise OmniLabInputError(f"EVS rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def __repr__(self) -> str:
        return f"EVS(rate={self.rate})"

    def budget(self, item: ReductionItem) -> int:
        """max(tokens per tubelet, int(total x (1 - rate))), as the release computes it."""
        tubelets = item.grid[0]
        per_tubelet = item.num_tokens // tubelets
        return max(per_tubelet, int(tubelets * per_tubelet * (1 - self.rate)))

    def __call__(self, item: ReductionItem) -> Reduction:
        from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

        tubelets = item.grid[0]
        keep = compute_retention_mask(item.embeddings, tubelets, self.rate)
        per_tubelet = item.embeddings.reshape(tubelets, -1, item.embeddings.shape[-1]).float()
        dissimilarity = 1 - torch.nn.functional.cosine_similarity(per_tubelet[1:], per_tubelet[:-1], dim=-1)
        scores = torch.cat([torch.full_like(per_tubelet[:1, :, 0], 255.0), dissimilarity]).reshape(-1)
        return Reduction(keep=keep, scores=scores)
