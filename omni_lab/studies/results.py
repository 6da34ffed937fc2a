"""What the studies return when one table is not enough: small typed results instead of `DataFrame.attrs`.

pandas drops `attrs` on concat and merge, so a study's summary numbers and side tables travel as fields of a frozen
dataclass next to its main table. Results whose numbers belong to token-map rows (the effect of ablating a token, the
margin a re-inserted group brings back) carry that token map and give `row_scores(...)`: one value per row, NaN for
rows the study did not measure, ready to draw over the pixels, frames and seconds the rows came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OmniLabInputError
from ..token_map import TokenMap

if TYPE_CHECKING:
    import pandas as pd


def _per_row(token_map: TokenMap, rows_and_values) -> np.ndarray:
    """`(len(token_map),)` float64: each value written at its rows, NaN elsewhere."""
    scores = np.full(len(token_map), np.nan)
    for rows, value in rows_and_values:
        scores[np.asarray(rows, dtype=np.int64)] = value
    return scores


@dataclass(frozen=True)
class ContributionResult:
    """`pruned_contribution`'s result: each ablated token's effect, and the effect of the dropped and kept sets.

    Attributes:
        tokens: one row per single-token ablation: row (token-map row), modality, item, tubelet, row_in_grid,
            col_in_grid, score (the reducer's), dropped, effect (|Δ margin| of the first answer token), kl.
        token_map: the reducer's decision over the prompt (`kept`, `score`); `tokens.row` indexes it.
        target: the token id whose margin is followed; target_token: its text.
        dropped, kept: media tokens the reducer drops / keeps.
        dropped_set_effect, kept_set_effect: |Δ margin| when all dropped / all kept tokens are ablated at once.
        dropped_set_kl, kept_set_kl: KL(unreduced || ablated) of the first answer token, in nats, for those two sets.
        spearman: rank correlation between the reducer's score and the single-token effect (NaN with < 3 scored).
    """

    tokens: pd.DataFrame
    token_map: TokenMap
    target: int
    target_token: str
    dropped: int
    kept: int
    dropped_set_effect: float
    kept_set_effect: float
    dropped_set_kl: float
    kept_set_kl: float
    spearman: float

    def summary(self) -> dict:
        """The scalar fields as a plain dict."""
        names = ("dropped", "kept", "dropped_set_effect", "kept_set_effect", "dropped_set_kl", "kept_set_kl")
        return {name: getattr(self, name) for name in (*names, "spearman")}

    def row_scores(self, column: str = "effect") -> np.ndarray:
        """`(len(token_map),)` float64: a per-token column ("effect" or "kl") at each ablated row, NaN elsewhere."""
        if column not in ("effect", "kl"):
            raise OmniLabInputError(f"column={column!r}: use 'effect' or 'kl'")
        return _per_row(self.token_map, zip(self.tokens.row, self.tokens[column], strict=True))


@dataclass(frozen=True)
class ReinsertionResult:
    """`reinsertion`'s result: the answer's margin as each group of pruned tokens comes back.

    Attributes:
        groups: one row per step: group, tokens_restored, margin, delta_margin (vs the reduced run), recovered
            (share of the margin lost to the reduction that the group brings back); the first two rows are
            "unreduced" and "reduced".
        group_rows: {group: token-map rows it restores} for every re-inserted group.
        token_map: the reduced run's token map; `group_rows` index it.
        target: the token id whose margin is followed; target_token: its text.
    """

    groups: pd.DataFrame
    group_rows: dict
    token_map: TokenMap
    target: int
    target_token: str

    def row_scores(self, column: str = "recovered") -> np.ndarray:
        """`(len(token_map),)` float64: each group's value of `column` at its rows, NaN elsewhere.

        Args:
            column: "recovered", "delta_margin" or "margin".
        """
        if column not in ("recovered", "delta_margin", "margin"):
            raise OmniLabInputError(f"column={column!r}: use 'recovered', 'delta_margin' or 'margin'")
        values = dict(zip(self.groups.group, self.groups[column], strict=True))
        return _per_row(self.token_map, ((rows, values[label]) for label, rows in self.group_rows.items()))


@dataclass(frozen=True)
class Specialization:
    """`expert_specialization`'s result: what each expert is routed, pooled over prompts.

    Attributes:
        load: layer, expert, modality, count (top-k picks), weight (summed routing weight), share (of the
            modality's picks at that layer).
        entropy: layer, modality, entropy_bits (of the expert-load distribution; high = spread, low = specialised).
        top_tokens: layer, expert, rank, prompt, position, weight, modality, item, text, tubelet, x0, y0, x1, y1,
            t0, t1: the tokens each expert weighs most, with where they came from.
    """

    load: pd.DataFrame
    entropy: pd.DataFrame
    top_tokens: pd.DataFrame
