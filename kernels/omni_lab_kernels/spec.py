"""Float64 sequential specifications of the kernels: the definitions the tests check every other rung against.

Nothing here is fast or memory-frugal; each function loops over positions one at a time and states the quantity
as directly as possible, in float64:

- ``pooled_attention_mass``: softmax attention probabilities of each query (Vaswani et al., 2017,
  arXiv 1706.03762), with grouped-query heads as transformers' ``repeat_kv``
  (transformers/models/nemotron_h/modeling_nemotron_h.py, ``eager_attention_forward``), summed per key segment.
- ``ssd_pooled_mass``: Mamba-2's attention-like matrix from state-space duality (Dao & Gu, 2024,
  arXiv 2405.21060, §3 "SSM as structured matrix"; state-spaces/mamba ``mamba_ssm/modules/ssd_minimal.py``),
  built with the token-by-token recurrence: every earlier source's weight decays by exp(Δ_t A) at step t.
- ``evs_scores``: Efficient Video Sampling dissimilarity (arXiv 2510.14624; transformers
  ``models/nemotron_h_omni/modeling_nemotron_h_omni.py``, ``compute_retention_mask``), tubelet by tubelet.

Signatures match ``ref.py``; the block / chunk arguments are accepted and ignored.
"""

from __future__ import annotations

import math

import torch

from .segments import count_ids, sum_query_groups


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
    """Softmax attention mass per key segment, one query at a time, in float64.

    Args:
        q: (B, Hq, L - query_start, D) queries of positions query_start .. L - 1.
        k: (B, Hkv, L, D) keys; query head h reads kv head h // (Hq // Hkv).
        segment_ids: (B, L) int64 segment of each key in [0, S).
        num_segments: S (default: max id + 1).
        causal: mask keys after the query.
        scale: score scale (default 1 / sqrt(D)).
        query_block: ignored (signature parity).
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query (the queries are the last positions).

    Returns:
        (B, Hq, L - query_start, S) float64 mass per query, or (B, Hq, Q, S) summed over the queries of each group.
    """
    batch, q_heads, queries, head_dim = q.shape
    length = k.shape[2]
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    k = k.double().repeat_interleave(q_heads // k.shape[1], dim=1)  # (B, Hq, L, D), repeat_kv order
    q = q.double()
    positions = torch.arange(length, device=q.device)
    keys_to_segments = segment_ids[:, None, :].expand(batch, q_heads, length)  # (B, Hq, L)
    mass = q.new_zeros(batch, q_heads, queries, num_segments)
    for row in range(queries):
        scores = torch.einsum("bhd,bhld->bhl", q[:, :, row], k) * scale  # (B, Hq, L)
        if causal:
            scores = scores.masked_fill(positions > query_start + row, -math.inf)
        probabilities = torch.softmax(scores, dim=-1)  # (B, Hq, L)
        mass[:, :, row].scatter_add_(-1, keys_to_segments, probabilities)
    if query_groups is None:
        return mass
    return sum_query_groups(mass, query_groups, count_ids(query_groups, num_query_groups, "num_query_groups"))


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
    """Mamba-2 effective attention α[t, s] pooled per source segment, token by token, in float64.

    α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s for s <= t (times ‖x_s‖ when ``x`` is given).

    Args:
        dt: (B, L, H) step sizes Δ (after softplus and dt_bias).
        A: (H,) negative decay rates (−exp(A_log)).
        B: (B, L, G, N) input projections; head h uses group h // (H // G).
        C: (B, L - query_start, G, N) output projections of the query positions query_start .. L - 1.
        segment_ids: (B, L) int64 segment of each source position in [0, S).
        num_segments: S (default: max id + 1).
        x: optional (B, L, H, P) values: weight each source by ‖x_s‖ (per head).
        normalize: divide each row by Σ_s |α[t, s]| (default: True unless ``signed``).
        signed: pool α itself instead of |α|.
        chunk: ignored (signature parity).
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query.

    Returns:
        (B, H, L - query_start, S) float64, or (B, H, Q, S) summed over the (normalised) rows of each group.
    """
    batch, length, heads = dt.shape
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    normalize = (not signed) if normalize is None else normalize
    heads_per_group = heads // B.shape[2]
    B = B.double().repeat_interleave(heads_per_group, dim=2)  # (B, L, H, N)
    C = C.double().repeat_interleave(heads_per_group, dim=2)  # (B, L, H, N)
    dt, A = dt.double(), A.double()
    source_weight = dt if x is None else dt * x.double().norm(dim=-1)  # (B, L, H)
    sources_to_segments = segment_ids[:, None, :].expand(batch, heads, length)  # (B, H, L)
    queries = length - query_start
    pooled = dt.new_zeros(batch, heads, queries, num_segments)
    row_total = dt.new_zeros(batch, heads, queries)
    decayed_weight = dt.new_zeros(batch, heads, length)  # exp(Σ_{r=s+1..t} Δ_r A) Δ_s for every source s
    for t in range(length):
        decayed_weight = decayed_weight * torch.exp(dt[:, t] * A)[:, :, None]  # one more step of decay
        decayed_weight[:, :, t] = source_weight[:, t]
        if t < query_start:
            continue
        row = t - query_start
        alpha = torch.einsum("bhn,blhn->bhl", C[:, row], B) * decayed_weight  # (B, H, L); zero for s > t
        pooled[:, :, row].scatter_add_(-1, sources_to_segments, alpha if signed else alpha.abs())
        row_total[:, :, row] = alpha.abs().sum(-1)
    if normalize:
        pooled = pooled / torch.where(row_total > 0, row_total, 1.0)[..., None]
    if query_groups is None:
        return pooled
    return sum_query_groups(pooled, query_groups, count_ids(query_groups, num_query_groups, "num_query_groups"))


def evs_scores(embeds: torch.Tensor, num_tubelets: int) -> torch.Tensor:
    """EVS dissimilarity, one tubelet at a time, in float64.

    Args:
        embeds: (T * n, D) (or any (..., D) holding T * n tokens in tubelet-major order) video embeddings.
        num_tubelets: T.

    Returns:
        (T * n,) float64: 1 − cos(e[t, i], e[t−1, i]) for t >= 1, and 255 for the first tubelet.
    """
    tubelets = embeds.double().reshape(num_tubelets, -1, embeds.shape[-1])  # (T, n, D)
    scores = torch.full(tubelets.shape[:2], 255.0, dtype=torch.float64, device=embeds.device)  # (T, n)
    for t in range(1, num_tubelets):
        current, previous = tubelets[t], tubelets[t - 1]  # (n, D) each
        current = current / current.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # torch's cosine_similarity eps
        previous = previous / previous.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        scores[t] = 1.0 - (current * previous).sum(-1)
    return scores.reshape(-1)
