"""Accuracy vs reduction rate on the toy twin: which reducer keeps the tokens a video question needs.

    python benchmarks/toy_reduction_accuracy.py [--n 100] [--threads 1] [--out sweep.parquet]

Runs `ol.studies.sweep` on `--n` held-out ShapesWorld video questions (seeds from `shapesworld.eval_seed`, never
trained on) with EVS, PixelDiff, RandomDrop, UniformTemporal and DivPrune at rates 0.25, 0.5, 0.75, 0.9 (rate 0 is
the unreduced run). UniformTemporal keeps every k-th tubelet, k = round(1 / (1 - rate)), so its achieved rate
differs (0.25 keeps everything); the table prints the video tokens actually kept. Every cell is paired by the sweep
with a RandomDrop at exactly its budget (in brackets). When a video task is among the shipped twin's
`omni_lab.toy.evaluation.KNOWN_GAPS`, each cell also gives the accuracy on the learned tasks alone.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RATES = (0.25, 0.5, 0.75, 0.9)


def uniform_temporal(rate: float):
    from omni_lab.reduction import UniformTemporal

    return UniformTemporal(max(1, round(1 / (1 - rate))))


def main() -> None:
    import pandas as pd
    import torch

    import omni_lab as ol
    from omni_lab.toy import shapesworld
    from omni_lab.toy.evaluation import KNOWN_GAPS

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the sweep rows (.parquet or .sqlite)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lab = ol.load("toy", progress=False)
    examples = [shapesworld.sample(shapesworld.eval_seed(0, "video", i), family="video") for i in range(args.n)]
    prompts = [example.prompt(lab, reference=example.answer) for example in examples]
    r = ol.reducers
    reducers = [r.EVS, r.PixelDiff, r.RandomDrop, uniform_temporal, r.DivPrune]
    frame = ol.studies.sweep(lab, prompts, reducers, RATES, max_new_tokens=8, out=args.out)

    tasks = pd.Series([f"video/{example.task}" for example in examples])
    frame["learned"] = ~frame.prompt.map(tasks).isin(KNOWN_GAPS)
    frame["name"] = frame.reducer.str.split("(").str[0]
    total = frame[frame.reducer == "none"].set_index("prompt").kept_video
    frame["kept_share"] = frame.kept_video / frame.prompt.map(total)

    gaps = not frame.learned.all()

    def accuracy(rows) -> str:
        learned = f" / {rows[rows.learned].correct.mean():.0%}" if gaps else ""
        return f"{rows.correct.mean():.0%}{learned}"

    baseline = frame[frame.reducer == "none"]
    split = " (all / learned tasks)" if gaps else ""
    print(
        f"toy twin, {args.n} held-out video questions ({int(baseline.learned.sum())} on learned tasks); "
        f"accuracy{split} [equal-budget RandomDrop control]; share of video tokens kept"
    )
    print("| reducer | " + " | ".join(["0", *(f"{rate:g}" for rate in RATES)]) + " |")
    print("|---|" + "---|" * (1 + len(RATES)))
    mains = frame[frame.control_for.isna() & (frame.reducer != "none")]
    for name in dict.fromkeys(mains.name):
        cells = [accuracy(baseline)]
        for rate in RATES:
            rows = mains[(mains.name == name) & (mains.rate == rate)]
            controls = frame[frame.control_for.isin(set(rows.reducer)) & (frame.rate == rate)]
            cells.append(f"{accuracy(rows)} [{accuracy(controls)}] kept {rows.kept_share.mean():.0%}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
