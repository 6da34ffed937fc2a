"""The `omni-lab` command.

omni-lab info random:full --device meta        # architecture, parameter counts, token budgets
omni-lab run --demo                             # the toy twin on a held-out ShapesWorld video + audio question
omni-lab run random:small --demo                # image + video + audio in one prompt, synthetic media
omni-lab run PATH --text "..." --image a.png --video clip.mp4 --audio beeps.wav [--json]
omni-lab run PATH --text "..." --video clip.mp4 --video-audio    # the video and its own sound track
omni-lab playground                             # the Gradio playground on the toy twin: http://127.0.0.1:7860
omni-lab notebooks [DIR]                        # copy the explore notebooks into DIR, open JupyterLab there
"""

from __future__ import annotations

import argparse
import json
import sys

TOY_RECIPES = ("scratch", "continue", "hard", "timing")  # `omni_lab.toy.training.RECIPES`, without importing torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni-lab", description="See inside Nemotron 3 Nano Omni.")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="architecture summary of a model source")
    info.add_argument("source", help="toy | random:toy | random:small | random:full | checkpoint dir | hub id")
    info.add_argument("--device", default="meta", help="meta (default: no weights), cpu, cuda")
    info.add_argument("--json", action="store_true", help="print JSON")

    run = commands.add_parser("run", help="run one prompt")
    run.add_argument(
        "source",
        nargs="?",
        default="toy",
        help="toy (default) | random:toy | random:small | random:full | dir | hub id",
    )
    run.add_argument("--text", default="", help="the question")
    run.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    run.add_argument("--video", default=None, help="video file")
    run.add_argument(
        "--video-audio",
        action="store_true",
        help="also give the model the video file's own sound track (one audio clip right after the video, trimmed "
        "to its span), as vLLM's use_audio_in_video does",
    )
    run.add_argument("--audio", action="append", default=[], help="audio file (repeatable)")
    run.add_argument(
        "--demo",
        action="store_true",
        help="toy: a held-out ShapesWorld video + audio question; other models: a synthetic image, video and beeps",
    )
    run.add_argument("--system", default=None, help="system message")
    run.add_argument("--thinking", action="store_true", help="let the model reason before answering")
    run.add_argument("--max-new-tokens", type=int, default=32)
    run.add_argument("--fps", type=float, default=1.0, help="video frames sampled per second")
    run.add_argument("--max-frames", type=int, default=128)
    run.add_argument("--no-reduction", action="store_true", help="turn off the model's own video pruning (EVS)")
    run.add_argument("--device", default="cpu")
    run.add_argument("--dtype", default=None)
    run.add_argument("--json", action="store_true", help="print JSON")

    train_toy = commands.add_parser("train-toy", help="train the toy twin on ShapesWorld (CPU)")
    train_toy.add_argument("--out", required=True, help="checkpoint directory to write")
    train_toy.add_argument("--minutes", type=float, default=None, help="training length in reference-CPU minutes")
    train_toy.add_argument("--steps", type=int, default=None, help="training steps (overrides --minutes)")
    train_toy.add_argument(
        "--seed", type=int, default=None, help="run seed 0-99 (initialisation and data; default the recipe's)"
    )
    train_toy.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 on a shared machine)")
    train_toy.add_argument("--eval-n", type=int, default=200, help="held-out examples per family for the card")
    train_toy.add_argument(
        "--recipe",
        choices=TOY_RECIPES,
        default="scratch",
        help="scratch: stage 1 from random weights; continue: stage 2 (repeat questions), hard: stage 3 (the hard "
        "tier), timing: the clock read-outs tried as stage 4; all but scratch continue the checkpoint given as --init",
    )
    train_toy.add_argument("--init", default=None, help="checkpoint to continue from (with every recipe but scratch)")

    eval_toy = commands.add_parser("eval-toy", help="held-out ShapesWorld accuracy per family and task")
    eval_toy.add_argument("--model", default="toy", help="toy (default) | checkpoint dir")
    eval_toy.add_argument("--n", type=int, default=200, help="examples per family")
    eval_toy.add_argument("--seed", type=int, default=0, help="evaluation seed 0-999")
    eval_toy.add_argument("--reducer", default="none", help="none | model | evs:RATE")
    eval_toy.add_argument("--families", default=None, help="comma-separated subset of image,video,audio,omni,text")
    eval_toy.add_argument("--ablation", action="store_true", help="also zero moving-path vs static video tokens")
    eval_toy.add_argument("--json", action="store_true", help="print JSON")

    playground = commands.add_parser("playground", help="the Gradio playground in a browser (the toy twin by default)")
    playground.add_argument("--model", default="toy", help="toy (default) | random:<preset> | checkpoint dir | hub id")
    playground.add_argument("--device", default="cpu", help="cpu (default) | cuda | auto (accelerate across GPUs)")
    playground.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine)")
    playground.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    playground.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    playground.add_argument("--max-file-mb", type=float, default=50.0, help="largest upload in MB (default 50)")

    notebooks = commands.add_parser("notebooks", help="copy the explore notebooks into DIR and open JupyterLab there")
    notebooks.add_argument("dir", nargs="?", default="omni-lab-notebooks", help="folder (default ./omni-lab-notebooks)")
    notebooks.add_argument("--copy-only", action="store_true", help="copy the notebooks, do not start JupyterLab")
    notebooks.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR (default: keep)")
    notebooks.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    notebooks.add_argument("--port", type=int, default=8888, help="JupyterLab port on 127.0.0.1 (default 8888)")
    return parser


def _format_count(value: int) -> str:
    return f"{value / 1e9:.1f}B" if value >= 1e9 else f"{value / 1e6:.1f}M"


def _info_text(info: dict) -> str:
    counts = info["parameters"]
    layers = info["layers"]
    lines = [
        f"source        {info['source']} (device={info['device']}, dtype={info['dtype']})",
        f"layers        {layers['total']}: {info['layer_pattern']}",
        f"              {layers['mamba']} Mamba-2 (M), {layers['moe']} MoE (E), {layers['attention']} attention (*) "
        f"at {info['attention_layers']}",
        f"experts       {info['experts']['routed']} routed, top-{info['experts']['top_k']}, "
        f"{info['experts']['shared']} shared, scaling {info['experts']['routed_scaling_factor']}",
        f"parameters    {_format_count(counts['checkpoint'])} ({counts['checkpoint']:,} in a checkpoint"
        + (", = the release" if info["matches_release"] else "")
        + f"; transformers' module adds {counts['vision.layer_scale_identity']:,} identity RADIO layer-scale values)",
    ]
    for name, value in counts.items():
        if name.startswith(("llm.", "vision.", "audio.")) and name != "vision.layer_scale_identity":
            lines.append(f"  {name:<20}{value:>18,}")
    budgets = info["budgets"]
    lines += [
        f"context       {budgets['context_tokens']:,} tokens",
        f"image         {budgets['image_tokens'][0]}-{budgets['image_tokens'][1]} tokens per image",
        f"video         {budgets['video_tokens_per_tubelet']} tokens per {budgets['video_frames_per_tubelet']}-frame "
        f"tubelet, EVS pruning rate {budgets['video_pruning_rate']}",
        f"audio         {budgets['audio_tokens_per_second']} tokens per second",
    ]
    return "\n".join(lines)


def demo_media():
    """A synthetic image (a red square), a 4-frame video (a square moving right) and a 1 s two-beep clip."""
    import numpy as np

    from .media import VideoClip

    image = np.full((256, 256, 3), 40, np.uint8)
    image[96:160, 96:160] = (220, 40, 40)
    frames = np.full((4, 180, 320, 3), 30, np.uint8)
    for index in range(4):
        frames[index, 70:110, 40 + 60 * index : 80 + 60 * index] = (40, 200, 60)
    time = np.arange(16000) / 16000
    beeps = ((time % 0.5) < 0.15) * np.sin(2 * np.pi * 880 * time) * 0.5
    return image, VideoClip(frames, fps=2.0), (beeps.astype(np.float32), 16000)


def _playground(args) -> int:
    """`omni-lab playground`: check the arguments, load the model, serve until interrupted."""
    from . import load
    from .errors import OmniLabInputError

    if not 0 < args.port < 65536:
        raise OmniLabInputError(f"--port {args.port} is not a TCP port; use 1-65535 (default 7860)")
    if not args.max_file_mb > 0:
        raise OmniLabInputError(f"--max-file-mb {args.max_file_mb:g} must be positive (default 50)")
    try:
        from .playground import app
    except ImportError as error:
        raise OmniLabInputError(
            f"the playground needs gradio ({error}); install it with `pip install 'omni-lab[playground]'`"
        ) from None
    lab = load(args.model, device=args.device)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"omni-lab playground: {lab.source.spec} on {args.device}; open http://{shown_host}:{args.port}/", flush=True)
    try:
        app.launch(lab, host=args.host, port=args.port, share=args.share, max_file_mb=args.max_file_mb)
    except OSError as error:
        raise OmniLabInputError(f"cannot serve on {args.host}:{args.port} ({error}); pick another --port") from None
    return 0


def notebook_files() -> list:
    """The shipped explore notebooks: `omni_lab/notebooks/` in an installed wheel, the checkout's `notebooks/` in an
    editable install (a folder of notebook files with no `__init__.py`, so it never shadows an installed package)."""
    from pathlib import Path

    package = Path(__file__).resolve().parent
    for folder in (package / "notebooks", package.parent / "notebooks"):
        if folder.is_dir():
            return sorted(folder.glob("*.ipynb"), key=lambda path: path.name)
    return []


def copy_notebooks(target, force: bool = False) -> tuple[list, list]:
    """Copy the explore notebooks into `target` (created); notebooks already there are kept unless `force`.

    Returns:
        (paths written, paths kept as they were).
    """
    from pathlib import Path

    from .errors import OmniLabInputError

    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise OmniLabInputError(f"notebooks: {target} is a file; give a folder to copy the notebooks into")
    sources = notebook_files()
    if not sources:
        raise OmniLabInputError("notebooks: this installation ships no notebooks; reinstall omni-lab")
    target.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for source in sources:
        destination = target / source.name
        if destination.exists() and not force:
            kept.append(destination)
            continue
        destination.write_bytes(source.read_bytes())
        written.append(destination)
    return written, kept


def _notebooks(args) -> int:
    """`omni-lab notebooks`: copy the notebooks, then (unless --copy-only) run JupyterLab on 127.0.0.1 there."""
    import os
    import subprocess

    from .errors import OmniLabInputError

    if not 0 < args.port < 65536:
        raise OmniLabInputError(f"--port {args.port} is not a TCP port; use 1-65535 (default 8888)")
    written, kept = copy_notebooks(args.dir, force=args.force)
    folder = (written or kept)[0].parent.resolve()
    print(f"omni-lab notebooks: {len(written)} copied, {len(kept)} already there (kept; --force replaces) in {folder}")
    if args.copy_only:
        return 0
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise OmniLabInputError("JupyterLab is not installed: `pip install 'omni-lab[notebook]'` (or use --copy-only)")
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={args.port}",
        f"--ServerApp.root_dir={folder}",
    ]
    if args.no_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; the server binds 127.0.0.1 only
        command.append("--ServerApp.allow_root=True")
    sys.stdout.flush()
    os.chdir(folder)
    if os.name == "posix":
        # Become JupyterLab (same pid): a signal meant for `omni-lab notebooks` reaches the server itself, which then
        # shuts its kernels down. A child started with subprocess would be orphaned, kernels and all.
        os.execv(sys.executable, command)
    server = subprocess.Popen(command)  # Windows has no exec that keeps the pid: wait, and stop it on Ctrl-C
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "notebooks":  # needs neither torch nor transformers
        from .errors import OmniLabInputError

        try:
            return _notebooks(args)
        except OmniLabInputError as error:
            print(f"omni-lab: {error}", file=sys.stderr)
            return 2
    from transformers.utils import logging as transformers_logging

    from . import load

    transformers_logging.set_verbosity_error()  # kernel-fallback notices are noise on a terminal
    from .errors import OmniLabInputError, OmniLabModelError

    try:
        if args.command == "playground":
            return _playground(args)
        if args.command in ("train-toy", "eval-toy"):
            from .toy import commands as toy_commands

            return toy_commands.train_toy(args) if args.command == "train-toy" else toy_commands.eval_toy(args)
        if args.command == "info":
            lab = load(args.source, device=args.device)
            info = lab.info()
            print(json.dumps(info, indent=2) if args.json else _info_text(info))
            return 0
        lab = load(args.source, device=args.device, dtype=args.dtype)
        images, video, audio = list(args.image), args.video, list(args.audio)
        text = args.text
        expected = None
        if args.demo and args.source == "toy" and not (text or images or video or audio):
            from .toy import shapesworld

            example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), family="omni", task="count_and_direction")
            text, video, audio, expected = (
                example.question,
                example.media["video"],
                [example.media["audio"]],
                example.answer,
            )
            print(f"question: {text!r} (a held-out ShapesWorld clip and its beeps)")
        elif args.demo:
            image, clip, beeps = demo_media()
            images.append(image)
            video = video or clip
            audio.append(beeps)
            text = text or "What moves in the video, what is in the picture, and how many beeps sound?"
        prompt = lab.prompt(
            text,
            images=images or None,
            video=video,
            audio=audio or None,
            system=args.system,
            thinking=args.thinking,
            fps=args.fps,
            max_frames=args.max_frames,
            video_audio=args.video_audio,
        )
        run = lab.run(prompt, max_new_tokens=args.max_new_tokens, reducer=None if args.no_reduction else "model")
    except (OmniLabInputError, OmniLabModelError) as error:
        print(f"omni-lab: {error}", file=sys.stderr)
        return 2
    summary = run.to_dict()
    counts, kept = summary["tokens_before"], summary["tokens_after"]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"answer: {run.answer!r}  ({run.stop_reason}, {len(run.generated_ids)} tokens)")
        if expected is not None:
            print(f"ground truth: {expected!r}")
        if run.reasoning:
            print(f"reasoning: {run.reasoning!r}")
        print("prompt tokens: " + ", ".join(f"{k} {v} (kept {kept.get(k, 0)})" for k, v in counts.items()))
        print("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in run.timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
