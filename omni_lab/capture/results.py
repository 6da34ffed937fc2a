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
from ..token_map import TokenMap

if TYPE_CHECKING:
    import pandas as pd

GROUP_BY = ("all", "modality", "item")


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
        experts: `(layers, positions, k)` int64 chosen expert ids (chosen with the correction bias).
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

    def _groups(self, by: str) -> np.ndarray:
        """Group name of every routed position: its modality, "{modality} {item}" (media) or "all"."""
        positions = self.experts.shape[1]
        modality = self.token_map.by_position("modality")[:positions]
        if by == "all":
            return np.full(positions, "all", dtype=object)
        if by == "item":
            items = self.token_map.by_position("item")[:positions]
            return _item_labels(modality, items)
        return modality

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

        if by not in GROUP_BY:
            raise OmniLabInputError(f"by={by!r}: use 'modality', 'item' or 'all'")
        groups = self._groups(by)
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
        table = load.groupby(["layer", key])["share"].apply(lambda s: entropy_bits(s.to_numpy()))
        return table.rename("entropy_bits").reset_index()

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

    def compare(self, other: Routing, by: str = "all"):
        """Per MoE layer, the share of prompt tokens (matched through the token maps' rows) whose expert *set* differs.

        Tokens are matched by token-map row, so a run with a reducer compares its surviving tokens with the same
        tokens of an unreduced run (the routing shift a reduction causes).

        Args:
            other: the routing of another run of the same prompt.
            by: "all" (one row per layer), "modality" (a row for "all" and one per modality) or "item"
                (a row for "all" and one per media item / text span).
        Returns:
            DataFrame: layer, [modality | item], compared, changed, share_changed.
        """
        import pandas as pd

        if by not in GROUP_BY:
            raise OmniLabInputError(f"by={by!r}: use 'all', 'modality' or 'item'")
        if self.layers != other.layers:
            raise OmniLabInputError("the two runs have different MoE layers; compare runs of the same model")
        rows, mine, theirs = _matched_positions(self.token_map, other.token_map)
        groups = {"all": np.ones(len(rows), dtype=bool)}
        if by != "all":
            modality = self.token_map["modality"][rows]
            labels = modality if by == "modality" else _item_labels(modality, self.token_map["item"][rows])
            groups.update({str(label): labels == label for label in dict.fromkeys(labels)})
        table = []
        for slot, layer in enumerate(self.layers):
            left = self.experts[slot, torch.from_numpy(mine)].sort(-1).values
            right = other.experts[slot, torch.from_numpy(theirs)].sort(-1).values
            changed = (left != right).any(-1).numpy()  # (matched,)
            for label, mask in groups.items():
                entry = {"layer": layer}
                if by != "all":
                    entry[by] = label
                compared, count = int(mask.sum()), int(changed[mask].sum())
                entry.update(compared=compared, changed=count, share_changed=count / max(1, compared))
                table.append(entry)
        return pd.DataFrame(table)


def _item_labels(modality: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Group labels: "{modality} {item}" for media tokens, the modality alone for text and generated tokens."""
    return np.array(
        [m if m in ("text", "generated") else f"{m} {i}" for m, i in zip(modality, items, strict=True)], dtype=object
    )


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
            the mean over its queries).
        segments: DataFrame describing each segment (label, modality, item, tubelet, window, region).
        queries: LLM position of each query row, or the group names when queries were grouped.
        token_map: the run's token map.
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
        routing: `Routing`, when captured.
        attention_mass, mamba_mass: `ModalityMass`, when captured.
        residual: DataFrame (layer, kind, position, residual_norm, mixer_norm, cosine), when captured.
        cache: {hook name: tensor} of the activations asked for.
        llm_drop: the in-LLM reducer's decision, when one acted.
    """

    routing: Routing | None = None
    attention_mass: ModalityMass | None = None
    mamba_mass: ModalityMass | None = None
    residual: pd.DataFrame | None = None
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    llm_drop: LLMDrop | None = None
