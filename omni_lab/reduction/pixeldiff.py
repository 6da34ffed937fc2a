"""PixelDiff: the pixel-space variant of Efficient Video Sampling (EVS, arXiv 2510.14624).

The EVS paper (as summarised in docs/token_reduction.md §2) scores each patch by the L1 distance in
RGB between it and the same patch in the previous frame, keeps every patch of the first frame as an anchor and keeps
the most dynamic of the rest. The released model runs EVS on post-projector embeddings instead (`evs.EVS`).
PixelDiff applies the paper's pixel rule at the model's token granularity, so the two compare at equal budgets:

- a token is one cell of the merged grid of one tubelet; its pixels are its box (`x0, y0, x1, y1` of the token map,
  rounded to whole pixels) in the frames the tubelet packs (`frames`);
- a tubelet's picture is the mean of its frames, in RGB scaled to [0, 1] (the tubelet embedder sees its frames
  together; the last tubelet of an odd-length video holds one frame);
- score = mean |difference| over the box's pixels and the three channels between this tubelet's picture and the
  previous tubelet's; every token of the first tubelet scores 255, above any difference, as EVS forces it;
- keep max(tokens per tubelet, int(total x (1 - rate))) tokens by a stable descending sort of the scores, as the
  released EVS does (a fixed count in place of the paper's percentile threshold, so the budget is known up front).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OmniLabInputError
from .base import Reduction, ReductionItem, check_modality, check_rate
from .temporal import tubelet_layout

FIRST_TUBELET_SCORE = 255.0  # the constant EVS gives the anchor tubelet


class PixelDiff:
    """Keep the video tokens whose pixels change most since the previous tubelet, dropping `rate` of them."""

    modalities = ("video",)

    def __init__(self, rate: float):
        self.rate = check_rate("PixelDiff", rate)

    def __repr__(self) -> str:
        return f"PixelDiff(rate={self.rate})"

    def budget(self, item: ReductionItem) -> int:
        """max(tokens per tubelet, int(total x (1 - rate))), EVS's count."""
        check_modality(self, item)
        tubelets, per_tubelet = tubelet_layout(item)
        return max(per_tubelet, int(tubelets * per_tubelet * (1 - self.rate)))

    def __call__(self, item: ReductionItem) -> Reduction:
        """Returns: `Reduction` with `keep` `(N,)` and `scores` `(N,)` (mean |RGB change| in [0, 1]; 255 first)."""
        count = self.budget(item)
        scores = pixel_change_scores(item)  # (N,)
        order = torch.argsort(scores, descending=True, stable=True)
        keep = torch.zeros(item.num_tokens, dtype=torch.bool)
        keep[order[:count]] = True
        return Reduction(keep=keep, scores=scores)


def pixel_change_scores(item: ReductionItem) -> torch.Tensor:
    """`(N,)` float32: each token's mean |RGB change| against the same box of the previous tubelet.

    Args:
        item: a video item with `media` (a `VideoClip`, frames `(F, H, W, 3)` uint8) and `tokens` (its token-map rows:
            `tubelet`, `frames`, `x0, y0, x1, y1`), one row per embedding.
    Returns:
        scores in [0, 1], and `FIRST_TUBELET_SCORE` for the tokens of tubelet 0.
    """
    tubelets, _ = tubelet_layout(item)
    clip, tokens = item.media, item.tokens
    if getattr(clip, "frames", None) is None or tokens is None:
        raise OmniLabInputError(
            f"PixelDiff needs the decoded frames (item.media, a VideoClip) and the token-map rows (item.tokens) of "
            f"video {item.index}"
        )
    if len(tokens) != item.num_tokens:
        raise OmniLabInputError(f"video {item.index}: {len(tokens)} token-map rows for {item.num_tokens} embeddings")
    tubelet_of = np.asarray(tokens["tubelet"], dtype=np.int64)  # (N,)
    boxes = _pixel_boxes(tokens, clip.frames.shape[2], clip.frames.shape[1])  # (N, 4) x0, y0, x1, y1
    present, first_rows = np.unique(tubelet_of, return_index=True)
    if present.tolist() != list(range(tubelets)):
        raise OmniLabInputError(f"video {item.index}: token-map tubelets {present.tolist()} for {tubelets} tubelets")
    frames_of = [tuple(tokens["frames"].iloc[row]) for row in first_rows.tolist()]  # source frames per tubelet

    scores = np.full(item.num_tokens, FIRST_TUBELET_SCORE, dtype=np.float64)
    previous = _tubelet_picture(clip, frames_of[0])
    for tubelet in range(1, tubelets):
        picture = _tubelet_picture(clip, frames_of[tubelet])
        change = np.abs(picture - previous).mean(axis=-1)  # (H, W)
        integral = np.pad(change.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (H + 1, W + 1)
        rows = np.flatnonzero(tubelet_of == tubelet)
        x0, y0, x1, y1 = boxes[rows].T
        sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        scores[rows] = sums / ((x1 - x0) * (y1 - y0))
        previous = picture
    return torch.from_numpy(scores).float()


def _tubelet_picture(clip, frame_indices: tuple[int, ...]) -> np.ndarray:
    """`(H, W, 3)` float64 in [0, 1]: the mean of the tubelet's frames."""
    positions = [clip.frame_indices.index(frame) for frame in frame_indices]
    return clip.frames[positions].astype(np.float64).mean(axis=0) / 255.0


def _pixel_boxes(tokens, width: int, height: int) -> np.ndarray:
    """`(N, 4)` int64 whole-pixel boxes: the token-map boxes rounded, each at least one pixel, inside the frame.

    Rounding both edges of neighbouring cells to the same value keeps the cells a partition of the frame.
    """
    x0 = np.clip(np.rint(np.asarray(tokens["x0"], dtype=np.float64)), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.rint(np.asarray(tokens["y0"], dtype=np.float64)), 0, height - 1).astype(np.int64)
    x1 = np.clip(np.rint(np.asarray(tokens["x1"], dtype=np.float64)), x0 + 1, width).astype(np.int64)
    y1 = np.clip(np.rint(np.asarray(tokens["y1"], dtype=np.float64)), y0 + 1, height).astype(np.int64)
    return np.stack([x0, y0, x1, y1], axis=1)
