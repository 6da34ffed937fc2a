"""Rows per minute of the per-prompt studies with their runs batched (`Lab.prefill`) against one run at a time.

Span (the same on both sides): `ol.studies.reinsertion(lab, prompt, EVS(0.7), groups="tubelet")` and
`ol.studies.pruned_contribution(lab, prompt, EVS(0.7), max_tokens=M)` over the same held-out ShapesWorld video + audio
prompts, the toy twin, everything the study does included (its unreduced baseline, the reduced run, every
restoration or ablation); the only difference is `batch_size` (1: one forward per row, as before batching; B: B rows
per forward). The two sides alternate, repeated, and the rows are checked equal.

    python benchmarks/bench_batch.py [--prompts 4] [--repeats 3] [--batch 16] [--max-tokens 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import omni_lab as ol
from omni_lab.toy import shapesworld as sw


def timed(study, lab, prompts, reducer, batch_size: int, **options) -> tuple[float, int, list]:
    """(seconds, rows, the rows' values) of one study over the prompts."""
    started, rows, values = time.perf_counter(), 0, []
    for prompt in prompts:
        result = study(lab, prompt, reducer, batch_size=batch_size, progress=False, **options)
        table = result.groups if hasattr(result, "groups") else result.tokens
        rows += len(table)
        values.append(table["margin" if "margin" in table else "effect"].to_numpy())
    return time.perf_counter() - started, rows, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    lab = ol.load("toy", progress=False)
    prompts = [sw.sample(sw.eval_seed(7, "omni", i), "omni").prompt(lab) for i in range(args.prompts)]
    reducer = ol.reducers.EVS(0.7)
    studies = {
        "reinsertion (tubelets)": (ol.studies.reinsertion, {"groups": "tubelet"}),
        "pruned_contribution": (ol.studies.pruned_contribution, {"max_tokens": args.max_tokens}),
    }
    print(f"toy twin, {args.prompts} video + audio prompts, EVS(0.7), {torch.get_num_threads()} threads")
    for name, (study, options) in studies.items():
        timed(study, lab, prompts[:1], reducer, args.batch, **options)  # warm-up
        seconds = {1: [], args.batch: []}
        reference = None
        for _ in range(args.repeats):
            for batch in (1, args.batch):
                elapsed, rows, values = timed(study, lab, prompts, reducer, batch, **options)
                seconds[batch].append(elapsed)
                if reference is None:
                    reference = values
                else:
                    for mine, theirs in zip(values, reference, strict=True):
                        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4)
        one, many = statistics.median(seconds[1]), statistics.median(seconds[args.batch])
        print(
            f"{name:24s} {rows} rows: batch 1 {60 * rows / one:7.0f} rows/min ({one:.2f} s), "
            f"batch {args.batch} {60 * rows / many:7.0f} rows/min ({many:.2f} s): {one / many:.2f}x"
        )


if __name__ == "__main__":
    main()
