"""Segments (which key positions pool together) and query groups, read from the token map.

A segment is a set of LLM positions that attention / Mamba mass is pooled over. The default gives one segment per
media item and one per text span, plus one for the generated tokens; finer choices split video by tubelet (frame),
audio by time window, images and video frames by grid region. Query groups pool the *queries* the same way when a
per-position result would be too large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OmniLabInputError

SEGMENTATIONS = ("item", "modality", "frame", "audio_window", "region")


@dataclass
class Segmentation:
    """`ids` `(positions,)` int64 segment of every LLM position; `labels` a DataFrame with one row per segment."""

    ids: np.ndarray
    labels: object  # pandas DataFrame: segment, label, modality, item, tubelet, window, region

    @property
    def count(self) -> int:
        return len(self.labels)


def segment_positions(token_map, by: str = "item", window_seconds: float = 1.0, regions: int = 2) -> Segmentation:
    """Segment every LLM position of a run's token map (generated positions form their own segment).

    Args:
        token_map: a `TokenMap` whose kept rows are the positions.
        by: "item" (each media item, each text span), "modality" (text, image, video, audio, generated),
            "frame" (video split by tubelet), "audio_window" (audio split into `window_seconds` windows),
            "region" (images and video split into a `regions` x `regions` grid of cells).
    """
    import pandas as pd

    if by not in SEGMENTATIONS:
        raise OmniLabInputError(f"segments={by!r}: choose one of {SEGMENTATIONS}")
    modality = token_map.by_position("modality")
    if by == "modality":
        keys = [(m,) for m in modality]
    else:
        item, tubelet, t0 = (token_map.by_position(column) for column in ("item", "tubelet", "t0"))
        region = token_map.region_of(regions)[token_map.position_rows()] if by == "region" else None
        keys = []
        for position, (m, i) in enumerate(zip(modality, item, strict=True)):
            if m == "generated":
                keys.append(("generated",))
            elif by == "frame" and m == "video":
                keys.append((m, i, int(tubelet[position])))
            elif by == "audio_window" and m == "audio":
                keys.append((m, i, int(t0[position] // window_seconds)))
            elif by == "region" and m in ("image", "video"):
                keys.append((m, i, int(tubelet[position]), *region[position].tolist()))
            else:
                keys.append((m, i))
    order: dict[tuple, int] = {}
    ids = np.array([order.setdefault(key, len(order)) for key in keys], dtype=np.int64)
    labels = pd.DataFrame([_describe(key, by) for key in order], index=pd.RangeIndex(len(order), name="segment"))
    return Segmentation(ids, labels)


def _describe(key: tuple, by: str) -> dict:
    modality = key[0]
    entry = {"modality": modality, "item": key[1] if len(key) > 1 else -1, "tubelet": -1, "window": -1, "region": ""}
    if modality == "generated":
        entry["label"] = "generated"
    elif by == "modality":
        entry["label"] = modality
    elif modality == "text":
        entry["label"] = f"text {key[1]}"
    else:
        entry["label"] = f"{modality} {key[1]}"
        if by == "frame" and modality == "video":
            entry["tubelet"] = key[2]
            entry["label"] += f" tubelet {key[2]}"
        elif by == "audio_window" and modality == "audio":
            entry["window"] = key[2]
            entry["label"] += f" window {key[2]}"
        elif by == "region" and len(key) == 5:
            entry["tubelet"] = key[2]
            entry["region"] = f"{key[3]},{key[4]}"
            entry["label"] += (f" tubelet {key[2]}" if modality == "video" else "") + f" region {key[3]},{key[4]}"
    return entry


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
