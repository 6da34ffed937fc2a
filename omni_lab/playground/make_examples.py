"""Regenerate the playground's example gallery: `python -m omni_lab.playground.make_examples [--out DIR]`.

For every basic-tier ShapesWorld task (image, video, audio, omni = video + audio, text: what the default twin
answers) this draws held-out examples
(`shapesworld.eval_seed`, so none was seen in training), writes their media as the files a user would upload (PNG;
H.264 MP4 at the clips' 8 fps; 16-bit FLAC at 16 kHz) and asks the toy twin about the files through the playground's
own upload path (`handlers.build_prompt`, reducer "model"). The first draw of each task that the twin answers
correctly from the files is kept, so the gallery shows the model working; the number of draws tried per task is
printed and stored in the index (`draws`), so a weak task is visible rather than hidden. Everything written stays
under 1 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .examples import EXAMPLES_DIR

SIZE_BUDGET_BYTES = 1_000_000
MAX_DRAWS = 50
X264_CRF = 12  # near-lossless: compression noise stays well under the colours' own jitter


def write_image(image, path: Path) -> Path:
    """Save a PIL image as PNG."""
    image.save(path, format="PNG", optimize=True)
    return path


def write_video(clip, path: Path) -> Path:
    """Encode a `VideoClip` as H.264 (yuv420p, plays in every browser) at the clip's own frame rate.

    Args:
        clip: `VideoClip` with `(T, H, W, 3)` uint8 frames (even H and W) and `fps`.
        path: where to write the `.mp4`.
    Returns:
        `path`.
    """
    from fractions import Fraction

    import av

    frames = np.asarray(clip.frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(X264_CRF), "preset": "veryslow"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_audio(audio, path: Path) -> Path:
    """Save `(waveform, rate)` as 16-bit FLAC."""
    import soundfile

    waveform, rate = audio
    soundfile.write(str(path), np.asarray(waveform, dtype=np.float32), int(rate), subtype="PCM_16", format="FLAC")
    return path


def write_media(example, folder: Path, stem: str) -> dict:
    """Write an example's media into `folder` as `{stem}.png|.mp4|.flac`; returns {kind: file name}."""
    files = {}
    if example.image is not None:
        files["image"] = write_image(example.image, folder / f"{stem}.png").name
    if example.video is not None:
        files["video"] = write_video(example.video, folder / f"{stem}.mp4").name
    if example.audio is not None:
        files["audio"] = write_audio(example.audio, folder / f"{stem}.flac").name
    return files


def answers_from_files(lab, settings, question: str, folder: Path, files: dict) -> str:
    """The model's answer when the files are uploaded to the playground (its own upload path, reducer "model")."""
    from .handlers import build_prompt, make_reducer

    paths = {kind: str(folder / name) for kind, name in files.items()}
    prompt = build_prompt(lab, settings, question, **paths)
    return lab.run(prompt, max_new_tokens=settings.max_new_tokens, reducer=make_reducer("model", 0.0)).answer


def make_examples(out: Path, lab=None, max_draws: int = MAX_DRAWS) -> list[dict]:
    """Write one example per ShapesWorld task into `out` (replacing what was there) and `out/index.json`.

    Args:
        out: the examples folder.
        lab: the toy twin (loaded when None).
        max_draws: held-out draws tried per task before giving up on it.
    Returns:
        the index entries.
    Raises:
        RuntimeError: a task with no correct answer in `max_draws` draws, or files over the 1 MB budget.
    """
    import omni_lab as ol
    from omni_lab.toy import shapesworld

    from .handlers import default_settings

    lab = lab or ol.load("toy", progress=False)
    settings = default_settings(lab)
    entries = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for family in shapesworld.TIERS["basic"]:  # the default twin's tasks ("toy-hard" holds the hard tier)
            for task_index, task in enumerate(shapesworld.TASKS[family]):
                name = f"{family}-{task.replace('_', '-')}"
                for draw in range(max_draws):
                    seed = shapesworld.eval_seed(0, family, 1000 * task_index + draw)
                    example = shapesworld.sample(seed, family=family, task=task)
                    files = write_media(example, scratch, name)
                    if answers_from_files(lab, settings, example.question, scratch, files) == example.answer:
                        break
                else:
                    raise RuntimeError(f"{name}: no correct answer in {max_draws} held-out draws")
                entry = {"name": name, "family": family, "task": task, "question": example.question}
                entry |= {"answer": example.answer, "seed": seed, "draws": draw + 1, **files}
                entries.append(entry)
                print(f"{name:<30} {example.question!r} -> {example.answer!r}  (draws tried: {draw + 1})")
        size = sum(path.stat().st_size for path in scratch.iterdir())
        if size > SIZE_BUDGET_BYTES:
            raise RuntimeError(f"the examples take {size:,} bytes, over the {SIZE_BUDGET_BYTES:,}-byte budget")
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if old.is_file():
                old.unlink()
        for path in scratch.iterdir():
            shutil.copy2(path, out / path.name)
    index = {
        "about": "ShapesWorld held-out examples for the playground; regenerate with "
        "`python -m omni_lab.playground.make_examples`. `answer` is ShapesWorld's ground truth; `draws` is how many "
        "held-out draws of the task were tried before the toy twin answered one correctly from the files.",
        "examples": entries,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    total = sum(path.stat().st_size for path in out.iterdir())
    print(f"wrote {len(entries)} examples to {out} ({total:,} bytes)")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni_lab.playground.make_examples", description=__doc__)
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="examples folder (default: the package's)")
    parser.add_argument("--max-draws", type=int, default=MAX_DRAWS, help="held-out draws tried per task")
    args = parser.parse_args(argv)
    make_examples(args.out, max_draws=args.max_draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
