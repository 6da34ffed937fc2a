"""Segments (which key positions pool together) and query groups, read from the token map.

A segment is a unit of the one partition of token-map rows (`omni_lab.partition`) restricted to the positions the
LLM saw: by default one per media item and one per text span, plus one for the generated tokens; `segments=` takes any
grouping of the partition (modality, tubelet, region, audio window, a tuple of keys, user groups). Query groups pool
the *queries* the same way when a per-position result would be too large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OmniLabInputError
from ..partition import GroupBy


@dataclass
class Segmentation:
    """`ids` `(positions,)` int64 segment of every LLM position; `labels` a DataFrame with one row per segment
    (`Partition.table()`: label, modality, item, tubelet, frame, region, window, t0, t1, rows)."""

    ids: np.ndarray
    labels: object

    @property
    def count(self) -> int:
        return len(self.labels)


def segment_positions(token_map, grouping: GroupBy) -> Segmentation:
    """Segment every LLM position of a token map (generated positions, when present, form their own segment).

    Args:
        token_map: a `TokenMap` whose rows with a position are the positions.
        grouping: a `GroupBy` (`GroupBy.of(segments, grid=..., seconds=...)`); user groups may leave rows out, which
            then pool into one "rest" segment.
    Raises:
        OmniLabInputError: units that share a position.
    """
    positions = token_map["position"] >= 0
    units = grouping.apply(token_map).restrict(positions).complete(within=positions)
    units.require_disjoint("attention and Mamba mass segments")
    return Segmentation(units.position_ids(token_map), units.table())


def query_groups(token_map, queries) -> tuple[np.ndarray | None, list[str], int | None]:
    """Group the prompt's LLM positions as queries (generated tokens are added during the run).

    Args:
        token_map: the prompt's token map (kept rows are the prompt positions).
        queries: None or "all" (every position on its own, generated ones too), "answer" (the generated tokens as
            one group), "text" (prompt text), "modality" (one group per modality, "generated" included), a boolean
            mask over prompt positions, or {name: mask}.
    Returns:
        (group id per prompt position with -1 = not a query of interest, or None for every position on its own;
        group names; the group generated tokens join, or None).
    """
    if queries is None or (isinstance(queries, str) and queries == "all"):
        return None, [], None
    modality = token_map.by_position("modality")
    positions = len(modality)
    generated_group = None
    if isinstance(queries, str):
        if queries == "answer":
            masks, generated_group = {"answer": np.zeros(positions, dtype=bool)}, 0
        elif queries == "text":
            masks = {"text": modality == "text"}
        elif queries == "modality":
            masks = {m: modality == m for m in dict.fromkeys(modality)}
            masks["generated"] = np.zeros(positions, dtype=bool)
            generated_group = len(masks) - 1
        else:
            raise OmniLabInputError(
                f"queries={queries!r}: use 'all', 'answer', 'text', 'modality', a mask over positions or {{name: mask}}"
            )
    elif isinstance(queries, dict):
        masks = {str(name): np.asarray(mask, dtype=bool) for name, mask in queries.items()}
    else:
        masks = {"selected": np.asarray(queries, dtype=bool)}
    groups = np.full(positions, -1, dtype=np.int64)
    for index, (name, mask) in enumerate(masks.items()):
        if mask.shape != (positions,):
            raise OmniLabInputError(
                f"query mask {name!r} has shape {mask.shape}; it needs one entry per prompt "
                f"position ({positions}): build it with prompt_token_map.select(...)"
            )
        groups[mask & (groups < 0)] = index
    return groups, list(masks), generated_group
