"""What each instrument costs, as a ratio to a plain run of the same prompt, measured side by side in one process.

Span (each side): from the `Prompt` to the instrument's result, media encoded inside the span on both sides. The plain
side is `lab.run(prompt, max_new_tokens=1, reducer=None)` (encode, merge, one prefill: what every instrument needs
at least). Instruments:

    logit lens            lab.run(..., capture=["logit_lens"]) then run.logit_lens()
    direct logit          ol.studies.direct_logit_attribution(lab, prompt, answer)   (resolves the answer's ids too)
    gradient capture      lab.grad(prompt, answer, capture=["grad:llm.layers.*.out"])   (a backward pass)
    patch_from (all)      lab.logits(corrupt, interventions=[ol.patch_from(clean_prefill)])   (source prefilled once)
    routing + paths       lab.run(..., capture=["routing"]) then coactivation() and paths()
    set_top_k(1)          lab.run(..., interventions=[ol.set_top_k(1)])
    activation patching   ol.studies.activation_patching over every layer input x 2 groups   (divided by its cells)

The sides alternate `--repeats` times; the medians are compared.

    python benchmarks/bench_instruments.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import omni_lab as ol
from omni_lab.media import VideoClip
from omni_lab.toy import shapesworld as sw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    lab = ol.load("toy", progress=False)
    example = next(
        e
        for i in range(50)
        if (e := sw.sample(sw.eval_seed(0, "video", 300 + i), "video", "direction")).answer != "none"
    )
    clean = example.prompt(lab)
    clip = clean.videos[0]
    frames = np.ascontiguousarray(np.asarray(clip.frames)[::-1])
    corrupt = lab.prompt(
        clean.text, video=VideoClip(frames, clip.fps, list(clip.frame_indices), clip.source, clip.times)
    )
    source = lab.prefill([clean], cache=["llm.layers.*.in"], reducer=None)[0]
    video = clean.token_map.rows(modality="video")
    path = video & (clean.token_map.box_overlap(example.truth["video"].path_box()) > 0)
    layers = lab.config.text_config.num_hidden_layers

    def routing_paths():
        run = lab.run(clean, max_new_tokens=1, reducer=None, capture=["routing"])
        run.routing.coactivation(by="modality"), run.routing.paths(top=10, by="modality")

    instruments = {
        "plain run": lambda: lab.run(clean, max_new_tokens=1, reducer=None),
        "logit lens": lambda: lab.run(clean, max_new_tokens=1, reducer=None, capture=["logit_lens"]).logit_lens(),
        "direct logit": lambda: ol.studies.direct_logit_attribution(lab, clean, example.answer, reducer=None),
        "gradient capture": lambda: lab.grad(clean, example.answer, capture=["grad:llm.layers.*.out"], reducer=None),
        "patch_from (all)": lambda: lab.logits(corrupt, reducer=None, interventions=[ol.patch_from(source)]),
        "routing + paths": routing_paths,
        "set_top_k(1)": lambda: lab.run(clean, max_new_tokens=1, reducer=None, interventions=[ol.set_top_k(1)]),
        "activation patching / cell": lambda: ol.studies.activation_patching(
            lab, clean, corrupt, groups={"path": path, "rest": video & ~path}, progress=False
        ),
    }
    cells = {"activation patching / cell": 2 * layers}
    for function in instruments.values():  # warm-up
        function()
    times: dict[str, list[float]] = {name: [] for name in instruments}
    for _ in range(args.repeats):
        for name, function in instruments.items():
            started = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - started) / cells.get(name, 1))
    plain = statistics.median(times["plain run"])
    print(f"toy twin, a {len(clean)}-token video prompt, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} {1000 * median:8.1f} ms   {median / plain:5.2f}x a plain run")


if __name__ == "__main__":
    main()
