"""The measuring half of `benchmarks/gpu_check.sh`: every real-size GPU figure of issue 26 into one JSON file.

    python benchmarks/gpu_check.py PART --out FILE.json [--dry-run] [--limit-s S]

`gpu_check.sh` calls it once per part, each under its own `timeout`; every part reads FILE.json, fills in its steps and
writes it back after every row, so a part that is killed leaves what it measured:

  env       device, driver, CUDA, torch, triton, transformers, omni-lab, Python versions; GPU memory.
  tests     the gpu-marked tests of tests/test_kernels_triton.py (the Triton kernels compiled for CUDA).
  kernels   the Triton pooled attention mass (real attention shape: 32 query heads, 2 kv heads, head dim 128) and
            the Triton SSD pooled mass (real Mamba shape: 64 heads, 8 groups, state 128) at 32K, 128K and 262K
            tokens, 4 contiguous segments, causal, bf16 inputs: against the torch reference (max |error|, time
            ratio; the reference runs where its time, estimated from the previous length as L², fits its limit)
            and, for the attention, against torch's SDPA forward (flash) on the same q, k (and a v). Span: one
            call of each function on inputs already on the GPU; median of the repeats after one warm-up.
  model     `ol.load("random:full", device="cuda", dtype="bfloat16")` (the released sizes, initialised on the GPU),
            then:
            capture_overhead  image + video + audio + text prompts of 8K and 20K tokens, media encoded beforehand;
                              span: merge + LLM prefill + LM head on the last position (`max_new_tokens=0`), plain
                              vs every capture on (routing, residual, attention_mass, mamba_mass), alternating.
            decode            tokens per second of the decode steps (`run.timings["decode_s"]`, the first token
                              comes from the prefill) for 64 new tokens, plain vs every capture on.
            evs               EVS prefill efficiency as bench_reduction.py defines it: LLM span (media encoded) to
                              the first token, speed-up over rate 0 divided by the ideal token ratio, omni-lab's
                              `lab.run` and transformers' own `model(..., mm_encoder_outputs=...)` side by side.
            video_memory      one run of a 256-frame 512 x 512 video (encode + EVS + prefill + 1 token): peak GPU
                              memory above the weights, and its time.
  close     marks what a killed part left unmeasured.

Every figure is a number or {"skipped": "why"}: a size whose memory is short (pre-checked, or
torch.cuda.OutOfMemoryError) is skipped with the reason, a failing step records its error and the rest goes on.
`--dry-run` runs the same code on CPU at tiny sizes (random:toy, lengths 64 / 128 / 256 standing in for 32K / 128K /
262K, the Triton kernels in Triton's interpreter, peak memory as the process's peak RSS growth).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SCHEMA = "omni-lab/gpu_check/1"
NOT_REACHED = "not reached"
CAPTURES = ["routing", "residual", "attention_mass", "mamba_mass"]
SEGMENTS = 4
GIB = 2**30

# Sizes: GPU (the real ones) and the dry run's stand-ins. Each row below is planned before anything runs.
SIZES = {
    False: {
        "kernel_lengths": (32768, 131072, 262144),
        "attention_shape": {"heads": 32, "kv_heads": 2, "head_dim": 128},
        "ssd_shape": {"heads": 64, "groups": 8, "state": 128},
        "kernel_repeats": 3,
        "reference_limit_s": 20.0,
        "source": "random:full",
        "dtype": "bfloat16",
        "capture_tokens": (8192, 20480),
        "capture_repeats": 3,
        "side": 512,
        "decode_tokens": 64,
        "evs_frames": 64,
        "evs_repeats": 3,
        "video_frames": 256,
        "capture_budget": 96 * GIB,
    },
    True: {
        "kernel_lengths": (16, 32, 64),
        "attention_shape": {"heads": 2, "kv_heads": 1, "head_dim": 16},
        "ssd_shape": {"heads": 2, "groups": 1, "state": 16},
        "kernel_repeats": 1,
        "reference_limit_s": 10.0,
        "source": "random:toy",
        "dtype": "float32",
        "capture_tokens": (120, 240),
        "capture_repeats": 1,
        "side": 64,
        "decode_tokens": 4,
        "evs_frames": 4,
        "evs_repeats": 1,
        "video_frames": 4,
        "capture_budget": None,
    },
}
EVS_RATES = (0.0, 0.5, 0.75)
FIGURES = {
    "tests": ("passed", "failed", "skipped", "seconds"),
    "attention": (
        "triton_s",
        "sdpa_s",
        "triton_over_sdpa",
        "reference_s",
        "reference_over_triton",
        "max_abs_error",
        "triton_peak_gib",
        "sdpa_peak_gib",
        "reference_peak_gib",
    ),
    "ssd": (
        "triton_s",
        "reference_s",
        "reference_over_triton",
        "max_abs_error",
        "triton_peak_gib",
        "reference_peak_gib",
    ),
    "load": ("load_s", "weights_gib"),
    "capture_overhead": (
        "tokens",
        "plain_s",
        "captures_s",
        "captures_over_plain",
        "plain_peak_gib",
        "captures_peak_gib",
    ),
    "decode": ("new_tokens", "tokens_per_s", "seconds"),
    "evs": (
        "tokens",
        "ideal_ratio",
        "omni_lab_s",
        "omni_lab_speedup",
        "omni_lab_efficiency",
        "transformers_s",
        "transformers_speedup",
        "transformers_efficiency",
        "omni_lab_over_transformers",
        "same_first_token",
    ),
    "video_memory": ("frames", "tokens", "llm_tokens", "peak_gib", "seconds"),
}
STEPS = {
    "env": (),
    "tests": ("tests",),
    "kernels": ("kernels",),
    "model": ("load", "capture_overhead", "decode", "evs", "video_memory"),
}
LIMITS_S = {  # each step's own limit (seconds) on a GPU; gpu_check.sh's `timeout`s sit above the sums
    "tests": 40,
    "kernels": 110,
    "load": 75,
    "capture_overhead": 65,
    "decode": 30,
    "evs": 50,
    "video_memory": 40,
}


def skip(reason: str) -> dict:
    """A figure that was not measured, and why."""
    return {"skipped": reason}


def is_figure(value) -> bool:
    """A measured number (bools count: same_first_token) or a recorded skip reason."""
    if isinstance(value, dict):
        return set(value) == {"skipped"} and isinstance(value["skipped"], str) and bool(value["skipped"])
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- the JSON file
class Report:
    """The one JSON file: read at the start of a part, written (atomically) after every row."""

    def __init__(self, path: Path, dry_run: bool):
        self.path = path
        if path.exists():
            self.data = json.loads(path.read_text())
        else:
            self.data = {"schema": SCHEMA, "mode": "dry-run" if dry_run else "gpu", "started_utc": now(), "steps": {}}
            for names in STEPS.values():
                for name in names:
                    self.data["steps"][name] = {"status": "not run", "seconds": 0.0, "limit_s": 0, "error": None}

    def write(self) -> None:
        self.data["updated_utc"] = now()
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1, default=float) + "\n")
        temporary.replace(self.path)

    def plan(self, step: str, rows: list[dict], kind: str | None = None, span: str = "") -> list[dict]:
        """Register a step's rows (their sizes) with every figure "not reached"; returns the rows to fill in."""
        planned = []
        for row in rows:
            figures = {name: skip(NOT_REACHED) for name in FIGURES[row.pop("kind", kind or step)]}
            planned.append({**row, "figures": figures})
        self.data["steps"][step].update(rows=planned, span=span)
        self.write()
        return planned


class StepTimeout(Exception):
    pass


@contextlib.contextmanager
def step(report: Report, name: str, limit_s: float):
    """Run a step under its own time limit; record status, seconds and any error; never raise (but KeyboardInterrupt).

    Figures still "not reached" when the step ends early get the reason instead.
    """
    record = report.data["steps"][name]
    record.update(status="running", limit_s=limit_s, error=None)
    report.write()

    def expire(signum, frame):
        raise StepTimeout(f"step time limit of {limit_s:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    started = time.perf_counter()
    try:
        yield record
        record["status"] = "ok"
    except StepTimeout as error:
        record.update(status="timeout", error=str(error))
    except Exception as error:  # a failing step records its error and the script goes on
        record.update(status="error", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(-3))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        record["seconds"] = round(time.perf_counter() - started, 3)
        if record["status"] != "ok":
            fill_unreached(record, f"step {record['status']}: {record['error']}")
        free_memory()
        report.write()


def fill_unreached(record: dict, reason: str) -> None:
    for row in record.get("rows", []):
        for key, value in row["figures"].items():
            if value == skip(NOT_REACHED):
                row["figures"][key] = skip(reason)


# ---------------------------------------------------------------------------------------------------- measuring
def on_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def synchronize(device: str) -> None:
    import torch

    if on_cuda(device):
        torch.cuda.synchronize()


def free_memory() -> None:
    import gc

    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1))


class PeakMemory:
    """Peak memory above the start of the block, in GiB: CUDA's allocator peak on a GPU; on CPU the process's peak
    RSS growth (VmHWM after resetting it through /proc/self/clear_refs; ru_maxrss where that is missing)."""

    def __init__(self, device: str):
        self.device = device
        self.gib = 0.0

    def __enter__(self):
        import torch

        if on_cuda(self.device):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as clear_refs:
                    clear_refs.write("5")
                self.base, self.field = _status_kib("VmRSS") * 1024, "VmHWM"
            except OSError:
                self.base, self.field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None
        return self

    def __exit__(self, *exc):
        import torch

        if on_cuda(self.device):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.field:
            peak = _status_kib(self.field) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.gib = round(max(0, peak - self.base) / GIB, 4)
        return False


def median_time(function, repeats: int, device: str, warm_up: bool = True) -> float:
    """Median wall seconds of `function()` over `repeats` calls, after one warm-up unless the caller ran it already
    (CUDA synchronised)."""
    if warm_up:
        function()
        synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(figures: dict, names: tuple[str, ...], function, *, fallback: str | None = None) -> object:
    """Run `function()` -> {figure: value}; on out-of-memory record why for `names` instead of failing."""
    try:
        values = function()
    except Exception as error:
        if not is_oom(error):
            raise
        free_memory()
        reason = f"out of memory: {str(error).splitlines()[0][:200]}"
        for name in names:
            figures[name] = skip(reason)
        return None
    figures.update(values)
    return values


# ------------------------------------------------------------------------------------------------------ 0. env
ENVIRONMENT = ("python", "torch", "cuda", "triton", "transformers", "numpy", "omni_lab", "device", "driver")


def part_env(report: Report, dry_run: bool) -> None:
    from importlib import metadata

    env = {"python": platform.python_version(), "platform": platform.platform(), "dry_run": dry_run}
    for module in ("torch", "triton", "transformers", "numpy"):
        try:
            env[module] = metadata.version(module)
        except Exception as error:
            env[module] = skip(f"{type(error).__name__}: {error}")
    try:
        import omni_lab

        env["omni_lab"] = omni_lab.__version__
        env["omni_lab_path"] = str(Path(omni_lab.__file__).parent)
    except Exception as error:
        env["omni_lab"] = skip(f"{type(error).__name__}: {error}")
    try:
        import torch

        env["cuda"] = torch.version.cuda or skip("torch built without CUDA")
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            env["device"] = properties.name
            env["gpu_memory_gib"] = round(properties.total_memory / GIB, 2)
            env["gpu_count"] = torch.cuda.device_count()
        else:
            env["device"] = skip("no CUDA device visible to torch") if not dry_run else "cpu (dry run)"
            env["gpu_memory_gib"] = skip("no CUDA device")
    except Exception as error:
        env["cuda"] = env["device"] = skip(f"torch: {type(error).__name__}: {error}")
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
        env["driver"] = driver[0] if driver else skip("nvidia-smi printed no driver version")
    except Exception as error:
        env["driver"] = skip(f"nvidia-smi: {type(error).__name__}: {error}")
    report.data["environment"] = env
    report.write()


# ------------------------------------------------------------------------------------------------ 1. gpu tests
def part_tests(report: Report, dry_run: bool, repo: Path) -> None:
    with step(report, "tests", LIMITS_S["tests"]) as record:
        (row,) = report.plan("tests", [{"file": "tests/test_kernels_triton.py", "marker": "gpu"}], span="pytest -m gpu")
        figures = row["figures"]
        if dry_run:
            for name in FIGURES["tests"]:
                figures[name] = skip("dry run: the gpu-marked tests need CUDA (they skip cleanly without it)")
            return
        started = time.perf_counter()
        command = [sys.executable, "-m", "pytest", str(repo / "tests/test_kernels_triton.py"), "-m", "gpu", "-q"]
        command += ["-c", str(repo / "pyproject.toml"), "--rootdir", str(repo), "-p", "no:cacheprovider"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=LIMITS_S["tests"] - 5)
        tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
        counts = {name: int(n) for n, name in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
        figures.update(
            passed=counts.get("passed", 0),
            failed=counts.get("failed", 0) + counts.get("error", 0),
            skipped=counts.get("skipped", 0),
            seconds=round(time.perf_counter() - started, 2),
        )
        record["summary"] = tail
        if result.returncode not in (0, 5):
            record["output_tail"] = result.stdout[-2000:]


# -------------------------------------------------------------------------------------------------- 2. kernels
def kernel_inputs(kind: str, length: int, shape: dict, device: str, dtype):
    import torch

    generator = torch.Generator(device=device).manual_seed(length)
    segment_ids = (torch.arange(length, device=device) * SEGMENTS // length)[None]  # (1, L), contiguous
    if kind == "attention":
        q = torch.randn(1, shape["heads"], length, shape["head_dim"], generator=generator, device=device).to(dtype)
        k = torch.randn(1, shape["kv_heads"], length, shape["head_dim"], generator=generator, device=device).to(dtype)
        return q, k, segment_ids
    heads, groups, state = shape["heads"], shape["groups"], shape["state"]
    dt = torch.rand(1, length, heads, generator=generator, device=device) * 0.1 + 0.001  # (B, L, H)
    A = -torch.rand(heads, generator=generator, device=device) * 3 - 0.1  # (H,)
    B = torch.randn(1, length, groups, state, generator=generator, device=device).to(dtype)  # (B, L, G, N)
    C = torch.randn(1, length, groups, state, generator=generator, device=device).to(dtype)
    return dt, A, B, C, segment_ids


def kernel_bytes(kind: str, length: int, shape: dict, element: int) -> int:
    """Inputs plus the (1, H, L, S) float32 output and an SDPA v and output, for the free-memory pre-check."""
    if kind == "attention":
        inputs = length * shape["head_dim"] * (2 * shape["heads"] + 2 * shape["kv_heads"]) * element
        return inputs + shape["heads"] * length * SEGMENTS * 4 * 2
    return length * (shape["heads"] * 4 + 2 * shape["groups"] * shape["state"] * element) + (
        shape["heads"] * length * SEGMENTS * 4 * 2
    )


def part_kernels(report: Report, dry_run: bool) -> None:
    import torch
    import torch.nn.functional as F

    sizes = SIZES[dry_run]
    device = "cpu" if dry_run else "cuda"
    dtype = torch.float32 if dry_run else torch.bfloat16
    plan = [
        {"kind": kind, "kernel": kind, "tokens": length, **sizes[f"{kind}_shape"]}
        for kind in ("attention", "ssd")
        for length in sizes["kernel_lengths"]
    ]
    with step(report, "kernels", LIMITS_S["kernels"] * (2 if dry_run else 1)) as record:
        rows = report.plan(
            "kernels",
            plan,
            span="one call on inputs already on the device; median of the repeats after one warm-up",
        )
        record["dtype"] = str(dtype).replace("torch.", "")
        record["segments"] = SEGMENTS
        try:
            from omni_lab.kernels import triton_attention, triton_ssd

            backend = "triton (interpreter)" if dry_run else "triton"
        except Exception as error:  # no triton: the figures say why
            triton_attention = triton_ssd = None
            backend = skip(f"triton unavailable: {type(error).__name__}: {error}")
        record["backend"] = backend
        from omni_lab.kernels import ref

        reference_s_at = {}  # kind -> (length, seconds): the L² estimate of the next reference time
        for row in rows:
            kind, length, figures = row["kernel"], row["tokens"], row["figures"]
            shape = sizes[f"{kind}_shape"]
            if on_cuda(device):
                free, _ = torch.cuda.mem_get_info()
                needed = kernel_bytes(kind, length, shape, 2)
                if needed > 0.9 * free:
                    for name in figures:
                        figures[name] = skip(f"needs ~{needed / GIB:.1f} GiB, {free / GIB:.1f} GiB free")
                    report.write()
                    continue
            try:
                inputs = kernel_inputs(kind, length, shape, device, dtype)
            except Exception as error:
                if not is_oom(error):
                    raise
                for name in figures:
                    figures[name] = skip(f"out of memory building the inputs: {str(error).splitlines()[0][:200]}")
                report.write()
                continue
            reference_fn = ref.pooled_attention_mass if kind == "attention" else ref.ssd_pooled_mass
            triton_fn = None if triton_attention is None else (
                triton_attention.pooled_attention_mass if kind == "attention" else triton_ssd.ssd_pooled_mass
            )  # fmt: skip
            arguments = (*inputs, SEGMENTS)
            outputs = {}

            def timed(function, label, arguments=arguments, outputs=outputs):
                def run():
                    with PeakMemory(device) as peak:  # also the warm-up (compiles the Triton kernel)
                        outputs[label] = function(*arguments)
                    seconds = median_time(lambda: function(*arguments), sizes["kernel_repeats"], device, False)
                    return {f"{label}_s": round(seconds, 6), f"{label}_peak_gib": peak.gib}

                return run

            if triton_fn is None:
                for name in ("triton_s", "triton_peak_gib", "triton_over_sdpa", "reference_over_triton"):
                    figures[name] = skip(backend["skipped"])
            else:
                measure(figures, ("triton_s", "triton_peak_gib"), timed(triton_fn, "triton"))
            if kind == "attention":
                q, k, _ = inputs
                v = torch.randn_like(k)

                def sdpa(*_, q=q, k=k, v=v):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

                measure(figures, ("sdpa_s", "sdpa_peak_gib"), timed(sdpa, "sdpa"))
                if all(isinstance(figures[name], float) for name in ("triton_s", "sdpa_s")):
                    figures["triton_over_sdpa"] = round(figures["triton_s"] / figures["sdpa_s"], 4)
                elif figures["triton_over_sdpa"] == skip(NOT_REACHED):
                    figures["triton_over_sdpa"] = skip("the Triton or the SDPA time is missing")
            previous = reference_s_at.get(kind)
            estimate = None if previous is None else previous[1] * (length / previous[0]) ** 2
            if estimate is not None and estimate > sizes["reference_limit_s"]:
                reason = (
                    f"torch reference estimated at {estimate:.0f} s (L² from {previous[1]:.1f} s at "
                    f"{previous[0]}), over its {sizes['reference_limit_s']:.0f} s limit"
                )
                for name in ("reference_s", "reference_peak_gib", "reference_over_triton", "max_abs_error"):
                    figures[name] = skip(reason)
            else:

                def run_reference(reference_fn=reference_fn, arguments=arguments, outputs=outputs):
                    started = time.perf_counter()
                    with PeakMemory(device) as peak:
                        outputs["reference"] = reference_fn(*arguments)
                        synchronize(device)
                    return {"reference_s": round(time.perf_counter() - started, 6), "reference_peak_gib": peak.gib}

                if measure(figures, ("reference_s", "reference_peak_gib", "reference_over_triton", "max_abs_error"),
                           run_reference) is not None:  # fmt: skip
                    reference_s_at[kind] = (length, figures["reference_s"])
                    if "triton" in outputs:
                        error = (outputs["triton"].float() - outputs["reference"].float()).abs().max().item()
                        figures["max_abs_error"] = float(error)
                        figures["reference_over_triton"] = round(figures["reference_s"] / figures["triton_s"], 4)
                    else:
                        figures["max_abs_error"] = figures["reference_over_triton"] = skip("no Triton output")
            inputs = arguments = None
            outputs.clear()
            free_memory()
            report.write()


# ---------------------------------------------------------------------------------------------------- 3. model
def media(rng, frames: int, side: int):
    import numpy as np

    from omni_lab.media import VideoClip

    video = (rng.random((frames, side, side, 3)) * 255).astype(np.uint8)
    video[1::2] = video[::2]  # some temporal redundancy, as real video has
    return VideoClip(video, fps=2.0)


def sized_prompt(lab, tokens: int, side: int, rng):
    """An image + video + audio + text prompt of about `tokens` tokens (the video grown to fit)."""
    import numpy as np

    image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    audio = (rng.standard_normal(16000 * 5).astype(np.float32) * 0.1, 16000)

    def build(frames):
        return lab.prompt(
            "Describe what you see and hear.", images=[image], video=media(rng, frames, side), audio=audio,
            max_frames=max(frames, 2),
        )  # fmt: skip

    two, four = len(build(2)), len(build(4))
    per_two = max(1, four - two)
    frames = 2 + 2 * max(0, math.ceil((tokens - two) / per_two))
    return build(frames), frames


def part_model(report: Report, dry_run: bool) -> None:
    import numpy as np
    import torch

    import omni_lab as ol

    sizes = SIZES[dry_run]
    device = "cpu" if dry_run else "cuda"
    scale = 3 if dry_run else 1  # the dry run's limits are looser: the shared CPU is slow, not the sizes large
    lab = None
    with step(report, "load", LIMITS_S["load"] * scale) as record:
        (row,) = report.plan("load", [{"source": sizes["source"], "dtype": sizes["dtype"], "device": device}])
        started = time.perf_counter()
        lab = ol.load(sizes["source"], device=device, dtype=sizes["dtype"], progress=False)
        synchronize(device)
        weights = sum(p.numel() * p.element_size() for p in lab.model.parameters())
        row["figures"].update(load_s=round(time.perf_counter() - started, 3), weights_gib=round(weights / GIB, 3))
        record["parameters"] = sum(p.numel() for p in lab.model.parameters())
    rng = np.random.default_rng(0)
    budget = {"capture_budget": sizes["capture_budget"]} if sizes["capture_budget"] else {}
    if lab is None:
        for name in STEPS["model"][1:]:
            report.data["steps"][name].update(status="skipped", error="the model did not load")
        plan_model_rows(report, sizes, reason="the model did not load: " + str(report.data["steps"]["load"]["error"]))
        return

    with step(report, "capture_overhead", LIMITS_S["capture_overhead"] * scale):
        rows = report.plan(
            "capture_overhead",
            [{"target_tokens": tokens} for tokens in sizes["capture_tokens"]],
            span="merge + LLM prefill + LM head (max_new_tokens=0), media encoded beforehand; captures: "
            + ", ".join(CAPTURES),
        )
        for row in rows:
            figures = row["figures"]

            def overhead(row=row):
                prompt, frames = sized_prompt(lab, row["target_tokens"], sizes["side"], rng)
                row["frames"] = frames
                encoded = lab.encode(prompt)
                runs = {
                    "plain": lambda: lab.run(prompt, max_new_tokens=0, reducer=None, encoded=encoded),
                    "captures": lambda: lab.run(
                        prompt, max_new_tokens=0, reducer=None, capture=CAPTURES, encoded=encoded, **budget
                    ),
                }
                values = {"tokens": len(prompt)}
                for name, run in runs.items():
                    with PeakMemory(device) as peak:
                        run()  # warm-up, and the peak memory
                    values[f"{name}_peak_gib"] = peak.gib
                times = {name: [] for name in runs}
                for _ in range(sizes["capture_repeats"]):
                    for name, run in runs.items():  # alternating, so drift hits both alike
                        started = time.perf_counter()
                        run()
                        synchronize(device)
                        times[name].append(time.perf_counter() - started)
                values["plain_s"] = round(statistics.median(times["plain"]), 5)
                values["captures_s"] = round(statistics.median(times["captures"]), 5)
                values["captures_over_plain"] = round(values["captures_s"] / values["plain_s"], 4)
                return values

            measure(figures, tuple(figures), overhead)
            free_memory()
            report.write()

    with step(report, "decode", LIMITS_S["decode"] * scale):
        rows = report.plan(
            "decode",
            [{"configuration": "plain"}, {"configuration": "captures"}],
            span=f"decode steps of {sizes['decode_tokens']} new tokens (run.timings['decode_s']; the first token "
            "comes from the prefill), image + text prompt, media encoded beforehand",
        )
        image = (rng.random((sizes["side"], sizes["side"], 3)) * 255).astype(np.uint8)
        prompt = lab.prompt("Describe the picture in detail.", images=[image])
        encoded = lab.encode(prompt)
        for row in rows:
            capture = CAPTURES if row["configuration"] == "captures" else None

            def decode(capture=capture):
                options = dict(max_new_tokens=sizes["decode_tokens"], reducer=None, capture=capture, encoded=encoded)
                lab.run(prompt, **options, **(budget if capture else {}))  # warm-up
                run = lab.run(prompt, **options, **(budget if capture else {}))
                steps = max(0, len(run.generated_ids) - 1)
                seconds = run.timings.get("decode_s", 0.0)
                if not steps or not seconds:
                    return {"new_tokens": len(run.generated_ids), "tokens_per_s": skip("stopped after one token"),
                            "seconds": seconds}  # fmt: skip
                return {"new_tokens": len(run.generated_ids), "tokens_per_s": round(steps / seconds, 3),
                        "seconds": round(seconds, 5)}  # fmt: skip

            measure(row["figures"], tuple(row["figures"]), decode)
            report.write()

    with step(report, "evs", LIMITS_S["evs"] * scale) as record:
        rows = report.plan(
            "evs",
            [{"rate": rate} for rate in EVS_RATES],
            span="LLM span to the first token, media encoded: embedding lookup + scatter + EVS + prefill + LM head; "
            "efficiency = (time at rate 0 / time at the rate) / (tokens at rate 0 / tokens at the rate)",
        )
        evs(lab, rows, sizes, rng, device, record)
        report.write()

    with step(report, "video_memory", LIMITS_S["video_memory"] * scale):
        (row,) = report.plan(
            "video_memory",
            [{"frames": sizes["video_frames"], "side": sizes["side"], "reducer": "model (EVS)"}],
            span="lab.run of a video prompt, max_new_tokens=1: encode + EVS + prefill + first token",
        )

        def video_run():
            prompt = lab.prompt(
                "What happens in the video?", video=media(rng, sizes["video_frames"], sizes["side"]),
                max_frames=sizes["video_frames"],
            )  # fmt: skip
            with PeakMemory(device) as peak:
                started = time.perf_counter()
                run = lab.run(prompt, max_new_tokens=1)
                synchronize(device)
                seconds = time.perf_counter() - started
            return {
                "frames": sizes["video_frames"],
                "tokens": len(prompt),
                "llm_tokens": int(run.token_map.num_positions - len(run.generated_ids)),
                "peak_gib": peak.gib,
                "seconds": round(seconds, 4),
            }

        measure(row["figures"], tuple(row["figures"]), video_run)
    lab = None
    free_memory()
    _ = torch  # imported for the CUDA allocator's counters above


def plan_model_rows(report: Report, sizes: dict, reason: str) -> None:
    """Rows of the model steps with every figure skipped for `reason` (the model did not load)."""
    plans = {
        "capture_overhead": [{"target_tokens": tokens} for tokens in sizes["capture_tokens"]],
        "decode": [{"configuration": "plain"}, {"configuration": "captures"}],
        "evs": [{"rate": rate} for rate in EVS_RATES],
        "video_memory": [{"frames": sizes["video_frames"]}],
    }
    for name, rows in plans.items():
        report.plan(name, rows)
        fill_unreached(report.data["steps"][name], reason)
    report.write()


def evs(lab, rows: list[dict], sizes: dict, rng, device: str, record: dict) -> None:
    """EVS efficiency, omni-lab vs transformers, as benchmarks/bench_reduction.py measures it (its LLM span)."""
    import torch

    model = lab.model
    prompt = lab.prompt("What happens in the video?", video=media(rng, sizes["evs_frames"], sizes["side"]))
    record["prompt_tokens"] = len(prompt)
    record["video_share"] = round(prompt.token_map.counts()["video"] / len(prompt), 4)
    input_ids = prompt.inputs["input_ids"].to(lab.device)
    pixels = prompt.inputs["pixel_values_videos"].to(lab.device, dtype=lab.dtype)
    encoded = lab.encode(prompt)
    with torch.inference_mode():
        video_outputs = model.get_video_features(pixels)

    def ours(rate):
        started = time.perf_counter()
        run = lab.run(prompt, max_new_tokens=1, reducer=ol_evs(rate), encoded=encoded)
        return time.perf_counter() - started, run

    def theirs(rate):
        model.video_pruning_rate = rate
        with torch.inference_mode():
            started = time.perf_counter()
            output = model(input_ids=input_ids, mm_encoder_outputs={"video": video_outputs}, use_cache=True,
                           logits_to_keep=1)  # fmt: skip
            token = int(output.logits[0, -1].argmax())
            return time.perf_counter() - started, token

    try:
        tokens, same = {}, {}
        for rate in EVS_RATES:  # warm-up; both sides' first tokens
            _, run = ours(rate)
            _, token = theirs(rate)
            tokens[rate] = int(run.token_map.num_positions - len(run.generated_ids))
            same[rate] = bool(run.generated_ids[0] == token)
        samples = {side: {rate: [] for rate in EVS_RATES} for side in ("ours", "theirs")}
        for _ in range(sizes["evs_repeats"]):
            for rate in EVS_RATES:
                samples["ours"][rate].append(ours(rate)[0])
                samples["theirs"][rate].append(theirs(rate)[0])
    finally:
        model.video_pruning_rate = lab.config.video_pruning_rate
    median = {side: {rate: statistics.median(v) for rate, v in table.items()} for side, table in samples.items()}
    for row in rows:
        rate = row["rate"]
        ideal = tokens[0.0] / tokens[rate]
        ours_up, theirs_up = median["ours"][0.0] / median["ours"][rate], median["theirs"][0.0] / median["theirs"][rate]
        row["figures"].update(
            tokens=tokens[rate],
            ideal_ratio=round(ideal, 4),
            omni_lab_s=round(median["ours"][rate], 5),
            omni_lab_speedup=round(ours_up, 4),
            omni_lab_efficiency=round(ours_up / ideal, 4),
            transformers_s=round(median["theirs"][rate], 5),
            transformers_speedup=round(theirs_up, 4),
            transformers_efficiency=round(theirs_up / ideal, 4),
            omni_lab_over_transformers=round(median["ours"][rate] / median["theirs"][rate], 4),
            same_first_token=same[rate],
        )


def ol_evs(rate: float):
    import omni_lab as ol

    return ol.reducers.EVS(rate) if rate else None


# ---------------------------------------------------------------------------------------------------- 4. close
def part_close(report: Report, killed: str | None) -> None:
    """Mark what a killed part left: steps still "running", figures still "not reached", a missing environment."""
    environment = report.data.setdefault("environment", {})
    for name in ENVIRONMENT:
        environment.setdefault(name, skip(f"the env part did not finish ({killed or 'no reason recorded'})"))
    for record in report.data["steps"].values():
        if record["status"] == "running":
            record.update(status="killed", error=f"the part was killed by gpu_check.sh's time limit ({killed})")
        if record["status"] == "not run" and not record.get("rows"):
            record["error"] = record["error"] or f"its part did not run ({killed or 'no reason recorded'})"
        fill_unreached(record, f"{record['status']}: {record['error']}")
    report.data["finished_utc"] = now()
    report.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["env", "tests", "kernels", "model", "close"])
    parser.add_argument("--out", required=True, help="the JSON file")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (module docstring)")
    parser.add_argument("--killed", default=None, help="close: which parts gpu_check.sh's timeout killed")
    args = parser.parse_args()
    report = Report(Path(args.out), args.dry_run)
    repo = Path(__file__).resolve().parent.parent
    if args.part == "env":
        part_env(report, args.dry_run)
    elif args.part == "tests":
        part_tests(report, args.dry_run, repo)
    elif args.part == "kernels":
        import torch

        with torch.no_grad():
            part_kernels(report, args.dry_run)
    elif args.part == "model":
        part_model(report, args.dry_run)
    else:
        part_close(report, args.killed)


if __name__ == "__main__":
    main()
