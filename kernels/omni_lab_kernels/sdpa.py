"""Pooled attention mass through torch's fused attention: the fast path wherever Triton does not run.

The mass of query t in segment j is Σ_s P[t, s] · M[s, j] with P the softmax attention probabilities and M the
(L, S) one-hot segment matrix, i.e. attention with M as the values. torch's `scaled_dot_product_attention` computes
exactly that with its fused FlashAttention-style kernels (FlashAttention, arXiv 2205.14135): an exact softmax, no
L × L matrix. Its CPU kernel is fast only when the values have the queries' head dim, so M is split into column
groups of D segments, each padded to D. Queries go in blocks (keys up to the block's last query, a causal mask), so
memory stays O(block · L). Same signature and results (to float32 rounding) as `ref.pooled_attention_mass`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .segments import one_hot, sum_query_groups


def pooled_attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int,
    causal: bool = True,
    scale: float | None = None,
    query_block: int = 256,
    query_groups: torch.Tensor | None = None,
    num_query_groups: int | None = None,
    query_start: int = 0,
) -> torch.Tensor:
    """See `ref.pooled_attention_mass`; computed in float32 with `F.scaled_dot_product_attention`.

    Returns:
        (B, Hq, L - query_start, S), or (B, Hq, Q, S) group sums, float32.
    """
    batch, q_heads, queries, head_dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    q, k = q.float(), k.float()
    segments = one_hot(segment_ids, num_segments, torch.float32)  # (B, L, S)
    rows_out = queries if query_groups is None else num_query_groups
    out = q.new_zeros(batch, q_heads, rows_out, num_segments)
    for column in range(0, num_segments, head_dim):
        width = min(head_dim, num_segments - column)
        values = F.pad(segments[..., column : column + width], (0, head_dim - width))  # (B, L, D)
        values = values[:, None].expand(batch, kv_heads, length, head_dim)  # (B, Hkv, L, D)
        for row_start in range(0, queries, query_block):
            row_end = min(row_start + query_block, queries)
            first, last = query_start + row_start, query_start + row_end  # absolute positions of the block
            keys = last if causal else length
            mask = None
            if causal:  # bottom-right aligned: query at position p sees keys 0..p
                mask = torch.arange(keys, device=q.device) <= torch.arange(first, last, device=q.device)[:, None]
            mass = F.scaled_dot_product_attention(
                q[:, :, row_start:row_end],
                k[:, :, :keys],
                values[:, :, :keys],
                attn_mask=mask,
                scale=scale,
                enable_gqa=True,
            )[..., :width]  # (B, Hq, bq, width)
            if query_groups is None:
                out[:, :, row_start:row_end, column : column + width] = mass
            else:
                groups = query_groups[:, row_start:row_end]
                out[..., column : column + width] += sum_query_groups(mass, groups, num_query_groups)
    return out
