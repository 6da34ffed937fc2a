"""What `TokenReductionMap` draws, as plain tables: each panel's tokens with their status and provenance, the dropped
cells, the counts per panel, and the reducer menu and rate slider's setting. No plotly.

Token status is `TokenMap.status` ("kept", "merged" into a kept token, or "pruned"); a reducer's modalities and rate
are its own (`Reducer.modalities`, `.rate`), and names map to classes through `omni_lab.reduction.names`.
"""

from __future__ import annotations

import numpy as np

from omni_lab.errors import OmniLabInputError
from omni_lab.reduction.names import REDUCER_NAMES, at_rate
from omni_lab.token_map import STATUSES

from .panels import MediaPanel

# The reducers the rate slider drives, by class name (the one name -> class mapping, deduplicated).
RATE_REDUCERS = {cls.__name__: cls for cls in REDUCER_NAMES.values()}


def token_arrays(token_map, panel: MediaPanel) -> dict[str, np.ndarray]:
    """The numeric columns of `panel_tokens` as arrays, row to target_tubelet (no DataFrame, no frame text): what the
    map's traces read for each of a long clip's panels."""
    rows = panel.rows
    x0, y0, x1, y1 = (token_map[name][rows] for name in ("x0", "y0", "x1", "y1"))
    merged_into = token_map["merged_into"][rows]
    has_target = merged_into >= 0
    target = np.where(has_target, merged_into, 0)
    status = token_map.status(rows)
    return {
        "row": rows,
        "grid_row": token_map["row"][rows],
        "grid_col": token_map["col"][rows],
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "cx": (x0 + x1) / 2,
        "cy": (y0 + y1) / 2,
        "status": status,
        "kept": status == "kept",
        "score": token_map["score"][rows],
        "merged_into": merged_into,
        "target_cx": np.where(has_target, (token_map["x0"][target] + token_map["x1"][target]) / 2, np.nan),
        "target_cy": np.where(has_target, (token_map["y0"][target] + token_map["y1"][target]) / 2, np.nan),
        "target_tubelet": np.where(has_target, token_map["tubelet"][target], -1),
    }


def panel_tokens(token_map, panel: MediaPanel):
    """The tokens drawn on one panel with their provenance.

    Args:
        token_map: the run's token map (or any map with the same prompt rows, e.g. after another reduction).
        panel: a `MediaPanel` from `media_panels`.
    Returns:
        DataFrame, one row per token in grid order: row (token-map row), grid_row, grid_col, x0, y0, x1, y1, cx, cy
        (box centre), status, kept, score, merged_into, target_cx, target_cy (centre of the token it merged into,
        NaN if none), target_tubelet, t0, t1, frames (text), dropped_at_layer.
    """
    import pandas as pd

    rows = panel.rows
    return pd.DataFrame(
        {
            **token_arrays(token_map, panel),
            "t0": token_map["t0"][rows],
            "t1": token_map["t1"][rows],
            "frames": ["-".join(map(str, frames)) for frames in token_map["frames"][rows]],
            "dropped_at_layer": token_map["dropped_at_layer"][rows],
        }
    )


def status_grid(token_map, panel: MediaPanel) -> np.ndarray:
    """`(grid rows, grid cols)`: NaN for kept tokens, 0 for pruned, 1 for merged (the shading over the pixels)."""
    status = token_map.status(panel.rows)
    codes = np.where(status == "kept", np.nan, np.where(status == "merged", 1.0, 0.0))
    grid = np.full(panel.grid, np.nan)
    grid.reshape(-1)[: len(panel.rows)] = codes
    return grid


def reduction_counts(token_map, panels: list[MediaPanel]):
    """Kept, merged and pruned tokens per panel.

    Returns:
        DataFrame: label, modality, item, tubelet, tokens, kept, merged, pruned (one row per panel).
    """
    import pandas as pd

    records = []
    for panel in panels:
        status = token_map.status(panel.rows)
        records.append(
            {
                "label": panel.label,
                "modality": panel.modality,
                "item": panel.item,
                "tubelet": panel.tubelet,
                "tokens": len(panel.rows),
                **{name: int((status == name).sum()) for name in STATUSES},
            }
        )
    return pd.DataFrame(records, columns=["label", "modality", "item", "tubelet", "tokens", *STATUSES])


# ------------------------------------------------------------------------------------------- reducer controls
def make_reducer(name: str, rate: float):
    """A reducer by class name at a drop rate (`omni_lab.reduction.names.at_rate`).

    Args:
        name: one of `RATE_REDUCERS`.
        rate: fraction of tokens to drop, in [0, 1).
    """
    if name not in RATE_REDUCERS:
        raise OmniLabInputError(f"reducer {name!r}: the rate slider drives {list(RATE_REDUCERS)}")
    return at_rate(name, rate)


def reducer_choices(panels: list[MediaPanel]) -> list[str]:
    """The reducer menu: every rate reducer that acts on a modality the panels show (its own `modalities`)."""
    shown = {panel.modality for panel in panels}
    return [name for name, cls in RATE_REDUCERS.items() if shown & set(cls.modalities)]


def slider_setting(reducer, panels: list[MediaPanel]) -> tuple[str, float]:
    """(menu entry, rate) the controls start at: the run's reducer and its own `rate`, on the slider's 0.05 steps
    and at most 0.95. A reducer the menu does not offer (none, a per-modality dict, FastV, one acting on no panel)
    starts the menu at EVS when a video is shown, else at DivPrune; a reducer without a rate starts it at 0.5.
    """
    name = type(reducer).__name__ if reducer is not None and not isinstance(reducer, dict) else ""
    rate = float(getattr(reducer, "rate", 0.5) or 0.5) if reducer is not None else 0.5
    if name not in reducer_choices(panels):
        name = "EVS" if any(panel.modality == "video" for panel in panels) else "DivPrune"
    return name, round(min(0.95, rate) / 0.05) * 0.05
