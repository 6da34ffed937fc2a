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
    strictly_lower = torch.tril(torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device), diagonal=-1)
    sums = log_decay[..., None].expand(*log_decay.shape, steps).masked_fill(~strictly_lower, 0)  # [t, s] = ld[t]
    sums.cumsum_(dim=-2)  # [t, s] = Σ_{s < r <= t}
    return sums.masked_fill_(torch.ones_like(strictly_lower).triu_(1), -math.inf)


def _exclusive_suffix_sum(log_decay: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T): [s] = Σ_{r=s+1..T-1} log_decay[r], accumulated from the end (no subtraction)."""
    inclusive = log_decay.flip(-1).cumsum(-1).flip(-1)  # [s] = Σ_{r >= s}
    return F.pad(inclusive[..., 1:], (0, 1))


def decay_factor(exponent: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """exp(exponent), with results below the dtype's smallest normal number flushed to exactly 0.

    Decays underflow fast (a Mamba-2 head with a large Δ·A forgets in a few steps). Subnormal results carry nothing a
    row of float32 masses can show and make CPU arithmetic on them many times slower, so they are 0 here, as on GPUs
    (flush to zero). −inf (above the causal diagonal) gives 0 as well.

    Args:
        exponent: (...) log decays (<= 0, or −inf).
        inplace: overwrite `exponent` with the result.

    Returns:
        (...) decays in [0, 1].
    """
    log_tiny = math.log(torch.finfo(exponent.dtype).tiny)
    if not inplace:
        exponent = exponent.clone()
    return exponent.masked_fill_(exponent < log_tiny, -math.inf).exp_()


def _count_alive(exponent: torch.Tensor, log_tiny: float) -> int:
    """How many entries of the last axis, at most, hold a log decay that does not underflow (>= log_tiny)."""
    return int((exponent >= log_tiny).sum(-1).max()) if exponent.numel() else 0


def _pool_alpha(scores: torch.Tensor, weights: torch.Tensor, segments: torch.Tensor, signed: bool) -> torch.Tensor:
    """Pool α = scores · weights per source segment, per head, with Σ_s |α| as the last column.

    Args:
        scores: (B, G, n, T, Sc) C_t · B_s of n blocks of T queries and Sc sources, one per group (overwritten).
        weights: (B, H, n, T, Sc) the decays times Δ_s (>= 0), per head (overwritten with α or |α|); head h
            reads group h // (H // G).
        segments: (B, n, Sc, S + 1) one-hot segments of the sources and a last column of ones (zeros on padding).
        signed: pool α instead of |α| (the last column stays Σ_s |α|).

    Returns:
        (B, H, n, T, S + 1).
    """
    batch, groups = scores.shape[:2]
    heads = weights.shape[1]
    per_group = heads // groups
    weights = weights.reshape(batch, groups, per_group, *weights.shape[2:])  # (B, G, g, n, T or 1, Sc)
    segments = segments[:, None, None]  # (B, 1, 1, n, Sc, S + 1)
    alpha = weights.mul_(scores[:, :, None] if signed else scores.abs_()[:, :, None])  # (B, G, g, n, T, Sc)
    pooled = alpha @ segments  # (B, G, g, n, T, S + 1); |α| = |C_t · B_s| · weight as weight >= 0
    if signed:
        pooled[..., -1] = alpha.abs_().sum(-1)
    return pooled.reshape(batch, heads, *pooled.shape[3:])


def _pool_source_weighted(
    scores: torch.Tensor, source_weight: torch.Tensor, segments: torch.Tensor, signed: bool
) -> torch.Tensor:
    """`_pool_alpha` when the weight depends on the source only: one matrix product per group for all its heads.

    Args:
        scores: (B, G, n, T, Sc) (overwritten).
        source_weight: (B, H, n, Sc) decayed weight of each source, per head (>= 0).
        segments: (B, n, Sc, S + 1) as in `_pool_alpha`.
        signed: as in `_pool_alpha`.

    Returns:
        (B, H, n, T, S + 1).
    """
    batch, groups, blocks, queries, sources = scores.shape
    heads, columns = source_weight.shape[1], segments.shape[-1]
    per_group = heads // groups
    weighted = source_weight[..., None] * segments[:, None]  # (B, H, n, Sc, S + 1)
    weighted = weighted.reshape(batch, groups, per_group, blocks, sources, columns).permute(0, 1, 3, 4, 2, 5)
    weighted = weighted.reshape(batch, groups, blocks, sources, per_group * columns)  # (B, G, n, Sc, g (S + 1))
    pooled = (scores if signed else scores.abs_()) @ weighted  # (B, G, n, T, g (S + 1))
    pooled = pooled.reshape(batch, groups, blocks, queries, per_group, columns)
    if signed:
        totals = scores.abs_() @ weighted.reshape(batch, groups, blocks, sources, per_group, columns)[..., -1]
        pooled[..., -1] = totals  # (B, G, n, T, g)
    return pooled.permute(0, 1, 4, 2, 3, 5).reshape(batch, heads, blocks, queries, columns)


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
    block_elements: int = 1 << 22,
) -> torch.Tensor:
    """Mamba-2 effective attention α[t, s] pooled per source segment, block by block.

    α[t, s] = (C_t · B_s) · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s for s <= t, per head: the weight with which x_s enters
    y_t = Σ_s α[t, s] x_s + D x_t (the model's scan output before its gated norm).

    The (query, source) triangle is cut into blocks that share one boundary point, as a divide-and-conquer scan
    does: chunks of T positions on the diagonal (their decays from ``segment_sum``, as in ssd_minimal.py), then
    squares of 1, 2, 4, ... chunks whose sources end where their queries begin, at position a. In a square the decay
    splits into exp(Σ_{r=a..t}) for the query times exp(Σ_{r=s+1..a-1}) for the source, both <= 1 and each a sum
    of steps (no difference of long cumulative sums), so its mass is one matrix product of |C_t · B_s| with
    source-weighted one-hot segments, scaled per query. The squares of one size go in one batched product. Decays that
    underflow are flushed to 0 (``decay_factor``), and a square keeps only the queries and sources whose factor does
    not: a layer that forgets within a few steps costs O(L·T), one that remembers O(L²) (the triangle once).

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
        chunk: positions per diagonal chunk T (work O(L · T · H) there).
        query_groups: optional (B, L - query_start) int64 group of each query in [0, Q), -1 = ignore the query.
        num_query_groups: Q (default: max group + 1).
        query_start: position of the first query; earlier positions are sources only (e.g. a prompt whose rows
            are already known, when only the generated tokens' rows are wanted).
        block_elements: the largest (query, source) temporary, in elements; larger blocks go in pieces.

    Returns:
        (B, H, L - query_start, S) float32 (float64 for float64 inputs); with ``query_groups`` (B, H, Q, S), the
        sum of the (normalised) rows of each group.
    """
    batch, length, heads = dt.shape
    groups = B.shape[2]
    num_segments = count_ids(segment_ids, num_segments, "num_segments")
    normalize = (not signed) if normalize is None else normalize
    dtype = compute_dtype(dt)
    queries = length - query_start
    if query_groups is not None:
        num_query_groups = count_ids(query_groups, num_query_groups, "num_query_groups")
    if queries == 0 or num_segments == 0:
        rows_out = queries if query_groups is None else num_query_groups
        return dt.new_zeros(batch, heads, rows_out, num_segments, dtype=dtype)

    # Positions on a grid of 2^k chunks: `front` zero positions first (query_start then starts a chunk), zeros after.
    # A padded position has Δ = 0 (no decay, no weight) and B = C = 0, so it changes nothing.
    front = (-query_start) % chunk
    chunks = 1 << max(0, math.ceil(math.log2(math.ceil((front + length) / chunk))))
    padded = chunks * chunk
    first_query, end = front + query_start, front + length  # the query rows are first_query .. end - 1

    def on_grid(values: torch.Tensor, offset: int) -> torch.Tensor:  # (B, n, ...) -> (B, padded, ...), zero-padded
        padding = [0, 0] * (values.dim() - 2) + [offset, padded - offset - values.shape[1]]
        return F.pad(values.to(dtype), padding)

    step = dt.to(dtype)  # (B, L, H)
    weight = step if x is None else step * x.to(dtype).norm(dim=-1)  # (B, L, H): Δ_s (· ‖x_s‖)
    log_decay = on_grid(step * A.to(dtype), front).transpose(1, 2)  # (B, H, P): Δ_r A
    weight = on_grid(weight, front).transpose(1, 2)  # (B, H, P)
    B = on_grid(B, front).transpose(1, 2)  # (B, G, P, N)
    C = on_grid(C, first_query).transpose(1, 2)  # (B, G, P, N), zero before the queries
    segments = on_grid(F.pad(one_hot(segment_ids, num_segments, dtype), (0, 1), value=1.0), front)  # (B, P, S + 1)
    log_tiny = math.log(torch.finfo(dtype).tiny)
    pooled = log_decay.new_zeros(batch, heads, padded, num_segments + 1)  # (B, H, P, S + 1): Σ_s |α| last

    # Diagonal chunks: the decay from s to t inside a chunk, Σ_{r=s+1..t}, from the masked segment sum.
    query_chunks = range(first_query // chunk, math.ceil(end / chunk))
    per_step = max(1, block_elements // (batch * heads * chunk * chunk))
    for c0 in range(query_chunks.start, query_chunks.stop, per_step):
        c1 = min(c0 + per_step, query_chunks.stop)
        span = slice(c0 * chunk, c1 * chunk)
        in_chunks = lambda values, span=span, n=c1 - c0: values[:, :, span].unflatten(2, (n, chunk))  # noqa: E731
        decay = decay_factor(segment_sum(in_chunks(log_decay)), inplace=True)  # (B, H, n, T, T), 0 above the diagonal
        scores = in_chunks(C) @ in_chunks(B).transpose(-1, -2)  # (B, G, n, T, T): C_t · B_s
        block = _pool_alpha(
            scores, decay.mul_(in_chunks(weight)[..., None, :]), in_chunks(segments[:, None])[:, 0], signed
        )
        pooled[:, :, span] += block.flatten(2, 3)

    # Squares of `size` positions: sources [a - size, a), queries [a, a + size), for a = size, 3 size, 5 size, ...
    size = chunk
    while size < padded:
        as_pairs = lambda values, size=size: values.unflatten(2, (padded // (2 * size), 2, size))  # noqa: E731
        # The squares whose queries reach the query rows; then, inside them, the queries and sources whose decay
        # from the boundary does not underflow (a prefix of the queries, a suffix of the sources).
        lo, hi = first_query // (2 * size), math.ceil(end / (2 * size))
        pairs = as_pairs(log_decay)[:, :, lo:hi]  # (B, H, m, 2, size)
        query_side = pairs[:, :, :, 1].cumsum(-1)  # (B, H, m, size): Σ_{r=a..t}
        source_side = _exclusive_suffix_sum(pairs[:, :, :, 0])  # (B, H, m, size): Σ_{r=s+1..a-1}
        rows = min(_count_alive(query_side, log_tiny), size, end - (2 * lo + 1) * size)  # padding rows stay out
        sources = _count_alive(source_side, log_tiny)
        if rows and sources:
            query_scale = decay_factor(query_side[..., :rows], inplace=True)[..., None]  # (B, H, m, R, 1)
            source_weight = decay_factor(source_side[..., size - sources :], inplace=True)
            source_weight *= as_pairs(weight)[:, :, lo:hi, 0, size - sources :]  # (B, H, m, Sc)
            source_B = as_pairs(B)[:, :, lo:hi, 0, size - sources :]  # (B, G, m, Sc, N)
            source_segments = as_pairs(segments[:, None])[:, 0, lo:hi, 0, size - sources :]  # (B, m, Sc, S + 1)
            out = as_pairs(pooled)[:, :, lo:hi, 1]  # (B, H, m, size, S + 1) view of the query rows
            query_C = as_pairs(C)[:, :, lo:hi, 1]  # (B, G, m, size, N)
            per_piece = max(1, block_elements // max(1, batch * groups * (hi - lo) * sources))
            for r0 in range(0, rows, per_piece):
                r1 = min(r0 + per_piece, rows)
                scores = query_C[:, :, :, r0:r1] @ source_B.transpose(-1, -2)  # (B, G, m, r, Sc)
                block = _pool_source_weighted(scores, source_weight, source_segments, signed)  # (B, H, m, r, S + 1)
                out[:, :, :, r0:r1] += query_scale[:, :, :, r0:r1] * block
        size *= 2

    pooled = pooled[:, :, first_query:end]  # (B, H, Lq, S + 1)
    pooled, total = pooled[..., :-1], pooled[..., -1]
    if normalize:
        pooled = pooled / torch.where(total > 0, total, 1.0)[..., None]  # (B, H, Lq, S)
    if query_groups is None:
        return pooled.contiguous()
    return sum_query_groups(pooled, query_groups, num_query_groups)


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
    return evs_keep(evs_scores(embeds, num_tubelets), num_tubelets, rate)


def evs_keep(scores: torch.Tensor, num_tubelets: int, rate: float) -> torch.Tensor:
    """EVS keep mask from ``evs_scores``: the ``max(n, int(T * n * (1 - q)))`` highest, by the stable descending sort
    transformers' ``compute_retention_mask`` applies to the same values (ties keep the earlier token)."""
    tokens_per_tubelet = scores.numel() // num_tubelets
    num_kept = max(tokens_per_tubelet, int(num_tubelets * tokens_per_tubelet * (1 - rate)))
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    retention_mask = torch.zeros_like(scores, dtype=torch.bool)
    retention_mask[order[:num_kept]] = True
    return retention_mask
