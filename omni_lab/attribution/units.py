"""Attribution units: the units of the one partition of token-map rows (`omni_lab/partition.py`) that an attribution
switches on and off.

An attribution scores units of the prompt's token map: the partition's units (same keys, options and labels as every
other grouping in omni-lab), kept to the rows an attribution can occlude: rows the LLM saw (`kept`: a pruned token
cannot be occluded), never a control token of the text (`special`), never a generated token. A key that splits some modalities
finer than by item (region: images and video; tubelet and frame: video; audio_window: audio; text_token and word:
text) gives units of those modalities only; "modality", "item" and {name: mask} groups cover the whole prompt.

    kind            one unit per ...                                         default options
    modality        modality present (text = its non-special tokens)
    item            media item, text span
    region          cell of a `grid` over each image / video                 grid=(4, 4)
    tubelet         video tubelet (the 2-frame Conv3D patch group)
    frame           source frame of each video (overlapping: refused where units must be disjoint)
    audio_window    `seconds`-long window of each audio clip                  seconds=0.5
    text_token      non-special text token
    word            run of non-special text tokens
    {name: mask}    arbitrary groups: a bool mask over the rows, or a dict of `token_map.rows` criteria
"""

from __future__ import annotations

import numpy as np

from ..errors import OmniLabInputError
from ..modalities import PROMPT
from ..partition import KEYS, GroupBy, Partition, Unit

KINDS = KEYS
DEFAULT_GRID = (4, 4)
DEFAULT_SECONDS = 0.5

__all__ = ["DEFAULT_GRID", "DEFAULT_SECONDS", "KINDS", "Partition", "Unit", "attributable_rows", "build_units"]


def attributable_rows(token_map) -> np.ndarray:
    """`(rows,)` bool: the rows an attribution can switch off: kept, not a control token of the text (media
    placeholders are special ids too, and stay), not generated."""
    modality = token_map["modality"]
    control = np.asarray(token_map["special"], dtype=bool) & (modality == "text")
    return np.asarray(token_map["kept"], dtype=bool) & ~control & (modality != "generated")


def build_units(token_map, unit="modality", *, grid=DEFAULT_GRID, seconds=DEFAULT_SECONDS, modality=None) -> Partition:
    """The units of an attribution over a prompt's token map.

    Args:
        token_map: the prompt's `TokenMap` (after reduction: pruned rows belong to no unit).
        unit: a key of the partition (`KINDS`), a tuple of keys, or {name: mask over rows | dict of `token_map.rows`
            criteria}.
        grid: `(rows, cols)` of the region grid.
        seconds: length of an audio window.
        modality: keep only units of this modality (or collection of modalities), e.g. "video".
    Returns:
        `Partition` (never empty).
    Raises:
        OmniLabInputError: an unknown unit kind, a bad grid or window, an empty group, no unit of that kind here.
    """
    grouping = GroupBy.of(unit, grid=grid, seconds=seconds)
    units = grouping.apply(token_map)
    if isinstance(grouping.by, str) and grouping.by not in ("modality", "item") or isinstance(grouping.by, tuple):
        units = units.only(grouping.refines)
    units = units.restrict(attributable_rows(token_map))
    if isinstance(grouping.by, dict):
        empty = [name for name in grouping.by if name not in units.labels]
        if empty:
            raise OmniLabInputError(f"group {empty[0]!r} is empty: it selects no token the LLM saw")
    if modality is not None:
        names = (modality,) if isinstance(modality, str) else tuple(modality)
        unknown = set(names) - set(PROMPT)
        if unknown:
            raise OmniLabInputError(f"modality {sorted(unknown)}: choose from {', '.join(PROMPT)}")
        units = units.only(names)
    if not len(units):
        present = sorted(set(token_map["modality"][token_map["kept"]]))
        raise OmniLabInputError(
            f"unit={unit!r}"
            + (f" with modality={modality!r}" if modality is not None else "")
            + f" gives no unit on this prompt (it holds {', '.join(present)} tokens); pick a unit its tokens have"
        )
    return units


def unit_details(units: Partition, modality=None) -> dict:
    """The options an attribution records in its `details`: unit, grid, seconds, modality."""
    options = units.grouping.to_dict()
    return {"unit": units.grouping.name, "grid": tuple(options["grid"]), "seconds": options["seconds"],
            "modality": modality}  # fmt: skip
