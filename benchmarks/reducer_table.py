"""The reducer table: every reducer at three rates on the toy twin's ShapesWorld families, beside equal-budget random
and downsampling controls, with accuracy, agreement with the unreduced model, FLOPs and measured time.

    python benchmarks/reducer_table.py [--n 16] [--n-hard 8] [--families image,video,audio,omni,events,sync]
                                       [--rates 0.25,0.5,0.75] [--threads 1] [--out table.md] [--rows rows.parquet]
    python benchmarks/reducer_table.py --model nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16 --device cuda

Both ShapesWorld tiers (`shapesworld.TIERS`), each on the twin that learned it: the basic tier (image, video, audio,
omni) on `--model` ("toy", stages 1-2), the hard tier (events, sync: 32-64-frame clips whose answer lies in brief
events) on `--hard-model` (default "toy-hard", stage 3, when `--model` is "toy"; otherwise `--model` itself). Each
tier gets its own table: pooling two checkpoints' accuracies into one row would mean nothing.

For each family (default: every family `omni_lab.toy.shapesworld.FAMILIES` holds that has media, so a new family
appears as soon as it lands; text-only prompts give no reducer anything to act on) `--n` held-out examples (`--n-hard`
for the hard tier's longer clips) (`shapesworld.eval_seed`, never trained on) run through `ol.studies.sweep` with
every reducer acting on the family's
media: EVS, PixelDiff, UniformTemporal (video), RandomDrop, DivPrune (any medium), ToMe, VisionZip (image, video),
AudioMerge (audio), and inside the LLM FastV (at the first attention layer), PyramidDrop and SparseVLM; each at the
three rates, each paired by the sweep with `RandomDrop.matching` (exactly its budget) and `Downsample.matching`
(smaller images / fewer frames, at most its budget: whole grids and tubelets, so often fewer tokens).

One row per (reducer, rate, arm), pooled over the prompts it acted on:

    media kept      media tokens entering the LLM / unreduced (an in-LLM reducer keeps them all at the input and
                    drops inside: its saving shows in the FLOPs and equivalent-tokens columns)
    accuracy        exact-match accuracy, Wilson 95 % interval (scipy `binomtest(k, n).proportion_ci("wilson")`)
    same answer     share of answers identical to the unreduced run's (agreement; needs no reference answer)
    KL, margin      mean KL(unreduced || reduced) of the first answer token, mean change of its margin
    FLOPs saved     estimated prefill FLOPs saved (encoders + projectors + LLM + an in-LLM reducer's scoring),
                    share of the unreduced run's (omni_lab/flops.py; checked against FlopCounterMode in
                    tests/test_flops.py)
    equiv. tokens   the unreduced LLM length with the same LLM prefill FLOPs, share of the unreduced length
    prefill ratio   median over prompts of prefill seconds / the unreduced run's (the LLM's forward to the first
                    token, the in-LLM reducer's work inside it; the encoders are timed apart): measured here, in this
                    process, on both sides the same span
    reducer ms      median of the reducer's own seconds: `reduce_s` before the LLM, plus `llm_reduce_s` inside it

On the 4 M-parameter twin the time ratios mostly measure Python overhead (a prefill takes milliseconds); the FLOPs
columns are what scale. On a real checkpoint (`--model`, `--device cuda`) the same script runs the released model
on the same synthetic prompts; accuracy then means little (the release never saw ShapesWorld), agreement, FLOPs and
times are the point. For real data give the sweep your own prompts: `ol.studies.sweep(lab, dataset, reducers,
rates, controls=("random", "downsample"))` reports every column here.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RATES = (0.25, 0.5, 0.75)


def uniform_temporal(rate: float):
    from omni_lab.reduction import UniformTemporal

    return UniformTemporal.at_rate(rate)


class FirstAttentionFastV:
    """FastV at the model's first attention layer (5 on the release; 3 on the twin), as a rate -> reducer factory."""

    def __init__(self, layer: int):
        self.layer = layer

    def __call__(self, rate: float):
        from omni_lab.reduction import FastV

        return FastV(self.layer, rate)


def factories(lab) -> list[tuple[str, object]]:
    """(name, rate -> reducer) for every reducer of the table."""
    from omni_lab import reducers as r
    from omni_lab.reduction.in_llm import attention_layers

    return [
        ("EVS", r.EVS),
        ("PixelDiff", r.PixelDiff),
        ("UniformTemporal", uniform_temporal),
        ("RandomDrop", r.RandomDrop),
        ("DivPrune", r.DivPrune),
        ("ToMe", r.ToMe),
        ("VisionZip", r.VisionZip),
        ("AudioMerge", r.AudioMerge),
        ("FastV", FirstAttentionFastV(attention_layers(lab.model)[0])),
        ("PyramidDrop", r.PyramidDrop),
        ("SparseVLM", r.SparseVLM),
    ]


def wilson(correct: int, total: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if total == 0:
        return float("nan"), float("nan")
    interval = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def run_family(lab, family: str, n: int, rates, progress: bool):
    """The sweep rows of one family, with its name and each row's arm ("reducer", "random", "downsample")."""
    import omni_lab as ol
    from omni_lab.toy import shapesworld

    examples = [shapesworld.sample(shapesworld.eval_seed(0, family, i), family=family) for i in range(n)]
    prompts = [example.prompt(lab, reference=example.answer) for example in examples]
    present = {m for m, count in prompts[0].token_map.counts().items() if m in ("image", "video", "audio") and count}
    chosen = [(name, make) for name, make in factories(lab) if present & set(make(0.5).modalities)]
    if not chosen:
        return None
    frame = ol.studies.sweep(
        lab,
        prompts,
        [make for _, make in chosen],
        rates,
        max_new_tokens=6,
        controls=("random", "downsample"),
        progress=progress,
    )
    frame["family"] = family
    names = {repr(make(rate)): name for name, make in chosen for rate in rates}
    frame["name"] = frame.apply(lambda row: names.get(row.control_for or row.reducer, "none"), axis=1)
    frame["arm"] = frame.apply(
        lambda row: (
            "reducer" if row.control_for is None else "random" if row.reducer.startswith("RandomDrop") else "downsample"
        ),
        axis=1,
    )
    return frame


def tier_of(family: str) -> str:
    """The ShapesWorld tier ("basic", "hard") a family belongs to."""
    from omni_lab.toy import shapesworld

    return next((tier for tier, members in shapesworld.TIERS.items() if family in members), "basic")


def hard_model(model: str, chosen: str | None) -> str:
    """The checkpoint the hard tier runs on: `chosen`, else "toy-hard" beside the default twin, else `model`."""
    return chosen or ("toy-hard" if model == "toy" else model)


def tables(frame, models: dict) -> str:
    """One markdown table per tier present in `frame` (titled with its checkpoint and families), then accuracy by
    family."""
    parts = []
    for tier in dict.fromkeys(frame.tier):
        rows = frame[frame.tier == tier]
        families = ", ".join(dict.fromkeys(rows.family))
        parts.append(f"{tier.capitalize()} tier ({families}) on {models.get(tier, '?')}:\n\n{table(rows.copy())}")
    parts.append(f"Accuracy by family (pooled over reducers and rates):\n\n{by_family(frame)}")
    return "\n\n".join(parts)


def table(frame) -> str:
    """The markdown table of one tier's rows (all its families pooled)."""
    import numpy as np

    frame = without_idle_controls(frame)
    frame["media_kept"] = frame.kept_image + frame.kept_video + frame.kept_audio
    base = frame[frame.reducer == "none"].set_index(["family", "prompt"])
    key = list(zip(frame.family, frame.prompt, strict=True))
    frame["media_unreduced"] = [base.loc[k, "media_kept"] for k in key]
    frame["llm_unreduced"] = [base.loc[k, "kept_tokens"] for k in key]
    frame["prefill_unreduced"] = [base.loc[k, "prefill_s"] for k in key]
    # media tokens at the LLM's input (an in-LLM reducer keeps them all there: its saving is in the FLOPs columns)
    frame["kept_share"] = frame.media_kept / frame.media_unreduced
    frame["saved_share"] = frame.saved_flops / (frame.prefill_flops + frame.saved_flops)
    frame["equivalent_share"] = frame.equivalent_tokens / frame.llm_unreduced
    frame["prefill_ratio"] = frame.prefill_s / frame.prefill_unreduced
    frame["reducer_ms"] = 1000 * (frame.reduce_s + frame.llm_reduce_s)
    lines = [
        "| reducer | rate | arm | n | media kept | accuracy [95% CI] | same answer | KL | margin Δ | FLOPs saved "
        "| equiv. tokens | prefill ratio | reducer ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label, rate, arm, rows):
        correct = rows.correct.dropna().astype(bool)
        low, high = wilson(int(correct.sum()), len(correct))
        accuracy = f"{correct.mean():.0%} [{low:.0%}, {high:.0%}]" if len(correct) else "-"
        lines.append(
            f"| {label} | {rate} | {arm} | {len(rows)} | {rows.kept_share.mean():.0%} | {accuracy} "
            f"| {rows.same_answer.mean():.0%} | {rows.kl_first_token.mean():.3f} | {np.nanmean(rows.margin_change):+.2f} "
            f"| {rows.saved_share.mean():.0%} | {rows.equivalent_share.mean():.0%} "
            f"| {rows.prefill_ratio.median():.2f} | {rows.reducer_ms.median():.2f} |"
        )

    row("none", "0", "-", frame[frame.reducer == "none"])
    for name in dict.fromkeys(frame[frame.name != "none"].name):
        for rate in sorted(frame[frame.name == name].rate.unique()):
            for arm in ("reducer", "random", "downsample"):
                rows = frame[(frame.name == name) & (frame.rate == rate) & (frame.arm == arm)]
                if len(rows):
                    row(name if arm == "reducer" else "", f"{rate:g}", arm, rows)
    return "\n".join(lines)


def without_idle_controls(frame):
    """The rows without Downsample controls on prompts that have no image or video (where they change nothing)."""
    import numpy as np

    visual = frame[frame.reducer == "none"].set_index(["family", "prompt"])
    visual = (visual.kept_image + visual.kept_video) > 0
    has_visual = np.array([bool(visual.loc[key]) for key in zip(frame.family, frame.prompt, strict=True)])
    return frame[(frame.arm != "downsample") | has_visual].copy()


def by_family(frame) -> str:
    """Accuracy per family and arm (pooled over reducers and rates), and of the unreduced runs."""
    frame = without_idle_controls(frame)
    frame["correct"] = frame.correct.astype(object)
    frame["arm"] = frame.arm.where(frame.reducer != "none", "none")
    table = frame.groupby(["family", "arm"], sort=False).correct.apply(lambda c: c.dropna().astype(bool).mean())
    table = table.unstack().reindex(columns=["none", "reducer", "random", "downsample"])
    lines = ["| family | unreduced | reducers | random controls | downsample controls |", "|---|---|---|---|---|"]
    for family, row in table.iterrows():
        cells = " | ".join("-" if value != value else f"{value:.0%}" for value in row)
        lines.append(f"| {family} | {cells} |")
    return "\n".join(lines)


def full_architecture_estimate() -> str:
    """The released architecture (meta device) on one 256-frame video: FLOPs with and without EVS 0.7."""
    import numpy as np

    import omni_lab as ol
    from omni_lab import flops
    from omni_lab.media import VideoClip
    from omni_lab.reduction import EVS
    from omni_lab.reduction.downsample import prompt_items

    lab = ol.load("random:full", device="meta")
    clip = VideoClip(np.zeros((256, 32, 32, 3), np.uint8), fps=1.0)
    prompt = lab.prompt("Describe the video.", video=clip, max_frames=256)
    config = lab.config
    unreduced = flops.geometry_of(prompt.token_map, prompt, config, reduced=False)
    kept = EVS(0.7).budget(prompt_items(prompt)[("video", 0)])
    length = len(prompt) - prompt.token_map.counts()["video"] + kept
    reduced = flops.Geometry(unreduced.image_grids, unreduced.videos, None, (length,) * len(unreduced.llm_lengths))
    summary = flops.summary(config, flops.estimate(config, reduced), flops.estimate(config, unreduced))
    lines = [
        f"random:full, one 256-frame video: {len(prompt)} LLM tokens ({prompt.token_map.counts()['video']} video); "
        f"EVS 0.7 keeps {kept} video tokens -> {length}",
        "| stage | without EVS (TFLOPs) | EVS 0.7 (TFLOPs) |",
        "|---|---|---|",
    ]
    for key in summary["stages_unreduced"]:
        lines.append(f"| {key} | {summary['stages_unreduced'][key] / 1e12:.2f} | {summary['stages'][key] / 1e12:.2f} |")
    lines.append(
        f"| prefill total | {summary['prefill_flops_unreduced'] / 1e12:.2f} | {summary['prefill_flops'] / 1e12:.2f} "
        f"(saved {summary['saved_share']:.0%}) |"
    )
    lines.append(
        f"| decode, per token | {summary['decode_flops_per_token_unreduced'] / 1e9:.2f} GFLOPs "
        f"| {summary['decode_flops_per_token'] / 1e9:.2f} GFLOPs |"
    )
    return "\n".join(lines)


def main() -> None:
    import pandas as pd
    import torch

    import omni_lab as ol
    from omni_lab.toy import shapesworld

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=16, help="held-out examples per basic-tier family")
    parser.add_argument("--hard-model", default=None, help='the hard tier\'s checkpoint (default "toy-hard" for toy)')
    parser.add_argument("--n-hard", type=int, default=8, help="held-out examples per hard-tier family (long clips)")
    parser.add_argument("--families", default=None, help="comma-separated; default every family with media")
    parser.add_argument("--rates", default=",".join(f"{rate:g}" for rate in RATES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the markdown here")
    parser.add_argument("--rows", default=None, help="also write every sweep row (.parquet)")
    parser.add_argument("--no-full", action="store_true", help="skip the random:full 256-frame estimate")
    parser.add_argument("--from-rows", default=None, help="render the tables from rows written by --rows, run nothing")
    args = parser.parse_args()
    if args.from_rows:
        frame = pd.read_parquet(args.from_rows)
        frame["control_for"] = frame.control_for.astype(object).where(frame.control_for.notna(), None)
        if "tier" not in frame:
            frame["tier"] = frame.family.map(tier_of)
        models = dict(zip(frame.tier, frame.model, strict=True)) if "model" in frame else {}
        print(tables(frame, models))
        return
    torch.set_num_threads(args.threads)
    rates = tuple(float(rate) for rate in args.rates.split(","))
    families = args.families.split(",") if args.families else [f for f in shapesworld.FAMILIES if f != "text"]

    models = {"basic": args.model, "hard": hard_model(args.model, args.hard_model)}
    counts = {"basic": args.n, "hard": args.n_hard}
    labs: dict = {}
    started = time.perf_counter()
    frames = []
    for family in families:
        tier = tier_of(family)
        if models[tier] not in labs:
            labs[models[tier]] = ol.load(models[tier], device=args.device, progress=False)
        frame = run_family(labs[models[tier]], family, counts[tier], rates, progress=True)
        if frame is not None:
            frame["tier"], frame["model"] = tier, models[tier]
            frames.append(frame)
            print(f"{family} ({models[tier]}): {len(frame)} rows, {time.perf_counter() - started:.0f} s", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    header = (
        f"{args.n} held-out prompts per basic-tier family, {args.n_hard} per hard-tier family "
        f"({', '.join(families)}), rates {args.rates}; {time.perf_counter() - started:.0f} s on "
        f"{torch.get_num_threads()} thread(s)"
    )
    text = f"{header}\n\n{tables(frame, models)}"
    if not args.no_full:
        text += "\n\n" + full_architecture_estimate()
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    if args.rows:
        frame.to_parquet(args.rows)


if __name__ == "__main__":
    main()
