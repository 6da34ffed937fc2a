"""`matched_ablation`: token reduction on against off, under matched conditions, as one call (the referees' request:
controlled accuracy and latency comparisons with and without token reduction).

Every prompt runs in every arm: no reduction, each reducer, and for each reducer a `RandomDrop` that keeps exactly the
reducer's budget (added automatically: UniPruneBench, arXiv 2511.02650, finds random pruning a strong baseline).
Conditions are matched: the same prompts, chat template and decoding (`RunOptions`) in every arm; a prompt's arms run
interleaved, in a shuffled order (seeded per prompt), `repeats` times, so drift of the machine spreads over the arms
alike. Per (prompt, arm) row: the answer and whether it is right, the first answer token's margin (log p of the
reference's first token over the best other token), agreement with the unreduced run of the same prompt (same answer,
KL of the first token's distribution, change of the margin), and the median time to first token (encoders + reducer +
prefill: everything before the first token's logits) and prefill time over the repeats.

`MatchedAblation` turns the rows into statistics with scipy's own functions: Wilson intervals of each arm's accuracy
(`binomtest(k, n).proportion_ci(method="wilson")`) and paired bootstrap intervals (`scipy.stats.bootstrap(...,
paired=True)`, percentile, seeded) of every difference against no reduction and against the arm's random control,
of the margin shift and of the time ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validate
from ..errors import OmniLabInputError
from ..options import RunOptions
from .common import is_correct, kept_counts, kl_divergence, margin
from .per_prompt import run_per_prompt
from .sweep import _make

COLUMNS = [
    "prompt",
    "prompt_key",
    "arm",
    "reducer",
    "control_for",
    "kept_tokens",
    "prompt_tokens",
    "answer",
    "reference",
    "correct",
    "margin",
    "same_answer",
    "kl_first_token",
    "margin_change",
    "ttft_s",
    "prefill_s",
    "repeats",
]
DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "arm": "str",
    "reducer": "str",
    "control_for": "str?",
    "kept_tokens": "int64",
    "prompt_tokens": "int64",
    "answer": "str",
    "reference": "str?",
    "correct": "boolean",
    "margin": "float64",
    "same_answer": "bool",
    "kl_first_token": "float64",
    "margin_change": "float64",
    "ttft_s": "float64",
    "prefill_s": "float64",
    "repeats": "int64",
}
NONE = "none"


@dataclass(frozen=True)
class Arm:
    """One condition: its label, the reducer (None for no reduction) and, for a random control, the arm it matches."""

    label: str
    reducer: object = None
    control_for: str | None = None


def arm_label(reducer) -> str:
    """A short label: "EVS 0.7" (class name and rate to 3 significant digits: "UniformTemporal 0.667"), or the
    reducer's repr when it has no rate."""
    rate = getattr(reducer, "rate", None)
    return f"{type(reducer).__name__} {rate:.3g}" if isinstance(rate, (int, float)) else repr(reducer)


def plan_arms(reducers, rates, seed: int) -> list[Arm]:
    """No reduction, then each reducer followed by its equal-budget random control."""
    from ..reduction import RandomDrop, Reducer

    arms = [Arm(NONE)]
    made = []
    for entry in reducers:
        if getattr(entry, "in_llm", False):
            raise OmniLabInputError(f"{entry!r} acts inside the LLM; matched_ablation compares reducers before it")
        if not isinstance(entry, type) and isinstance(entry, Reducer):
            made.append(entry)
        else:
            if not rates:
                raise OmniLabInputError(
                    f"matched_ablation: {entry!r} needs rates=[...] (or pass reducer objects such as EVS(0.7))"
                )
            made += [_make(entry, rate) for rate in rates]
    if not made:
        raise OmniLabInputError("matched_ablation needs at least one reducer arm, e.g. [ol.reducers.EVS(0.7)]")
    for reducer in made:
        label = arm_label(reducer)
        if any(arm.label == label for arm in arms):
            raise OmniLabInputError(f"matched_ablation: the arm {label!r} is given twice")
        arms += [Arm(label, reducer), Arm(f"random for {label}", RandomDrop.matching(reducer, seed=seed), label)]
    return arms


def matched_ablation(
    lab,
    prompts,
    reducers,
    *,
    rates=None,
    options: RunOptions | None = None,
    repeats: int = 3,
    seed: int = 0,
    progress: bool = True,
    out=None,
    cluster=None,
) -> MatchedAblation:
    """Every prompt in every arm (no reduction, each reducer, its equal-budget random control), matched and timed.

    Args:
        lab: the `Lab` (with an executor that loads its own models, also a model source string such as "toy").
        prompts: an `ol.studies.Dataset` (its references score the answers), or a list of prompts, strings or
            (prompt, reference) pairs.
        reducers: reducer objects (`ol.reducers.EVS(0.7)`), or classes / names with `rates`.
        rates: rates for the reducer classes and names.
        options: the decoding every arm shares (`RunOptions`; default `max_new_tokens=8`, greedy); its `reducer`,
            `capture`, `cache` and `interventions` must be left unset.
        repeats: runs of each (prompt, arm), interleaved in a shuffled order; timings are their median.
        seed: seed of the random controls and of the run order.
        progress: show a progress bar over the prompts.
        out: SQLite (.sqlite/.db, table "matched_ablation") or Parquet: rows written prompt by prompt; a rerun skips
            the prompts already there.
        cluster: where prompts run (None: here; `ol.executors.Threads(labs)`; `ol.cluster.Ray(...)`): the same rows.
    Returns:
        `MatchedAblation`.
    """
    repeats = validate.number("repeats", repeats, low=1, integer=True)
    seed = validate.number("seed", seed, low=0, integer=True)
    options = RunOptions(max_new_tokens=8) if options is None else RunOptions.of(options)
    if options.reducer != "model" or options.capture or options.cache or options.interventions:
        raise OmniLabInputError(
            "matched_ablation's options carry the decoding only: leave reducer, capture, cache and interventions unset "
            "(the arms set the reducer)"
        )
    if isinstance(rates, (int, float)):
        rates = [rates]
    rates = [validate.number(f"rates[{i}]", rate, low=0, high=1) for i, rate in enumerate(rates or [])]
    arms = plan_arms(list(reducers) if isinstance(reducers, (list, tuple)) else [reducers], rates, seed)
    if not isinstance(prompts, list) and not hasattr(prompts, "rows"):
        raise OmniLabInputError("matched_ablation compares arms over many prompts: give a Dataset or a list of prompts")
    rows = run_per_prompt(
        "matched_ablation",
        ablation_cells,
        lab,
        prompts,
        {"arms": arms, "options": options, "repeats": repeats, "seed": seed},
        columns=COLUMNS,
        dtypes=DTYPES,
        out=out,
        table="matched_ablation",
        progress=progress,
        cluster=cluster,
    )
    return MatchedAblation(rows, [arm.label for arm in arms], seed)


def ablation_cells(lab, prompt_of, cells: list, *, arms: list[Arm], options: RunOptions, repeats: int, seed: int):
    """Every arm's row of each prompt in `cells` (`PromptCell`s)."""
    rows = []
    for cell in cells:
        prompt = prompt_of(cell.prompt)
        rows += [
            {"prompt": cell.prompt, "prompt_key": cell.key, **row}
            for row in prompt_rows(lab, prompt, arms, options, repeats, seed, cell.prompt)
        ]
    return rows


def prompt_rows(lab, prompt, arms: list[Arm], options: RunOptions, repeats: int, seed: int, index: int) -> list[dict]:
    """One prompt in every arm, `repeats` times in a shuffled order; one row per arm."""
    order = np.random.default_rng([seed, index])
    first: dict[int, object] = {}
    ttft: dict[int, list] = {arm: [] for arm in range(len(arms))}
    prefill: dict[int, list] = {arm: [] for arm in range(len(arms))}
    for _ in range(repeats):
        for arm in order.permutation(len(arms)).tolist():
            run = lab.run(prompt, options, reducer=arms[arm].reducer, return_logits=True)
            times = run.timings
            ttft[arm].append(times["encode_s"] + times["reduce_s"] + times["prefill_s"])
            prefill[arm].append(times["prefill_s"])
            first.setdefault(arm, run)
    reference = prompt.reference
    target = lab.tokenizer.encode(reference.strip(), add_special_tokens=False)[:1] if reference else []
    unreduced = first[0]

    def margin_of(run) -> float:
        return margin(run.logits[0], target[0]) if target and run.logits is not None else float("nan")

    base_margin = margin_of(unreduced)
    rows = []
    for index_of_arm, arm in enumerate(arms):
        run = first[index_of_arm]
        counts = kept_counts(run.token_map)
        value = margin_of(run)
        logits, base = run.logits, unreduced.logits
        rows.append(
            {
                "arm": arm.label,
                "reducer": repr(arm.reducer) if arm.reducer is not None else NONE,
                "control_for": arm.control_for,
                "kept_tokens": counts["kept_tokens"],
                "prompt_tokens": counts["prompt_tokens"],
                "answer": run.answer,
                "reference": reference,
                "correct": is_correct(run.answer, reference),
                "margin": value,
                "same_answer": run.answer == unreduced.answer,
                "kl_first_token": kl_divergence(base[0], logits[0]) if logits is not None else float("nan"),
                "margin_change": value - base_margin,
                "ttft_s": float(np.median(ttft[index_of_arm])),
                "prefill_s": float(np.median(prefill[index_of_arm])),
                "repeats": repeats,
            }
        )
    return rows


class MatchedAblation:
    """`matched_ablation`'s result: the rows and their statistics.

    Attributes:
        rows: one row per (prompt, arm) (`COLUMNS`).
        arms: the arm labels in order: "none", then each reducer and its random control.
        seed: seed of the bootstrap resamples.
    """

    confidence = 0.95
    resamples = 2000

    def __init__(self, rows, arms: list[str], seed: int = 0):
        self.rows, self.arms, self.seed = rows, list(arms), seed

    def __repr__(self) -> str:
        return f"MatchedAblation({self.rows.prompt.nunique()} prompts x {len(self.arms)} arms: {', '.join(self.arms)})"

    def paired(self, column: str, arm: str, against: str = NONE) -> tuple[np.ndarray, np.ndarray]:
        """(values of `arm`, values of `against`) of one column over the prompts both have, in prompt order."""
        table = self.rows.pivot(index="prompt", columns="arm", values=column)
        both = table[[arm, against]].dropna()
        return both[arm].to_numpy(dtype=np.float64), both[against].to_numpy(dtype=np.float64)

    def interval(self, statistic, *samples) -> tuple[float, float, float]:
        """(estimate, low, high): `statistic` on the paired samples and its percentile bootstrap interval
        (`scipy.stats.bootstrap`, paired, `resamples` resamples, seeded); NaN with fewer than 2 pairs."""
        from scipy import stats

        estimate = float(statistic(*samples))
        if len(samples[0]) < 2:
            return estimate, float("nan"), float("nan")
        if all(np.ptp(sample) == 0 for sample in samples):  # every resample gives the estimate itself
            return estimate, estimate, estimate
        result = stats.bootstrap(
            samples,
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=self.resamples,
            confidence_level=self.confidence,
            method="percentile",
            random_state=np.random.default_rng(self.seed),
        )
        return estimate, float(result.confidence_interval.low), float(result.confidence_interval.high)

    def accuracy(self):
        """Per arm: n (prompts with a reference), correct, accuracy and its Wilson interval (scipy's binomtest)."""
        import pandas as pd
        from scipy import stats

        records = []
        for arm in self.arms:
            mine = self.rows[(self.rows.arm == arm) & self.rows.correct.notna()]
            n, k = len(mine), int(mine.correct.astype(bool).sum())
            low = high = float("nan")
            if n:
                interval = stats.binomtest(k, n).proportion_ci(confidence_level=self.confidence, method="wilson")
                low, high = float(interval.low), float(interval.high)
            records.append({"arm": arm, "n": n, "correct": k, "accuracy": k / n if n else float("nan"),
                            "low": low, "high": high})  # fmt: skip
        return pd.DataFrame(records).set_index("arm")

    def differences(self):
        """Per reduced arm: paired differences with bootstrap intervals against no reduction and against its random
        control: accuracy (points of the share right), margin shift, agreement, and the TTFT and prefill ratios."""
        import pandas as pd

        def mean_difference(a, b):
            return np.mean(a - b)

        def ratio(a, b):
            return np.mean(a) / np.mean(b)

        records = []
        for arm in self.arms[1:]:
            control = next(
                (label for label in self.arms if self.rows.loc[self.rows.arm == label, "control_for"].eq(arm).any()),
                None,
            )
            entry = {"arm": arm}
            for name, against in (("vs_none", NONE), ("vs_random", control)):
                if against is None:
                    continue
                mine, theirs = self.paired("correct", arm, against)
                entry[f"accuracy_{name}"] = self.interval(mean_difference, mine, theirs)
            entry["margin_shift"] = self.interval(np.mean, self.paired("margin_change", arm, NONE)[0])
            entry["same_answer"] = float(self.rows.loc[self.rows.arm == arm, "same_answer"].mean())
            entry["kl_first_token"] = float(self.rows.loc[self.rows.arm == arm, "kl_first_token"].mean())
            entry["ttft_ratio"] = self.interval(ratio, *self.paired("ttft_s", arm, NONE))
            entry["prefill_ratio"] = self.interval(ratio, *self.paired("prefill_s", arm, NONE))
            records.append(entry)
        return pd.DataFrame(records).set_index("arm")

    def summary(self):
        """The ablation table as a paper prints it: one row per arm with tokens kept, accuracy [95% CI], the paired
        difference against no reduction and against the equal-budget random control in points [95% CI], the margin
        shift, agreement with the unreduced answers, and the TTFT and prefill ratios [95% CI]."""
        import pandas as pd

        accuracy, differences = self.accuracy(), self.differences()

        def shown(triple, scale=1.0, digits=1) -> str:
            if not isinstance(triple, tuple):
                return ""
            estimate, low, high = (scale * value for value in triple)
            return f"{estimate:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"

        records = []
        for arm in self.arms:
            row = accuracy.loc[arm]
            kept = self.rows.loc[self.rows.arm == arm, "kept_tokens"].mean()
            entry = {
                "arm": arm,
                "tokens kept": f"{kept:.0f}",
                "accuracy %": f"{100 * row.accuracy:.1f} [{100 * row.low:.1f}, {100 * row.high:.1f}]",
            }
            if arm in differences.index:
                diff = differences.loc[arm]
                entry["Δ vs none (pts)"] = shown(diff.get("accuracy_vs_none"), 100)
                entry["Δ vs random (pts)"] = shown(diff.get("accuracy_vs_random"), 100)
                entry["margin shift"] = shown(diff.margin_shift, 1, 2)
                entry["same answer %"] = f"{100 * diff.same_answer:.0f}"
                entry["TTFT ratio"] = shown(diff.ttft_ratio, 1, 2).replace("+", "")
                entry["prefill ratio"] = shown(diff.prefill_ratio, 1, 2).replace("+", "")
            records.append(entry)
        return pd.DataFrame(records).set_index("arm").fillna("")

    def figure(self):
        """Accuracy with Wilson intervals per arm (random controls lighter), and the TTFT ratio against no reduction
        with its bootstrap interval: a plotly `go.Figure`."""
        from plotly.subplots import make_subplots

        accuracy, differences = self.accuracy(), self.differences()
        figure = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (95% Wilson)", "time to first token / none"))
        colours = ["#7f7f7f" if arm == NONE else "#c7c7c7" if arm.startswith("random for") else "#1f77b4"
                   for arm in self.arms]  # fmt: skip
        figure.add_bar(
            x=self.arms,
            y=100 * accuracy.accuracy,
            marker_color=colours,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": 100 * (accuracy.high - accuracy.accuracy),
                "arrayminus": 100 * (accuracy.accuracy - accuracy.low),
            },  # fmt: skip
            name="accuracy %",
            row=1,
            col=1,
        )
        ratios = [differences.loc[arm, "ttft_ratio"] for arm in self.arms[1:]]
        figure.add_bar(
            x=self.arms[1:],
            y=[r[0] for r in ratios],
            marker_color=colours[1:],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r[2] - r[0] for r in ratios],
                "arrayminus": [r[0] - r[1] for r in ratios],
            },  # fmt: skip
            name="TTFT ratio",
            row=1,
            col=2,
        )
        figure.add_hline(y=1.0, line_dash="dot", row=1, col=2)
        figure.update_yaxes(title_text="% right", row=1, col=1)
        figure.update_yaxes(title_text="ratio", row=1, col=2)
        figure.update_layout(showlegend=False, title="Matched ablation", margin={"l": 50, "r": 20, "t": 60, "b": 80})
        return figure
