"""VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467): keep the "dominant" tokens the vision encoder's CLS token
attends to most, and merge the rest by similarity into a few "contextual" tokens.

Official code: github.com/dvlab-research/VisionZip, `CLIPVisionTower_VisionZip.forward` in
`visionzip/clip_encoder.py` (with the attention patch in `visionzip/utils.py` that keeps the layer's keys as
`metric`):

1. dominant: the CLS token's attention to every patch at the layer whose features LLaVA reads (-2), summed over
   heads; the top `dominant` patches (plus the CLS token itself) are kept;
2. contextual: the remaining tokens, in sequence order; every `step = len // contextual`-th of them is a target (the
   first `contextual`); every other one joins the target whose key (`metric`, the layer's keys averaged over heads,
   L2-normalised) is most similar, and each contextual token is the target plus the mean of the tokens that joined;
3. defaults 54 dominant + 10 contextual for 64 kept tokens (108 + 20, 162 + 30): contextual = 10/64 of the budget.

On this model (docs/token_reduction.md §3; hook point H2 with an encoder signal from H1):

- attention read: the last C-RADIO block's, recomputed from its hooked queries and keys (the tower runs SDPA, which
  returns no weights; `reduction/signals.py`): Nemotron Omni feeds the projector the tower's *final* features, so the
  last block plays the role of LLaVA's layer -2. C-RADIO has one CLS ("summary") token per teacher and 6 registers:
  the score is the attention of the CLS tokens, averaged over them (registers excluded: they carry no summary);
- the LLM's tokens are 2 x 2 pixel-shuffled patch groups, so a token's score is the sum over its four patches, and its
  metric is its four patches' head-averaged keys concatenated in the shuffle order;
- VisionZip acts on the encoder's output before the projector; here it selects post-projector tokens (H2) with the
  encoder's scores, so the pixel-shuffle grid and the projector stay as trained (as ToMe does, merging.py); the CLS
  token is not among the LLM's tokens here (the release drops the prefix tokens), so it is not kept;
- a contextual token enters the LLM as the mean of its target and the tokens that joined it (the pipeline's merge,
  `forward.merge_groups`), not target + mean of the others: the official sum has twice a token's scale;
- `VisionZip(rate)` keeps max(1, floor(N (1 - rate))) tokens per image or video, of which round(10/64 x kept) are
  contextual (none when only one token is kept or nothing is dropped); a video's tubelets compete together (each
  tubelet's CLS attention is a distribution over its own patches, so the scores are comparable shares); ties go to
  the earlier token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import OmniLabInputError
from .base import Reduction, ReductionItem, check_modality, check_rate, rate_budget

CONTEXTUAL_SHARE = 10 / 64  # the official 54 + 10 split of 64 tokens


class VisionZip:
    """Keep the tokens the vision tower's CLS tokens attend to most; merge the rest into a few contextual tokens.

    Args:
        rate: fraction of each image's or video's tokens to drop, in [0, 1).
        contextual_share: share of the kept tokens that are contextual (merged) ones; 10/64 as the paper.
    """

    modalities = ("image", "video")
    signals = ("vision.summary_attention", "vision.keys")

    def __init__(self, rate: float, contextual_share: float = CONTEXTUAL_SHARE):
        self.rate = check_rate("VisionZip", rate)
        if isinstance(contextual_share, bool) or not isinstance(contextual_share, (int, float)):
            raise OmniLabInputError(f"VisionZip contextual_share must be a number in [0, 1), got {contextual_share!r}")
        if not 0.0 <= float(contextual_share) < 1.0:
            raise OmniLabInputError(f"VisionZip contextual_share must be in [0, 1), got {contextual_share!r}")
        self.contextual_share = float(contextual_share)

    def __repr__(self) -> str:
        share = "" if self.contextual_share == CONTEXTUAL_SHARE else f", contextual_share={self.contextual_share}"
        return f"VisionZip(rate={self.rate}{share})"

    def budget(self, item: ReductionItem) -> int:
        """max(1, floor(N x (1 - rate))): dominant plus contextual tokens."""
        check_modality(self, item)
        return rate_budget(item.num_tokens, self.rate)

    def split(self, total: int, budget: int) -> tuple[int, int]:
        """(dominant, contextual) tokens for an item of `total` tokens keeping `budget`."""
        if budget >= total or budget < 2:
            return budget, 0
        contextual = min(budget - 1, max(1, round(budget * self.contextual_share))) if self.contextual_share else 0
        return budget - contextual, contextual

    def __call__(self, item: ReductionItem) -> Reduction:
        """Returns: `Reduction` with keep `(N,)`, scores `(N,)` (the CLS attention) and merged_into `(N,)`."""
        budget = self.budget(item)
        missing = [name for name in self.signals if name not in (item.signals or {})]
        if missing:
            raise OmniLabInputError(
                f"VisionZip needs the encoder signals {missing} for {item.modality} {item.index}; run it through "
                "lab.run / lab.prepare, which record them (omni_lab.reduction.signals)"
            )
        attention = item.signals["vision.summary_attention"].float().cpu()  # (N,)
        keys = item.signals["vision.keys"].float().cpu()  # (N, F)
        return visionzip_select(attention, keys, *self.split(item.num_tokens, budget))


def visionzip_select(attention: torch.Tensor, keys: torch.Tensor, dominant: int, contextual: int) -> Reduction:
    """VisionZip's selection over one item.

    Args:
        attention: `(N,)` the CLS attention per token; keys: `(N, F)` the metric per token.
        dominant, contextual: how many dominant and contextual tokens to keep.
    Returns:
        `Reduction(keep, scores=attention, merged_into)`.
    """
    total = attention.shape[0]
    order = torch.argsort(attention, descending=True, stable=True)
    keep = torch.zeros(total, dtype=torch.bool)
    keep[order[:dominant]] = True
    merged_into = torch.full((total,), -1, dtype=torch.long)
    rest = torch.nonzero(~keep).flatten()  # ascending: sequence order
    if contextual and len(rest):
        step = max(1, len(rest) // contextual)
        target_local = torch.arange(0, len(rest), step)[:contextual]
        targets = rest[target_local]
        is_target = torch.zeros(len(rest), dtype=torch.bool)
        is_target[target_local] = True
        others = rest[~is_target]
        metric = F.normalize(keys, dim=-1)
        similarity = metric[others] @ metric[targets].T  # (others, contextual)
        merged_into[others] = targets[similarity.argmax(dim=1)]
        keep[targets] = True
    return Reduction(keep=keep, scores=attention.clone(), merged_into=merged_into)
