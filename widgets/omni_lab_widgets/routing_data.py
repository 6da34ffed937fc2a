"""What `ExpertRoutingView` draws, as plain arrays and tables: expert load per MoE layer overall and per modality,
routing entropy, the token strip (top expert of every position, binned for long runs), and the tokens its menu offers.
No plotly.

Loads and entropies are `Routing.load` / `Routing.entropy`; one token's experts are `Routing.for_token`; positions are
read through `TokenMap.by_position` and `TokenMap.answer_positions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omni_lab.modalities import MEDIA, MODALITIES

MAX_TOKEN_CHOICES = 24


def expert_loads(routing) -> tuple[list[int], dict[str, np.ndarray]]:
    """Expert load per MoE layer, overall and per modality, from `routing.load(by="modality")`.

    Returns:
        (MoE layer numbers, {group: `(layers, experts)` int64 top-k pick counts}); group "all" plus each modality
        present, in `MODALITIES` order.
    """
    load = routing.load(by="modality")
    layers = list(routing.layers)
    slot = {layer: index for index, layer in enumerate(layers)}
    loads: dict[str, np.ndarray] = {}
    present = set(load["modality"])
    for name in [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES)):
        part = load[load["modality"] == name]
        matrix = np.zeros((len(layers), routing.num_experts), dtype=np.int64)
        matrix[part["layer"].map(slot).to_numpy(), part["expert"].to_numpy()] = part["count"].to_numpy()
        loads[name] = matrix
    total = sum(loads.values()) if loads else np.zeros((len(layers), routing.num_experts), dtype=np.int64)
    return layers, {"all": total, **loads}


def routing_entropy(routing):
    """Entropy (bits) of the expert load per MoE layer, overall ("all") and per modality.

    Returns:
        DataFrame: layer, group, entropy_bits.
    """
    import pandas as pd

    per_modality = routing.entropy(by="modality").rename(columns={"modality": "group"})
    overall = routing.entropy(by="all")
    return pd.concat([overall, per_modality], ignore_index=True)[["layer", "group", "entropy_bits"]]


@dataclass
class ExpertStrip:
    """Top expert of every position (or bin of positions) at every MoE layer.

    Attributes:
        layers: MoE layer numbers (rows).
        expert: `(layers, columns)` int: the top-weighted expert of the column's position (for a bin, the one most
            positions of the bin chose first); -1 where the layer saw none of them (an in-LLM reducer dropped them).
        share: `(layers, columns)` float: share of the bin's positions whose top expert that is (1 when unbinned).
        start, stop: `(columns,)` first and one-past-last LLM position of each column.
        modality: `(columns,)` modality of the column's positions ("mixed" when a bin spans several).
    """

    layers: list[int]
    expert: np.ndarray
    share: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    modality: np.ndarray

    @property
    def binned(self) -> bool:
        return bool((self.stop - self.start > 1).any())


def top_expert_strip(routing, max_columns: int = 1024) -> ExpertStrip:
    """The token strip of `ExpertRoutingView`: positions coloured by top expert, binned beyond `max_columns`.

    Args:
        routing: a `Routing`.
        max_columns: most columns to return; longer runs pool consecutive positions into equal bins.
    """
    experts = np.asarray(routing.experts)  # (L, P, k)
    weights = np.asarray(routing.weights, dtype=np.float32)
    layers, positions, _ = experts.shape
    top = np.take_along_axis(experts, np.nan_to_num(weights, nan=0.0).argmax(-1)[..., None], axis=-1)[..., 0]  # (L, P)
    present = top >= 0  # False where an in-LLM reducer dropped the position before the layer (experts -1)
    modality = routing.token_map.by_position("modality")[:positions]
    columns = min(positions, max(1, int(max_columns)))
    edges = np.linspace(0, positions, columns + 1).round().astype(np.int64)
    start, stop = edges[:-1], edges[1:]
    if columns == positions:
        return ExpertStrip(list(routing.layers), top, present.astype(np.float64), start, stop, modality.astype(object))
    column_of = np.repeat(np.arange(columns), stop - start)  # (P,)
    expert = np.zeros((layers, columns), dtype=np.int64)
    share = np.zeros((layers, columns))
    sizes = (stop - start).astype(np.float64)
    for slot in range(layers):
        seen = present[slot]
        counts = np.bincount(
            column_of[seen] * routing.num_experts + top[slot, seen], minlength=columns * routing.num_experts
        ).reshape(columns, routing.num_experts)
        expert[slot] = np.where(counts.max(1) > 0, counts.argmax(1), -1)
        share[slot] = counts.max(1) / sizes
    labels = np.empty(columns, dtype=object)
    for index, (first, last) in enumerate(zip(start, stop, strict=True)):
        kinds = set(modality[first:last].tolist())
        labels[index] = kinds.pop() if len(kinds) == 1 else "mixed"
    return ExpertStrip(list(routing.layers), expert, share, start, stop, labels)


def position_label(token_map, position: int) -> str:
    """ "position 12 · video 0 · 'x'" for a hover, a menu entry or a title."""
    rows = token_map.position_rows()
    if not 0 <= position < len(rows):
        return f"position {position}"
    row = rows[position]
    modality = token_map["modality"][row]
    if modality in MEDIA:
        return f"position {position} · {modality} {token_map['item'][row]}"
    text = str(token_map["text"][row])
    return f"position {position} · {modality}" + (f" · {text!r}" if text else "")


def token_choices(token_map, positions: int) -> list[int]:
    """The positions the token menu offers (at most `MAX_TOKEN_CHOICES`): the answer's tokens, the first position of
    each media item, and the prompt's last position.

    Args:
        token_map: the run's token map.
        positions: how many LLM positions the routing covers.
    """
    answer = token_map.answer_positions(limit=positions).tolist()
    modality = token_map.by_position("modality")[:positions]
    item = token_map.by_position("item")[:positions]
    firsts = []
    seen = set()
    for position, (name, index) in enumerate(zip(modality, item, strict=True)):
        if name in MEDIA and (name, index) not in seen:
            seen.add((name, index))
            firsts.append(position)
    last_prompt = positions - len(answer) - 1
    return list(dict.fromkeys(answer + firsts + ([last_prompt] if last_prompt >= 0 else [])))[:MAX_TOKEN_CHOICES]


def coactivation_matrices(routing) -> tuple[list[int], np.ndarray]:
    """(MoE layers, `(layers, experts, experts)` int64): how many positions chose both experts at each layer
    (symmetric; the diagonal is each expert's own pick count), from `Routing.coactivation`."""
    table = routing.coactivation(by="all")
    layers = list(routing.layers)
    matrices = np.zeros((len(layers), routing.num_experts, routing.num_experts), dtype=np.int64)
    slot = {layer: index for index, layer in enumerate(layers)}
    index = table["layer"].map(slot).to_numpy()
    matrices[index, table.expert.to_numpy(), table.other.to_numpy()] = table["count"].to_numpy()
    matrices[index, table.other.to_numpy(), table.expert.to_numpy()] = table["count"].to_numpy()
    load = routing.load(by="all")
    matrices[load.layer.map(slot).to_numpy(), load.expert.to_numpy(), load.expert.to_numpy()] = load["count"].to_numpy()
    return layers, matrices


def top_paths(routing, top: int = 8):
    """The most frequent routes (top expert per MoE layer) per modality, from `Routing.paths`: DataFrame modality,
    path, count, share, rank."""
    return routing.paths(top=top, by="modality")
