"""The reducer interface: what a reducer is given (`ReductionItem`) and what it returns (`Reduction`).

A reducer acts on one media item between the projector and the LLM. It is given the item's post-projector
embeddings with their grid and the decoded media, and returns a keep mask over the item's tokens (the primary
output, so pruned tokens stay in the token map and can be studied), optional per-token scores and, for merging
reducers, the token each dropped one was merged into.

Optional attributes a reducer declares (the pipeline reads them; nothing lists reducers by name):

    signals           encoder signals it reads (`reduction/signals.py`, e.g. VisionZip's CLS attention): recorded
                      while the encoders run and handed over in `ReductionItem.signals`
    before_encoders   True for a reducer that rewrites the prompt's media before the encoders (`Downsample`):
                      `rewrite(prompt, modalities, processor, context_length) -> Prompt`
    in_llm            True for a reducer acting inside the LLM at attention layers (`FastV`, `PyramidDrop`,
                      `SparseVLM`): `install(hooks, model)` registers its hooks for one run
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Protocol, runtime_checkable

import torch

from ..errors import OmniLabInputError


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
        tokens: the item's token-map rows (pandas DataFrame, one row per token in embedding order): `row`, `col`,
            `tubelet`, `frames` (source frame indices; `media.frame_indices.index(f)` finds a frame in
            `media.frames`), `x0, y0, x1, y1` (pixel box in the original media), `t0, t1` (seconds).
        signals: {signal name: tensor over the item's tokens} of the encoder signals the reducer declared
            (`reduction/signals.py`); empty otherwise.
    """

    modality: str
    index: int
    embeddings: torch.Tensor
    grid: tuple[int, ...]
    media: object = None
    tokens: object = None
    signals: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.embeddings.shape[0])


@dataclass
class Reduction:
    """A reducer's decision for one item.

    Attributes:
        keep: `(N,)` bool, the tokens that reach the LLM.
        scores: `(N,)` float the reducer ranked by (higher = more worth keeping), or None.
        merged_into: `(N,)` long: for a dropped token merged into a kept one, that kept token's index (always a
            kept token, chains resolved); -1 otherwise; None for reducers that only prune. A kept token then enters
            the LLM as the mean of itself and every token merged into it (its size = 1 + tokens merged into it).
    """

    keep: torch.Tensor
    scores: torch.Tensor | None = None
    merged_into: torch.Tensor | None = None


@runtime_checkable
class Reducer(Protocol):
    """Anything with `modalities` (the modalities it acts on) that maps a `ReductionItem` to a `Reduction`.

    `budget(item)` states how many tokens the reducer keeps for an item before it runs (tested to be exact); `rate`
    (the fraction it drops, what the widgets' slider sets) is read where present.
    """

    modalities: tuple[str, ...]

    def __call__(self, item: ReductionItem) -> Reduction: ...

    def budget(self, item: ReductionItem) -> int: ...


def check_rate(name: str, rate) -> float:
    """`rate` as a float in [0, 1) (the fraction of tokens to drop), or OmniLabInputError naming the reducer."""
    if isinstance(rate, bool) or not isinstance(rate, Real) or not 0.0 <= float(rate) < 1.0:
        raise OmniLabInputError(f"{name} rate is the fraction of tokens to drop and must be in [0, 1), got {rate!r}")
    return float(rate)


def check_modality(reducer, item: ReductionItem) -> None:
    """Refuse an item of a modality the reducer does not act on."""
    if item.modality not in reducer.modalities:
        raise OmniLabInputError(f"{reducer!r} acts on {reducer.modalities}, not on a {item.modality!r} item")


def rate_budget(num_tokens: int, rate: float) -> int:
    """max(1, floor(num_tokens x (1 - rate))): the tokens a rate-driven reducer keeps.

    A 1e-9 guard keeps float rounding from losing a token (50 x (1 - 0.8) is 9.999... in floating point; this keeps
    10). EVS and PixelDiff use the release's own formula instead (see EVS.budget).
    """
    return max(1, math.floor(num_tokens * (1 - rate) + 1e-9))
