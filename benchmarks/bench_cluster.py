"""Studies on Ray: sweep rows per minute with 1 and 2 workers, Ray's per-task overhead, and a worked estimate for a
real study (10,000 videos x 5 reducers x 4 rates, the 30B model, 8 x H200) with the chunk size that keeps Ray's
overhead under 1 %.

    python benchmarks/bench_cluster.py [--prompts 12] [--repeats 200]

Measured here, with the toy twin on local Ray (CPU actors, 1 CPU each):
  rows/min: `ol.studies.sweep` over ShapesWorld image/audio prompts x 2 reducers x 2 rates (9 rows a prompt),
      max_new_tokens=1, on 1 and on 2 workers; wall time of the whole call, and without the actors' start-up (each
      actor imports torch and loads the model once: timed separately by starting the actors alone).
  per-task overhead: the same span on both sides, "hand a chunk over and get its rows back": a round trip of an
      actor method that returns its input (a chunk of 41 cells with its dataset row) vs calling that method locally.
      Medians over `--repeats` calls.
The estimate's per-prompt cost is a roofline from /work/shared/reference/model_spec.md (numbers named in the output).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

H200_BF16_FLOPS = 989e12  # dense BF16 tensor-core peak, FLOP/s
H200_HBM = 4.8e12  # bytes/s
MFU = 0.4  # assumed share of the peak a prefill reaches (grouped-GEMM MoE at one prompt per batch)


class Echo:
    """An actor that hands back what it is given: the Ray round trip of a chunk without any work."""

    def echo(self, study, rows, cells, options):
        return cells


def roofline() -> dict:
    """Per-video cost of one sweep prompt (all its 41 rows) on one H200, from model_spec.md."""
    frames, tokens_per_tubelet = 128, 256  # lab.prompt's max_frames=128 at fps 1 (a 2-minute clip); square: 256/tubelet
    tubelets = frames // 2  # T=2 frames per tubelet (§4.3)
    video_tokens = tubelets * tokens_per_tubelet  # 16,384
    prompt_tokens = video_tokens + 64  # plus the question and template
    vit_params, vit_layers, vit_width, patches = 653.6e6, 32, 1280, 1024  # RADIO ViT-H (§2.8, §3), 1024 patches/tubelet
    vision = tubelets * (2 * vit_params * patches + 4 * patches**2 * vit_width * vit_layers)
    active = 3.23e9  # active LLM parameters per token (§2.8)
    attention_layers, q_dim = 6, 4096  # 6 GQA layers, 32 heads x 128 (§2)

    def prefill(tokens: float) -> float:
        return 2 * active * tokens + 2 * tokens**2 * q_dim * attention_layers  # causal attention: half of 4 L^2 d

    rates, reducers, max_new_tokens = (0.25, 0.5, 0.7, 0.9), 5, 8
    runs = [0.0] + [rate for rate in rates for _ in range(reducers) for _ in range(2)]  # unreduced + reducer + control
    llm = sum(prefill(prompt_tokens - rate * video_tokens) for rate in runs)
    decode = len(runs) * max_new_tokens * (3.58e9 * 2 / H200_HBM)  # memory bound: active weights (bf16) per token
    seconds = (vision + llm) / (H200_BF16_FLOPS * MFU) + decode
    return {
        "video_tokens": video_tokens,
        "rows": len(runs),
        "vision_tflop": vision / 1e12,
        "llm_tflop": llm / 1e12,
        "decode_s": decode,
        "seconds_per_video": seconds,
    }


def sweep_rate(data, workers: int) -> tuple[float, int]:
    import omni_lab as ol

    start = time.perf_counter()
    frame = ol.studies.sweep(
        "toy",
        data,
        ["divprune", "randomdrop"],
        [0.5, 0.75],
        max_new_tokens=1,
        progress=False,
        cluster=ol.cluster.Ray(workers=workers, gpus_per_worker=0),
    )
    return time.perf_counter() - start, len(frame)


def steady_rate(data, workers: int) -> tuple[float, float, int]:
    """(start-up seconds, compute seconds, rows) of the same sweep's chunks on ready StudyWorker actors."""
    import ray

    import omni_lab as ol
    from omni_lab.cluster.ray import start_workers
    from omni_lab.studies.sweep import _make, chunk_cells, plan_cells

    rates = [0.5, 0.75]
    cells = plan_cells(
        data.keys, [[_make(name, rate) for rate in rates] for name in ("divprune", "randomdrop")], rates, 0
    )
    chunks = chunk_cells(cells, 9)
    start = time.perf_counter()
    actors, _ = start_workers(ol.cluster.Ray(workers=workers, gpus_per_worker=0), "toy", None)
    ray.get([actor.pid.remote() for actor in actors])
    ready = time.perf_counter()
    options = {"max_new_tokens": 1, "seed": 0}
    references = [
        actors[i % workers].compute.remote("sweep", {c.prompt: data.rows[c.prompt] for c in chunk}, chunk, options)
        for i, chunk in enumerate(chunks)
    ]
    rows = sum(len(result) for result in ray.get(references))
    done = time.perf_counter()
    for actor in actors:
        ray.kill(actor)
    return ready - start, done - ready, rows


def overhead(repeats: int) -> tuple[float, float]:
    """Median seconds of a chunk's round trip through a Ray actor, and of the same call made locally."""
    import ray

    import omni_lab as ol
    from omni_lab.studies.sweep import _make, plan_cells

    data = ol.studies.Dataset.shapesworld(1, families=["video"])
    made = [[_make(name, rate) for rate in (0.25, 0.5, 0.7, 0.9)] for name in ("evs", "divprune", "tome", "pixeldiff")]
    made.append([_make("randomdrop", rate) for rate in (0.25, 0.5, 0.7, 0.9)])
    cells = plan_cells(data.keys, made, [0.25, 0.5, 0.7, 0.9], 0)  # 41 cells: one video's share of the study
    rows = {0: data.rows[0]}
    actor = ray.remote(Echo).options(num_cpus=1).remote()
    ray.get(actor.echo.remote("sweep", rows, cells, {}))
    remote, local = [], []
    here = Echo()
    for _ in range(repeats):
        start = time.perf_counter()
        ray.get(actor.echo.remote("sweep", rows, cells, {}))
        remote.append(time.perf_counter() - start)
        start = time.perf_counter()
        here.echo("sweep", rows, cells, {})
        local.append(time.perf_counter() - start)
    ray.kill(actor)
    return statistics.median(remote), statistics.median(local)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    import ray

    import omni_lab as ol

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    data = ol.studies.Dataset.shapesworld(args.prompts, families=["image", "audio"], seed=7)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"sweep of {args.prompts} ShapesWorld prompts x 2 reducers x 2 rates (9 rows a prompt), toy twin, CPU actors")
    for workers in (1, 2):
        wall, rows = sweep_rate(data, workers)
        start_s, compute_s, computed = steady_rate(data, workers)
        print(
            f"  {workers} worker(s): ol.studies.sweep {rows} rows in {wall:.1f} s = {60 * rows / wall:.0f} rows/min "
            f"(actors' start-up included); on ready actors {computed} rows in {compute_s:.1f} s = "
            f"{60 * computed / compute_s:.0f} rows/min (start-up {start_s:.1f} s)"
        )
    remote, local = overhead(args.repeats)
    task = remote - local
    print(
        f"Ray per-task overhead (chunk of 41 cells handed over and back): {1e3 * remote:.2f} ms round trip vs "
        f"{1e6 * local:.1f} us local call -> {1e3 * task:.2f} ms a task"
    )
    ray.shutdown()

    cost = roofline()
    videos, gpus = 10_000, 8
    per_row = cost["seconds_per_video"] / cost["rows"]
    least_cells = task / 0.01 / per_row  # chunk seconds >= 100 x the task overhead
    hours = videos * cost["seconds_per_video"] / gpus / 3600
    print(
        "\nWorked estimate: 10,000 videos x 5 reducers x 4 rates (0.25, 0.5, 0.7, 0.9), EVS study, 30B BF16, 8 x H200"
    )
    print("  model_spec.md numbers: 3.23B active LLM params/token (3.58B with embeddings, for decode), 6 GQA layers x")
    print("  4096 q dim, RADIO ViT-H 653.6M params at 1024 patches/tubelet, T=2 frames/tubelet, 256 tokens/tubelet")
    print(
        f"  (square frames), 128 frames a video -> {cost['video_tokens']} video tokens; H200 989 TFLOP/s BF16 at "
        f"{MFU:.0%} MFU, 4.8 TB/s"
    )
    print(
        f"  per video: {cost['rows']} rows (unreduced + 20 reducer runs + 20 equal-budget controls), vision "
        f"{cost['vision_tflop']:.0f} TFLOP once, LLM prefills {cost['llm_tflop']:.0f} TFLOP, decode "
        f"{cost['decode_s']:.2f} s (8 tokens a run) -> {cost['seconds_per_video']:.1f} s a video, "
        f"{per_row:.3f} s a row"
    )
    print(
        f"  {videos * cost['rows']:,} rows; {videos:,} videos / {gpus} GPUs (1 worker each, model fits one H200) -> "
        f"{hours:.1f} h"
    )
    print(
        f"  Ray overhead < 1 %: a chunk must last >= 100 x {1e3 * task:.2f} ms = {100 * task:.2f} s, i.e. >= "
        f"{least_cells:.1f} cells; chunks keep a video's {cost['rows']} cells together anyway, so chunk_size="
        f"{cost['rows']} (one video a chunk, {cost['seconds_per_video']:.1f} s) puts Ray at "
        f"{100 * task / cost['seconds_per_video']:.3f} % and re-encodes no video"
    )


if __name__ == "__main__":
    main()
