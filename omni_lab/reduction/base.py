"""The reducer interface: what a reducer is given (`ReductionItem`) and what it returns (`Reduction`).

A reducer acts on one media item between the projector and the LLM. It is given the item's post-projector
embeddings with their grid and the decoded media, and returns a keep mask over the item's tokens (the primary
output, so pruned tokens stay in the token map and can be studied), optional per-token scores and, for merging
reducers, the token each dropped one was merged into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class ReductionItem:
    """One media item as a reducer sees it.

    Attributes:
        modality: "image", "video" or "audio".
        index: the item's index within its modality.
        embeddings: `(N, D)` post-projector embeddings in the order the LLM would see them.
        grid: `(T, H, W)` for video (tubelets x merged rows x merged cols), `(1, H, W)` for an image,
            `(N,)` for audio.
        media: the decoded media (`PIL.Image`, `VideoClip` or `AudioClip`).
    """

    modality: str
    index: int
    embeddings: torch.Tensor
    grid: tuple[int, ...]
    media: object = None


@dataclass
class Reduction:
    """A reducer's decision for one item: `keep` `(N,)` bool; `scores` `(N,)` float or None; `merged_into` `(N,)`
    long (index of the kept token a dropped one was merged into, -1 otherwise) or None."""

    keep: torch.Tensor
    scores: torch.Tensor | None = None
    merged_into: torch.Tensor | None = None


@runtime_checkable
class Reducer(Protocol):
    """Anything with `modalities` (the modalities it acts on) that maps a `ReductionItem` to a `Reduction`."""

    modalities: tuple[str, ...]

    def __call__(self, item: ReductionItem) -> Reduction: ...
