"""UniformTemporal: keep every k-th tubelet of a video whole, the temporal-subsampling baseline.

Dropping whole tubelets at a fixed stride is what sampling the video at a lower frame rate would do, but after the
encoder, so it can be compared with content-aware reducers (EVS, PixelDiff, DivPrune) on the same encoded frames
(docs/token_reduction.md §3, "uniform pooling" at hook point H2). `tubelet_layout` reads the
(tubelets, tokens per tubelet) layout every video reducer of this package works on.
"""

from __future__ import annotations

import torch

from ..errors import OmniLabInputError
from .base import Reduction, ReductionItem, check_modality, check_rate


def tubelet_layout(item: ReductionItem) -> tuple[int, int]:
    """(tubelets, tokens per tubelet) of a video item, checked against its grid `(T, H, W)` and token count."""
    if len(item.grid) != 3 or item.grid[0] < 1:
        raise OmniLabInputError(f"video item {item.index}: expected a (T, H, W) grid, got {item.grid}")
    tubelets = int(item.grid[0])
    per_tubelet = int(item.grid[1]) * int(item.grid[2])
    if tubelets * per_tubelet != item.num_tokens:
        raise OmniLabInputError(
            f"video item {item.index}: grid {tuple(item.grid)} describes {tubelets * per_tubelet} tokens, "
            f"the embeddings hold {item.num_tokens}"
        )
    return tubelets, per_tubelet


class UniformTemporal:
    """Keep tubelets 0, k, 2k, ... whole and drop the others.

    Args:
        keep_every: the stride k >= 1 (1 keeps everything).
    """

    modalities = ("video",)

    def __init__(self, keep_every: int):
        if isinstance(keep_every, bool) or not isinstance(keep_every, int) or keep_every < 1:
            raise OmniLabInputError(f"UniformTemporal keep_every must be an int >= 1, got {keep_every!r}")
        self.keep_every = keep_every

    @classmethod
    def at_rate(cls, rate: float) -> UniformTemporal:
        """The stride nearest a drop rate: keep every k-th tubelet with k = round(1 / (1 - rate))."""
        rate = check_rate("UniformTemporal", rate)
        return cls(max(1, round(1.0 / (1.0 - rate))))

    @property
    def rate(self) -> float:
        """The fraction of tubelets it drops on a long video: 1 - 1 / keep_every."""
        return 1.0 - 1.0 / self.keep_every

    def __repr__(self) -> str:
        return f"UniformTemporal(keep_every={self.keep_every})"

    def budget(self, item: ReductionItem) -> int:
        """tokens per tubelet x ceil(T / keep_every)."""
        check_modality(self, item)
        tubelets, per_tubelet = tubelet_layout(item)
        return per_tubelet * -(-tubelets // self.keep_every)

    def __call__(self, item: ReductionItem) -> Reduction:
        """Returns: `Reduction` with `keep` `(N,)` (whole tubelets) and no scores (nothing is ranked)."""
        check_modality(self, item)
        tubelets, per_tubelet = tubelet_layout(item)
        kept_tubelets = torch.arange(tubelets) % self.keep_every == 0  # (T,)
        return Reduction(keep=kept_tubelets.repeat_interleave(per_tubelet))  # (T * H * W,)
