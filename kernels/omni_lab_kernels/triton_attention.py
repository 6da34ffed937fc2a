"""Triton kernel for the segment-pooled attention mass (the CUDA path of ``pooled_attention_mass``).

It is FlashAttention-2's forward (Dao, 2023, arXiv 2307.08691; the Triton tutorial ``06-fused-attention.py``
and ``flash_attn/flash_attn_triton.py``) with the value matrix replaced by the one-hot (keys × segments) matrix:
softmax(Q Kᵀ) · onehot(segment_ids) is exactly the probability mass of each query per segment. One pass with an
online softmax (running max, rescaled accumulator) instead of the reference's two passes; the result is the same
up to float32 rounding. Nothing L × L is stored: memory is the (B, Hq, L, S) output.

Precision: Q Kᵀ runs on tensor cores in the inputs' dtype (bf16 / fp16), or as ``tf32x3`` for float32 inputs
(about float32 accuracy); accumulation is float32. Probabilities p ∈ [0, 1] are pooled as p = hi + lo with two
float16 halves (two tensor-core products, ~22 mantissa bits), which keeps rows summing to 1 within ~1e-6.

The reference with the same signature is ``ref.py``; tests compare them under ``TRITON_INTERPRET=1``.
This module imports triton at import time: only ``dispatch.py`` imports it, lazily.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .segments import count_ids, sum_query_groups


@triton.jit
def _pooled_attention_mass_kernel(
    q_ptr, k_ptr, segment_ptr, out_ptr,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_sb, stride_sl,
    stride_ob, stride_oh, stride_ol, stride_os,
    length, head_dim, num_segments, q_heads, heads_per_kv, scale_log2,
    CAUSAL: tl.constexpr, QK_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_M queries of one (batch, query head) against all keys, for BLOCK_S segments."""
    block_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    block_s = tl.program_id(2)
    batch = batch_head // q_heads
    q_head = batch_head % q_heads
    kv_head = q_head // heads_per_kv  # repeat_kv order

    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (M,) query positions
    offs_d = tl.arange(0, BLOCK_D)
    offs_s = block_s * BLOCK_S + tl.arange(0, BLOCK_S)  # (S,) segment columns
    q = tl.load(
        q_ptr + batch * stride_qb + q_head * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd,
        mask=(offs_m[:, None] < length) & (offs_d[None, :] < head_dim),
        other=0.0,
    )  # (M, D)

    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # in log2 units
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_S], dtype=tl.float32)  # (M, S) unnormalised mass

    key_end = tl.minimum((block_m + 1) * BLOCK_M, length) if CAUSAL else length
    for key_start in range(0, key_end, BLOCK_N):
        offs_n = key_start + tl.arange(0, BLOCK_N)  # (N,) key positions
        k = tl.load(
            k_ptr + batch * stride_kb + kv_head * stride_kh + offs_n[:, None] * stride_kl + offs_d[None, :] * stride_kd,
            mask=(offs_n[:, None] < length) & (offs_d[None, :] < head_dim),
            other=0.0,
        )  # (N, D)
        scores = tl.dot(q, tl.trans(k), input_precision=QK_PRECISION) * scale_log2  # (M, N), log2 units
        valid = offs_n[None, :] < length
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        scores = tl.where(valid, scores, float("-inf"))

        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        new_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # rows past the end see no key
        rescale = tl.exp2(row_max - new_max)  # (M,)
        p = tl.exp2(scores - new_max[:, None])  # (M, N) in [0, 1]
        row_sum = row_sum * rescale + tl.sum(p, axis=1)

        segment = tl.load(segment_ptr + batch * stride_sb + offs_n * stride_sl, mask=offs_n < length, other=-1)
        one_hot = (segment[:, None] == offs_s[None, :]).to(tl.float16)  # (N, S)
        p_hi = p.to(tl.float16)
        p_lo = (p - p_hi.to(tl.float32)).to(tl.float16)
        acc = acc * rescale[:, None] + tl.dot(p_hi, one_hot) + tl.dot(p_lo, one_hot)  # (M, S)
        row_max = new_max

    acc = acc / tl.where(row_sum > 0, row_sum, 1.0)[:, None]
    tl.store(
        out_ptr + batch * stride_ob + q_head * stride_oh + offs_m[:, None] * stride_ol + offs_s[None, :] * stride_os,
        acc,
        mask=(offs_m[:, None] < length) & (offs_s[None, :] < num_segments),
    )


def _block_size(requested: int, low: int = 16, high: int = 128) -> int:
    """A power of two in [low, high] close to ``requested``, as tl.arange and tl.dot need."""
    return max(low, min(high, triton.next_power_of_2(max(1, requested))))


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
) -> torch.Tensor:
    """Triton twin of ``kernels.ref.pooled_attention_mass`` (same arguments, same result within float32 rounding).

    Args:
        q: (B, Hq, L, D) float16 / bfloat16 / float32 queries.
        k: (B, Hkv, L, D) keys, same dtype; query head h reads kv head h // (Hq // Hkv).
        segment_ids: (B, L) int64 segment of each key in [0, S).
        num_segments: S (default: max id + 1).
        causal: mask keys after the query.
        scale: score scale (default 1 / sqrt(D)).
        query_block: queries per program (rounded to a power of two in [16, 128], at most 64 for float32);
            key tiles are 64 wide.
        query_groups: optional (B, L) int64 group of each query in [0, Q), -1 = ignore.
        num_query_groups: Q (default: max group + 1).

    Returns:
        (B, Hq, L, S) float32, or (B, Hq, Q, S) sums over the queries of each group.
    """
    batch, q_heads, length, head_dim = q.shape
    kv_heads = k.shape[1]
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.zeros(batch, q_heads, length, num_segments, dtype=torch.float32, device=q.device)  # (B, Hq, L, S)
    if length and num_segments:
        k = k.to(q.dtype)
        if triton.knobs.runtime.interpret and q.dtype == torch.bfloat16:
            q, k = q.float(), k.float()  # the interpreter (triton 3.8) gets bfloat16 tl.dot wrong; exact upcast
        segment_ids = segment_ids.to(torch.int32)
        wide = q.element_size() <= 2  # 16-bit tiles: 128 queries per program; float32: 64 (shared memory)
        block_m = _block_size(query_block, high=128 if wide else 64)
        block_s = _block_size(num_segments, high=64)
        grid = (triton.cdiv(length, block_m), batch * q_heads, triton.cdiv(num_segments, block_s))
        _pooled_attention_mass_kernel[grid](
            q, k, segment_ids, out,
            *q.stride(), *k.stride(), *segment_ids.stride(), *out.stride(),
            length, head_dim, num_segments, q_heads, q_heads // kv_heads, scale * math.log2(math.e),
            CAUSAL=causal, QK_PRECISION="tf32x3" if q.dtype == torch.float32 else "tf32",
            BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=_block_size(head_dim, high=256), BLOCK_S=block_s,
            num_warps=8 if block_m >= 128 else 4, num_stages=3 if wide else 2,
        )  # fmt: skip
    if query_groups is None:
        return out
    return sum_query_groups(out, query_groups, count_ids(query_groups, num_query_groups, "num_query_groups"))
