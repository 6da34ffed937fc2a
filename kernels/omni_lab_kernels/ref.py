"""Chunked plain-torch references of the kernels: the CPU path, and what the Triton kernels are tested against.

- ``pooled_attention_mass``: exact softmax attention mass per key segment, flash-style (FlashAttention, Dao et
  al., 2022, arXiv 2205.14135): block by block, a first pass gets each query row's log-sum-exp, a second pass
  turns the scores into probabilities and pools them with a one-hot (keys × segments) matrix. Memory is
  O(L·S + block²): no L × L matrix is ever built. Grouped-query heads follow transformers' ``repeat_kv``
  (transformers/models/nemotron_h/modeling_nemotron_h.py, ``eager_attention_forward``).
- ``ssd_pooled_mass``: Mamba-2's effective attention (state-space duality, Dao & Gu, 2024, arXiv 2405.21060),
  α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s, built chunk by chunk and pooled per source segment.
  Inside a chunk the decays are ``exp(segment_sum(ΔA))`` as in state-spaces/mamba
  ``mamba_ssm/modules/ssd_minimal.py`` (and transformers' ``torch_chunk_scan``). Across chunks the decay splits
  into a query factor exp(Σ_{r=t0..t} Δ_r A) and a source factor carried from chunk to chunk (both <= 1, so
  their product never overflows), which turns the earlier chunks' mass into matrix products of |C_t · B_s| with
  carried-weighted one-hot segments instead of an element-wise pass over every (head, query, source).
- ``evs_scores`` / ``evs_retention_mask``: Efficient Video Sampling (arXiv 2510.14624), op for op the released
  ``compute_retention_mask`` (transformers/models/nemotron_h_omni/modeling_nemotron_h_omni.py), so the masks are
  bit-identical.

Compute dtype: float64 inputs stay float64, everything else is computed in float32; results are float32 (float64
for float64 inputs). Signatures match ``spec.py`` and the Triton wrappers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .segments import count_ids, one_hot, sum_query_groups


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Pooled attention mass
# ----------------------------------------------------------------------------------------------------------------


def _attention_scores(
    q_block: torch.Tensor, k: torch.Tensor, query_start: int, key_start: int, key_end: int, causal: bool
) -> torch.Tensor:
    """Scaled scores of one query block against one key block, causally masked with −inf.

    Args:
        q_block: (B, Hkv, g, bq, D) pre-scaled queries, g query heads per kv head.
        k: (B, Hkv, L, D) keys.
        query_start: position of the block's first query.
        key_start, key_end: the key range [key_start, key_end).
        causal: mask keys after each query.

    Returns:
        (B, Hkv, g, bq, bk) scores.
    """
    scores = q_block @ k[:, :, None, key_start:key_end].transpose(-1, -2)  # (B, Hkv, g, bq, bk)
    query_end = query_start + q_block.shape[-2]
    if causal and key_end - 1 > query_start:  # the block reaches past some query
        query_positions = torch.arange(query_start, query_end, device=k.device)
        key_positions = torch.arange(key_start, key_end, device=k.device)
        scores = scores.masked_fill(key_positions > query_positions[:, None], -math.inf)  # (bq, bk) mask
    return scores


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
    """Exact softmax attention mass of every query in every key segment, without an L × L matrix.

    Args:
        q: (B, Hq, L - query_start, D) queries of positions query_start .. L - 1 (all of them by default).
        k: (B, Hkv, L, D) keys; Hq a multiple of Hkv, query head h reads kv head h // (Hq // Hkv).
        segment_ids: (B, L) int64 segment of each key in [0, S); segments may be empty or non-contiguous.
        num_segments: S (default: max id + 1).
        causal: mask keys after the query (a query always sees itself).
        scale: score scale (default 1 / sqrt(D)).
        query_block: rows (and key columns) per block; memory per step is O(Hq · block²).
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore the query.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query: only the last L - query_start rows are computed (e.g. the
            tokens generated after a prompt whose rows are already known).

    Returns:
        (B, Hq, L - query_start, S) float32 (float64 for float64 inputs): the probability mass of each query per segment; rows
        sum to 1. With ``query_groups``: (B, Hq, Q, S), the **sum** (not the mean) of the rows of each group's
        queries, so a group's row sums to its number of queries.
    """
    batch, q_heads, queries, head_dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    heads_per_kv = q_heads // kv_heads
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    dtype = compute_dtype(q)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale

    q = (q.to(dtype) * scale).reshape(batch, kv_heads, heads_per_kv, queries, head_dim)  # (B, Hkv, g, Lq, D)
    k = k.to(dtype)  # (B, Hkv, L, D)
    key_segments = one_hot(segment_ids, num_segments, dtype)[:, None, None]  # (B, 1, 1, L, S)
    if query_groups is None:
        out = q.new_zeros(batch, q_heads, queries, num_segments)  # (B, Hq, Lq, S)
    else:
        num_query_groups = count_ids(query_groups, num_query_groups, "num_query_groups")
        out = q.new_zeros(batch, q_heads, num_query_groups, num_segments)  # (B, Hq, Q, S)

    block = query_block
    for row_start in range(0, queries, block):
        row_end = min(row_start + block, queries)
        query_start_abs, query_end = query_start + row_start, query_start + row_end  # absolute positions
        q_block = q[:, :, :, row_start:row_end]  # (B, Hkv, g, bq, D)
        key_limit = query_end if causal else length  # keys past key_limit are masked for every query here
        key_ranges = [(start, min(start + block, key_limit)) for start in range(0, key_limit, block)]

        # Pass 1: running max and sum of exponentials -> log-sum-exp of each row. Every row sees key 0 in the first
        # block (or every key without causal masking), so the running max is finite from the first block on.
        row_max = torch.full(q_block.shape[:-1], -math.inf, dtype=dtype, device=q.device)  # (B, Hkv, g, bq)
        row_sum = torch.zeros_like(row_max)
        for key_start, key_end in key_ranges:
            scores = _attention_scores(q_block, k, query_start_abs, key_start, key_end, causal)  # (B, Hkv, g, bq, bk)
            new_max = torch.maximum(row_max, scores.amax(-1))
            row_sum = row_sum * torch.exp(row_max - new_max) + torch.exp(scores - new_max[..., None]).sum(-1)
            row_max = new_max
        log_sum_exp = row_max + torch.log(row_sum)  # (B, Hkv, g, bq)

        # Pass 2: exact probabilities, pooled per key segment.
        mass = torch.zeros(*q_block.shape[:-1], num_segments, dtype=dtype, device=q.device)  # (B, Hkv, g, bq, S)
        for key_start, key_end in key_ranges:
            scores = _attention_scores(q_block, k, query_start_abs, key_start, key_end, causal)
            probabilities = torch.exp(scores - log_sum_exp[..., None])  # (B, Hkv, g, bq, bk)
            mass += probabilities @ key_segments[..., key_start:key_end, :]  # (B, Hkv, g, bq, S)
        mass = mass.reshape(batch, q_heads, row_end - row_start, num_segments)  # (B, Hq, bq, S)

        if query_groups is None:
            out[:, :, row_start:row_end] = mass
        else:
            out += sum_query_groups(mass, query_groups[:, row_start:row_end], num_query_groups)
    return out


# ----------------------------------------------------------------------------------------------------------------
# SSD (Mamba-2) pooled mass
# ----------------------------------------------------------------------------------------------------------------


def segment_sum(log_decay: torch.Tensor) -> torch.Tensor:
    """Sums of every contiguous range, as ``segsum`` in mamba's ssd_minimal.py (masked cumsum, no subtraction).

    Args:
        log_decay: (..., T) per-step log decays Δ_r A.

    Returns:
        (..., T, T): [t, s] = Σ_{r=s+1..t} log_decay[r] for s <= t (0 on the diagonal), −inf above it.
    """
    steps = log_decay.shape[-1]
    expanded = log_decay[..., None].expand(*log_decay.shape, steps)  # (..., T, T): [t, s] = log_decay[t]
    strictly_lower = torch.tril(torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device), diagonal=-1)
    sums = expanded.masked_fill(~strictly_lower, 0).cumsum(dim=-2)  # [t, s] = Σ_{s < r <= t}
    lower = torch.tril(torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device))
    return sums.masked_fill(~lower, -math.inf)


def _exclusive_suffix_sum(log_decay: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T): [s] = Σ_{r=s+1..T-1} log_decay[r], accumulated from the end (no subtraction)."""
    inclusive = log_decay.flip(-1).cumsum(-1).flip(-1)  # [s] = Σ_{r >= s}
    return F.pad(inclusive[..., 1:], (0, 1))


def _pool_ssd_block(
    C_block: torch.Tensor,
    B_block: torch.Tensor,
    exponent: torch.Tensor,
    source_weight: torch.Tensor,
    source_segments: torch.Tensor,
    signed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """α of one (query chunk, source chunk) block, pooled per source segment.

    Args:
        C_block: (B, G, Tc, N) query-side projections.
        B_block: (B, G, Sc, N) source-side projections.
        exponent: (B, H, Tc, Sc) log decay from each source to each query (−inf where s > t).
        source_weight: (B, H, Sc) Δ_s (times ‖x_s‖ for the value-weighted variant).
        source_segments: (B, 1, Sc, S) one-hot segments of the sources.
        signed: pool α instead of |α|.

    Returns:
        ((B, H, Tc, S) pooled block, (B, H, Tc) Σ_s |α| of the block).
    """
    batch, groups, _, _ = C_block.shape
    heads, queries, sources = exponent.shape[1:]
    scores = C_block @ B_block.transpose(-1, -2)  # (B, G, Tc, Sc): C_t · B_s
    decay = torch.exp(exponent) * source_weight[..., None, :]  # (B, H, Tc, Sc)
    # Head h reads group h // (H // G): split the head axis into (G, H // G) and broadcast the scores over it.
    alpha = scores[:, :, None] * decay.reshape(batch, groups, heads // groups, queries, sources)
    alpha = alpha.reshape(batch, heads, queries, sources)  # (B, H, Tc, Sc)
    magnitude = alpha.abs()
    return (alpha if signed else magnitude) @ source_segments, magnitude.sum(-1)


def _chunk_bounds(length: int, chunk: int, query_start: int) -> list[tuple[int, int]]:
    """[start, end) chunks covering 0 .. length with query_start as a boundary (so query chunks are whole chunks)."""
    starts = list(range(0, query_start, chunk)) + list(range(query_start, length, chunk))
    return list(zip(starts, [*starts[1:], length], strict=True))


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
    chunk: int = 128,
    query_groups: torch.Tensor | None = None,
    num_query_groups: int | None = None,
    query_start: int = 0,
    source_block: int = 2048,
) -> torch.Tensor:
    """Mamba-2 effective attention α[t, s] pooled per source segment, chunk by chunk.

    α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s for s <= t, per head: the weight with which x_s enters
    y_t = Σ_s α[t, s] x_s + D x_t (the model's scan output before its gated norm).

    Args:
        dt: (B, L, H) step sizes Δ, already softplus(dt + dt_bias) (and clamped as the model does).
        A: (H,) negative decay rates, −exp(A_log).
        B: (B, L, G, N) input projections; H a multiple of G, head h uses group h // (H // G)
            (``repeat_interleave``, as the model does).
        C: (B, L - query_start, G, N) output projections of the query positions query_start .. L - 1.
        segment_ids: (B, L) int64 segment of each source position in [0, S).
        num_segments: S (default: max id + 1).
        x: optional (B, L, H, P) values. When given, each source's weight is scaled by ‖x_s‖ (its value vector's
            norm in that head), i.e. the pooled quantity is ‖α[t, s] x_s‖, the size of s's contribution to y_t
            ("value-weighted" mass, as norm-based attention analysis does, Kobayashi et al., 2020).
        normalize: divide each query row by Σ_s |α[t, s]| so that unsigned rows sum to 1 (rows with no mass stay
            0). Default (None): True for unsigned mass, False for ``signed=True``.
        signed: pool α itself instead of |α|.
        chunk: positions per chunk; memory per step is O(H · chunk²), plus the O(L · S) output.
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore the query.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query; earlier positions are sources only (e.g. a prompt whose rows
            are already known, when only the generated tokens' rows are wanted).
        source_block: earlier sources handled per matrix product (memory O(G · chunk · source_block)).

    Returns:
        (B, H, L - query_start, S) float32 (float64 for float64 inputs); with ``query_groups`` (B, H, Q, S), the
        sum of the (normalised) rows of each group.
    """
    batch, length, heads = dt.shape
    groups = B.shape[2]
    heads_per_group = heads // groups
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    normalize = (not signed) if normalize is None else normalize
    dtype = compute_dtype(dt)

    step = dt.to(dtype)  # (B, L, H)
    log_decay = (step * A.to(dtype)).transpose(1, 2)  # (B, H, L): Δ_r A, the log of one step's decay
    source_weight = step if x is None else step * x.to(dtype).norm(dim=-1)  # (B, L, H)
    source_weight = source_weight.transpose(1, 2)  # (B, H, L)
    B = B.to(dtype).transpose(1, 2)  # (B, G, L, N)
    C = C.to(dtype).transpose(1, 2)  # (B, G, Lq, N)
    source_segments = one_hot(segment_ids, num_segments, dtype)  # (B, L, S)

    queries = length - query_start
    if query_groups is None:
        out = step.new_zeros(batch, heads, queries, num_segments)  # (B, H, Lq, S)
    else:
        num_query_groups = count_ids(query_groups, num_query_groups, "num_query_groups")
        out = step.new_zeros(batch, heads, num_query_groups, num_segments)  # (B, H, Q, S)

    # `carried[s]` = exp(Σ_{r=s+1..t0-1} Δ_r A) Δ_s for every source before the current chunk start t0. Across chunks
    # α[t, s] = (C_t · B_s) · exp(Σ_{r=t0..t} Δ_r A) · carried[s]: a query factor times a source factor, so an
    # earlier chunk's mass is a matrix product of |C_t · B_s| with carried-weighted one-hot segments.
    carried = step.new_zeros(batch, heads, 0)  # (B, H, t0)
    for t0, t1 in _chunk_bounds(length, chunk, query_start):
        chunk_log_decay = log_decay[:, :, t0:t1]  # (B, H, Tc)
        if t0 >= query_start:
            C_block = C[:, :, t0 - query_start : t1 - query_start]  # (B, G, Tc, N)
            # Sources in the query's own chunk: decay Σ_{r=s+1..t} from the masked segment sum.
            pooled, row_total = _pool_ssd_block(
                C_block,
                B[:, :, t0:t1],
                segment_sum(chunk_log_decay),
                source_weight[:, :, t0:t1],
                source_segments[:, None, t0:t1],
                signed,
            )
            query_scale = torch.exp(chunk_log_decay.cumsum(-1))  # (B, H, Tc): exp(Σ_{r=t0..t} Δ_r A)
            for s0 in range(0, t0, source_block):
                s1 = min(s0 + source_block, t0)
                block, block_total = _pool_earlier_sources(
                    C_block, B[:, :, s0:s1], carried[:, :, s0:s1], source_segments[:, s0:s1], heads_per_group, signed
                )
                pooled += query_scale[..., None] * block
                row_total += query_scale * block_total
            if normalize:
                pooled = pooled / torch.where(row_total > 0, row_total, 1.0)[..., None]  # (B, H, Tc, S)
            rows = slice(t0 - query_start, t1 - query_start)
            if query_groups is None:
                out[:, :, rows] = pooled
            else:
                out += sum_query_groups(pooled, query_groups[:, rows], num_query_groups)
        # Move the reference point to t1: older sources decay by the whole chunk, the chunk's own join.
        within = torch.exp(_exclusive_suffix_sum(chunk_log_decay)) * source_weight[:, :, t0:t1]  # (B, H, Tc)
        carried = torch.cat([carried * torch.exp(chunk_log_decay.sum(-1))[..., None], within], dim=-1)
    return out


def _pool_earlier_sources(
    C_block: torch.Tensor,
    B_sources: torch.Tensor,
    carried: torch.Tensor,
    source_segments: torch.Tensor,
    heads_per_group: int,
    signed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_s |C_t · B_s| · carried[s] per source segment (the query factor is applied by the caller).

    Args:
        C_block: (B, G, Tc, N) query-side projections.
        B_sources: (B, G, Sb, N) projections of earlier sources.
        carried: (B, H, Sb) their decayed weights up to the query chunk's start.
        source_segments: (B, Sb, S) one-hot segments of the sources.
        heads_per_group: H // G.
        signed: pool the signed scores instead of their magnitudes.

    Returns:
        ((B, H, Tc, S) pooled, (B, H, Tc) Σ_s |α| before the query factor).
    """
    batch, groups, queries, _ = C_block.shape
    sources, segments = source_segments.shape[1:]
    scores = C_block @ B_sources.transpose(-1, -2)  # (B, G, Tc, Sb)
    magnitude = scores.abs()
    weights = carried.reshape(batch, groups, heads_per_group, sources)  # (B, G, g, Sb)
    weighted_segments = weights[..., None] * source_segments[:, None, None]  # (B, G, g, Sb, S)
    weighted_segments = weighted_segments.transpose(2, 3).reshape(batch, groups, sources, heads_per_group * segments)
    pooled = (scores if signed else magnitude) @ weighted_segments  # (B, G, Tc, g * S)
    pooled = pooled.reshape(batch, groups, queries, heads_per_group, segments).transpose(2, 3)  # (B, G, g, Tc, S)
    total = magnitude @ weights.transpose(-1, -2)  # (B, G, Tc, g)
    heads = groups * heads_per_group
    return pooled.reshape(batch, heads, queries, segments), total.transpose(-1, -2).reshape(batch, heads, queries)


# ----------------------------------------------------------------------------------------------------------------
# EVS
# ----------------------------------------------------------------------------------------------------------------


def evs_scores(embeds: torch.Tensor, num_tubelets: int) -> torch.Tensor:
    """EVS dissimilarity of every video token to the same position in the previous tubelet.

    Args:
        embeds: (T * n, D) (or any (..., D) holding T * n tokens in tubelet-major order) post-projector embeddings.
        num_tubelets: T.

    Returns:
        (T * n,) in ``embeds``' dtype: 1 − cosine similarity for tubelets 1.., 255 for the first tubelet — the very
        values (same ops, same dtype) that transformers' ``compute_retention_mask`` sorts.
    """
    tubelets = embeds.reshape(num_tubelets, -1, embeds.size(-1))  # (T, n, D)
    dissimilarity = 1 - F.cosine_similarity(tubelets[1:], tubelets[:-1], dim=-1)  # (T - 1, n)
    first = 255 * torch.ones_like(tubelets[:1, :, 0])  # (1, n): the first tubelet is always kept
    return torch.cat([first, dissimilarity], dim=0).view(-1)  # (T * n,)


def evs_retention_mask(embeds: torch.Tensor, num_tubelets: int, rate: float) -> torch.Tensor:
    """EVS keep mask: the first tubelet, then the tokens least similar to their previous tubelet.

    Args:
        embeds: (T * n, D) post-projector video embeddings (see ``evs_scores``).
        num_tubelets: T.
        rate: pruning rate q in [0, 1), the fraction of tokens to drop.

    Returns:
        (T * n,) bool, True = keep; exactly ``max(n, int(T * n * (1 - q)))`` tokens, chosen by a stable descending
        sort of ``evs_scores`` (ties keep the earlier token).
    """
    scores = evs_scores(embeds, num_tubelets)  # (T * n,)
    tokens_per_tubelet = scores.numel() // num_tubelets
    num_kept = max(tokens_per_tubelet, int(num_tubelets * tokens_per_tubelet * (1 - rate)))
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    retention_mask = torch.zeros_like(scores, dtype=torch.bool)
    retention_mask[order[:num_kept]] = True
    return retention_mask
