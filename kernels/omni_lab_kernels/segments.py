"""Segment bookkeeping shared by every rung of the kernels: counting, one-hot pooling matrices, query groups.

Segment ids are plain integers per position (B, L) in [0, S): a segment may be empty or scattered over the
sequence. Query groups are the same for queries, with -1 meaning "ignore this query". Pooling a (…, L) quantity
over segments is a matrix product with the one-hot matrix (L, S), which keeps the sums exact (weights 0 or 1).

Pure torch; nothing here imports omni_lab or triton.
"""

from __future__ import annotations

import torch


def count_ids(ids: torch.Tensor, count: int | None, name: str) -> int:
    """Number of distinct slots an id tensor addresses: ``count`` if given, else ``max(ids) + 1`` (0 if empty).

    Args:
        ids: integer tensor of ids; -1 entries (ignored queries) are allowed and do not count.
        count: the caller's explicit count, or None.
        name: argument name for error messages.

    Returns:
        The number of slots, an int >= 0.
    """
    if count is not None:
        if count < 0:
            raise ValueError(f"{name}: the count must be >= 0, got {count}")
        return int(count)
    return int(ids.max()) + 1 if ids.numel() else 0


def one_hot(ids: torch.Tensor, count: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot matrix of integer ids; ids outside [0, count) (e.g. -1) give an all-zero row.

    Args:
        ids: (..., L) integer ids.
        count: number of columns S.
        dtype: floating dtype of the result.

    Returns:
        (..., L, S) tensor of 0/1 in ``dtype``.
    """
    columns = torch.arange(count, device=ids.device)
    return (ids[..., None] == columns).to(dtype)  # (..., L, S)


def sum_query_groups(mass: torch.Tensor, query_groups: torch.Tensor, num_query_groups: int) -> torch.Tensor:
    """Sum per-query rows into query groups (queries with group -1 are dropped).

    Args:
        mass: (B, H, L, S) per-query values.
        query_groups: (B, L) int64 group of each query in [0, Q), or -1.
        num_query_groups: Q.

    Returns:
        (B, H, Q, S) sums over the queries of each group (float32 or float64, as ``mass``).
    """
    groups = one_hot(query_groups, num_query_groups, mass.dtype)  # (B, L, Q)
    return groups.transpose(1, 2)[:, None] @ mass  # (B, 1, Q, L) @ (B, H, L, S) -> (B, H, Q, S)


def check_segment_ids(segment_ids: torch.Tensor, batch: int, length: int, num_segments: int, name: str) -> None:
    """Raise ValueError unless ``segment_ids`` is an integer (B, L) tensor with values in [0, S)."""
    if segment_ids.dtype.is_floating_point or segment_ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {segment_ids.dtype}")
    if tuple(segment_ids.shape) != (batch, length):
        raise ValueError(f"{name} must have shape (B, L) = {(batch, length)}, got {tuple(segment_ids.shape)}")
    if segment_ids.numel() and (int(segment_ids.min()) < 0 or int(segment_ids.max()) >= num_segments):
        raise ValueError(
            f"{name} must lie in [0, {num_segments}); got values in "
            f"[{int(segment_ids.min())}, {int(segment_ids.max())}]"
        )


def check_query_groups(query_groups: torch.Tensor, batch: int, length: int, num_query_groups: int) -> None:
    """Raise ValueError unless ``query_groups`` is an integer (B, L) tensor with values in [-1, Q)."""
    if query_groups.dtype.is_floating_point or query_groups.dtype == torch.bool:
        raise ValueError(f"query_groups must be an integer tensor, got {query_groups.dtype}")
    if tuple(query_groups.shape) != (batch, length):
        raise ValueError(f"query_groups must have shape (B, L) = {(batch, length)}, got {tuple(query_groups.shape)}")
    if query_groups.numel() and (int(query_groups.min()) < -1 or int(query_groups.max()) >= num_query_groups):
        raise ValueError(f"query_groups must lie in [-1, {num_query_groups}) (-1 = ignore the query)")
