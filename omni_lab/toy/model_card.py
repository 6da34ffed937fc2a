"""The shipped checkpoint's model card (README.md): how it was trained, on what, how it scores, how big it is.

The card is rendered from files the checkpoint directory holds, so it can be rewritten without retraining
(`python -m omni_lab.toy.model_card DIR`): training.json (every stage's settings, wall time and loss, each stage
nesting the one it continued from), evaluation.json (`evaluation_report`: held-out accuracy per task before and after
the last stage, calibration per tier, EVS, the ground-truth ablation) and, when present, reduction_sweep.json with its
plot (benchmarks/toy_hard_tier_sweep.py: accuracy against reduction rate on the hard tier).
"""

from __future__ import annotations

import json
from pathlib import Path

from .evaluation import accuracy_table, calibration, evaluate
from .shapesworld import EVAL_SEED_BASE, TASKS, TIERS, VIDEO_FPS, VIDEO_FRAMES

EVALUATION = "evaluation.json"
SWEEP = "reduction_sweep.json"
VISUAL_FAMILIES = ("video", "omni", "events", "sync")  # families with video: EVS applies


def evaluation_report(lab, n: int = 100, seed: int = 0, progress: bool = True, reduced: bool = True) -> dict:
    """Everything the model card reports, measured through the public path on held-out seeds.

    Args:
        lab: the model.
        n: held-out examples per task (`evaluation.evaluate(per_task=True)`).
        seed: evaluation seed.
        progress: show progress bars.
        reduced: also measure EVS and the ground-truth ablation (False: accuracy and calibration only, as for the
            checkpoint a stage starts from).
    Returns:
        {"accuracy": `accuracy_table` with no reduction (every family), "calibration": `evaluation.calibration` of
        the same rows, and with `reduced`: "evs_0.5" and "evs_model" (the visual families with EVS at 0.5 and at the
        config's rate), "ablation": `ablation.ablation_summary` on `n` direction clips; "n": n, "seed": seed}.
    """
    from ..reduction import EVS

    report = {"n": n, "seed": seed}
    results = evaluate(lab, n=n, seed=seed, reducer=None, progress=progress, per_task=True)
    report["accuracy"] = accuracy_table(results)
    report["calibration"] = calibration(results)
    if not reduced:
        return report
    from .ablation import ablation_study, ablation_summary

    for name, reducer in (("evs_0.5", EVS(0.5)), ("evs_model", "model")):
        rows = evaluate(
            lab, n=n, seed=seed, families=VISUAL_FAMILIES, reducer=reducer, progress=progress, per_task=True
        )
        report[name] = accuracy_table(rows)
    report["ablation"] = ablation_summary(ablation_study(lab, n=n, seed=seed, progress=progress))
    return report


def write_evaluation(out: Path, report: dict) -> Path:
    """evaluation.json: `evaluation_report`'s dict (with "before", the starting checkpoint's, when a stage has one)."""
    path = Path(out) / EVALUATION
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def _human(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e6 else f"{count / 1e3:.1f} k"


def stages(summary: dict) -> list[dict]:
    """The training stages, first to last, from a summary or training.json whose "previous" nests the earlier ones."""
    chain, stage = [], summary
    while stage:
        chain.append(stage)
        stage = stage.get("previous")
    return chain[::-1]


def _recipe(settings: dict) -> str:
    """The recipe a stage ran; unrecorded (older records, settings built by hand): scratch, or continue with --init."""
    return settings.get("recipe") or ("continue" if settings.get("init_from") else "scratch")


def _training_section(summary: dict) -> list[str]:
    """The recipe: one paragraph per stage with its command (stage k writes STAGEk, the last one DIR)."""
    chain = stages(summary)
    curve = "Loss per step: `loss_curve.csv`, `loss_curve.png`"
    if len(chain) == 1:
        return [*_stage(chain[0], None, "DIR", None), "", curve + "."]
    lines = []
    for index, stage in enumerate(chain):
        last = index == len(chain) - 1
        title = f"Stage {index + 1}, " + ("from scratch" if index == 0 else f"continued from stage {index}")
        out = "DIR" if last else f"STAGE{index + 1}"
        lines += [*_stage(stage, title, out, f"STAGE{index}" if index else None), ""]
    total = sum(stage["wall_seconds"] for stage in chain) / 60
    lines.append(f"All {len(chain)} stages: {total:.1f} min of a 2-core CPU. {curve} (stage {len(chain)}).")
    return lines


def _stage(summary: dict, title: str | None, out: str, init: str | None) -> list[str]:
    settings = summary["settings"]
    minutes = summary["wall_seconds"] / 60
    recipe = _recipe(settings)
    command = f"omni-lab train-toy --out {out} --steps {settings['steps']} --seed {settings['seed']} "
    if recipe != "scratch":
        command += f"--recipe {recipe} --init {init or settings['init_from']} "
    warm_up = (
        f"Encoder warm-up: {settings['encoder_steps']} steps x {sum(settings['encoder_mix'].values())} examples "
        f"({settings['encoder_mix']}) training the vision tower and its projector alone on the per-token read-outs "
        f"(`training.pretrain_encoders`, {summary.get('encoder_seconds', 0.0) / 60:.1f} min). Then "
        if settings["encoder_steps"]
        else f"From {init or '`' + str(settings['init_from']) + '`'}, no encoder warm-up: "
        if settings.get("init_from")
        else ""
    )
    read_outs = (
        "plus per-token auxiliary read-outs of the media tokens against the ground truth (weight "
        f"{settings['token_supervision']}, `omni_lab.toy.supervision`; not part of the checkpoint); "
        if settings["token_supervision"]
        else "no per-token read-outs of the encoders; "
    )
    if settings.get("event_supervision"):
        read_outs += (
            "on hard-tier examples, linear read-outs of the LLM's residual stream against the ground truth (weight "
            f"{settings['event_supervision']}, `omni_lab.toy.event_supervision`: each video token's event colour and "
            "shape and each audio token's flashing shape after layer 4"
            + (
                ", and every media token's half second and every video token's third of the clip after layer 2"
                if settings.get("time_supervision")
                else ""
            )
            + "; not part of the checkpoint); "
        )
    smoothing = settings.get("label_smoothing", 0.0)
    smoothed = f"label smoothing {smoothing} on the answer's word tokens; " if smoothing else ""
    vocabulary = (
        f"the vocabulary grew by {summary['vocabulary_appended']} added tokens (`vocabulary.extend`); "
        if summary.get("vocabulary_appended")
        else ""
    )
    return [
        *([f"**{title}**", ""] if title else []),
        "```",
        command + f"--threads {settings['threads']}",
        "```",
        "",
        f"{warm_up}{settings['steps']} steps x {sum(settings['mix'].values())} examples "
        f"({summary['examples_seen']:,} examples; per step {settings['mix']}), AdamW lr {settings['lr']} (warm-up "
        f"{settings['warmup']}, cosine to {settings['final_lr_fraction']:g} x), weight decay {settings['weight_decay']}, "
        f"clip {settings['clip']}; loss on answer tokens + end of turn, {smoothed}{read_outs}{vocabulary}"
        f"EVS augmentation on {settings['evs_probability']:.0%} of video prompts "
        f"(rate {settings['evs_rates'][0]}-{settings['evs_rates'][1]}); aux-loss-free router bias balancing "
        f"(rate {settings['bias_rate']}). Wall time {minutes:.1f} min with {settings['threads']} torch thread(s) on a "
        f"2-core CPU; final loss (mean of the last 50 steps) {summary['final_loss']:.4f}."
        + (f" {summary['note']}" if summary.get("note") else ""),
    ]


HARD_RECIPES = ("hard", "timing")  # stages that ship as "toy-hard"


def _shipped_as(chain: list[dict]) -> str:
    """Which `ol.load` name ships this checkpoint, and why (the hard-tier stages ship beside the default)."""
    if _recipe(chain[-1]["settings"]) in HARD_RECIPES:
        return (
            'It ships as `ol.load("toy-hard")`, beside the default `ol.load("toy")` (stages 1-2): '
            + ("stage 3" if len(chain) == 3 else f"stages 3-{len(chain)}")
            + " learned part of the hard tier but forgot part of the basic tier (see Forgetting), so the default stays "
            "the checkpoint that answers every basic task, and this one serves the hard-tier studies."
        )
    return (
        'It is the default model of omni-lab (`ol.load("toy")`) so notebooks, widgets and the playground show '
        "meaningful behaviour on a CPU."
    )


def _forgetting_section(report: dict, stage_count: int, bar: float = 0.9) -> list[str]:
    """The basic-tier tasks the last stage left below `bar` that the stage it started from met, before -> after."""
    before = report.get("before", {}).get("accuracy")
    if not before:
        return []
    lost = [
        (key, before["tasks"][key], value)
        for key, value in report["accuracy"]["tasks"].items()
        if key.split("/")[0] in TIERS["basic"] and value < bar <= before["tasks"].get(key, 0.0)
    ]
    lines = ["## Forgetting", ""]
    if not lost:
        return [*lines, f"Every basic-tier task stayed at or above {bar:.0%} (the table above, task by task)."]
    lines += [
        f"Basic-tier tasks stage {stage_count} left below {bar:.0%} that stage {stage_count - 1} answered at or above "
        "it (the same held-out examples):",
        "",
        f"| task | stage {stage_count - 1} | stage {stage_count} |",
        "|---|---|---|",
        *(f"| {key} | {_percent(was)} | {_percent(now)} |" for key, was, now in lost),
    ]
    return lines


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _accuracy_section(report: dict, stage_count: int) -> list[str]:
    """Per task, no reduction: the last stage beside the checkpoint it started from."""
    after = report["accuracy"]
    before = report.get("before", {}).get("accuracy")
    header = (
        "| tier | family | task | n | " + (f"stage {stage_count - 1} | " if before else "") + f"stage {stage_count} |"
    )
    lines = [header, "|---|---|---|---|" + ("---|" if before else "") + "---|"]
    tier_of = {family: tier for tier, families in TIERS.items() for family in families}
    for family, value in after["families"].items():
        was = f"**{_percent(before['families'].get(family))}** | " if before else ""
        lines.append(
            f"| {tier_of[family]} | **{family}** | all | {after['counts'][family]} | {was}**{_percent(value)}** |"
        )
        for key, task_value in after["tasks"].items():
            if key.split("/")[0] != family:
                continue
            was = f"{_percent(before['tasks'].get(key))} | " if before else ""
            count = after.get("task_counts", {}).get(key, "")
            lines.append(
                f"| {tier_of[family]} | {family} | {key.split('/')[1]} | {count} | {was}{_percent(task_value)} |"
            )
    return lines


def _calibration_section(report: dict, stage_count: int) -> list[str]:
    def logp(value):
        return "" if value is None else f"{value:.3f}"

    lines = [
        "| checkpoint | tier | n | accuracy | mean log p, right | mean log p, wrong (its answer) | "
        "mean log p of the true answer, wrong | mean confidence | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = [(f"stage {stage_count - 1}", report["before"]["calibration"])] if "before" in report else []
    for name, table in [*pairs, (f"stage {stage_count}", report["calibration"])]:
        for tier, row in table.items():
            lines.append(
                f"| {name} | {tier} | {row['n']} | {_percent(row['accuracy'])} | {logp(row['mean_logp_right'])} | "
                f"{logp(row['mean_logp_wrong'])} | {logp(row['mean_logp_answer_wrong'])} | "
                f"{row['mean_confidence']:.3f} | {row['ece']:.3f} |"
            )
    return lines


def _evs_section(report: dict, rate: float) -> list[str]:
    lines = ["| family | task | no reduction | EVS 0.5 | EVS " + f"{rate} |", "|---|---|---|---|---|"]
    for family in VISUAL_FAMILIES:
        if family not in report["evs_0.5"]["families"]:
            continue
        cells = [report[name]["families"][family] for name in ("accuracy", "evs_0.5", "evs_model")]
        lines.append(f"| **{family}** | all | " + " | ".join(f"**{_percent(v)}**" for v in cells) + " |")
        if family in TIERS["hard"]:
            for task in TASKS[family]:
                key = f"{family}/{task}"
                cells = [report[name]["tasks"][key] for name in ("accuracy", "evs_0.5", "evs_model")]
                lines.append(f"| {family} | {task} | " + " | ".join(_percent(v) for v in cells) + " |")
    return lines


def _sweep_section(sweep: dict) -> list[str]:
    """Accuracy against rate per reducer on the hard tier, with intervals, from reduction_sweep.json."""
    rows = sweep["rows"]
    baseline = sweep["baseline"]
    rates = sweep["rates"]
    lines = [
        "## Token reduction on the hard tier",
        "",
        f"`{sweep['command']}`: {sweep['n']} held-out hard-tier questions ({sweep['per_task']} per task, evaluation "
        f"seed {sweep['seed']}), each run through `lab.prompt` + `lab.run(p, reducer={{'video': reducer}})` with the "
        "video tokens reduced and the audio left whole. No reduction: "
        f"{_percent(baseline['accuracy'])} [{_percent(baseline['ci'][0])}, {_percent(baseline['ci'][1])}]. Each cell: "
        "accuracy, then the paired difference from no reduction in points with its 95% bootstrap interval (10,000 "
        "resamples of the questions, `scipy.stats.bootstrap(paired=True)`); accuracies' 95% Wilson intervals "
        "(`scipy.stats.binomtest(...).proportion_ci(method='wilson')`) are in reduction_sweep.json. UniformTemporal "
        "keeps every k-th tubelet (k = round(1 / (1 - rate))), so its achieved rate differs; its row gives the "
        "achieved share dropped, and its equal-budget control (RandomDrop keeping exactly as many tokens) has a row of "
        "its own. RandomDrop at a rate is the equal-budget control of EVS, DivPrune and ToMe at that rate (same "
        "token count). Bold: at least 10 points lost with the interval excluding 0.",
        "",
        "| reducer | " + " | ".join(f"{rate:g}" for rate in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for name in dict.fromkeys(row["reducer"] for row in rows):
        cells = []
        for rate in rates:
            cell = next((row for row in rows if row["reducer"] == name and row["rate"] == rate), None)
            if cell is None:
                cells.append("")
                continue
            low, high = cell["diff_ci"]
            text = f"{_percent(cell['accuracy'])} ({100 * cell['diff']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}])"
            if abs(cell["achieved_rate"] - rate) > 0.01:
                text += f" at {cell['achieved_rate']:.2f}"
            cells.append(f"**{text}**" if cell["diff"] <= -0.10 and high < 0 else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![accuracy against reduction rate per reducer]({sweep['plot']})", ""]
    lines += [sweep["findings"]] if sweep.get("findings") else []
    return lines


def write_model_card(out: Path, lab, summary: dict, extra_sections: list[str] | None = None) -> Path:
    """Write README.md into the checkpoint directory.

    Args:
        out: checkpoint directory.
        lab: the saved checkpoint, loaded (for sizes and the architecture summary).
        summary: `training.train`'s summary or the directory's training.json, with "report" (`evaluation_report`,
            with "before" for a continued stage) when evaluated.
        extra_sections: further markdown lines appended at the end.
    Returns:
        the README path.
    """
    info = lab.info()
    counts = info["parameters"]
    files = sorted(p for p in Path(out).iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    tasks = "\n".join(f"- **{family}**: {', '.join(names)}" for family, names in TASKS.items())
    chain = stages(summary)
    name = "toy-hard" if _recipe(chain[-1]["settings"]) in HARD_RECIPES else "toy"  # the `ol.load` name it ships as
    lines = [
        f"# omni-{name}: the toy twin of Nemotron 3 Nano Omni",
        "",
        "transformers' own `NemotronH_Omni_Reasoning_V3` at toy sizes, trained from scratch on ShapesWorld "
        "(`omni_lab.toy.shapesworld`), a synthetic multimodal world with known ground truth. "
        + _shipped_as(chain)
        + " Its answers mean something only inside ShapesWorld.",
        "",
        "## Architecture",
        "",
        f"- LLM: {info['layers']['total']} layers `{info['layer_pattern']}` ({info['layers']['mamba']} Mamba-2, "
        f"{info['layers']['moe']} MoE, {info['layers']['attention']} attention at {info['attention_layers']}), "
        f"hidden {info['hidden_size']}, {info['experts']['routed']} routed experts top-{info['experts']['top_k']} + "
        f"{info['experts']['shared']} shared, sigmoid router with correction bias, routed scaling "
        f"{info['experts']['routed_scaling_factor']}, no positional encoding.",
        f"- Vision: RADIO ViT ({lab.config.vision_config.num_hidden_layers} layers, width "
        f"{lab.config.vision_config.hidden_size}) with the 2-frame tubelet video embedder, 2x2 pixel shuffle; "
        f"128 x 128 images and frames -> {info['budgets']['image_tokens'][0]} tokens per image / "
        f"{info['budgets']['video_tokens_per_tubelet']} per tubelet.",
        f"- Audio: Parakeet FastConformer ({lab.config.audio_config.num_hidden_layers} layers, width "
        f"{lab.config.audio_config.hidden_size}), 128-bin mel, 8x subsampling "
        f"({info['budgets']['audio_tokens_per_second']} tokens/s).",
        f"- Config `video_pruning_rate` {info['budgets']['video_pruning_rate']} (the release's value: "
        "`lab.run(p)` prunes video with EVS at 0.7 unless `reducer=` says otherwise).",
        f"- Parameters: {counts['checkpoint']:,} ({_human(counts['checkpoint'])}) in the checkpoint; "
        + ", ".join(
            f"{name} {value:,}"
            for name, value in counts.items()
            if name.startswith(("llm.", "vision.t", "vision.p", "audio."))
        ),
        f'- Files: {size_mb:.1f} MiB (weights stored in float16, routers in float32; `ol.load("{name}")` gives float32).',
        f"- Tokenizer: byte-level BPE learned from ShapesWorld (`omni_lab.toy.vocabulary`), {len(lab.tokenizer)} "
        "tokens, the release's special tokens at the release's ids and the same chat template; the frame labels of "
        "clips up to 64 frames and the hard tier's time words are added tokens.",
        f"- Context: {lab.context_length} tokens; the longest ShapesWorld prompt (a 64-frame sync clip with its 8 s of "
        "audio: 512 video, 100 audio and about 160 text tokens) takes under 800.",
        "",
        "## Data: ShapesWorld",
        "",
        f"{tasks}",
        "",
        f"Basic tier ({', '.join(TIERS['basic'])}): images and frames are 128 x 128; videos have "
        f"{VIDEO_FRAMES[0]}-{VIDEO_FRAMES[1]} frames at {VIDEO_FPS:g} fps; audio is 1-4 s at 16 kHz. Hard tier "
        f"({', '.join(TIERS['hard'])}, `omni_lab.toy.events`): 32-64 mostly still frames at 8 fps whose answer lies "
        "in events of 1-3 frames (a small shape flashes another colour, appears for a moment or jumps aside and back) "
        "among 2-3 small still shapes and, in half of the clips, a gliding distractor; sync clips add a sound track of "
        "the clip's length on the same clock with one beep (which shape flashes when it sounds; does anything flash when "
        "it sounds). Every event's frames, boxes and seconds are in the ground truth (`events.EventTruth`). Answers "
        "are one or two words (`3, left`, `early`). Every example is drawn from one integer seed: training run "
        f"`--seed S` uses example seeds `S * 10**7 + i` (all below {EVAL_SEED_BASE:,}); evaluation uses seeds from "
        f"{EVAL_SEED_BASE:,} upward (`shapesworld.eval_seed`), never seen in training.",
        "",
        "## Training",
        "",
        *_training_section(summary),
    ]
    report = summary.get("report")
    if report:
        rate = lab.config.video_pruning_rate
        ablation = report["ablation"]
        last = len(chain)
        before = (
            f" beside stage {last - 1}, the checkpoint stage {last} started from (the same examples"
            + ("; stage 2 never saw the hard tier)" if last == 3 else ")")
            if "before" in report
            else ""
        )
        lines += [
            "",
            "## Held-out accuracy",
            "",
            f"Exact match, greedy, through `lab.prompt` + `lab.run`, {report['n']} examples per task, evaluation "
            f"seed {report['seed']}, no token reduction (`omni-lab eval-toy` runs the same path){before}. With "
            f"{report['n']} examples a task at 90% has a 95% interval of about +-{_halfwidth(0.9, report['n'])} points:",
            "",
            *_accuracy_section(report, last),
            "",
            *_forgetting_section(report, last),
            "",
            "## Calibration",
            "",
            "Per tier, on the rows above: the mean log-probability of the model's answer when it is right, of its own "
            "answer when it is wrong, and of the true answer when it is wrong (teacher-forced); the mean confidence "
            "(p of its answer) and the expected calibration error (10 equal-width confidence bins). A hard-tier stage's answer "
            "can be at most about 0.95 likely per smoothed word (label smoothing 0.05, see Training), so a right "
            "one-word answer sits near log p = -0.05 and an uncertain one lower.",
            "",
            *_calibration_section(report, last),
            "",
            "## Token reduction: EVS",
            "",
            f"Accuracy per visual family (and per hard-tier task) with no reduction, EVS at rate 0.5 and at the "
            f"config's rate {rate} (what `lab.run(p)` does by default). The twin was trained with EVS augmentation "
            "(half of the video prompts pruned at 0.3-0.8), and EVS keeps the tokens that change from one tubelet to "
            "the next, which is where the hard tier's events are:",
            "",
            *_evs_section(report, rate),
            "",
            "## Does it look at the right tokens?",
            "",
            f"On {ablation['n']} held-out direction questions (`omni_lab.toy.ablation`), zeroing the merged-embedding "
            f"tokens whose cells the moving shape touches in any frame (on average {ablation['mean_path_cells']:.1f} of "
            "16 cells, in every tubelet) against zeroing as many static cells (background first; still distractors "
            f"only to make up the count, needed in {100 * ablation['control_used_distractors']:.0f}% of clips):",
            "",
            "| tokens zeroed | direction accuracy |",
            "|---|---|",
            f"| none | {100 * ablation['clean']:.1f}% |",
            f"| the moving shape's path | {100 * ablation['path']:.1f}% |",
            f"| as many static tokens | {100 * ablation['static']:.1f}% |",
            "",
            "Five classes (left, right, up, down, none): chance is 20%.",
        ]
        sweep_file = Path(out) / SWEEP
        if sweep_file.is_file():
            lines += ["", *_sweep_section(json.loads(sweep_file.read_text()))]
        gaps = [f"{key} ({100 * value:.1f}%)" for key, value in report["accuracy"]["tasks"].items() if value < 0.6]
        if gaps:
            lines += [
                "",
                "## Known gaps",
                "",
                "Tasks this checkpoint answers at or near chance: " + ", ".join(gaps) + ".",
            ]
    lines += extra_sections or []
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _halfwidth(accuracy: float, n: int) -> str:
    """Half the width of the 95% Wilson interval of `accuracy` over `n` examples, in points."""
    z = 1.959964
    centre_spread = z * (accuracy * (1 - accuracy) / n + z**2 / (4 * n**2)) ** 0.5 / (1 + z**2 / n)
    return f"{100 * centre_spread:.0f}"


def rewrite(directory) -> Path:
    """Re-render DIR/README.md from DIR's training.json, evaluation.json and reduction_sweep.json (no retraining)."""
    from ..lab import load
    from .training import read_training_record

    directory = Path(directory)
    summary = read_training_record(directory)
    if summary is None:
        raise FileNotFoundError(f"{directory} has no training.json: the card is rendered from a trained checkpoint")
    evaluation = directory / EVALUATION
    if evaluation.is_file():
        summary["report"] = json.loads(evaluation.read_text())
    return write_model_card(directory, load(str(directory), progress=False), summary)


if __name__ == "__main__":
    import sys

    from ..sources import TOY_DIR

    print(rewrite(sys.argv[1] if len(sys.argv) > 1 else TOY_DIR))
