"""Public kernel entry points: check the arguments, then run Triton on CUDA tensors or the torch reference elsewhere.

Backend choice (as nanochat's detect-once module and timm's environment overrides do):

- ``OMNI_LAB_KERNELS=auto`` (default): Triton for CUDA tensors when ``import triton`` works, else torch: for the
  attention mass torch's fused attention (``sdpa.py``, float64 goes to the reference), for the rest the
  reference.
- ``OMNI_LAB_KERNELS=ref``: always the readable torch reference (``ref.py``).
- ``OMNI_LAB_KERNELS=triton``: Triton whenever it can run: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``
  (the Triton interpreter, for tests).

Whenever a Triton path was requested or possible but cannot run (no triton, CPU tensors, float64), the call falls
back to the reference and says why once per (op, reason) with ``warnings.warn``. Triton is imported lazily, once;
``import omni_lab.kernels`` never imports it. The EVS ops have no Triton kernel (a memory-bound cosine whose
torch form is bit-identical to transformers'), so they always run the reference. Rows past a ``query_start`` (the
few tokens generated after a prompt) are computed by the reference too, on whatever device the tensors are.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings

import torch

from . import ref, sdpa
from .segments import check_query_groups, check_segment_ids, count_ids, sum_query_groups

ENV_VAR = "OMNI_LAB_KERNELS"
MODES = ("auto", "ref", "triton")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_warned: set[tuple[str, str]] = set()


def requested_mode() -> str:
    """The backend mode from ``OMNI_LAB_KERNELS`` (read on every call): 'auto', 'ref' or 'triton'."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not one of {', '.join(MODES)}; unset it or pick one of those")
    return mode


@functools.cache
def triton_import_error() -> str | None:
    """None when ``import triton`` works, else why not. Tried once per process."""
    try:
        import triton  # noqa: F401
    except Exception as error:  # ImportError, or a broken install raising anything at import
        return f"{type(error).__name__}: {error}"
    return None


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _warn_once(op: str, reason: str) -> None:
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(f"omni_lab.kernels.{op}: using the torch reference because {reason}", stacklevel=3)


def choose_backend(op: str, *tensors: torch.Tensor) -> str:
    """'triton' or 'ref' for an op on these tensors, following ``OMNI_LAB_KERNELS`` (module docstring).

    Args:
        op: the op's name, for the fallback warning.
        *tensors: the op's floating-point inputs (device and dtype decide).

    Returns:
        'triton' or 'ref'.
    """
    mode = requested_mode()
    on_cuda = all(tensor.is_cuda for tensor in tensors)
    if mode == "ref" or (mode == "auto" and not on_cuda):
        return "ref"
    if not on_cuda and not _triton_interpreting():
        reason = "OMNI_LAB_KERNELS=triton needs CUDA tensors (or TRITON_INTERPRET=1 to interpret the kernels on CPU)"
    elif triton_import_error() is not None:
        reason = f"triton does not import ({triton_import_error()})"
    elif unsupported := sorted({str(tensor.dtype) for tensor in tensors if tensor.dtype not in TRITON_DTYPES}):
        reason = f"the Triton kernel takes float16, bfloat16 or float32, not {', '.join(unsupported)}"
    else:
        return "triton"
    _warn_once(op, reason)
    return "ref"


def _triton_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def pooled_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int | None = None,
    causal: bool = True,
    scale: float | None = None,
    query_block: int = 256,
    query_groups: torch.Tensor | None = None,
    num_query_groups: int | None = None,
    query_start: int = 0,
) -> torch.Tensor:
    """Exact softmax attention mass of every query in every key segment (never an L × L matrix).

    Args:
        q: (B, Hq, L - query_start, D) queries (as the attention layer computes them, before scaling) of the
            positions query_start .. L - 1 (all positions by default).
        k: (B, Hkv, L, D) keys; Hq a multiple of Hkv, query head h reads kv head h // (Hq // Hkv) (repeat_kv).
        segment_ids: (B, L) int64 segment of each key in [0, S); segments may be empty and non-contiguous.
        num_segments: S (default: max id + 1).
        causal: mask keys after the query.
        scale: score scale (default 1 / sqrt(D)).
        query_block: block length (queries and keys) of the chunked computation.
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore the query.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query (e.g. the first generated token, the prompt's rows being known).

    Returns:
        (B, Hq, L - query_start, S) float32 (float64 for float64 inputs): each query's probability mass per
        segment, rows sum to 1. With ``query_groups``: (B, Hq, Q, S), the **sum** (not the mean) over the queries
        of each group; divide by the group sizes for a mean.
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be (B, H, L, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    batch, q_heads, queries, head_dim = q.shape
    length = k.shape[2]
    if not 0 <= query_start <= length or queries != length - query_start:
        raise ValueError(
            f"q holds {queries} queries but k {length} keys with query_start={query_start}; q must hold the "
            f"queries of positions query_start .. L - 1"
        )
    if (k.shape[0], k.shape[3]) != (batch, head_dim) or q_heads % k.shape[1]:
        raise ValueError(
            f"k {tuple(k.shape)} must be (B, Hkv, L, D) with Hq={q_heads} a multiple of Hkv, "
            f"matching q {tuple(q.shape)}"
        )
    if not (q.dtype.is_floating_point and k.dtype.is_floating_point):
        raise ValueError(f"q and k must be floating point, got {q.dtype} and {k.dtype}")
    if query_block < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    check_segment_ids(segment_ids, batch, length, num_segments, "segment_ids")
    if query_groups is not None:
        num_query_groups = count_ids(query_groups, num_query_groups, "num_query_groups")
        check_query_groups(query_groups, batch, queries, num_query_groups)

    arguments = (q, k, segment_ids, num_segments, causal, scale, query_block, query_groups, num_query_groups)
    backend = choose_backend("pooled_attention_mass", q, k)
    if backend == "triton" and not query_start:
        return _triton_module("triton_attention").pooled_attention_mass(*arguments)
    if requested_mode() == "ref" or torch.float64 in (q.dtype, k.dtype):
        return ref.pooled_attention_mass(*arguments, query_start)
    return sdpa.pooled_attention_mass(*arguments, query_start)


def ssd_pooled_mass(
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int | None = None,
    x: torch.Tensor | None = None,
    normalize: bool | None = None,
    signed: bool = False,
    chunk: int = 64,
    query_groups: torch.Tensor | None = None,
    num_query_groups: int | None = None,
    query_start: int = 0,
) -> torch.Tensor:
    """Mamba-2 effective attention α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s, pooled per segment.

    y_t = Σ_s α[t, s] x_s + D x_t is the Mamba-2 layer's scan output before its gated norm, so α is to a Mamba
    head what the attention probabilities are to an attention head (state-space duality, arXiv 2405.21060).

    Args:
        dt: (B, L, H) step sizes Δ = softplus(dt_raw + dt_bias) (clamped to the layer's time_step_limit).
        A: (H,) negative decay rates, −exp(A_log).
        B: (B, L, G, N) input projections; H a multiple of G, head h uses group h // (H // G) (repeat_interleave).
        C: (B, L - query_start, G, N) output projections of the query positions query_start .. L - 1.
        segment_ids: (B, L) int64 segment of each source position in [0, S).
        num_segments: S (default: max id + 1).
        x: optional (B, L, H, P) values; when given each source is weighted by ‖x_s‖ (value-weighted mass,
            ‖α[t, s] x_s‖). Leave None for the mass of α itself.
        normalize: divide each query row by Σ_s |α[t, s]| (unsigned rows then sum to 1). Default (None): True,
            except for ``signed=True``, whose sums stay raw unless normalize=True is passed.
        signed: pool α instead of |α|.
        chunk: chunk length of the chunked computation.
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore the query.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query; earlier positions are sources only.

    Returns:
        (B, H, L - query_start, S) float32 (float64 for float64 inputs); with ``query_groups`` (B, H, Q, S), the
        sum of the (normalised) rows of each group.
    """
    if dt.dim() != 3 or A.dim() != 1 or B.dim() != 4 or C.dim() != 4 or B.shape[2:] != C.shape[2:]:
        raise ValueError(
            f"expected dt (B, L, H), A (H,), B and C (B, L, G, N); got {tuple(dt.shape)}, "
            f"{tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}"
        )
    batch, length, heads = dt.shape
    if A.shape[0] != heads or B.shape[:2] != (batch, length) or heads % B.shape[2]:
        raise ValueError(
            f"A must have H={heads} entries and B (B, L, G, N) = ({batch}, {length}, G, N) with "
            f"H a multiple of G; got A {tuple(A.shape)}, B {tuple(B.shape)}"
        )
    if not 0 <= query_start <= length or C.shape[:2] != (batch, length - query_start):
        raise ValueError(
            f"C must hold the queries of positions query_start .. L - 1: ({batch}, {length - query_start}, G, N) "
            f"for query_start={query_start}, got {tuple(C.shape)}"
        )
    if x is not None and (x.dim() != 4 or x.shape[:3] != (batch, length, heads)):
        raise ValueError(f"x must be (B, L, H, P) = ({batch}, {length}, {heads}, P), got {tuple(x.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    check_segment_ids(segment_ids, batch, length, num_segments, "segment_ids")
    if query_groups is not None:
        num_query_groups = count_ids(query_groups, num_query_groups, "num_query_groups")
        check_query_groups(query_groups, batch, length - query_start, num_query_groups)

    arguments = (dt, A, B, C, segment_ids, num_segments, x, normalize, signed, chunk)
    if query_start or choose_backend("ssd_pooled_mass", dt, B, C) == "ref":
        return ref.ssd_pooled_mass(*arguments, query_groups, num_query_groups, query_start)
    rows = _triton_module("triton_ssd").ssd_pooled_mass(*arguments)  # (B, H, L, S)
    return rows if query_groups is None else sum_query_groups(rows, query_groups, num_query_groups)


def _check_video(embeds: torch.Tensor, num_tubelets: int) -> None:
    tokens = embeds.numel() // max(1, embeds.shape[-1]) if embeds.dim() else 0
    if embeds.dim() < 2 or num_tubelets < 1 or tokens % num_tubelets or not embeds.dtype.is_floating_point:
        raise ValueError(
            f"embeds must be floating (T * n, D) with T = num_tubelets = {num_tubelets} >= 1 dividing "
            f"the token count; got {tuple(embeds.shape)} {embeds.dtype}"
        )


def evs_scores(embeds: torch.Tensor, num_tubelets: int) -> torch.Tensor:
    """Efficient Video Sampling dissimilarity of each video token (arXiv 2510.14624).

    Args:
        embeds: (T * n, D) post-projector video embeddings in tubelet-major order (any (..., D) layout that
            reshapes to (T, n, D)).
        num_tubelets: T.

    Returns:
        (T * n,) in ``embeds``' dtype: 1 − cosine similarity to the same position in the previous tubelet, 255 for
        the first tubelet; the values transformers' ``compute_retention_mask`` ranks.
    """
    _check_video(embeds, num_tubelets)
    return ref.evs_scores(embeds, num_tubelets)


def evs_retention_mask(embeds: torch.Tensor, num_tubelets: int, rate: float) -> torch.Tensor:
    """EVS keep mask, identical to transformers' ``compute_retention_mask(embeds, num_tubelets, rate)``.

    Args:
        embeds: (T * n, D) post-projector video embeddings (see ``evs_scores``).
        num_tubelets: T.
        rate: pruning rate q in [0, 1].

    Returns:
        (T * n,) bool, True = keep: the whole first tubelet, then the highest scores (stable descending order,
        ties keep the earlier token) up to ``max(n, int(T * n * (1 - q)))`` tokens.
    """
    _check_video(embeds, num_tubelets)
    _check_rate(rate)
    return ref.evs_retention_mask(embeds, num_tubelets, rate)


def evs_keep(scores: torch.Tensor, num_tubelets: int, rate: float) -> torch.Tensor:
    """EVS keep mask from scores already computed by ``evs_scores``: ``evs_retention_mask`` without computing the
    cosine similarities a second time (the EVS reducer needs both the scores and the mask).

    Args:
        scores: (T * n,) from ``evs_scores``.
        num_tubelets: T.
        rate: pruning rate q in [0, 1].

    Returns:
        (T * n,) bool, identical to ``evs_retention_mask`` on the embeddings the scores came from.
    """
    if scores.ndim != 1 or num_tubelets < 1 or scores.numel() % num_tubelets:
        raise ValueError(f"scores must be (T * n,) for T = {num_tubelets} tubelets, got shape {tuple(scores.shape)}")
    _check_rate(rate)
    return ref.evs_keep(scores, num_tubelets, rate)


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
