"""`reinsertion`: put pruned tokens back a group at a time and see which ones the answer needed.

The reducer's run is the starting point; each step restores one group of the tokens it pruned (a frame, a grid
region, or the next k pruned tokens by the reducer's own score) and measures the first answer token's log-probability
margin (log p(target) − the best other token's log p), with the target the prompt's reference or the unreduced
answer. A group whose return lifts the margin held information the reduction threw away.
"""

from __future__ import annotations

import numpy as np

from ..errors import OmniLabInputError
from .common import KeepMask, keep_masks_from, margin, progress, unreduced_baseline, write_rows
from .results import ReinsertionResult

GROUPINGS = ("frame", "region", "topk")


def _pruned_groups(token_map, modalities, groups: str, k: int, regions: int) -> list[tuple[str, np.ndarray]]:
    """(label, token-map rows) of each group of pruned media tokens."""
    df = token_map.df
    pruned = df[df.modality.isin(modalities) & ~df.kept]
    if groups == "topk":
        order = pruned.sort_values("score", ascending=False, kind="stable")
        return [
            (f"top {start + 1}-{min(start + k, len(order))}", order.index[start : start + k].to_numpy())
            for start in range(0, len(order), k)
        ]
    cells = token_map.region_of(regions) if groups == "region" else None  # (rows, 2)
    labelled = []
    for (modality, item), group in pruned.groupby(["modality", "item"], sort=False):
        if groups == "frame" and modality == "video":
            for tubelet, rows in group.groupby("tubelet", sort=True):
                frames = rows.frames.iloc[0]
                labelled.append((f"video {item} tubelet {tubelet} frames {frames}", rows.index.to_numpy()))
        elif groups == "region" and modality in ("image", "video"):
            rows = group.index.to_numpy()
            region_row, region_col = cells[rows, 0], cells[rows, 1]
            for cell_row, cell_col in sorted(set(zip(region_row.tolist(), region_col.tolist(), strict=True))):
                members = rows[(region_row == cell_row) & (region_col == cell_col)]
                labelled.append((f"{modality} {item} region {cell_row},{cell_col}", members))
        else:
            labelled.append((f"{modality} {item}", group.index.to_numpy()))
    return labelled


def reinsertion(
    lab, prompt, reducer, groups: str = "frame", *, k: int = 16, regions: int = 2, progress_bar: bool = True, out=None
) -> ReinsertionResult:
    """Restore the reducer's pruned tokens one group at a time; report the change in the answer's margin.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` (its `reference`, when set, is the target answer) or a string.
        reducer: the reducer whose pruning is examined (a reducer object or {modality: reducer}).
        groups: "frame" (video tubelets), "region" (a `regions` x `regions` grid per image / video, every tubelet
            of a video sharing it: `TokenMap.region_of`) or "topk" (the pruned tokens in the reducer's score
            order, k at a time).
        k, regions: group sizes for "topk" and "region".
        progress_bar, out: as in `sweep` (`out` receives `.groups`).
    Returns:
        `ReinsertionResult`: `.groups` (group, tokens_restored, margin, delta_margin vs the reduced run,
        recovered: the share of the margin lost to the reduction that the group brings back; first rows
        "unreduced" and "reduced"), `.group_rows`, the reduced run's token map and `.row_scores()`.
    """
    import pandas as pd

    if groups not in GROUPINGS:
        raise OmniLabInputError(f"groups={groups!r}: use one of {GROUPINGS}")
    baseline = unreduced_baseline(lab, prompt, reducer, "reinsertion")
    prompt, reducers, encoded, full, target = (
        baseline.prompt,
        baseline.reducers,
        baseline.encoded,
        baseline.full,
        baseline.target,
    )
    reduced = lab.run(prompt, max_new_tokens=1, reducer=reducer, return_logits=True, encoded=encoded)
    full_margin, reduced_margin = margin(full.logits[0], target), margin(reduced.logits[0], target)
    lost = full_margin - reduced_margin
    rows = [
        {"group": "unreduced", "tokens_restored": 0, "margin": full_margin, "delta_margin": lost, "recovered": 1.0},
        {"group": "reduced", "tokens_restored": 0, "margin": reduced_margin, "delta_margin": 0.0, "recovered": 0.0},
    ]
    base_masks = keep_masks_from(reduced.token_map, reducers)
    labelled = _pruned_groups(reduced.token_map, list(reducers), groups, k, regions)
    df = reduced.token_map.df
    item_row_index = {
        key: np.flatnonzero(((df.modality == key[0]) & (df["item"] == key[1])).to_numpy()) for key in base_masks
    }
    bar = progress(len(labelled), "reinsertion", progress_bar)
    for label, group_rows in labelled:
        masks = {key: mask.copy() for key, mask in base_masks.items()}
        for row in group_rows:
            modality, item = df.at[row, "modality"], int(df.at[row, "item"])
            item_rows = item_row_index[(modality, item)]  # the item's rows are not contiguous (frame labels)
            masks[(modality, item)][np.searchsorted(item_rows, row)] = True
        run = lab.run(prompt, max_new_tokens=1, reducer=KeepMask(masks, label), return_logits=True, encoded=encoded)
        value = margin(run.logits[0], target)
        rows.append(
            {
                "group": label,
                "tokens_restored": len(group_rows),
                "margin": value,
                "delta_margin": value - reduced_margin,
                "recovered": (value - reduced_margin) / lost if abs(lost) > 1e-9 else float("nan"),
            }
        )
        bar.update()
    bar.close()
    frame = pd.DataFrame(rows)
    write_rows(frame, out, "reinsertion")
    return ReinsertionResult(
        groups=frame,
        group_rows={label: group_rows for label, group_rows in labelled},
        token_map=reduced.token_map,
        target=target,
        target_token=lab.tokenizer.decode([target]),
    )
