"""What `omni-lab train-toy` and `omni-lab eval-toy` do (the argument parsing lives in omni_lab/cli.py)."""

from __future__ import annotations

import json
import sys


def parse_reducer(text: str | None):
    """ "none" -> None, "model" -> "model", "evs:0.5" -> `EVS(0.5)`."""
    from ..errors import OmniLabInputError
    from ..reduction import EVS

    if text is None or text.lower() == "none":
        return None
    if text == "model":
        return "model"
    if text.lower().startswith("evs:"):
        try:
            return EVS(float(text.split(":", 1)[1]))
        except ValueError:
            pass
    raise OmniLabInputError(f"--reducer {text!r}: use none, model or evs:RATE (e.g. evs:0.5)")


def _check(condition: bool, message: str) -> None:
    from ..errors import OmniLabInputError

    if not condition:
        raise OmniLabInputError(message)


def train_toy(args) -> int:
    """Train a twin into `args.out` (steps from --steps, else --minutes, else the shipped run's)."""
    from .training import CONTINUED_RECIPES, RECIPES, STEPS_PER_MINUTE, TrainSettings, train

    _check(
        args.seed is None or 0 <= args.seed < 100,
        f"--seed {args.seed}: training run seeds are 0-99 (held-out data starts above them)",
    )
    _check(args.steps is None or args.steps >= 1, f"--steps {args.steps}: give at least 1")
    _check(args.minutes is None or args.minutes > 0, f"--minutes {args.minutes}: give a positive number")
    _check(args.threads >= 1, f"--threads {args.threads}: give at least 1")
    _check(args.eval_n >= 0, f"--eval-n {args.eval_n}: give 0 (skip the evaluation) or more")
    recipe = getattr(args, "recipe", "scratch")
    _check(recipe in RECIPES, f"--recipe {recipe}: choose from {', '.join(RECIPES)}")
    chosen = {"seed": args.seed} if args.seed is not None else {}
    settings = TrainSettings(**{**RECIPES[recipe], **chosen, "threads": args.threads, "recipe": recipe})
    continued = " or ".join(f"--recipe {name}" for name in CONTINUED_RECIPES)
    _check(
        (recipe in CONTINUED_RECIPES) == bool(getattr(args, "init", None)),
        f"{continued} continues a checkpoint: give it as --init DIR (and --init only with those recipes)",
    )
    settings.init_from = getattr(args, "init", None)
    if args.steps is not None:
        settings.steps = args.steps
    elif args.minutes is not None:  # both phases scaled down (or up) from the shipped recipe
        scale = args.minutes * STEPS_PER_MINUTE / settings.steps
        settings.steps = max(1, round(settings.steps * scale))
        settings.encoder_steps = round(settings.encoder_steps * scale)
    summary = train(args.out, settings, progress=True, evaluate_examples=args.eval_n)
    print(
        f"saved {args.out}: {settings.steps} steps in {summary['wall_seconds'] / 60:.1f} min, "
        f"final loss {summary['final_loss']:.4f}"
    )
    if "accuracy" in summary:
        from .evaluation import format_table

        print(format_table(summary["accuracy"]))
    return 0


def eval_toy(args) -> int:
    """Print held-out accuracy per family and task (and optionally the ablation study) for a model."""
    from ..lab import load
    from .evaluation import accuracy_table, evaluate, format_table
    from .shapesworld import FAMILIES

    families = tuple(name.strip() for name in args.families.split(",")) if args.families else None
    unknown = sorted(set(families or ()) - set(FAMILIES))
    _check(not unknown, f"--families: unknown {', '.join(unknown)}; choose from {','.join(FAMILIES)}")
    _check(args.n >= 1, f"--n {args.n}: give at least 1 example per family")
    _check(0 <= args.seed < 1000, f"--seed {args.seed}: evaluation seeds are 0-999")
    lab = load(args.model, progress=False)
    kwargs = {"families": families} if families else {}
    results = evaluate(lab, n=args.n, seed=args.seed, reducer=parse_reducer(args.reducer), **kwargs)
    table = accuracy_table(results)
    report = {"model": args.model, "n": args.n, "seed": args.seed, "reducer": args.reducer, "accuracy": table}
    if args.ablation:
        from .ablation import ablation_study, ablation_summary

        report["ablation"] = ablation_summary(ablation_study(lab, n=args.n, seed=args.seed))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {args.model}, {args.n} held-out examples per family, seed {args.seed}, reducer {args.reducer}")
    print(format_table(table))
    if "ablation" in report:
        ablation = report["ablation"]
        print(
            f"direction accuracy: clean {ablation['clean']:.1%}, moving-path tokens zeroed {ablation['path']:.1%}, "
            f"as many static tokens zeroed {ablation['static']:.1%} ({ablation['n']} clips)"
        )
    sys.stdout.flush()
    return 0
