"""`reinsertion`: put pruned tokens back a group at a time and see which ones the answer needed.

The reducer's run is the starting point; each step restores one group of the tokens it pruned (a frame, a grid
region, or the next k pruned tokens by the reducer's own score) and measures the first answer token's log-probability
margin (log p(target) − the best other token's log p), with the target the prompt's reference or the unreduced
answer. A group whose return lifts the margin held information the reduction threw away.

Given a `Dataset` (or a list of prompts), the study runs prompt by prompt (here, or on Ray workers with
`cluster=ol.cluster.Ray(...)`; see `per_prompt.py`) and returns one table of every prompt's groups, keyed by prompt.
"""

from __future__ import annotations

import numpy as np

from .. import validate
from .common import KeepMask, keep_masks_from, margin, progress, unreduced_baseline, write_rows
from .per_prompt import is_many, one_prompt_only, run_per_prompt
from .results import ReinsertionResult

GROUPINGS = ("frame", "region", "topk")
GROUP_COLUMNS = ["group", "tokens_restored", "margin", "delta_margin", "recovered"]
COLUMNS = ["prompt", "prompt_key", "target", "target_token", *GROUP_COLUMNS]  # the many-prompt table
DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "target": "int64",
    "target_token": "str",
    "group": "str",
    "tokens_restored": "int64",
    "margin": "float64",
    "delta_margin": "float64",
    "recovered": "float64",
}


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
    lab,
    prompt,
    reducer,
    groups: str = "frame",
    *,
    k: int = 16,
    regions: int = 2,
    progress_bar: bool = True,
    out=None,
    cluster=None,
):
    """Restore the reducer's pruned tokens one group at a time; report the change in the answer's margin.

    Args:
        lab: the `Lab` (with `cluster=`, also a model source string such as "toy").
        prompt: a `Prompt` (its `reference`, when set, is the target answer) or a string; or many prompts: an
            `ol.studies.Dataset`, or a list of prompts, strings or (prompt, reference) pairs (with `cluster=`, a
            Dataset or strings: inputs travel as data).
        reducer: the reducer whose pruning is examined (a reducer object or {modality: reducer}).
        groups: "frame" (video tubelets), "region" (a `regions` x `regions` grid per image / video, every tubelet
            of a video sharing it: `TokenMap.region_of`) or "topk" (the pruned tokens in the reducer's score
            order, k at a time).
        k, regions: group sizes for "topk" and "region".
        progress_bar: show a progress bar (over the groups; over the prompts, all workers, with many prompts).
        out: SQLite (.sqlite/.db, table "reinsertion") or Parquet (.parquet). One prompt: its `.groups`. Many
            prompts: every prompt's rows, written prompt by prompt; a rerun with the same `out` skips the prompts
            already there (keyed by `prompt_key`).
        cluster: None (run here) or `ol.cluster.Ray(...)` (many prompts only): prompts run on Ray actors that each
            load the model once; their rows come back here, into the same table and `out`.
    Returns:
        One prompt: `ReinsertionResult`: `.groups` (group, tokens_restored, margin, delta_margin vs the reduced
        run, recovered: the share of the margin lost to the reduction that the group brings back; first rows
        "unreduced" and "reduced"), `.group_rows`, the reduced run's token map and `.row_scores()`.
        Many prompts: DataFrame with `COLUMNS`: prompt (its index), prompt_key (its dataset key; a list's index),
        target, target_token, then each prompt's `.groups` rows, exactly as `reinsertion` on that prompt alone.
    """
    groups = validate.choice("groups", groups, GROUPINGS)
    k = validate.number("k", k, low=1, integer=True)
    regions = validate.number("regions", regions, low=1, integer=True)
    if is_many(prompt):
        options = {"reducer": reducer, "groups": groups, "k": k, "regions": regions}
        return run_per_prompt(
            "reinsertion",
            compute_cells,
            lab,
            prompt,
            options,
            columns=COLUMNS,
            dtypes=DTYPES,
            out=out,
            table="reinsertion",
            progress_bar=progress_bar,
            cluster=cluster,
        )
    one_prompt_only("reinsertion", cluster)
    result = reinsert(lab, prompt, reducer, groups, k, regions, progress_bar)
    write_rows(result.groups, out, "reinsertion")
    return result


def compute_cells(lab, prompt_of, cells: list, *, reducer, groups: str, k: int, regions: int) -> list[dict]:
    """Every group row of each prompt in `cells` (`PromptCell`s), tagged with the prompt and its target.

    Args:
        lab: the `Lab`.
        prompt_of: prompt index -> `Prompt` (built on the calling process).
        cells: the prompts.
        reducer, groups, k, regions: as in `reinsertion`.
    Returns:
        row dicts with `COLUMNS`, a prompt's rows together.
    """
    rows = []
    for cell in cells:
        result = reinsert(lab, prompt_of(cell.prompt), reducer, groups, k, regions, progress_bar=False)
        tags = {
            "prompt": cell.prompt,
            "prompt_key": cell.key,
            "target": result.target,
            "target_token": result.target_token,
        }
        rows.extend({**tags, **row} for row in result.groups.to_dict("records"))
    return rows


def reinsert(lab, prompt, reducer, groups: str, k: int, regions: int, progress_bar: bool) -> ReinsertionResult:
    """`reinsertion` on one prompt, nothing written (`groups` already checked)."""
    import pandas as pd

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
    return ReinsertionResult(
        groups=pd.DataFrame(rows, columns=GROUP_COLUMNS),
        group_rows={label: group_rows for label, group_rows in labelled},
        token_map=reduced.token_map,
        target=target,
        target_token=lab.tokenizer.decode([target]),
    )
