"""Size of an exported run ("Download" in the playground) for a 16-frame clip with sound, and what makes it up.

Draws the first held-out ShapesWorld omni example (moving shapes + beeps) whose clip has 16 frames, writes it as the
files a user uploads (H.264 mp4 at 8 fps, FLAC), then in this process on the toy twin:
1. asks it in the Ask tab's way (`handlers.ask`, the model's own EVS) and exports the run (`export.export_run`);
2. compares EVS 0.7 against RandomDrop at EVS's budget (`compare.compare`) and exports both arms
   (`export.export_comparison`).
Prints each file's size, the share of the report that is plotly.js (inlined once), the share in `data:` pictures,
and the seconds each export took (writing the report and the JSON; the checkpoint's hashes are memoised after the
first export, so the second one shows the cost without hashing).

    python benchmarks/bench_export.py [--model toy]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path


def sixteen_frame_omni(folder: Path):
    """(question, answer, video path, audio path) of the first held-out omni example with a 16-frame clip."""
    from omni_lab.playground.make_examples import write_audio, write_video
    from omni_lab.toy import shapesworld

    for index in range(1000):
        example = shapesworld.sample(shapesworld.EVAL_SEED_BASE + index, "omni", "count_and_direction")
        if example.video.num_frames == 16:
            video = write_video(example.video, folder / "clip16.mp4")
            audio = write_audio(example.audio, folder / "clip16.flac")
            return example.question, example.answer, video, audio
    raise RuntimeError("no 16-frame omni example among the first 1000 held-out seeds")


def describe(path: Path, seconds: float) -> str:
    text = path.read_text(encoding="utf-8")
    size = len(text.encode())
    line = f"{path.name}: {size / 1e6:.2f} MB, written in {seconds:.2f} s"
    if path.suffix == ".html":
        bundle = text.find("* plotly.js v")
        start, end = text.rfind("<script", 0, bundle), text.find("</script>", bundle)
        plotly_bytes = len(text[start:end].encode()) if bundle >= 0 else 0
        pictures = sum(len(m) for m in re.findall(r"data:image(?:/|\\u002f)[a-z]+;base64,[A-Za-z0-9+/=\\]+", text))
        figures = text.count('class="plotly-graph-div"')
        line += (
            f" ({figures} figures; plotly.js {plotly_bytes / 1e6:.2f} MB = {100 * plotly_bytes / size:.0f}%, "
            f"data: pictures {pictures / 1e6:.2f} MB, the rest {(size - plotly_bytes - pictures) / 1e6:.2f} MB)"
        )
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    args = parser.parse_args()

    import omni_lab as ol
    from omni_lab.playground import compare, export, handlers

    lab = ol.load(args.model, progress=False)
    settings = handlers.default_settings(lab, time_limit_s=900.0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        question, answer, video, audio = sixteen_frame_omni(folder)
        kept = []
        outputs = list(
            handlers.ask(lab, settings, question, video=str(video), audio=str(audio), on_run=lambda *k: kept.append(k))
        )
        run, stats = kept[0]
        print(f"clip: {run.prompt.videos[0].num_frames} frames at 8 fps + {run.prompt.audios[0].seconds:.2f} s sound")
        print(f"ask: {outputs[-1][0]!r} (known {answer!r}); tokens before {stats['tokens_before']}")
        for label in ("first export (hashes the checkpoint)", "second export"):
            started = time.perf_counter()
            files = export.export_run(lab, run, stats, folder / f"run-{len(label)}")
            seconds = time.perf_counter() - started
            print(f"  {label}:")
            for path in files:
                print("    " + describe(path, seconds))
        *_, last = compare.compare(lab, settings, question, video=str(video), audio=str(audio))
        comparison = last[-1]
        print(f"compare: {last[0]!r} / {last[1]!r} ({', '.join(arm.plan.label for arm in comparison.arms)})")
        started = time.perf_counter()
        files = export.export_comparison(lab, comparison, folder / "compare")
        seconds = time.perf_counter() - started
        for path in files:
            print("    " + describe(path, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
