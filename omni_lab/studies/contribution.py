"""`pruned_contribution`: would the tokens a reducer drops have mattered? Ablate them in the unreduced run.

In the unreduced run, zero (ablate) the merged embeddings of the tokens the reducer would drop, then of those it
would keep, and measure how the first answer token moves (change in log-probability margin, KL divergence). Then
ablate tokens one at a time (all of them, or an even sample of `max_tokens`) and report the rank correlation between
the reducer's scores and each token's effect: a reducer that prunes well scores high what matters.

Given a `Dataset` (or a list of prompts), the study runs prompt by prompt (here, or on Ray workers with
`cluster=ol.cluster.Ray(...)`; see `per_prompt.py`) and returns one long table of every ablation, keyed by prompt:
the dropped set, the kept set, then each single token.
"""

from __future__ import annotations

import numpy as np

from .. import validate
from ..capture.interventions import ablate_tokens
from .common import kl_divergence, margin, progress_bar, unreduced_baseline, write_rows
from .per_prompt import is_many, one_prompt_only, run_per_prompt
from .results import ContributionResult

TOKEN_COLUMNS = ["row", "modality", "item", "tubelet", "row_in_grid", "col_in_grid", "score", "dropped", "effect", "kl"]
ABLATED = ("dropped set", "kept set", "token")
COLUMNS = ["prompt", "prompt_key", "target", "target_token", "spearman", "ablated", "tokens", *TOKEN_COLUMNS]
DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "target": "int64",
    "target_token": "str",
    "spearman": "float64",
    "ablated": "str",
    "tokens": "int64",
    "row": "Int64",  # the token columns are missing (<NA>, NaN) on the two set rows
    "modality": "str",
    "item": "Int64",
    "tubelet": "Int64",
    "row_in_grid": "Int64",
    "col_in_grid": "Int64",
    "score": "float64",
    "dropped": "boolean",
    "effect": "float64",
    "kl": "float64",
}


def pruned_contribution(
    lab,
    prompt,
    reducer,
    *,
    max_tokens: int = 96,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    out=None,
    cluster=None,
):
    """Causal effect of the tokens a reducer drops vs keeps, and how well its scores rank that effect.

    Args:
        lab: the `Lab` (with `cluster=`, also a model source string such as "toy").
        prompt: a `Prompt` (its `reference`, when set, is the target answer) or a string; or many prompts: an
            `ol.studies.Dataset`, or a list of prompts, strings or (prompt, reference) pairs (with `cluster=`, a
            Dataset or strings: inputs travel as data).
        reducer: a reducer object or {modality: reducer}.
        max_tokens: at most this many single-token ablations per prompt (an even random sample, seeded).
        seed: seed of that sample.
        batch_size: ablations per forward (`Lab.prefill`: each row equals its ablation run alone).
        progress: show a progress bar (over the ablations; over the prompts, all workers, with many prompts).
        out: SQLite (.sqlite/.db, table "pruned_contribution") or Parquet (.parquet). One prompt: its per-token
            rows. Many prompts: every prompt's rows, written prompt by prompt; a rerun with the same `out` skips the
            prompts already there (keyed by `prompt_key`).
        cluster: None (run here) or `ol.cluster.Ray(...)` (many prompts only): prompts run on Ray actors that each
            load the model once; their rows come back here, into the same table and `out`.
    Returns:
        One prompt: `ContributionResult`: `.tokens` (one row per single-token ablation), the dropped / kept set
        effects and KLs, `.spearman`, the decision's token map and `.row_scores()`.
        Many prompts: DataFrame with `COLUMNS`, one row per ablation: prompt (its index), prompt_key (its dataset
        key; a list's index), target, target_token, spearman (the prompt's), ablated ("dropped set", "kept set",
        then "token" rows), tokens (how many were ablated: the result's `dropped` / `kept` for the sets, 1 for a
        token), then `TOKEN_COLUMNS` (missing on the set rows; `effect` and `kl` are the set's there), exactly
        as `pruned_contribution` on that prompt alone.
    """
    max_tokens = validate.number("max_tokens", max_tokens, low=0, integer=True)  # 0: the two sets only
    seed = validate.number("seed", seed, low=0, integer=True)
    batch_size = validate.number("batch_size", batch_size, low=1, integer=True)
    if is_many(prompt):
        return run_per_prompt(
            "pruned_contribution",
            compute_cells,
            lab,
            prompt,
            {"reducer": reducer, "max_tokens": max_tokens, "seed": seed, "batch_size": batch_size},
            columns=COLUMNS,
            dtypes=DTYPES,
            out=out,
            table="pruned_contribution",
            progress=progress,
            cluster=cluster,
        )
    one_prompt_only("pruned_contribution", cluster)
    result = contribution(lab, prompt, reducer, max_tokens, seed, progress, batch_size)
    write_rows(result.tokens, out, "pruned_contribution")
    return result


def compute_cells(lab, prompt_of, cells: list, *, reducer, max_tokens: int, seed: int, batch_size: int) -> list[dict]:
    """Every ablation row of each prompt in `cells` (`PromptCell`s): its two sets, then its single tokens.

    Args:
        lab: the `Lab`.
        prompt_of: prompt index -> `Prompt` (built on the calling process).
        cells: the prompts.
        reducer, max_tokens, seed, batch_size: as in `pruned_contribution`.
    Returns:
        row dicts with `COLUMNS`, a prompt's rows together.
    """
    rows = []
    missing = dict.fromkeys(TOKEN_COLUMNS)
    for cell in cells:
        result = contribution(lab, prompt_of(cell.prompt), reducer, max_tokens, seed, False, batch_size)
        tags = {
            "prompt": cell.prompt,
            "prompt_key": cell.key,
            "target": result.target,
            "target_token": result.target_token,
            "spearman": result.spearman,
        }
        sets = [
            ("dropped set", result.dropped, result.dropped_set_effect, result.dropped_set_kl),
            ("kept set", result.kept, result.kept_set_effect, result.kept_set_kl),
        ]
        for ablated, tokens, effect, kl in sets:
            rows.append({**tags, "ablated": ablated, "tokens": tokens, **missing, "effect": effect, "kl": kl})
        rows.extend({**tags, "ablated": "token", "tokens": 1, **row} for row in result.tokens.to_dict("records"))
    return rows


def contribution(
    lab, prompt, reducer, max_tokens: int, seed: int, progress: bool, batch_size: int = 16
) -> ContributionResult:
    """`pruned_contribution` on one prompt, nothing written."""
    import pandas as pd

    baseline = unreduced_baseline(lab, prompt, reducer, "pruned_contribution")
    prompt, reducers, encoded, target = baseline.prompt, baseline.reducers, baseline.encoded, baseline.target
    reference_logits = baseline.full.logits[0]
    base_margin = margin(reference_logits, target)
    decision_map = lab.prepare(prompt, reducer=reducer, encoded=encoded).token_map  # merge + reduce, no LLM
    decision = decision_map.df
    media = decision[decision.modality.isin(list(reducers))]
    dropped_rows = media.index[~media.kept].to_numpy()
    kept_rows = media.index[media.kept].to_numpy()

    def masks_of(rows) -> np.ndarray:
        mask = np.zeros(len(decision), dtype=bool)
        mask[rows] = True
        return mask

    rng = np.random.default_rng(seed)
    sample = media.index.to_numpy()
    if len(sample) > max_tokens:
        sample = np.sort(rng.choice(sample, size=max_tokens, replace=False))
    groups = [dropped_rows, kept_rows, *([row] for row in sample)]
    bar = progress_bar(len(groups), "pruned contribution", progress)
    effects = []  # (|change of the margin|, KL) of ablating each group; an empty group changes nothing
    for start in range(0, len(groups), batch_size):
        chunk = [masks_of(rows) for rows in groups[start : start + batch_size]]
        prefilled = lab.prefill(
            [prompt] * len(chunk),
            reducer=None,
            encoded=encoded,
            interventions=[[ablate_tokens(mask)] for mask in chunk],
        )
        for mask, row in zip(chunk, prefilled, strict=True):
            logits = row.next_token_logits
            change = abs(margin(logits, target) - base_margin), kl_divergence(reference_logits, logits)
            effects.append(change if mask.any() else (0.0, 0.0))
        bar.update(len(chunk))
    bar.close()
    (dropped_effect, dropped_kl), (kept_effect, kept_kl) = effects[:2]
    rows = []
    for row, (effect, kl) in zip(sample, effects[2:], strict=True):
        token = decision.loc[row]
        rows.append(
            {
                "row": int(row),
                "modality": token.modality,
                "item": int(token["item"]),
                "tubelet": int(token.tubelet),
                "row_in_grid": int(token["row"]),
                "col_in_grid": int(token["col"]),
                "score": float(token.score),
                "dropped": not bool(token.kept),
                "effect": effect,
                "kl": kl,
            }
        )
    tokens = pd.DataFrame(rows, columns=TOKEN_COLUMNS)
    scored = tokens.dropna(subset=["score"])
    spearman = float(scored.score.rank().corr(scored.effect.rank())) if len(scored) > 2 else float("nan")
    return ContributionResult(
        tokens=tokens,
        token_map=decision_map,
        target=target,
        target_token=lab.tokenizer.decode([target]),
        dropped=int(len(dropped_rows)),
        kept=int(len(kept_rows)),
        dropped_set_effect=dropped_effect,
        kept_set_effect=kept_effect,
        dropped_set_kl=dropped_kl,
        kept_set_kl=kept_kl,
        spearman=spearman,
    )
