"""`pruned_contribution`: would the tokens a reducer drops have mattered? Ablate them in the unreduced run.

In the unreduced run, zero (ablate) the merged embeddings of the tokens the reducer would drop, then of those it
would keep, and measure how the first answer token moves (change in log-probability margin, KL divergence). Then
ablate tokens one at a time (all of them, or an even sample of `max_tokens`) and report the rank correlation between
the reducer's scores and each token's effect: a reducer that prunes well scores high what matters.
"""

from __future__ import annotations

import numpy as np

from ..capture.interventions import ablate_tokens
from .common import kl_divergence, margin, progress, unreduced_baseline, write_rows
from .results import ContributionResult

TOKEN_COLUMNS = ["row", "modality", "item", "tubelet", "row_in_grid", "col_in_grid", "score", "dropped", "effect", "kl"]


def pruned_contribution(
    lab, prompt, reducer, *, max_tokens: int = 96, seed: int = 0, progress_bar: bool = True, out=None
) -> ContributionResult:
    """Causal effect of the tokens a reducer drops vs keeps, and how well its scores rank that effect.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` (its `reference`, when set, is the target answer) or a string.
        reducer: a reducer object or {modality: reducer}.
        max_tokens: at most this many single-token ablations (an even random sample, seeded).
        seed: seed of that sample.
        progress_bar, out: as in `sweep` (`out` receives the per-token rows).
    Returns:
        `ContributionResult`: `.tokens` (one row per single-token ablation), the dropped / kept set effects and
        KLs, `.spearman`, the decision's token map and `.row_scores()`.
    """
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

    def effect_of(rows) -> tuple[float, float]:
        mask = np.zeros(len(decision), dtype=bool)
        mask[rows] = True
        run = lab.run(
            prompt,
            max_new_tokens=1,
            reducer=None,
            return_logits=True,
            encoded=encoded,
            interventions=[ablate_tokens(mask)],
        )
        return abs(margin(run.logits[0], target) - base_margin), kl_divergence(reference_logits, run.logits[0])

    rng = np.random.default_rng(seed)
    sample = media.index.to_numpy()
    if len(sample) > max_tokens:
        sample = np.sort(rng.choice(sample, size=max_tokens, replace=False))
    bar = progress(len(sample) + 2, "pruned contribution", progress_bar)
    dropped_effect, dropped_kl = effect_of(dropped_rows) if len(dropped_rows) else (0.0, 0.0)
    bar.update()
    kept_effect, kept_kl = effect_of(kept_rows) if len(kept_rows) else (0.0, 0.0)
    bar.update()
    rows = []
    for row in sample:
        effect, kl = effect_of([row])
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
        bar.update()
    bar.close()
    tokens = pd.DataFrame(rows, columns=TOKEN_COLUMNS)
    scored = tokens.dropna(subset=["score"])
    spearman = float(scored.score.rank().corr(scored.effect.rank())) if len(scored) > 2 else float("nan")
    write_rows(tokens, out, "pruned_contribution")
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
