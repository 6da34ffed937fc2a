"""Capture overhead on random:small at ~2K tokens, measured side by side in one process (medians), plus peak memory.

    python benchmarks/bench_capture.py [--tokens 2048] [--repeats 7] [--threads 2] [--with-encoders]

Every row times the same span on one image + video + audio + text prompt: merge the media embeddings into the
sequence, then the LLM prefill with its cache and the LM head on the last position (`max_new_tokens=0`). The media
are encoded once beforehand (`lab.encode`); with `--with-encoders` every row runs the encoders too.
  plain                       lab.run(..., encoded=...) with no capture
  routing+residual            capture=["routing", "residual"]
  all                         + attention_mass + mamba_mass (segments per item, every query position)
  transformers eager attn     the same merged embeddings (`lab.prepare(..., encoded=...)`) through a copy of the
                              language model under eager attention with output_attentions=True (the L x L maps
                              transformers offers instead of per-segment masses)
Times alternate between configurations within each repeat so machine noise hits them alike; ratios are against
plain. Peak memory is the resident-set growth of a fresh process running one configuration after loading.
Targets (issue 5): routing+residual <= 1.05x, all <= 1.5x, peak memory of all <= 1.3x plain.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CONFIGS = {
    "plain": None,
    "routing+residual": ["routing", "residual"],
    "all": ["routing", "residual", "attention_mass", "mamba_mass"],
    "transformers eager attn": "eager",
}


def build(tokens: int, threads: int = 2):
    import numpy as np
    import torch

    import omni_lab as ol
    from omni_lab.media import VideoClip

    torch.set_num_threads(threads)
    lab = ol.load("random:small")
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    audio = (rng.standard_normal(16000 * 10).astype(np.float32) * 0.1, 16000)
    frames = 2
    while True:  # grow the video until the prompt reaches the token target
        video = VideoClip((rng.random((frames, 128, 128, 3)) * 255).astype(np.uint8), fps=2.0)
        prompt = lab.prompt("Describe what you see and hear.", images=[image], video=video, audio=audio)
        if len(prompt) >= tokens:
            return lab, prompt
        frames += 2


def runner(lab, prompt, config, with_encoders: bool = False):
    """A no-argument callable that runs one configuration over the benchmark's span (module docstring)."""
    import torch

    encoded = None if with_encoders else lab.encode(prompt)
    if config == "eager":
        eager = copy.deepcopy(lab.model.language_model)
        eager.set_attn_implementation("eager")

        def run():
            embeds = lab.prepare(prompt, reducer=None, encoded=encoded).embeds  # merge (+ encoders when asked)
            with torch.inference_mode():
                output = eager(inputs_embeds=embeds, use_cache=True, output_attentions=True, logits_to_keep=1)
                return output.attentions

        return run
    return lambda: lab.run(prompt, max_new_tokens=0, reducer=None, capture=config, encoded=encoded)


def child(name: str, tokens: int, threads: int, with_encoders: bool) -> None:
    lab, prompt = build(tokens, threads)
    run = runner(lab, prompt, CONFIGS[name], with_encoders)
    run()  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import gc

    gc.collect()
    baseline = _rss_kib()
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "extra_mib": (max(peak, before) - baseline) / 1024}))


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the CPU)")
    parser.add_argument("--with-encoders", action="store_true", help="every row also runs the media encoders")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokens, args.threads, args.with_encoders)
        return
    lab, prompt = build(args.tokens, args.threads)
    counts = prompt.token_map.counts()
    span = "encode + merge + prefill" if args.with_encoders else "merge + prefill (media encoded beforehand)"
    print(f"random:small, prompt of {len(prompt)} tokens ({counts}), every row: {span}, {args.threads} thread(s)")
    runs = {name: runner(lab, prompt, config, args.with_encoders) for name, config in CONFIGS.items()}
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    memory = {}
    for name in runs:
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--tokens",
            str(args.tokens),
            "--threads",
            str(args.threads),
            *(["--with-encoders"] if args.with_encoders else []),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True)
        memory[name] = json.loads(output.stdout.strip().splitlines()[-1])["extra_mib"]
    plain = statistics.median(times["plain"])
    print(f"{'configuration':<26}{'median s':>10}{'x plain':>9}{'peak +MiB':>11}{'x plain':>9}")
    for name in runs:
        median = statistics.median(times[name])
        print(
            f"{name:<26}{median:>10.3f}{median / plain:>9.2f}{memory[name]:>11.0f}"
            f"{memory[name] / max(memory['plain'], 1e-9):>9.2f}"
        )


if __name__ == "__main__":
    main()
