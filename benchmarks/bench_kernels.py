"""Pooled attention mass: naive L × L materialisation vs the chunked kernels, measured side by side.

One attention layer (8 heads, head dim 64, causal, 4 segments, batch 1), as in docs/references.md (interpretability tools).

CPU (``--device cpu``, default): the naive version (full softmax over L × L scores, then pooled) against the chunked
torch reference (``omni_lab.kernels.ref.pooled_attention_mass``, float32) and the fused path the public op takes on
CPU (``omni_lab.kernels.sdpa``: torch's fused attention with the one-hot segments as values).
- Time: both run in this process, alternating, one warm-up each, median of ``--repeats``.
- Peak extra memory: each (method, L) runs once more in a fresh subprocess that builds the inputs, resets the
  kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux), runs the method and reads the peak
  (VmHWM) back: extra = peak RSS − RSS just before the call. This counts every allocation of torch's CPU
  allocator, MKL workspaces included (tracemalloc would miss them all). Without clear_refs the script falls back
  to sampling RSS every millisecond with psutil.
- The naive method is skipped where its two L × L float32 matrices would not fit in the available RAM
  (32K: 2 × 32 GiB).

CUDA (``--device cuda``): the Triton kernel against torch's SDPA forward (flash attention, bf16) on the same
shapes, and against the torch reference on the GPU (where the reference finishes in reasonable time); CUDA events,
median of ``--repeats``, peak memory from ``torch.cuda.max_memory_allocated``. Also a row for the real model's
attention shape (32 query heads, 2 kv heads, head dim 128).

    python benchmarks/bench_kernels.py [--lengths 2048 8192 32768] [--device cpu|cuda] [--repeats 3] [--threads N]

On a shared machine, pass ``--threads`` no larger than the idle cores: with 2 OpenMP threads and one core busy
elsewhere, every parallel region waits for the descheduled thread and the chunked method (many small ops) slows
down 20x or more, while the naive one (few large ops) barely notices.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F

from omni_lab.kernels import ref, sdpa

HEADS, HEAD_DIM, SEGMENTS = 8, 64, 4


def make_inputs(
    length: int,
    device: str,
    dtype: torch.dtype,
    heads: int = HEADS,
    kv_heads: int = HEADS,
    head_dim: int = HEAD_DIM,
    seed: int = 0,
):
    """q (1, H, L, D), k (1, Hkv, L, D), and 4 contiguous segments (1, L)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(1, heads, length, head_dim, generator=generator, device=device).to(dtype)
    k = torch.randn(1, kv_heads, length, head_dim, generator=generator, device=device).to(dtype)
    segment_ids = (torch.arange(length, device=device) * SEGMENTS // length)[None]  # (1, L)
    return q, k, segment_ids


def naive_pooled_mass(q: torch.Tensor, k: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Materialise the full (B, H, L, L) probabilities, then pool them: what the chunked kernels avoid."""
    length = q.shape[-2]
    scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, L, L)
    scores.masked_fill_(torch.ones(length, length, dtype=torch.bool, device=q.device).triu_(1), -math.inf)
    probabilities = scores.softmax(-1)  # (B, H, L, L)
    del scores
    return probabilities @ F.one_hot(segment_ids, SEGMENTS).float()[:, None]  # (B, H, L, S)


def chunked_pooled_mass(q: torch.Tensor, k: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    return ref.pooled_attention_mass(q, k, segment_ids, SEGMENTS)


def fused_pooled_mass(q: torch.Tensor, k: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    return sdpa.pooled_attention_mass(q, k, segment_ids, SEGMENTS)


METHODS = {"naive": naive_pooled_mass, "chunked": chunked_pooled_mass, "fused": fused_pooled_mass}


# ----------------------------------------------------------------------------------------------------------------
# CPU
# ----------------------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1))


def measure_peak_extra_rss(method: str, length: int) -> int:
    """Run one method once in this (fresh) process; return its peak RSS above the RSS just before the call."""
    q, k, segment_ids = make_inputs(length, "cpu", torch.float32)
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
        before = _status_kb("VmRSS")
        METHODS[method](q, k, segment_ids)
        return (_status_kb("VmHWM") - before) * 1024
    except OSError:  # no clear_refs: sample RSS with psutil
        import psutil

        process, peak, done = psutil.Process(), [0], threading.Event()
        before = process.memory_info().rss

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        METHODS[method](q, k, segment_ids)
        done.set()
        sampler.join()
        return max(0, peak[0] - before)


def peak_extra_rss_in_subprocess(method: str, length: int) -> int:
    command = [
        sys.executable,
        __file__,
        "--measure-memory",
        method,
        str(length),
        "--threads",
        str(torch.get_num_threads()),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def available_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            return int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo.read()).group(1)) * 1024
    except (OSError, AttributeError):
        import psutil

        return psutil.virtual_memory().available


def naive_fits(length: int) -> bool:
    needed = 2 * HEADS * length * length * 4  # scores + probabilities, float32
    return needed < 0.8 * available_memory_bytes()


def bench_cpu(lengths: list[int], repeats: int) -> None:
    print(
        f"CPU: {torch.get_num_threads()} threads; 1 layer, {HEADS} heads, head dim {HEAD_DIM}, causal, "
        f"{SEGMENTS} segments, float32; time = median of {repeats} (after 1 warm-up), memory = peak extra RSS"
    )
    header = (
        f"{'L':>7} | {'naive s':>8} | {'naive MB':>9} | {'chunked s':>9} | {'chunked MB':>10} | "
        f"{'chunked/naive':>13} | {'fused s':>8} | {'fused MB':>8} | {'fused/naive':>11} | {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for length in lengths:
        q, k, segment_ids = make_inputs(length, "cpu", torch.float32)
        run_naive = naive_fits(length)
        methods = ["naive", "chunked", "fused"] if run_naive else ["chunked", "fused"]
        times = {method: [] for method in methods}
        outputs = {method: METHODS[method](q, k, segment_ids) for method in methods} if run_naive else {}  # warm-up
        for _ in range(repeats if run_naive else 1):
            for method in methods:  # alternate, so drift on a noisy machine hits every method alike
                start = time.perf_counter()
                outputs[method] = METHODS[method](q, k, segment_ids)
                times[method].append(time.perf_counter() - start)
        seconds = {method: statistics.median(values) for method, values in times.items()}
        megabytes = {method: peak_extra_rss_in_subprocess(method, length) / 2**20 for method in methods}
        if run_naive:
            diff = max((outputs["naive"] - outputs[m]).abs().max().item() for m in ("chunked", "fused"))
            print(
                f"{length:>7} | {seconds['naive']:>8.3f} | {megabytes['naive']:>9.0f} | {seconds['chunked']:>9.3f} | "
                f"{megabytes['chunked']:>10.0f} | {seconds['chunked'] / seconds['naive']:>13.2f} | "
                f"{seconds['fused']:>8.3f} | {megabytes['fused']:>8.0f} | {seconds['fused'] / seconds['naive']:>11.2f} | "
                f"{diff:>10.1e}"
            )
        else:
            needed_gib = 2 * HEADS * length * length * 4 / 2**30
            print(
                f"{length:>7} | {'skipped':>8} | {'-':>9} | {seconds['chunked']:>9.3f} | {megabytes['chunked']:>10.0f} | "
                f"{'-':>13} | {seconds['fused']:>8.3f} | {megabytes['fused']:>8.0f} | {'-':>11} | {'-':>10}"
                f"   naive needs {needed_gib:.0f} GiB of L x L matrices"
            )
        sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------------------------------------------


def _cuda_time(function, repeats: int) -> tuple[float, float]:
    """(median seconds, peak extra GiB) of a CUDA function, after one warm-up."""
    function()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**30


def _bench_cuda_row(
    name: str, heads: int, kv_heads: int, head_dim: int, length: int, repeats: int, reference_max_length: int
) -> str:
    from omni_lab.kernels import triton_attention

    q, k, segment_ids = make_inputs(length, "cuda", torch.bfloat16, heads, kv_heads, head_dim)
    v = torch.randn_like(k)
    sdpa_s, _ = _cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), repeats)
    triton_s, triton_gib = _cuda_time(
        lambda: triton_attention.pooled_attention_mass(q, k, segment_ids, SEGMENTS), repeats
    )
    if length <= reference_max_length:
        ref_s, _ = _cuda_time(lambda: ref.pooled_attention_mass(q, k, segment_ids, SEGMENTS), 1)
        triton_mass = triton_attention.pooled_attention_mass(q, k, segment_ids, SEGMENTS)
        diff = (triton_mass - ref.pooled_attention_mass(q, k, segment_ids, SEGMENTS)).abs().max().item()
        reference = f"{ref_s:>8.3f} | {ref_s / triton_s:>10.1f} | {diff:>10.1e}"
    else:
        reference = f"{'skipped':>8} | {'-':>10} | {'-':>10}"
    return (
        f"{name:>22} | {length:>7} | {sdpa_s:>10.4f} | {triton_s:>9.4f} | {triton_s / sdpa_s:>11.2f} | "
        f"{triton_gib:>10.3f} | {reference}"
    )


def bench_cuda(lengths: list[int], repeats: int, reference_max_length: int) -> None:
    print(f"CUDA: {torch.cuda.get_device_name()}; causal, {SEGMENTS} segments, bf16 inputs; median of {repeats}")
    header = (
        f"{'shape':>22} | {'L':>7} | {'SDPA fwd s':>10} | {'Triton s':>9} | {'Triton/SDPA':>11} | "
        f"{'Triton GiB':>10} | {'ref s':>8} | {'ref/Triton':>10} | {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    shapes = [("8 heads, d 64", HEADS, HEADS, HEAD_DIM), ("32q/2kv heads, d 128", 32, 2, 128)]
    for name, heads, kv_heads, head_dim in shapes:
        for length in lengths:
            print(_bench_cuda_row(name, heads, kv_heads, head_dim, length, repeats, reference_max_length), flush=True)
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        help="sequence lengths (default: 2048 8192 32768 on CPU, 32768 131072 on CUDA)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU: torch threads (default: torch's choice)")
    parser.add_argument(
        "--reference-max-length",
        type=int,
        default=32768,
        help="CUDA: longest L at which the (slow) torch reference is also timed",
    )
    parser.add_argument("--measure-memory", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_memory:
        method, length = args.measure_memory
        print(json.dumps({"peak_extra_bytes": measure_peak_extra_rss(method, int(length))}))
    elif args.device == "cuda":
        bench_cuda(args.lengths or [32768, 131072], args.repeats, args.reference_max_length)
    else:
        bench_cpu(args.lengths or [2048, 8192, 32768], args.repeats)


if __name__ == "__main__":
    with torch.no_grad():
        main()
