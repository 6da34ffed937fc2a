"""omni_lab.kernels Triton rung vs the torch reference.

On CPU the kernels run in Triton's interpreter. ``TRITON_INTERPRET=1`` only takes effect if it is set before triton
is first imported, and other tests (loading a lab) import triton, so the interpreted kernels run in one
subprocess: this file run as a script (``python tests/test_kernels_triton.py OUT.pt``) builds every case in
``CASES``, runs the Triton wrappers (and once the public op in ``OMNI_LAB_KERNELS=triton`` mode) and saves inputs
and outputs together; each test below then compares one case with the reference computed here. Tests marked
`gpu` compile the kernels for a CUDA device in-process and skip cleanly without one.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omni_lab import kernels
from omni_lab.kernels import dispatch, ref

KERNEL_MODULES = ("omni_lab.kernels.triton_attention", "omni_lab.kernels.triton_ssd")
INTERPRETER_UNAVAILABLE = 3  # the script's exit code when the interpreter cannot run a trivial kernel


def _segments(batch: int, length: int, num_segments: int, generator: torch.Generator) -> torch.Tensor:
    """Random (non-contiguous) segment ids; ids 1, 4, 7, ... are never used (empty segments)."""
    used = torch.tensor([s for s in range(num_segments) if s % 3 != 1])
    return used[torch.randint(0, len(used), (batch, length), generator=generator)]  # (B, L)


def _attention_case(length, block, num_segments, causal, dtype=torch.float32, grouped=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = (torch.randn(2, 4, length, 24, generator=generator) * 2).to(dtype)  # head dim 24: padded to 32
    k = torch.randn(2, 2, length, 24, generator=generator).to(dtype)
    options = dict(num_segments=num_segments, causal=causal, query_block=block)
    if grouped:
        options.update(query_groups=torch.randint(-1, 4, (2, length), generator=generator), num_query_groups=4)
    return "pooled_attention_mass", (q, k, _segments(2, length, num_segments, generator)), options


def _ssd_case(length, chunk, heads, groups, num_segments=6, seed=0, **options):
    generator = torch.Generator().manual_seed(seed)
    dt = torch.rand(2, length, heads, generator=generator) * 0.3 + 0.01  # (B, L, H)
    A = -torch.rand(heads, generator=generator) * 3 - 0.1
    B = torch.randn(2, length, groups, 12, generator=generator)  # state 12: padded to 16
    C = torch.randn(2, length, groups, 12, generator=generator)
    if options.pop("value_weighted", False):
        options["x"] = torch.randn(2, length, heads, 5, generator=generator)
    options.update(num_segments=num_segments, chunk=chunk)
    return "ssd_pooled_mass", (dt, A, B, C, _segments(2, length, num_segments, generator)), options


CASES = {
    **{
        f"attention-L{length}-block{block}-S{segments}-{'causal' if causal else 'full'}": (
            lambda length=length, block=block, segments=segments, causal=causal: _attention_case(
                length, block, segments, causal, seed=length + block
            )
        )
        for length, block, segments in [(1, 16, 3), (17, 16, 6), (64, 32, 6), (77, 16, 6), (40, 16, 70)]
        for causal in (True, False)
    },
    "attention-bfloat16-query-groups": lambda: _attention_case(50, 16, 5, True, torch.bfloat16, grouped=True),
    **{
        f"ssd-L{length}-chunk{chunk}-H{heads}-G{groups}": (
            lambda length=length, chunk=chunk, heads=heads, groups=groups: _ssd_case(
                length, chunk, heads, groups, seed=length + chunk
            )
        )
        for length, chunk in [(1, 16), (16, 16), (17, 16), (77, 32), (70, 16)]
        for heads, groups in [(6, 2), (4, 1)]
    },
    "ssd-signed": lambda: _ssd_case(45, 16, 4, 2, signed=True),
    "ssd-signed-normalized": lambda: _ssd_case(45, 16, 4, 2, signed=True, normalize=True),
    "ssd-value-weighted": lambda: _ssd_case(45, 16, 4, 2, value_weighted=True),
    "ssd-many-segments": lambda: _ssd_case(45, 16, 4, 2, num_segments=70),
}
PUBLIC_CASE = "attention-L77-block16-S6-causal"  # also run through kernels.pooled_attention_mass


def _run_interpreted_cases(out_path: str) -> int:
    """Script body: run every case through the interpreted Triton wrappers; save inputs and outputs."""
    import triton
    import triton.language as tl

    @triton.jit
    def copy_kernel(source, target, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        tl.store(target + offsets, tl.load(source + offsets))

    try:
        probe = torch.arange(16.0)
        copied = torch.zeros(16)
        copy_kernel[(1,)](probe, copied, BLOCK=16)
        assert torch.equal(probe, copied)
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return INTERPRETER_UNAVAILABLE

    modules = {
        "pooled_attention_mass": importlib.import_module(KERNEL_MODULES[0]),
        "ssd_pooled_mass": importlib.import_module(KERNEL_MODULES[1]),
    }
    results = {}
    for name, build in CASES.items():
        op, args, options = build()
        try:
            output = getattr(modules[op], op)(*args, **options)
            results[name] = {"op": op, "args": args, "options": options, "output": output}
        except Exception as error:  # reported by that case's test
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    _, args, options = CASES[PUBLIC_CASE]()
    results["public"] = {
        "backend": kernels.choose_backend("pooled_attention_mass", *args[:2]),
        "output": kernels.pooled_attention_mass(*args, **options),
    }
    torch.save(results, out_path)
    return 0


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Outputs of every case under TRITON_INTERPRET=1, from one subprocess (skips if triton cannot run here)."""
    if dispatch.triton_import_error() is not None:
        pytest.skip(f"triton does not import: {dispatch.triton_import_error()}")
    out_path = tmp_path_factory.mktemp("triton_interpreter") / "cases.pt"
    environment = {**os.environ, "TRITON_INTERPRET": "1", "OMNI_LAB_KERNELS": "triton"}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == INTERPRETER_UNAVAILABLE:
        pytest.skip(f"the Triton interpreter cannot run on this machine: {result.stderr.strip()[-500:]}")
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out_path, weights_only=False)


@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_reference_in_interpreter(interpreted, name):
    case = interpreted[name]
    assert "error" not in case, case.get("error")
    expected = getattr(ref, case["op"])(*case["args"], **case["options"])
    actual = case["output"]

    assert actual.shape == expected.shape and actual.dtype == torch.float32
    # float32 kernel vs float32 reference; grouped rows are sums of up to 50 queries and raw signed SSD sums can
    # exceed 1, hence the relative term.
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_public_op_runs_triton_when_requested_under_the_interpreter(interpreted):
    _, args, options = CASES[PUBLIC_CASE]()
    public = interpreted["public"]

    assert public["backend"] == "triton"
    torch.testing.assert_close(public["output"], interpreted[PUBLIC_CASE]["output"], rtol=0.0, atol=0.0)
    torch.testing.assert_close(public["output"], ref.pooled_attention_mass(*args, **options), rtol=0.0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# CUDA (compiled kernels)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def compiled(monkeypatch):
    """The Triton kernel modules compiled for CUDA (skips without a CUDA device or triton)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if dispatch.triton_import_error() is not None:
        pytest.skip(f"triton does not import: {dispatch.triton_import_error()}")
    monkeypatch.delenv("OMNI_LAB_KERNELS", raising=False)
    return tuple(importlib.import_module(name) for name in KERNEL_MODULES)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("head_dim", "num_segments", "causal"), [(64, 4, True), (128, 100, True), (64, 7, False)])
def test_gpu_attention_matches_reference(compiled, dtype, head_dim, num_segments, causal):
    attention, _ = compiled
    generator = torch.Generator(device="cuda").manual_seed(12)
    q = torch.randn(2, 8, 1000, head_dim, device="cuda", generator=generator).to(dtype)
    k = torch.randn(2, 2, 1000, head_dim, device="cuda", generator=generator).to(dtype)
    segment_ids = torch.randint(0, num_segments, (2, 1000), device="cuda", generator=generator)

    expected = ref.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal)
    actual = attention.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal)
    public = kernels.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal)

    assert kernels.choose_backend("pooled_attention_mass", q, k) == "triton"
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=1e-4)
    torch.testing.assert_close(public, actual, rtol=0.0, atol=0.0)
    torch.testing.assert_close(actual.sum(-1), torch.ones_like(actual[..., 0]), rtol=0.0, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(("signed", "num_segments"), [(False, 5), (True, 5), (False, 90)])
def test_gpu_ssd_matches_reference(compiled, signed, num_segments):
    _, ssd = compiled
    generator = torch.Generator(device="cuda").manual_seed(13)
    dt = torch.rand(2, 1000, 8, device="cuda", generator=generator) * 0.1 + 0.001
    A = -torch.arange(1, 9, device="cuda", dtype=torch.float32)
    B = torch.randn(2, 1000, 2, 128, device="cuda", generator=generator) * 0.2
    C = torch.randn(2, 1000, 2, 128, device="cuda", generator=generator) * 0.2
    segment_ids = torch.randint(0, num_segments, (2, 1000), device="cuda", generator=generator)

    expected = ref.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, signed=signed, chunk=64)
    actual = ssd.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, signed=signed, chunk=64)
    public = kernels.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, signed=signed, chunk=64)

    assert kernels.choose_backend("ssd_pooled_mass", dt, B, C) == "triton"
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(public, actual, rtol=0.0, atol=0.0)


if __name__ == "__main__":
    sys.exit(_run_interpreted_cases(sys.argv[1]))
