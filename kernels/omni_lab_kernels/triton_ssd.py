"""Triton kernel for the SSD (Mamba-2) pooled mass (the CUDA path of ``ssd_pooled_mass``).

Mamba-2's effective attention α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s (state-space duality, Dao & Gu,
2024, arXiv 2405.21060), tile by tile, pooled per source segment. The tiling and the decay bookkeeping follow
state-spaces/mamba's chunked scan (``mamba_ssm/ops/triton/ssd_chunk_scan.py``: exp of within-chunk cumulative
sums inside the diagonal tile; ``ssd_minimal.py``: chunk totals between tiles): each program walks the source
tiles from its own backwards, adding the totals of the tiles in between to a running sum, so no long cumulative
sum is ever differenced. Unlike the scan, |α| cannot be factored through the state, so every (query, source)
tile pair is visited: O(L² N) work, O(L · S) memory.

Precision: everything in float32; the C Bᵀ and pooling products run as ``tf32x3`` (about float32 accuracy).
The reference with the same signature is ``ref.py``; tests compare them under ``TRITON_INTERPRET=1``.
This module imports triton at import time: only ``dispatch.py`` imports it, lazily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .segments import count_ids


@triton.jit
def _pool_alpha(alpha, segment, offs_s, acc, row_total, SIGNED: tl.constexpr):
    """Add one tile of α (T, T) with source segments (T,) to the pooled sums (T, S) and the row totals of |α| (T,)."""
    one_hot = (segment[:, None] == offs_s[None, :]).to(tl.float32)  # (T, S)
    magnitude = tl.abs(alpha)
    contribution = alpha if SIGNED else magnitude
    acc += tl.dot(contribution, one_hot, input_precision="tf32x3")
    row_total += tl.sum(magnitude, axis=1)
    return acc, row_total


@triton.jit
def _ssd_pooled_mass_kernel(
    C_ptr, B_ptr, query_side_ptr, source_side_ptr, tile_total_ptr, weight_ptr, segment_ptr, out_ptr, total_ptr,
    stride_cb, stride_cl, stride_cg, stride_cn,
    stride_bb, stride_bl, stride_bg, stride_bn,
    stride_db, stride_dh, stride_dl,
    stride_tb, stride_th, stride_tt,
    stride_sb, stride_sl,
    stride_ob, stride_oh, stride_ol, stride_os,
    length, state_size, num_segments, heads, heads_per_group,
    SIGNED: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_T queries of one (batch, head) against every earlier source, for BLOCK_S segments."""
    tile_t = tl.program_id(0)
    batch_head = tl.program_id(1)
    block_s = tl.program_id(2)
    batch = batch_head // heads
    head = batch_head % heads
    group = head // heads_per_group  # repeat_interleave order

    offs_t = tile_t * BLOCK_T + tl.arange(0, BLOCK_T)  # (T,) query positions
    offs_n = tl.arange(0, BLOCK_N)
    offs_s = block_s * BLOCK_S + tl.arange(0, BLOCK_S)  # (S,) segment columns
    decay_base = batch * stride_db + head * stride_dh
    C_tile = tl.load(
        C_ptr + batch * stride_cb + group * stride_cg + offs_t[:, None] * stride_cl + offs_n[None, :] * stride_cn,
        mask=(offs_t[:, None] < length) & (offs_n[None, :] < state_size),
        other=0.0,
    )  # (T, N)
    query_side = tl.load(query_side_ptr + decay_base + offs_t * stride_dl)  # (T,) Σ_{r=tile start..t} Δ_r A
    acc = tl.zeros([BLOCK_T, BLOCK_S], dtype=tl.float32)
    row_total = tl.zeros([BLOCK_T], dtype=tl.float32)

    # Diagonal tile: decay Σ_{r=s+1..t} as a difference of within-tile prefix sums, masked to s <= t.
    B_tile = tl.load(
        B_ptr + batch * stride_bb + group * stride_bg + offs_t[:, None] * stride_bl + offs_n[None, :] * stride_bn,
        mask=(offs_t[:, None] < length) & (offs_n[None, :] < state_size),
        other=0.0,
    )  # (T, N)
    weight = tl.load(weight_ptr + decay_base + offs_t * stride_dl)  # (T,) Δ_s (· ‖x_s‖), 0 past the end
    scores = tl.dot(C_tile, tl.trans(B_tile), input_precision="tf32x3")  # (T, T): C_t · B_s
    causal = offs_t[None, :] <= offs_t[:, None]
    exponent = tl.where(causal, query_side[:, None] - query_side[None, :], float("-inf"))
    alpha = tl.where(causal, scores * tl.exp(exponent) * weight[None, :], 0.0)
    segment = tl.load(segment_ptr + batch * stride_sb + offs_t * stride_sl, mask=offs_t < length, other=-1)
    acc, row_total = _pool_alpha(alpha, segment, offs_s, acc, row_total, SIGNED)

    # Earlier tiles, nearest first: decay = (tile start .. t) + (tiles between) + (s+1 .. end of the source tile).
    between = tl.zeros([1], dtype=tl.float32)
    for back in range(0, tile_t):
        tile_src = tile_t - 1 - back
        offs_src = tile_src * BLOCK_T + tl.arange(0, BLOCK_T)  # (T,) source positions, all < length
        B_tile = tl.load(
            B_ptr + batch * stride_bb + group * stride_bg + offs_src[:, None] * stride_bl + offs_n[None, :] * stride_bn,
            mask=offs_n[None, :] < state_size,
            other=0.0,
        )  # (T, N)
        weight = tl.load(weight_ptr + decay_base + offs_src * stride_dl)  # (T,)
        source_side = tl.load(source_side_ptr + decay_base + offs_src * stride_dl) + between  # (T,)
        scores = tl.dot(C_tile, tl.trans(B_tile), input_precision="tf32x3")  # (T, T)
        alpha = scores * tl.exp(query_side[:, None] + source_side[None, :]) * weight[None, :]
        segment = tl.load(segment_ptr + batch * stride_sb + offs_src * stride_sl)
        acc, row_total = _pool_alpha(alpha, segment, offs_s, acc, row_total, SIGNED)
        between += tl.load(tile_total_ptr + batch * stride_tb + head * stride_th + tile_src * stride_tt)

    row_mask = offs_t < length
    out_base = out_ptr + batch * stride_ob + head * stride_oh
    tl.store(
        out_base + offs_t[:, None] * stride_ol + offs_s[None, :] * stride_os,
        acc,
        mask=row_mask[:, None] & (offs_s[None, :] < num_segments),
    )
    if block_s == 0:
        tl.store(total_ptr + decay_base + offs_t * stride_dl, row_total, mask=row_mask)


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
) -> torch.Tensor:
    """Triton twin of ``kernels.ref.ssd_pooled_mass`` (same arguments, same result within float32 rounding).

    Args:
        dt: (B, L, H) step sizes Δ (after softplus and dt_bias).
        A: (H,) negative decay rates.
        B: (B, L, G, N) input projections; head h uses group h // (H // G).
        C: (B, L, G, N) output projections.
        segment_ids: (B, L) int64 segment of each source in [0, S).
        num_segments: S (default: max id + 1).
        x: optional (B, L, H, P) values: weight each source by ‖x_s‖.
        normalize: divide rows by Σ_s |α[t, s]| (default: True unless ``signed``).
        signed: pool α instead of |α|.
        chunk: tile length (rounded to a power of two in [16, 64]).

    Returns:
        (B, H, L, S) float32.
    """
    batch, length, heads = dt.shape
    groups, state_size = B.shape[2], B.shape[3]
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    normalize = (not signed) if normalize is None else normalize
    out = torch.zeros(batch, heads, length, num_segments, dtype=torch.float32, device=dt.device)  # (B, H, L, S)
    if not (length and num_segments):
        return out

    tile = max(16, min(64, triton.next_power_of_2(max(1, chunk))))
    num_tiles = triton.cdiv(length, tile)
    pad = num_tiles * tile - length
    step = dt.float()  # (B, L, H)
    weight = step if x is None else step * x.float().norm(dim=-1)  # (B, L, H)
    weight = F.pad(weight.transpose(1, 2), (0, pad)).contiguous()  # (B, H, Lp), 0 past the end
    log_decay = F.pad((step * A.float()).transpose(1, 2), (0, pad)).view(batch, heads, num_tiles, tile)
    query_side = log_decay.cumsum(-1)  # (B, H, nT, T): Σ_{r=tile start..t}
    source_side = F.pad(log_decay.flip(-1).cumsum(-1).flip(-1)[..., 1:], (0, 1))  # Σ_{r=s+1..tile end}
    tile_total = log_decay.sum(-1).contiguous()  # (B, H, nT)
    query_side = query_side.reshape(batch, heads, -1).contiguous()  # (B, H, Lp)
    source_side = source_side.reshape(batch, heads, -1).contiguous()  # (B, H, Lp)
    row_total = torch.zeros_like(weight)  # (B, H, Lp)
    B, C = B.float(), C.float()
    segment_ids = segment_ids.to(torch.int32)

    block_s = max(16, min(64, triton.next_power_of_2(num_segments)))
    grid = (num_tiles, batch * heads, triton.cdiv(num_segments, block_s))
    _ssd_pooled_mass_kernel[grid](
        C, B, query_side, source_side, tile_total, weight, segment_ids, out, row_total,
        *C.stride(), *B.stride(), *weight.stride(), *tile_total.stride(), *segment_ids.stride(), *out.stride(),
        length, state_size, num_segments, heads, heads // groups,
        SIGNED=signed, BLOCK_T=tile, BLOCK_N=max(16, triton.next_power_of_2(state_size)), BLOCK_S=block_s,
        num_stages=2,
    )  # fmt: skip
    if normalize:
        row_total = row_total[..., :length]
        out = out / torch.where(row_total > 0, row_total, 1.0)[..., None]
    return out
