"""What captures return: `Routing` (expert choices) and `ModalityMass` (attention / Mamba mass per segment).

Both hold tensors indexed by LLM position plus the token map, so every number can be traced to its pixels, frames or
seconds; both turn into pandas DataFrames for analysis and plotting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import OmniLabInputError


@dataclass
class Routing:
    """Expert routing of every MoE layer at every LLM position, exactly as the model used it.

    Attributes:
        layers: LLM layer index of each MoE layer, in model order.
        experts: `(layers, positions, k)` int64 chosen expert ids (chosen with the correction bias).
        weights: `(layers, positions, k)` float32 weights applied to them (sigmoid scores without the bias,
            normalised over the k, times the routed scaling factor).
        scores: `(layers, positions, experts)` float32 sigmoid scores, when asked for (`Routing(scores=True)`).
        shared_norm: `(layers, positions)` L2 norm of the shared expert's output.
        token_map: the run's token map; position p is `token_map.df[token_map.df.position == p]`.
        num_experts: routed experts per layer.
    """

    layers: list[int]
    experts: torch.Tensor
    weights: torch.Tensor
    shared_norm: torch.Tensor
    token_map: object
    num_experts: int
    scores: torch.Tensor | None = None

    def _modalities(self) -> np.ndarray:
        df = self.token_map.df
        rows = df[df.kept].sort_values("position")
        return rows.modality.to_numpy()[: self.experts.shape[1]]

    def _layer_slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise OmniLabInputError(f"layer {layer} is not a MoE layer; MoE layers: {self.layers}")
        return self.layers.index(layer)

    def load(self, by: str = "modality"):
        """Expert load as a long DataFrame: layer, expert, group, count (top-k picks), share, weight (summed).

        Args:
            by: "modality" (one group per modality), "item" (modality + item) or "all".
        """
        import pandas as pd

        if by not in ("modality", "item", "all"):
            raise OmniLabInputError(f"by={by!r}: use 'modality', 'item' or 'all'")
        modality = self._modalities()
        if by == "item":
            df = self.token_map.df
            items = df[df.kept].sort_values("position")["item"].to_numpy()[: len(modality)]
            groups = np.array(
                [f"{m} {i}" if m not in ("text", "generated") else m for m, i in zip(modality, items, strict=True)]
            )
        elif by == "all":
            groups = np.full(len(modality), "all")
        else:
            groups = modality
        frames = []
        experts = self.experts.numpy()
        weights = self.weights.float().numpy()
        for slot, layer in enumerate(self.layers):
            for group in dict.fromkeys(groups):
                mask = groups == group
                chosen = experts[slot, mask].reshape(-1)
                counts = np.bincount(chosen, minlength=self.num_experts)
                summed = np.bincount(chosen, weights=weights[slot, mask].reshape(-1), minlength=self.num_experts)
                frames.append(
                    pd.DataFrame(
                        {
                            "layer": layer,
                            "expert": np.arange(self.num_experts),
                            by if by != "all" else "group": group,
                            "count": counts,
                            "share": counts / max(1, counts.sum()),
                            "weight": summed,
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)

    def entropy(self, by: str = "modality"):
        """Entropy (bits) of the expert-load distribution per layer and group: high = spread, low = specialised."""
        load = self.load(by=by)
        key = by if by != "all" else "group"

        def bits(share):
            share = share[share > 0]
            return float(-(share * np.log2(share)).sum())

        table = load.groupby(["layer", key])["share"].apply(lambda s: bits(s.to_numpy())).rename("entropy_bits")
        return table.reset_index()

    def for_token(self, position: int):
        """The experts and weights of one LLM position at every MoE layer (a DataFrame)."""
        import pandas as pd

        if not 0 <= position < self.experts.shape[1]:
            raise OmniLabInputError(f"position {position} is outside 0..{self.experts.shape[1] - 1}")
        rows = []
        for slot, layer in enumerate(self.layers):
            for rank, (expert, weight) in enumerate(
                zip(self.experts[slot, position].tolist(), self.weights[slot, position].tolist(), strict=True)
            ):
                rows.append({"layer": layer, "rank": rank, "expert": expert, "weight": weight})
        return pd.DataFrame(rows)

    def compare(self, other: Routing):
        """Per MoE layer, the share of positions (matched through the token maps' rows) whose expert *set* differs.

        Positions are matched by token-map row, so a run with a reducer compares its surviving tokens with the same
        tokens of an unreduced run. Returns a DataFrame: layer, compared, changed, share_changed.
        """
        import pandas as pd

        if self.layers != other.layers:
            raise OmniLabInputError("the two runs have different MoE layers; compare runs of the same model")
        mine, theirs = _row_positions(self.token_map), _row_positions(other.token_map)
        common = sorted(set(mine) & set(theirs))
        a = torch.tensor([mine[row] for row in common], dtype=torch.long)
        b = torch.tensor([theirs[row] for row in common], dtype=torch.long)
        rows = []
        for slot, layer in enumerate(self.layers):
            left = self.experts[slot, a].sort(-1).values
            right = other.experts[slot, b].sort(-1).values
            changed = int((left != right).any(-1).sum())
            rows.append(
                {
                    "layer": layer,
                    "compared": len(common),
                    "changed": changed,
                    "share_changed": changed / max(1, len(common)),
                }
            )
        return pd.DataFrame(rows)


def _row_positions(token_map) -> dict[int, int]:
    df = token_map.df
    prompt = df[(df.position >= 0) & (df.modality != "generated")]
    return dict(zip(prompt.index.tolist(), prompt.position.tolist(), strict=True))


@dataclass
class ModalityMass:
    """Share of attention (or Mamba) mass per layer × head × query × segment.

    Attributes:
        kind: "attention" or "mamba".
        mass: {layer: `(heads, queries, segments)` float32}; each query row sums to 1 over segments (a group row is
            the mean over its queries).
        segments: DataFrame describing each segment (label, modality, item, tubelet, window, region).
        queries: LLM position of each query row, or the group names when queries were grouped.
        token_map: the run's token map.
    """

    kind: str
    mass: dict[int, torch.Tensor]
    segments: object
    queries: list
    token_map: object
    options: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.mass)

    def by_modality(self) -> dict[int, torch.Tensor]:
        """{layer: `(heads, queries, modalities)`} summing segments of one modality; modality order in `.modalities`."""
        names = self.modalities
        index = torch.tensor([names.index(m) for m in self.segments.modality], dtype=torch.long)
        out = {}
        for layer, values in self.mass.items():
            pooled = values.new_zeros(*values.shape[:-1], len(names))
            out[layer] = pooled.index_add_(-1, index, values)
        return out

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(self.segments.modality))

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
            if reduce_queries == "mean":
                values = values.mean(1, keepdim=True)
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


def combine_in_layer_order(*masses: ModalityMass) -> list[tuple[int, str, torch.Tensor]]:
    """(layer, kind, tensor) for attention and Mamba mass together, in the model's layer order (same segments)."""
    entries = [(layer, mass.kind, mass.mass[layer]) for mass in masses if mass is not None for layer in mass.layers]
    return sorted(entries, key=lambda entry: entry[0])
