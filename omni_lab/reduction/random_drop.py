"""RandomDrop: keep a uniformly random subset of an item's tokens, the equal-budget control for any reducer.

UniPruneBench (arXiv 2511.02650) finds random pruning a surprisingly strong baseline, so a study of pruned tokens
pairs each reducer with a random-keep control at an equal budget (docs/token_reduction.md §3).
`RandomDrop(rate)` keeps int(N x (1 - rate)) tokens (at least 1), `RandomDrop(keep_count=k)` keeps exactly k, and
`RandomDrop.matching(other)` keeps exactly `other.budget(item)` per item. The subset is drawn from a generator seeded
with `seed + item.index`, so a run reproduces.

The argument checks every reducer of this package shares (`check_rate`, `check_modality`, `rate_budget`) live here
too.
"""

from __future__ import annotations

import torch

from ..errors import OmniLabInputError
from ..modalities import MEDIA
from .base import Reduction, ReductionItem, check_modality, check_rate, rate_budget


class RandomDrop:
    """Keep a seeded uniformly random subset of each item's tokens.

    Args:
        rate: fraction of tokens to drop, in [0, 1): keeps max(1, int(N x (1 - rate))).
        seed: base seed; item `i` draws from `torch.Generator().manual_seed(seed + i)`.
        keep_count: keep exactly this many tokens per item instead (capped at the item's N).
        match: keep exactly `match.budget(item)` tokens per item (see `RandomDrop.matching`).

    Exactly one of `rate`, `keep_count` and `match` is given.
    """

    modalities = MEDIA

    def __init__(self, rate: float | None = None, seed: int = 0, keep_count: int | None = None, match=None):
        given = [
            name for name, value in (("rate", rate), ("keep_count", keep_count), ("match", match)) if value is not None
        ]
        if len(given) != 1:
            raise OmniLabInputError(
                f"RandomDrop takes exactly one of rate, keep_count or match (RandomDrop.matching), got {given or 'none'}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OmniLabInputError(f"RandomDrop seed must be an int, got {seed!r}")
        if keep_count is not None and (
            isinstance(keep_count, bool) or not isinstance(keep_count, int) or keep_count < 1
        ):
            raise OmniLabInputError(f"RandomDrop keep_count must be an int >= 1, got {keep_count!r}")
        if match is not None:
            if not callable(getattr(match, "budget", None)) or not hasattr(match, "modalities"):
                raise OmniLabInputError(f"RandomDrop.matching needs a reducer with budget(item), got {match!r}")
            self.modalities = tuple(match.modalities)
        self.rate = None if rate is None else check_rate("RandomDrop", rate)
        self.seed = seed
        self.keep_count = keep_count
        self.match = match

    @classmethod
    def matching(cls, other, seed: int = 0) -> RandomDrop:
        """A RandomDrop that keeps exactly `other.budget(item)` tokens of every item `other` acts on."""
        return cls(seed=seed, match=other)

    def __repr__(self) -> str:
        if self.match is not None:
            return f"RandomDrop.matching({self.match!r}, seed={self.seed})"
        if self.keep_count is not None:
            return f"RandomDrop(keep_count={self.keep_count}, seed={self.seed})"
        return f"RandomDrop(rate={self.rate}, seed={self.seed})"

    def budget(self, item: ReductionItem) -> int:
        """The rate's max(1, int(N x (1 - rate))), min(keep_count, N), or the matched reducer's budget."""
        check_modality(self, item)
        if self.match is not None:
            return min(int(self.match.budget(item)), item.num_tokens)
        if self.keep_count is not None:
            return min(self.keep_count, item.num_tokens)
        return rate_budget(item.num_tokens, self.rate)

    def __call__(self, item: ReductionItem) -> Reduction:
        """Keep the `budget(item)` tokens with the highest seeded uniform priorities.

        Returns:
            `Reduction` with `keep` `(N,)` and `scores` `(N,)`: the priorities in [0, 1) it ranked by.
        """
        count = self.budget(item)
        generator = torch.Generator().manual_seed(self.seed + item.index)
        priorities = torch.rand(item.num_tokens, generator=generator)  # (N,)
        order = torch.argsort(priorities, descending=True, stable=True)
        keep = torch.zeros(item.num_tokens, dtype=torch.bool)
        keep[order[:count]] = True
        return Reduction(keep=keep, scores=priorities)
