"""Peak memory of the largest media inputs: what is accepted, what is refused, and what each costs.

Each case runs in a fresh Python process that imports omni_lab, makes its input (files are written first, by a
separate process, so their making is not counted), decodes it with `omni_lab.media` and prints its own peak
resident memory (`ru_maxrss`) and wall time; the baseline row is the same process doing no decoding. The span timed
is the decode call alone.

    python benchmarks/bench_media_limits.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAKE = {
    "image_196mpx.png": """
        from PIL import Image
        Image.new("L", (14000, 14000), 128).save(OUT)
    """,
    "bomb_784mpx.png": """
        from PIL import Image
        Image.new("1", (28000, 28000), 0).save(OUT)
    """,
    "live_10min_320x240.mkv": """
        import sys; sys.path.insert(0, ROOT)
        from pathlib import Path
        from tests import media_corpus
        media_corpus.write_video(Path(OUT), "libx264", [i / 10 for i in range(6000)], 320, 240, through_pipe=True)
    """,
    "speech_2h.mp3": """
        import sys; sys.path.insert(0, ROOT)
        from pathlib import Path
        from tests import media_corpus
        media_corpus.write_audio(Path(OUT), 7200.0, 8000, 1, "libmp3lame")
    """,
    "speech_320s_48k_stereo.wav": """
        import sys; sys.path.insert(0, ROOT)
        from pathlib import Path
        from tests import media_corpus
        media_corpus.write_audio(Path(OUT), 320.0, 48000, 2, None, "PCM_16")
    """,
}

CASES = [
    ("baseline (imports only)", None, "None"),
    ("PNG 14,000 x 14,000 (196 Mpx, under the 200 Mpx limit)", "image_196mpx.png", "media.load_image(PATH)"),
    ("PNG 28,000 x 28,000 (784 Mpx, a decompression bomb)", "bomb_784mpx.png", "media.load_image(PATH)"),
    ("live-streamed MKV, 10 min 320x240, fps=1 max_frames=128", "live_10min_320x240.mkv",
     "media.load_video(PATH, fps=1, max_frames=128)"),
    ("live-streamed MKV, 10 min, fps=None max_frames=4096", "live_10min_320x240.mkv",
     "media.load_video(PATH, fps=None, max_frames=4096)"),
    ("MP3, 2 h, context holds 330 s", "speech_2h.mp3", "media.load_audio(PATH, max_seconds=330)"),
    ("WAV, 320 s 48 kHz stereo (fits a 330 s context)", "speech_320s_48k_stereo.wav",
     "media.load_audio(PATH, max_seconds=330)"),
    ("array at 1 Hz", None, "media.load_audio((np.zeros(16000, np.float32), 1))"),
]  # fmt: skip

RUN = """
import json, resource, time
import numpy as np
from omni_lab import OmniLabInputError, media
PATH = {path!r}
start = time.perf_counter()
try:
    result = {call}
    outcome = "accepted"
    if hasattr(result, "frames"):
        outcome += f": {{result.num_frames}} frames {{result.size[0]}}x{{result.size[1]}}"
    elif hasattr(result, "seconds"):
        outcome += f": {{result.seconds:.1f}} s"
    elif hasattr(result, "size"):
        outcome += f": {{result.size[0]}}x{{result.size[1]}}"
except OmniLabInputError as error:
    outcome = "refused: " + str(error)[:110]
seconds = time.perf_counter() - start
print(json.dumps({{"outcome": outcome, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the generated files (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="omni-lab-media-"))
    out.mkdir(parents=True, exist_ok=True)
    for name, code in MAKE.items():
        if not (out / name).exists():
            print(f"making {name} ...", flush=True)
            program = f"OUT = {str(out / name)!r}; ROOT = {str(ROOT)!r}\n" + textwrap.dedent(code)
            subprocess.run([sys.executable, "-c", program], check=True, capture_output=True)
    print(f"\n{'case':62s} {'file MB':>8s} {'peak MB':>8s} {'s':>6s}  outcome")
    for label, name, call in CASES:
        path = str(out / name) if name else ""
        size = (out / name).stat().st_size / 1e6 if name else 0.0
        program = RUN.format(path=path, call=call)
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            print(f"{label:62s} {size:8.1f} {'-':>8s} {'-':>6s}  CRASHED: {result.stderr.strip()[-200:]}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{label:62s} {size:8.1f} {row['peak_mb']:8.0f} {row['seconds']:6.2f}  {row['outcome']}")


if __name__ == "__main__":
    main()
