"""What captures return: `Routing` (expert choices), `ModalityMass` (attention / Mamba mass per segment), and
`CaptureResults`, everything one capture session produced (with `LLMDrop`, an in-LLM reducer's decision).

`Routing` and `ModalityMass` hold tensors indexed by LLM position plus the token map, so every number can be traced
to its pixels, frames or seconds; both turn into pandas DataFrames for analysis and plotting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..partition import GroupBy
from ..token_map import TokenMap

if TYPE_CHECKING:
    import pandas as pd


def entropy_bits(shares) -> float:
    """Shannon entropy in bits of a distribution given as shares (zeros ignored; shares should sum to 1).

    Args:
        shares: array-like of non-negative shares.
    Returns:
        `-sum(p * log2 p)` over the non-zero shares.
    """
    shares = np.asarray(shares, dtype=np.float64)
    shares = shares[shares > 0]
    return float(-(shares * np.log2(shares)).sum())


@dataclass
class Routing:
    """Expert routing of every MoE layer at every LLM position, exactly as the model used it.

    Attributes:
        layers: LLM layer index of each MoE layer, in model order.
        experts: `(layers, positions, k)` int64 chosen expert ids (chosen with the correction bias); -1 at a layer
            a position did not reach (an in-LLM reducer dropped it after an earlier layer; weights, scores and
            shared norm are NaN there). Every table below counts only the positions a layer saw.
        weights: `(layers, positions, k)` float32 weights applied to them (sigmoid scores without the bias,
            normalised over the k, times the routed scaling factor).
        scores: `(layers, positions, experts)` float32 sigmoid scores, when asked for (`Routing(scores=True)`).
        shared_norm: `(layers, positions)` L2 norm of the shared expert's output.
        token_map: the run's token map; position p is the row `token_map.position_rows()[p]`.
        num_experts: routed experts per layer.
    """

    layers: list[int]
    experts: torch.Tensor
    weights: torch.Tensor
    shared_norm: torch.Tensor
    token_map: TokenMap
    num_experts: int
    scores: torch.Tensor | None = None
    _loads: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # `load` per hashable `by`

    def _groups(self, by) -> tuple[np.ndarray, str]:
        """(group label of every routed position, the label column's name): see `load`."""
        positions = self.experts.shape[1]
        labels, column = row_groups(self.token_map, by)
        return labels[self.token_map.position_rows()[:positions]], column

    def _layer_slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise OmniLabInputError(f"layer {layer} is not a MoE layer; MoE layers: {self.layers}")
        return self.layers.index(layer)

    def load(self, by="modality"):
        """Expert load as a long DataFrame: layer, expert, group, count (top-k picks), share, weight (summed).

        Args:
            by: "all" (one group), or any grouping of the one partition (`omni_lab.partition`): "modality" (the
                default), "item", "tubelet", "frame"-free keys such as "region" or "audio_window", a tuple of keys,
                {name: mask} groups or a `GroupBy`. The group column is named after a single key ("modality",
                "item", "region"...), else "group".
        """
        try:
            cached = self._loads.get(by)
        except TypeError:  # {name: mask} groups are not hashable: computed each time
            return self._load(by)
        if cached is None:
            cached = self._loads[by] = self._load(by)
        return cached.copy()  # a caller may change its table; the next one gets the original

    def _load(self, by):
        import pandas as pd

        groups, column = self._groups(by)
        codes, names = pd.factorize(pd.Series(groups, dtype=object), sort=False)  # groups in order of appearance
        layers, experts_n, groups_n = len(self.layers), self.num_experts, len(names)
        experts = self.experts.numpy()
        weights = self.weights.float().numpy()
        counts = np.zeros((layers, groups_n * experts_n), dtype=np.int64)
        summed = np.zeros((layers, groups_n * experts_n))
        for slot in range(layers):  # one bincount per layer over (group, expert) pairs
            mask = self.present(slot)
            keys = (codes[mask][:, None] * experts_n + experts[slot, mask]).reshape(-1)
            counts[slot] = np.bincount(keys, minlength=groups_n * experts_n)
            summed[slot] = np.bincount(keys, weights=weights[slot, mask].reshape(-1), minlength=groups_n * experts_n)
        counts = counts.reshape(layers, groups_n, experts_n)
        labels = np.empty(groups_n, dtype=object)
        labels[:] = list(names)  # tuples stay whole labels
        return pd.DataFrame(
            {
                "layer": np.repeat(np.asarray(self.layers), groups_n * experts_n),
                "expert": np.tile(np.arange(experts_n), layers * groups_n),
                column: pd.Series(np.tile(np.repeat(labels, experts_n), layers)).infer_objects(),
                "count": counts.reshape(-1),
                "share": (counts / np.maximum(1, counts.sum(-1, keepdims=True))).reshape(-1),
                "weight": summed.reshape(-1),
            }
        )

    def entropy(self, by="modality"):
        """Entropy (bits) of the expert-load distribution per layer and group: high = spread, low = specialised.

        Args:
            by: as `load`.
        """
        load = self.load(by=by)
        key = load.columns[2]  # the group column `load` names
        table = load.groupby(["layer", key])["share"].apply(lambda s: entropy_bits(s.to_numpy()))
        return table.rename("entropy_bits").reset_index()

    def present(self, slot: int) -> np.ndarray:
        """`(positions,)` bool: the positions MoE layer `self.layers[slot]` routed (False where an in-LLM reducer had
        dropped them before it)."""
        return (self.experts[slot, :, 0] >= 0).numpy()

    def for_token(self, position: int):
        """The experts and weights of one LLM position at every MoE layer (a DataFrame)."""
        import pandas as pd

        if not 0 <= position < self.experts.shape[1]:
            raise OmniLabInputError(f"position {position} is outside 0..{self.experts.shape[1] - 1}")
        rows = []
        for slot, layer in enumerate(self.layers):
            if self.experts[slot, position, 0] < 0:
                continue  # dropped before this layer
            for rank, (expert, weight) in enumerate(
                zip(self.experts[slot, position].tolist(), self.weights[slot, position].tolist(), strict=True)
            ):
                rows.append({"layer": layer, "rank": rank, "expert": expert, "weight": weight})
        return pd.DataFrame(rows, columns=["layer", "rank", "expert", "weight"])

    def coactivation(self, by="all"):
        """Which experts fire together: for every MoE layer and group, how many positions chose both experts of a
        pair among their top-k.

        Args:
            by: "all" or a grouping of the one partition, as `load` takes.
        Returns:
            DataFrame: layer, [group column], expert, other (expert < other), count, share (of the group's positions
            at that layer); only pairs that fired together.
        """
        import pandas as pd

        groups, column = self._groups(by)
        experts = self.experts.numpy()
        size = self.num_experts
        frames = []
        for slot, layer in enumerate(self.layers):
            for group in dict.fromkeys(groups):
                chosen = experts[slot, (groups == group) & self.present(slot)]  # (positions, k)
                hits = np.zeros((len(chosen), size), dtype=np.int64)
                np.put_along_axis(hits, chosen, 1, axis=1)  # (positions, experts) 0/1
                together = hits.T @ hits  # (experts, experts)
                first, second = np.triu_indices(size, k=1)
                counts = together[first, second]
                fired = counts > 0
                frames.append(
                    pd.DataFrame(
                        {
                            "layer": layer,
                            column: group,
                            "expert": first[fired],
                            "other": second[fired],
                            "count": counts[fired],
                            "share": counts[fired] / max(1, len(chosen)),
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True).sort_values(["layer", column, "count"], ascending=[True, True, False],
                                                                 kind="stable", ignore_index=True)  # fmt: skip

    def paths(self, top: int = 10, by="all"):
        """The most frequent routes tokens take through the MoE layers: each position's top-weighted expert at every
        layer, in model order ("3>7>1>12"), counted per group.

        Args:
            top: routes kept per group.
            by: "all" or a grouping of the one partition, as `load` takes.
        Returns:
            DataFrame: [group column], path, count, share (of the group's positions), rank.
        """
        import pandas as pd

        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise OmniLabInputError(f"top={top!r}: give a number of routes >= 1")
        groups, column = self._groups(by)
        weights = torch.nan_to_num(self.weights, nan=0.0)
        leading = self.experts.gather(-1, weights.argmax(-1, keepdim=True))[..., 0].numpy()  # (layers, positions)
        # a layer a position did not reach (dropped inside the LLM) reads "-"
        routes = np.array(
            [
                ">".join(str(int(e)) if e >= 0 else "-" for e in leading[:, position])
                for position in range(leading.shape[1])
            ]
        )
        frames = []
        for group in dict.fromkeys(groups):
            mine = routes[groups == group]
            names, counts = np.unique(mine, return_counts=True)
            order = np.argsort(-counts, kind="stable")[:top]
            frames.append(
                pd.DataFrame(
                    {
                        column: group,
                        "path": names[order],
                        "count": counts[order],
                        "share": counts[order] / max(1, len(mine)),
                        "rank": np.arange(len(order)),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def compare(self, other: Routing, by="all"):
        """Per MoE layer, the share of prompt tokens (matched through the token maps' rows) whose expert *set* differs.

        Tokens are matched by token-map row, so a run with a reducer compares its surviving tokens with the same
        tokens of an unreduced run (the routing shift a reduction causes).

        Args:
            other: the routing of another run of the same prompt.
            by: "all" (one row per layer), or a grouping as `load` takes ("modality", "item", "region"...): a row
                for "all" and one per group.
        Returns:
            DataFrame: layer, [group column], compared, changed, share_changed.
        """
        import pandas as pd

        if self.layers != other.layers:
            raise OmniLabInputError("the two runs have different MoE layers; compare runs of the same model")
        rows, mine, theirs = _matched_positions(self.token_map, other.token_map)
        groups = {"all": np.ones(len(rows), dtype=bool)}
        column = None
        if not (isinstance(by, str) and by == "all"):
            labels, column = row_groups(self.token_map, by)
            labels = labels[rows]
            groups.update({str(label): labels == label for label in dict.fromkeys(labels)})
        table = []
        for slot, layer in enumerate(self.layers):
            left = self.experts[slot, torch.from_numpy(mine)].sort(-1).values
            right = other.experts[slot, torch.from_numpy(theirs)].sort(-1).values
            changed = (left != right).any(-1).numpy()  # (matched,)
            seen = self.present(slot)[mine] & other.present(slot)[theirs]  # both runs routed it at this layer
            for label, mask in groups.items():
                entry = {"layer": layer}
                if column is not None:
                    entry[column] = label
                compared, count = int((mask & seen).sum()), int(changed[mask & seen].sum())
                entry.update(compared=compared, changed=count, share_changed=count / max(1, compared))
                table.append(entry)
        return pd.DataFrame(table)


def row_groups(token_map, by) -> tuple[np.ndarray, str]:
    """(the group label of every token-map row, the label column's name) for `by`: "all", or a grouping of the one
    partition (units must share no row). Rows in no unit (user groups) are labelled "rest"."""
    if isinstance(by, str) and by == "all":
        return np.full(len(token_map), "all", dtype=object), "group"
    units = GroupBy.of(by).apply(token_map).complete()
    units.require_disjoint("grouping routing")
    labels = np.asarray(units.labels, dtype=object)[units.row_ids()]
    column = by if isinstance(by, str) and not isinstance(by, dict) else "group"
    return labels, column


def _matched_positions(mine: TokenMap, theirs: TokenMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, position in `mine`, position in `theirs`) of the prompt rows both token maps fed to the LLM."""
    prompt = min(len(mine), len(theirs))  # the same prompt: its rows come first in both, generated rows after
    rows = np.arange(prompt)
    both = (mine["position"][:prompt] >= 0) & (theirs["position"][:prompt] >= 0)
    both &= (mine["modality"][:prompt] != "generated") & (theirs["modality"][:prompt] != "generated")
    rows = rows[both]
    return rows, mine["position"][rows], theirs["position"][rows]


@dataclass
class ModalityMass:
    """Share of attention (or Mamba) mass per layer × head × query × segment.

    Attributes:
        kind: "attention" or "mamba".
        mass: {layer: `(heads, queries, segments)` float32}; each query row sums to 1 over segments (a group row is
            the mean over its queries). After an in-LLM reducer's drop, a dropped query's row is NaN at later layers
            (a group row the mean over its surviving queries) and dropped keys get no mass.
        segments: one row per segment, a unit of the one partition (`Partition.table()`: label, modality, item,
            tubelet, frame, region, window, t0, t1, rows).
        queries: LLM position of each query row, or the group names when queries were grouped (`grouped`).
        token_map: the run's token map.
        options: the capture's options (segments, grid, seconds, queries, layers).
    """

    kind: str
    mass: dict[int, torch.Tensor]
    segments: pd.DataFrame
    queries: list
    token_map: TokenMap
    options: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.mass)

    @property
    def grouped(self) -> bool:
        """The query rows are named groups (captured with `queries=` "answer", "text", "modality" or masks), not
        one row per LLM position."""
        return self.options.get("queries") not in (None, "all")

    def query_rows(self, query="answer") -> tuple[np.ndarray, str]:
        """Which rows of `mass[layer]` (axis 1) a query names, and a label for titles.

        Args:
            query: "answer" (the generated tokens: their group, or their positions), "all", a group name, an LLM
                position (int) or a list of positions.
        Returns:
            (row indices into `queries`, label). "answer" falls back to the last query row when the run generated
            nothing the capture saw.
        Raises:
            OmniLabInputError: a query this capture has no row for.
        """
        queries = list(self.queries)
        if isinstance(query, str) and query == "all":
            return np.arange(len(queries)), "all queries"
        if isinstance(query, str) and query == "answer":
            if self.grouped:
                for name in ("answer", "generated"):
                    if name in queries:
                        return np.array([queries.index(name)]), "answer tokens"
                return np.array([len(queries) - 1]), f"query group {queries[-1]!r}"
            rows = np.flatnonzero(np.isin(np.asarray(queries, dtype=np.int64), self.token_map.answer_positions()))
            if len(rows):
                return rows, f"answer tokens ({len(rows)})"
            return np.array([len(queries) - 1]), f"last position ({queries[-1]})"
        if isinstance(query, str):
            if query not in queries:
                raise OmniLabInputError(f"query {query!r}: this capture has query rows {queries[:8]}")
            return np.array([queries.index(query)]), f"query group {query!r}"
        if self.grouped:
            raise OmniLabInputError(
                f"query {query!r}: this mass was captured per query group {queries}; pass a group name, or capture "
                "with queries=None for per-position rows"
            )
        wanted = np.atleast_1d(np.asarray(query, dtype=np.int64))
        positions = np.asarray(queries, dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        found = np.clip(np.searchsorted(positions[order], wanted), 0, max(0, len(order) - 1))
        hit = (positions[order][found] == wanted) if len(order) else np.zeros(len(wanted), dtype=bool)
        if not hit.all():
            raise OmniLabInputError(
                f"positions {wanted[~hit].tolist()} have no query row (rows cover positions 0..{len(queries) - 1})"
            )
        rows = order[found]
        return rows, f"position {int(wanted[0])}" if len(wanted) == 1 else f"{len(wanted)} positions"

    def by_modality(self) -> dict[int, torch.Tensor]:
        """{layer: `(heads, queries, modalities)`} summing segments of one modality; modality order in `.modalities`."""
        import pandas as pd

        codes, names = pd.factorize(self.segments["modality"].to_numpy(dtype=object), sort=False)
        index = torch.from_numpy(codes.astype(np.int64))
        out = {}
        for layer, values in self.mass.items():
            pooled = values.new_zeros(*values.shape[:-1], len(names))
            out[layer] = pooled.index_add_(-1, index, values)
        return out

    @property
    def modalities(self) -> list[str]:
        """The segments' modalities in order of appearance (the last axis of `by_modality`)."""
        import pandas as pd

        return pd.unique(self.segments["modality"].to_numpy(dtype=object)).tolist()

    def to_frame(self, reduce_heads: str = "mean", reduce_queries: str | None = None):
        """Long DataFrame: layer, kind, [head], query, segment, label, modality, mass.

        Args:
            reduce_heads: "mean" over heads, or None to keep a row per head.
            reduce_queries: "mean" over query rows, or None.
        """
        import pandas as pd

        frames = []
        for layer in self.layers:
            values = self.mass[layer]
            if reduce_heads == "mean":
                values = values.mean(0, keepdim=True)
            if reduce_queries == "mean":  # over the queries present (a query dropped inside the LLM is NaN)
                values = values.nanmean(1, keepdim=True)
            heads, queries, segments = values.shape
            h, q, s = np.meshgrid(np.arange(heads), np.arange(queries), np.arange(segments), indexing="ij")
            frame = pd.DataFrame(
                {
                    "layer": layer,
                    "kind": self.kind,
                    "head": h.ravel(),
                    "query": np.asarray(self.queries, dtype=object)[q.ravel()] if reduce_queries is None else "mean",
                    "segment": s.ravel(),
                    "mass": values.reshape(-1).numpy(),
                }
            )
            if reduce_heads == "mean":
                frame = frame.drop(columns="head")
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        return table.join(self.segments[["label", "modality"]], on="segment")


def combine_in_layer_order(*masses: ModalityMass | None) -> list[tuple[int, str, ModalityMass]]:
    """(layer, kind, the `ModalityMass` holding it) for attention and Mamba mass together, in the model's layer order
    (None entries are skipped); `mass.mass[layer]` is the layer's `(heads, queries, segments)` tensor."""
    entries = [(layer, mass.kind, mass) for mass in masses if mass is not None for layer in mass.layers]
    return sorted(entries, key=lambda entry: entry[0])


@dataclass(frozen=True)
class LLMDrop:
    """An in-LLM reducer's decision (FastV): which prompt positions left the sequence after which layer.

    Attributes:
        layer: the LLM layer after which the dropped positions left.
        keep: `(prompt positions,)` bool: the position stayed.
        scores: `(prompt positions,)` float: the reducer's score (NaN for positions that did not compete).
    """

    layer: int
    keep: np.ndarray
    scores: np.ndarray


@dataclass
class CaptureResults:
    """Everything one capture session produced (`CaptureSession.finish`).

    Attributes:
        captures: {capture name: its kind's result} (`Routing`, `ModalityMass`, a residual DataFrame, or what a
            user kind returns).
        cache: {hook name: tensor} of the activations asked for.
        llm_drop: the in-LLM reducer's decision, when one acted.
    """

    captures: dict = field(default_factory=dict)
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    llm_drop: LLMDrop | None = None
