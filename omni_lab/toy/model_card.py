"""The shipped checkpoint's model card (README.md): how it was trained, on what, how it scores, how big it is."""

from __future__ import annotations

from pathlib import Path

from .evaluation import accuracy_table, evaluate, format_table
from .shapesworld import EVAL_SEED_BASE, TASKS, VIDEO_FPS, VIDEO_FRAMES


def evaluation_report(lab, n: int = 200, seed: int = 0, progress: bool = True) -> dict:
    """Everything the model card reports, measured through the public path on held-out seeds.

    Returns:
        {"accuracy": per family/task with no reduction (all families), "evs_0.5" and "evs_model": the same for
        video and omni with EVS at 0.5 and at the config's rate, "ablation": `ablation.ablation_summary` on `n`
        direction clips, "n": n, "seed": seed}.
    """
    from ..reduction import EVS
    from .ablation import ablation_study, ablation_summary

    report = {"n": n, "seed": seed}
    report["accuracy"] = accuracy_table(evaluate(lab, n=n, seed=seed, reducer=None, progress=progress))
    visual = ("video", "omni")
    report["evs_0.5"] = accuracy_table(
        evaluate(lab, n=n, seed=seed, families=visual, reducer=EVS(0.5), progress=progress)
    )
    report["evs_model"] = accuracy_table(
        evaluate(lab, n=n, seed=seed, families=visual, reducer="model", progress=progress)
    )
    report["ablation"] = ablation_summary(ablation_study(lab, n=n, seed=seed, progress=progress))
    return report


def _human(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 1e6 else f"{count / 1e3:.1f} k"


def _training_section(summary: dict) -> list[str]:
    """The recipe: one paragraph per stage (a continued run lists the run it started from first)."""
    previous = summary.get("previous")
    curve = "Loss per step: `loss_curve.csv`, `loss_curve.png`."
    if not previous:
        return [*_stage(summary, None), "", curve]
    total = (summary["wall_seconds"] + previous["wall_seconds"]) / 60
    return [
        *_stage(previous, "Stage 1, from scratch"),
        "",
        *_stage(summary, "Stage 2, continued from stage 1"),
        "",
        f"Both stages: {total:.1f} min of a 2-core CPU. {curve[:-1]} (stage 2).",
    ]


def _stage(summary: dict, title: str | None) -> list[str]:
    settings = summary["settings"]
    minutes = summary["wall_seconds"] / 60
    # a stage that others continue from is written to STAGE1 (its card, with the run that continued it, is not shipped)
    out = "STAGE1" if title and not settings.get("init_from") else "DIR"
    command = f"omni-lab train-toy --out {out} --steps {settings['steps']} --seed {settings['seed']} "
    if settings.get("init_from"):
        command += f"--recipe continue --init {'STAGE1' if title else settings['init_from']} "
    warm_up = (
        f"Encoder warm-up: {settings['encoder_steps']} steps x {sum(settings['encoder_mix'].values())} examples "
        f"({settings['encoder_mix']}) training the vision tower and its projector alone on the per-token read-outs "
        f"(`training.pretrain_encoders`, {summary.get('encoder_seconds', 0.0) / 60:.1f} min). Then "
        if settings["encoder_steps"]
        else f"From {'stage 1' if title else '`' + settings['init_from'] + '`'}, no encoder warm-up: "
        if settings.get("init_from")
        else ""
    )
    read_outs = (
        "plus per-token auxiliary read-outs of the media tokens against the ground truth (weight "
        f"{settings['token_supervision']}, `omni_lab.toy.supervision`; not part of the checkpoint); "
        if settings["token_supervision"]
        else "no per-token read-outs; "
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
        f"clip {settings['clip']}; loss on answer tokens + end of turn, {read_outs}"
        f"EVS augmentation on {settings['evs_probability']:.0%} of video prompts "
        f"(rate {settings['evs_rates'][0]}-{settings['evs_rates'][1]}); aux-loss-free router bias balancing "
        f"(rate {settings['bias_rate']}). Wall time {minutes:.1f} min with {settings['threads']} torch thread(s) on a "
        f"2-core CPU; final loss (mean of the last 50 steps) {summary['final_loss']:.4f}.",
    ]


def write_model_card(out: Path, lab, summary: dict, extra_sections: list[str] | None = None) -> Path:
    """Write README.md into the checkpoint directory.

    Args:
        out: checkpoint directory.
        lab: the saved checkpoint, loaded (for sizes and the architecture summary).
        summary: `training.train`'s summary (settings, wall time, final loss, accuracy table).
        extra_sections: further markdown sections (EVS and ablation results) appended at the end.
    Returns:
        the README path.
    """
    info = lab.info()
    counts = info["parameters"]
    files = sorted(p for p in Path(out).iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    tasks = "\n".join(f"- **{family}**: {', '.join(names)}" for family, names in TASKS.items())
    lines = [
        "# omni-toy: the toy twin of Nemotron 3 Nano Omni",
        "",
        "transformers' own `NemotronH_Omni_Reasoning_V3` at toy sizes, trained from scratch on ShapesWorld "
        "(`omni_lab.toy.shapesworld`), a synthetic multimodal world with known ground truth. It is the default model of "
        'omni-lab (`ol.load("toy")`) so notebooks, widgets and the playground show meaningful behaviour on a CPU. '
        "Its answers mean something only inside ShapesWorld.",
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
        f'- Files: {size_mb:.1f} MiB (weights stored in float16, routers in float32; `ol.load("toy")` gives float32).',
        "- Tokenizer: byte-level BPE learned from ShapesWorld (`omni_lab.toy.vocabulary`), the release's special "
        "tokens at the release's ids and the same chat template.",
        "",
        "## Data: ShapesWorld",
        "",
        f"{tasks}",
        "",
        f"Images and frames are 128 x 128; videos have {VIDEO_FRAMES[0]}-{VIDEO_FRAMES[1]} frames at {VIDEO_FPS:g} fps; "
        "audio is 1-4 s at 16 kHz. Answers are one or two words (`3, left`). Every example is drawn from one integer "
        f"seed: training run `--seed S` uses example seeds `S * 10**7 + i` (all below {EVAL_SEED_BASE:,}); "
        f"evaluation uses seeds from {EVAL_SEED_BASE:,} upward (`shapesworld.eval_seed`), never seen in training.",
        "",
        "## Training",
        "",
        *_training_section(summary),
    ]
    report = summary.get("report")
    if report:
        rate = lab.config.video_pruning_rate
        ablation = report["ablation"]
        lines += [
            "",
            "## Held-out accuracy",
            "",
            f"Exact match, greedy, through `lab.prompt` + `lab.run`, {report['n']} examples per family, evaluation "
            f"seed {report['seed']}. No token reduction (`omni-lab eval-toy --n {report['n']} --reducer none`):",
            "",
            format_table(report["accuracy"]),
            "",
            f"With EVS at rate 0.5 (`--reducer evs:0.5`) and at the config's rate {rate} (`--reducer model`, what "
            "`lab.run(p)` does by default):",
            "",
            "| family | no reduction | EVS 0.5 | EVS " + f"{rate} |",
            "|---|---|---|---|",
        ]
        for family in ("video", "omni"):
            lines.append(
                f"| {family} | {100 * report['accuracy']['families'][family]:.1f}% | "
                f"{100 * report['evs_0.5']['families'][family]:.1f}% | "
                f"{100 * report['evs_model']['families'][family]:.1f}% |"
            )
        lines += [
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
