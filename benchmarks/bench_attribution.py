"""Occlusion on the toy twin, batched against one perturbation per forward pass; forward passes on the real model.

    python benchmarks/bench_attribution.py [--repeats 3] [--threads 2] [--batch-size 16]

Part 1 (measured, CPU): `ol.attribution.occlusion(..., baseline="remove")` on three ShapesWorld prompts of the
trained twin: 16 image regions (a 128 x 128 image, grid 4 x 4 = its 16 tokens), 8 video tubelets (a 16-frame clip)
and the 0.5 s windows of a 4 s audio clip (8 windows). Span, the same on both sides: one `occlusion(...)` call with
the answer named (no generation) and `encoded=lab.encode(prompt)` (media encoded once, before the span): captum's
FeatureAblation plus every language-model forward pass, with `batch_size` perturbations per pass (batched) or 1
(one by one). Both sides must give the same scores. Medians over repeats that alternate the two sides.

Part 2 (estimated): the forward passes each method needs on the real model's typical prompt, a 256-frame video
(128 tubelets x 256 tokens = 32,768 video tokens, ../shared/reference/model_spec.md §4.4; 9,830 after the model's
own EVS at rate 0.7), and their time on one H200 by a compute roofline: 2 FLOP per active parameter per token
(3.23 B active, model_spec.md §2.8) plus the 6 attention layers' scores (4 * L^2 * 4096 FLOP per layer, causal
half), at 989 TFLOP/s dense BF16 (H200 SXM datasheet; model_spec.md states no accelerator figures). Weights
(63 GB) stream in 13 ms at 4.8 TB/s, so these prompt lengths are compute-bound. A backward pass counts 2 forwards.
Roofline times are lower bounds (100 % of peak).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

H200_FLOPS = 989e12  # dense BF16, H200 SXM
H200_BYTES_PER_S = 4.8e12
ACTIVE_PARAMETERS = 3.23e9  # LLM, per token, excluding input embeddings (model_spec.md §2.8)
WEIGHT_BYTES = 63e9
ATTENTION_LAYERS, ATTENTION_WIDTH = 6, 32 * 128
VISION_PARAMETERS, VISION_TOKENS_PER_TUBELET = 0.654e9, 1024 + 10  # RADIO ViT-H, patches + prefix (§3, §4.3)


def _find(family: str, task: str, accept):
    from omni_lab.toy import shapesworld as sw

    for index in range(10_000):
        example = sw.sample(sw.eval_seed(1, family, index), family=family, task=task)
        if accept(example):
            return example
    raise RuntimeError(f"no {family}/{task} example found")


def measure(args) -> None:
    import numpy as np
    import torch

    import omni_lab as ol

    torch.set_num_threads(args.threads)
    lab = ol.load("toy", progress=False)
    cases = [
        ("16 image regions", _find("image", "colour", lambda e: True), {"unit": "region", "grid": (4, 4)}),
        (
            "8 video tubelets",
            _find("video", "direction", lambda e: e.video.num_frames == 16),
            {"unit": "tubelet"},
        ),
        (
            "4 s audio, 0.5 s windows",
            _find("audio", "beep_count", lambda e: abs(e.truth["audio"].seconds - 4.0) < 1e-6),
            {"unit": "audio_window", "seconds": 0.5},
        ),
    ]
    print(f"Part 1: occlusion, baseline='remove', twin on {args.threads} threads, median of {args.repeats}")
    print(f"{'units':28} {'n':>3} {'L':>4} {'batched s':>10} {'1-by-1 s':>9} {'speed-up':>8}  passes")
    for name, example, options in cases:
        prompt = example.prompt(lab)
        encoded = lab.encode(prompt)
        timed_occlusion(lab, prompt, example.answer, encoded, args.batch_size, options)  # warm-up
        times = {"batched": [], "single": []}
        for _ in range(args.repeats):  # alternate the sides so machine noise hits both alike
            seconds, batched = timed_occlusion(lab, prompt, example.answer, encoded, args.batch_size, options)
            times["batched"].append(seconds)
            seconds, single = timed_occlusion(lab, prompt, example.answer, encoded, 1, options)
            times["single"].append(seconds)
        np.testing.assert_allclose(batched.unit_scores, single.unit_scores, atol=1e-4)
        median_b, median_s = statistics.median(times["batched"]), statistics.median(times["single"])
        print(
            f"{name:28} {len(batched.unit_scores):>3} {len(prompt):>4} {median_b:>10.2f} {median_s:>9.2f} "
            f"{median_s / median_b:>7.2f}x  {batched.forward_passes}"
        )


def timed_occlusion(lab, prompt, answer, encoded, batch_size: int, options: dict):
    """(seconds, Attribution) of one occlusion call: the span both sides share."""
    import omni_lab as ol

    start = time.perf_counter()
    result = ol.attribution.occlusion(
        lab, prompt, answer, encoded=encoded, batch_size=batch_size, progress=False, **options
    )
    return time.perf_counter() - start, result


def forward_seconds(length: int) -> float:
    """Roofline time of one language-model forward pass over `length` tokens on one H200."""
    flops = 2 * ACTIVE_PARAMETERS * length + ATTENTION_LAYERS * 4 * length**2 * ATTENTION_WIDTH / 2
    return max(flops / H200_FLOPS, WEIGHT_BYTES / H200_BYTES_PER_S)


def video_encode_seconds(tubelets: int) -> float:
    flops = 2 * VISION_PARAMETERS * VISION_TOKENS_PER_TUBELET * tubelets
    return flops / H200_FLOPS


def estimates() -> None:
    from omni_lab.attribution import estimate

    tubelets, tokens_per_tubelet, label_tokens, question_tokens = 128, 256, 20, 40
    full = tubelets * (tokens_per_tubelet + label_tokens) + question_tokens
    evs = int(tubelets * tokens_per_tubelet * (1 - 0.7)) + tubelets * label_tokens + question_tokens
    words = 12
    rows = [
        ("occlusion unit='tubelet'", estimate("occlusion", tubelets), 0),
        ("occlusion unit='region' 4x4", estimate("occlusion", 16), 0),
        ("occlusion unit='word' (question)", estimate("occlusion", words), 0),
        ("input_occlusion unit='frame'", estimate("input_occlusion", 2 * tubelets), 2 * tubelets),
        ("input_occlusion unit='region' 4x4", estimate("input_occlusion", 16), 16),
        ("modality_shapley (text, video)", estimate("modality_shapley", 2), 0),
        ("modality_shapley (text, video, audio)", estimate("modality_shapley", 3), 0),
        ("modality_shapley 8 groups", estimate("modality_shapley", 8), 0),
        ("integrated_gradients n_steps=32", estimate("integrated_gradients", 0, n_steps=32), 0),
        ("integrated_gradients n_steps=64", estimate("integrated_gradients", 0, n_steps=64), 0),
    ]
    print()
    print(
        f"Part 2: a 256-frame video prompt, {full:,} tokens unreduced / {evs:,} after EVS 0.7; roofline on one H200: "
        f"{forward_seconds(full):.3f} s / {forward_seconds(evs):.3f} s per forward pass, "
        f"{video_encode_seconds(tubelets):.3f} s per full video encode"
    )
    print(f"{'method':40} {'fwd':>6} {'bwd':>5} {'re-enc':>6} {'H200 s (no EVS)':>16} {'H200 s (EVS 0.7)':>17}")
    for name, cost, reencodes in rows:
        passes = cost.forward_passes + 2 * cost.backward_passes
        encode = reencodes * video_encode_seconds(tubelets)  # the whole video re-encoded per perturbation
        print(
            f"{name:40} {cost.forward_passes:>6} {cost.backward_passes:>5} {reencodes:>6} "
            f"{passes * forward_seconds(full) + encode:>16.1f} {passes * forward_seconds(evs) + encode:>17.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-measure", action="store_true", help="print only the real-model estimates")
    args = parser.parse_args()
    if not args.skip_measure:
        measure(args)
    estimates()


if __name__ == "__main__":
    main()
