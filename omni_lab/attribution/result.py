"""Attribution: one attribution's scores on the token map, per unit, and how they were obtained.

`scores` holds ONE float per token-map row (NaN where nothing was scored: pruned rows, rows outside every unit);
that and `token_map` are all `omni_lab.widgets.AttributionOverlay` reads. For perturbation methods a row carries its
unit's score (captum's convention: every element of an ablated group gets the group's attribution; rows of several
overlapping units carry the sum); for integrated gradients a row carries the sum of its embedding's attributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Attribution:
    """What an attribution method found.

    Attributes:
        token_map: the prompt's `TokenMap` the scores index (after the reducer the attribution ran with).
        scores: `(rows,)` float64, one per token-map row, NaN where not scored.
        units: the `Partition` whose units were scored (None when scores are per row only).
        unit_scores: `(U,)` float64, the score of each unit (for integrated gradients: the sum of its rows).
        method: "occlusion", "input_occlusion", "modality_shapley", "integrated_gradients" or "text_attribution".
        target: what was attributed, e.g. "log p('low, purple')".
        baseline: what an absent unit became ("remove", "zero", "mean", "token 0", "grey / neighbour / silence",
            "zero embeddings", ...).
        target_value: the target on the unperturbed prompt, f(x).
        baseline_value: the target with every unit absent / at the baseline, f(baseline), when computed.
        completeness_gap: sum of the attributions minus (f(x) - f(baseline)) for integrated gradients (captum's
            convergence delta) and exact Shapley values (0 up to rounding); None where the method promises no sum.
        forward_passes: language-model forward passes run (batched sequences count one each).
        details: method-specific extras (n_steps, grid, seconds, ...).
    """

    token_map: object
    scores: np.ndarray
    units: object
    unit_scores: np.ndarray
    method: str
    target: str
    baseline: str
    target_value: float
    baseline_value: float | None = None
    completeness_gap: float | None = None
    forward_passes: int = 0
    details: dict = field(default_factory=dict)

    def to_frame(self):
        """One row per unit: unit, score, modality, item, tokens (rows in the unit), t0, t1, box, tubelet, frames.

        Returns:
            pandas DataFrame in unit order.
        """
        import pandas as pd

        records = []
        for unit, score in zip(self.units, self.unit_scores, strict=True):
            box = unit.box if unit.box is not None else (np.nan,) * 4
            seconds = unit.seconds if unit.seconds is not None else (np.nan, np.nan)
            records.append(
                {
                    "unit": unit.label,
                    "score": float(score),
                    "modality": unit.modality,
                    "item": unit.item,
                    "tokens": int(unit.rows.sum()),
                    "t0": seconds[0],
                    "t1": seconds[1],
                    "x0": box[0],
                    "y0": box[1],
                    "x1": box[2],
                    "y1": box[3],
                    "tubelet": unit.tubelet,
                    "frames": unit.frames,
                }
            )
        return pd.DataFrame.from_records(records)

    def top(self, k: int = 5):
        """The `k` units with the highest scores (most supporting the target), best first, as `to_frame` rows."""
        frame = self.to_frame()
        return frame.sort_values("score", ascending=False, kind="stable").head(k).reset_index(drop=True)

    def __repr__(self) -> str:
        scored = int(np.isfinite(self.scores).sum())
        gap = "" if self.completeness_gap is None else f", completeness_gap={self.completeness_gap:.3g}"
        return (
            f"Attribution({self.method}, {len(self.unit_scores)} units, {scored} of {len(self.scores)} rows scored, "
            f"target={self.target}, baseline={self.baseline!r}, f(x)={self.target_value:.4g}{gap})"
        )


def row_scores(token_map, units, unit_scores: np.ndarray) -> np.ndarray:
    """`(rows,)` scores: each row gets the sum of the scores of the units that hold it; NaN for rows in no unit."""
    masks = units.masks.astype(np.float64)  # (U, rows)
    covered = masks.any(axis=0)
    scores = np.asarray(unit_scores, dtype=np.float64) @ masks
    scores[~covered] = np.nan
    return scores
