"""`reinsertion`: put pruned tokens back a group at a time and see which ones the answer needed.

The reducer's run is the starting point; each step restores one group of the tokens it pruned (a unit of the one
partition cut to the pruned tokens: a tubelet, a grid region, an audio window...; or the next k pruned tokens by the
reducer's own score) and measures the first answer token's log-probability
margin (log p(target) − the best other token's log p), with the target the prompt's reference or the unreduced
answer. A group whose return lifts the margin held information the reduction threw away.

Given a `Dataset` (or a list of prompts), the study runs prompt by prompt on any executor (`cluster=`; see
`per_prompt.py`) and returns one table of every prompt's groups, keyed by prompt.
"""

from __future__ import annotations

import numpy as np

from .. import validate
from ..partition import GroupBy
from .common import KeepMask, keep_masks_from, margin, progress_bar, unreduced_baseline, write_rows
from .per_prompt import is_many, one_prompt_only, run_per_prompt
from .results import ReinsertionResult

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


def pruned_groups(token_map, modalities, groups, k: int) -> list[tuple[str, np.ndarray]]:
    """(label, token-map rows) of each group of pruned media tokens.

    Args:
        token_map: the reduced run's token map.
        modalities: the modalities the reducers acted on.
        groups: "topk" (the pruned tokens in the reducer's score order, k at a time) or a `GroupBy` of the one
            partition (its units restricted to the pruned rows; units must share no token).
        k: group size of "topk".
    """
    pruned = token_map.rows(modality=modalities, kept=False)
    if isinstance(groups, str) and groups == "topk":
        rows = np.flatnonzero(pruned)
        order = rows[np.argsort(-np.nan_to_num(token_map["score"][rows], nan=-np.inf), kind="stable")]
        return [
            (f"top {start + 1}-{min(start + k, len(order))}", order[start : start + k])
            for start in range(0, len(order), k)
        ]
    units = groups.apply(token_map).only(groups.refines).restrict(pruned)
    units.require_disjoint("reinsertion")
    return [(unit.label, np.flatnonzero(unit.rows)) for unit in units]


def reinsertion(
    lab,
    prompt,
    reducer,
    groups="tubelet",
    *,
    k: int = 16,
    grid=(2, 2),
    batch_size: int = 16,
    progress: bool = True,
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
        groups: how the pruned tokens are restored: a grouping of the one partition (`omni_lab.partition`), its
            units cut to the pruned tokens: "tubelet" (the default), "region" (a `grid` over each image / video,
            spanning a video's tubelets), ("tubelet", "region"), "audio_window", "item", {name: mask}...; or "topk"
            (the pruned tokens in the reducer's score order, k at a time). Units must share no token.
        k: group size of "topk".
        grid: the region grid `(rows, cols)` (or one int).
        batch_size: groups per forward (`Lab.prefill`: each row equals its restoration run alone).
        progress: show a progress bar (over the groups; over the prompts, all workers, with many prompts).
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
    k = validate.number("k", k, low=1, integer=True)
    batch_size = validate.number("batch_size", batch_size, low=1, integer=True)
    if not (isinstance(groups, str) and groups == "topk"):
        groups = GroupBy.of(groups, grid=grid)
    if is_many(prompt):
        options = {"reducer": reducer, "groups": groups, "k": k, "batch_size": batch_size}
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
            progress=progress,
            cluster=cluster,
        )
    one_prompt_only("reinsertion", cluster)
    result = reinsert(lab, prompt, reducer, groups, k, progress, batch_size)
    write_rows(result.groups, out, "reinsertion")
    return result


def compute_cells(lab, prompt_of, cells: list, *, reducer, groups, k: int, batch_size: int) -> list[dict]:
    """Every group row of each prompt in `cells` (`PromptCell`s), tagged with the prompt and its target.

    Args:
        lab: the `Lab`.
        prompt_of: prompt index -> `Prompt` (built on the calling process).
        cells: the prompts.
        reducer, groups, k, batch_size: as in `reinsertion` (groups "topk" or a `GroupBy`).
    Returns:
        row dicts with `COLUMNS`, a prompt's rows together.
    """
    rows = []
    for cell in cells:
        result = reinsert(lab, prompt_of(cell.prompt), reducer, groups, k, False, batch_size)
        tags = {
            "prompt": cell.prompt,
            "prompt_key": cell.key,
            "target": result.target,
            "target_token": result.target_token,
        }
        rows.extend({**tags, **row} for row in result.groups.to_dict("records"))
    return rows


def reinsert(lab, prompt, reducer, groups, k: int, progress: bool, batch_size: int = 16) -> ReinsertionResult:
    """`reinsertion` on one prompt, nothing written (`groups` already "topk" or a `GroupBy`)."""
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
    labelled = pruned_groups(reduced.token_map, list(reducers), groups, k)
    df = reduced.token_map.df
    item_row_index = {
        key: np.flatnonzero(((df.modality == key[0]) & (df["item"] == key[1])).to_numpy()) for key in base_masks
    }
    bar = progress_bar(len(labelled), "reinsertion", progress)
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start : start + batch_size]
        keep_masks = []
        for label, group_rows in chunk:
            masks = {key: mask.copy() for key, mask in base_masks.items()}
            for row in group_rows:
                modality, item = df.at[row, "modality"], int(df.at[row, "item"])
                item_rows = item_row_index[(modality, item)]  # the item's rows are not contiguous (frame labels)
                masks[(modality, item)][np.searchsorted(item_rows, row)] = True
            keep_masks.append(KeepMask(masks, label))
        prefilled = lab.prefill([prompt] * len(chunk), reducer=keep_masks, encoded=encoded)
        for (label, group_rows), row in zip(chunk, prefilled, strict=True):
            value = margin(row.next_token_logits, target)
            rows.append(
                {
                    "group": label,
                    "tokens_restored": len(group_rows),
                    "margin": value,
                    "delta_margin": value - reduced_margin,
                    "recovered": (value - reduced_margin) / lost if abs(lost) > 1e-9 else float("nan"),
                }
            )
        bar.update(len(chunk))
    bar.close()
    return ReinsertionResult(
        groups=pd.DataFrame(rows, columns=GROUP_COLUMNS),
        group_rows={label: group_rows for label, group_rows in labelled},
        token_map=reduced.token_map,
        target=target,
        target_token=lab.tokenizer.decode([target]),
    )
