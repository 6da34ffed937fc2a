"""Accuracy against token-reduction rate on ShapesWorld's hard tier: is reduction free when the evidence is brief?

    python benchmarks/toy_hard_tier_sweep.py [--per-task 40] [--rates 0.5 0.7 0.8 0.9 0.95] [--threads 2] \
        [--model toy] [--out omni_lab/toy/assets/omni-toy] [--rows sweep.csv]

Runs `--per-task` held-out questions of every hard-tier task (`omni_lab.toy.evaluation.held_out(per_task=True)`,
evaluation seed `--seed`) through the public path, `lab.prompt` + `lab.run(p, reducer={"video": reducer})`, greedy,
with the media encoded once per question (`lab.encode`, passed as `encoded=`). Only the video is reduced (the sync
family's audio stays whole). Arms per rate r: EVS(r), UniformTemporal(k = round(1 / (1 - r))), RandomDrop(r),
DivPrune(r), ToMe(r), and two equal-budget random controls: RandomDrop.matching(EVS(r)) (EVS keeps at least one
tubelet and rounds its own way) and RandomDrop.matching(UniformTemporal(k)) (its achieved rate differs from r);
RandomDrop(r) keeps exactly DivPrune's and ToMe's token count. Every RandomDrop draws from its own seed per question
(the question's index), so the dropped cells differ from clip to clip.

Per arm: accuracy with its 95% Wilson interval (`scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`), the
paired difference from no reduction with a 95% percentile bootstrap interval over questions
(`scipy.stats.bootstrap(..., paired=True)`, 10,000 resamples, seed 0), and the share of the events' tokens (the ground
truth's `EventTruth.event_rows`) the reducer kept. With `--out`, writes reduction_sweep.json (read by the model card,
`python -m omni_lab.toy.model_card DIR` re-renders it), reduction_sweep.png (accuracy against achieved rate per
reducer); `--rows FILE.csv` also keeps one row per question and arm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RATES = (0.5, 0.7, 0.8, 0.9, 0.95)
MAX_NEW_TOKENS = 8
RELEASE_RATE = 0.7
CRITERION_POINTS = 0.10  # "not free": at least 10 points lost at or below the release's rate, interval excluding 0
MAIN_ARMS = ("EVS", "UniformTemporal", "RandomDrop", "DivPrune", "ToMe")


def arms(rate: float, question: int) -> dict:
    """{arm name: video reducer} at one rate; RandomDrop seeds are the question's index."""
    from omni_lab import reducers

    keep_every = max(1, round(1 / (1 - rate)))
    evs, uniform = reducers.EVS(rate), reducers.UniformTemporal(keep_every)
    return {
        "EVS": evs,
        "UniformTemporal": uniform,
        "RandomDrop": reducers.RandomDrop(rate, seed=question),
        "DivPrune": reducers.DivPrune(rate),
        "ToMe": reducers.ToMe(rate),
        "RandomDrop = EVS budget": reducers.RandomDrop.matching(evs, seed=question),
        "RandomDrop = UniformTemporal budget": reducers.RandomDrop.matching(uniform, seed=question),
    }


def run_sweep(lab, examples, rates, progress: bool = True):
    """One row per (question, arm): correct, video tokens kept of the total, event tokens kept of the total."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    for question, example in enumerate(tqdm(examples, desc="sweep", disable=not progress, mininterval=5.0)):
        prompt = example.prompt(lab)
        encoded = lab.encode(prompt)
        truth = example.truth["events"]
        plan = [("none", 0.0, None)] + [(name, rate, r) for rate in rates for name, r in arms(rate, question).items()]
        for name, rate, reducer in plan:
            run = lab.run(
                prompt,
                max_new_tokens=MAX_NEW_TOKENS,
                reducer=None if reducer is None else {"video": reducer},
                encoded=encoded,
            )
            token_map = run.token_map
            video = token_map.rows(modality="video")
            event = truth.event_rows(token_map)
            rows.append(
                {
                    "question": question,
                    "family": example.family,
                    "task": example.task,
                    "seed": example.seed,
                    "arm": name,
                    "rate": rate,
                    "reducer": repr(reducer),
                    "answer": example.answer,
                    "prediction": run.answer,
                    "correct": run.answer.strip() == example.answer,
                    "video_tokens": int(video.sum()),
                    "video_kept": int((video & token_map["kept"]).sum()),
                    "event_tokens": int(event.sum()),
                    "event_kept": int((event & token_map["kept"]).sum()),
                }
            )
    return pd.DataFrame(rows)


def wilson(correct) -> tuple[float, float]:
    from scipy.stats import binomtest

    interval = binomtest(int(sum(correct)), len(correct)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def paired_difference(reduced, baseline) -> tuple[float, float, float]:
    """Mean of reduced - baseline correctness over the same questions, with a 95% paired bootstrap interval."""
    import numpy as np
    from scipy.stats import bootstrap

    reduced, baseline = np.asarray(reduced, dtype=float), np.asarray(baseline, dtype=float)
    difference = float(reduced.mean() - baseline.mean())
    if np.array_equal(reduced, baseline):
        return difference, difference, difference  # every resample gives 0: the interval is the point
    result = bootstrap(
        (reduced, baseline),
        lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
        paired=True,
        n_resamples=10_000,
        confidence_level=0.95,
        method="percentile",
        random_state=0,
    )
    return difference, float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(frame, rates) -> dict:
    """The sweep's table: baseline and one cell per (arm, rate) with intervals, per-task accuracy at the release rate."""
    baseline = frame[frame.arm == "none"].sort_values("question")
    summary = {
        "baseline": {"accuracy": float(baseline.correct.mean()), "ci": wilson(baseline.correct)},
        "rows": [],
        "tasks": {},
    }
    for arm in dict.fromkeys(frame.arm[frame.arm != "none"]):
        for rate in rates:
            cell = frame[(frame.arm == arm) & (frame.rate == rate)].sort_values("question")
            difference, low, high = paired_difference(cell.correct.to_numpy(), baseline.correct.to_numpy())
            events = cell.event_tokens.sum()
            summary["rows"].append(
                {
                    "reducer": arm,
                    "rate": rate,
                    "achieved_rate": float(1 - cell.video_kept.sum() / cell.video_tokens.sum()),
                    "accuracy": float(cell.correct.mean()),
                    "ci": wilson(cell.correct),
                    "diff": difference,
                    "diff_ci": [low, high],
                    "event_tokens_kept": float(cell.event_kept.sum() / events) if events else None,
                    "n": len(cell),
                }
            )
    for (family, task), rows in frame.groupby(["family", "task"], sort=False):
        at_release = rows[(rows.rate == RELEASE_RATE) | (rows.arm == "none")]
        summary["tasks"][f"{family}/{task}"] = {
            arm: float(group.correct.mean()) for arm, group in at_release.groupby("arm", sort=False)
        }
    return summary


def findings(summary: dict) -> str:
    """What the numbers say, in sentences built from them (nothing here is typed in by hand)."""
    rows = summary["rows"]

    def cell(name, rate):
        return next(row for row in rows if row["reducer"] == name and row["rate"] == rate)

    def points(row):
        low, high = row["diff_ci"]
        return f"{100 * row['diff']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]"

    costly = [
        row
        for row in rows
        if row["achieved_rate"] <= RELEASE_RATE + 0.01 and row["diff"] <= -CRITERION_POINTS and row["diff_ci"][1] < 0
    ]
    sentences = []
    if costly:
        named = ", ".join(f"{row['reducer']} at {row['rate']:g} ({points(row)})" for row in costly)
        sentences.append(
            f"Reduction is not free here: at or below the release's rate {RELEASE_RATE}, {named} lose at least "
            f"{100 * CRITERION_POINTS:.0f} points against no reduction, the paired interval excluding 0."
        )
    else:
        sentences.append(
            f"No reducer at or below the release's rate {RELEASE_RATE} loses {100 * CRITERION_POINTS:.0f} points with "
            "an interval excluding 0 on this sample."
        )
    names = [name for name in MAIN_ARMS if any(row["reducer"] == name for row in rows)]
    if RELEASE_RATE in summary["rates"]:
        at_release = [cell(name, RELEASE_RATE) for name in names]
        ranking = sorted(at_release, key=lambda row: -(row["event_tokens_kept"] or 0.0))
        sentences.append(
            f"At {RELEASE_RATE}, the share of the events' own tokens each reducer keeps (ground truth: "
            "`EventTruth.event_rows`) orders them: "
            + ", ".join(
                f"{row['reducer']} {100 * (row['event_tokens_kept'] or 0.0):.0f}% (accuracy "
                f"{100 * row['accuracy']:.1f}%)"
                for row in ranking
            )
            + "."
        )
    highest = max(summary["rates"])
    worst = {name: cell(name, highest) for name in names}
    sentences.append(
        f"At {highest:g}: "
        + ", ".join(f"{name} {points(row)}" for name, row in worst.items())
        + " against no reduction."
    )
    return " ".join(sentences)


def plot(summary: dict, path: Path) -> None:
    """Accuracy against achieved rate per reducer (Wilson intervals), no reduction as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    low, high = summary["baseline"]["ci"]
    axes.axhspan(low, high, color="0.85", label=f"no reduction {100 * summary['baseline']['accuracy']:.1f}%")
    for name in dict.fromkeys(row["reducer"] for row in summary["rows"]):
        cells = sorted((row for row in summary["rows"] if row["reducer"] == name), key=lambda row: row["achieved_rate"])
        xs = [row["achieved_rate"] for row in cells]
        ys = [row["accuracy"] for row in cells]
        errors = [[row["accuracy"] - row["ci"][0] for row in cells], [row["ci"][1] - row["accuracy"] for row in cells]]
        style = "--" if name.startswith("RandomDrop =") else "-"
        axes.errorbar(xs, ys, yerr=errors, fmt="o" + style, capsize=3, label=name, alpha=0.9)
    axes.axvline(RELEASE_RATE, color="0.4", linestyle=":", label=f"release rate {RELEASE_RATE}")
    axes.set_xlabel("share of video tokens dropped (achieved)")
    axes.set_ylabel("accuracy (95% Wilson interval)")
    axes.set_title(f"Toy twin, ShapesWorld hard tier: {summary['n']} held-out questions")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    import torch

    import omni_lab as ol
    from omni_lab.toy.evaluation import held_out
    from omni_lab.toy.shapesworld import TIERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=40, help="held-out questions per hard-tier task")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed 0-999")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--out", type=Path, default=None, help="write reduction_sweep.json and .png here")
    parser.add_argument("--rows", type=Path, default=None, help="write one row per question and arm (CSV) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    lab = ol.load(args.model, progress=False)
    examples = held_out(args.per_task, args.seed, TIERS["hard"], per_task=True)
    started = time.perf_counter()
    frame = run_sweep(lab, examples, args.rates)
    summary = summarise(frame, args.rates)
    command = "python benchmarks/toy_hard_tier_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary |= {
        "command": command.strip(),
        "n": len(examples),
        "per_task": args.per_task,
        "seed": args.seed,
        "rates": list(args.rates),
        "model": args.model,
        "wall_seconds": time.perf_counter() - started,
        "plot": "reduction_sweep.png",
    }
    summary["findings"] = findings(summary)
    print(json.dumps({key: summary[key] for key in ("baseline", "n", "wall_seconds")}, indent=1))
    for row in summary["rows"]:
        low, high = row["diff_ci"]
        print(
            f"{row['reducer']:38s} {row['rate']:.2f} (achieved {row['achieved_rate']:.2f}) acc {row['accuracy']:.3f} "
            f"diff {row['diff']:+.3f} [{low:+.3f}, {high:+.3f}] events kept {row['event_tokens_kept']}"
        )
    print(summary["findings"])
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reduction_sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
        plot(summary, args.out / summary["plot"])
    if args.rows is not None:
        frame.to_csv(args.rows, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
