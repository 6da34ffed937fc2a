"""What `ModalityAttentionView` draws, as plain tables: a query's attention and Mamba mass over modalities at every
captured layer in the model's order, per head and per segment at one layer, and the queries its menu offers.
No plotly.

Layer order is `combine_in_layer_order(run.attention_mass, run.mamba_mass)`; which rows of a mass a query names is
`ModalityMass.query_rows`; segments are the mass's own (`ModalityMass.segments`, a `Partition.table()`).
"""

from __future__ import annotations

import warnings

import numpy as np

from omni_lab.capture.results import combine_in_layer_order
from omni_lab.errors import OmniLabInputError
from omni_lab.modalities import MODALITIES

from .routing_data import position_label

MAX_QUERY_CHOICES = 16


def mass_modalities(run) -> list[str]:
    """Modalities the captured segments cover, in `MODALITIES` order."""
    seen = set()
    for _, _, mass in combine_in_layer_order(run.attention_mass, run.mamba_mass):
        seen.update(mass.modalities)
    return [m for m in MODALITIES if m in seen] + sorted(seen - set(MODALITIES))


def present_mean(values: np.ndarray, axis) -> np.ndarray:
    """Mean over `axis` of the query rows a layer saw: a query an in-LLM reducer dropped before the layer has a NaN
    row there (`ModalityMass`) and is left out; NaN when no query of the selection reached the layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": every chosen query was dropped
        return np.nanmean(values, axis=axis)


def modality_mass(run, query="answer"):
    """Mass of a query over modalities at every attention and Mamba layer, in the model's order.

    Args:
        run: a `Run` with `attention_mass` and / or `mamba_mass`.
        query: see `ModalityMass.query_rows` (default: the answer's tokens).
    Returns:
        DataFrame: order (0..), layer, kind, modality, mass: mean over heads and over the query rows, so each
        layer's masses sum to 1.
    """
    import pandas as pd

    modalities = mass_modalities(run)
    records = []
    for order, (layer, kind, mass) in enumerate(combine_in_layer_order(run.attention_mass, run.mamba_mass)):
        rows, _ = mass.query_rows(query)
        pooled = mass.by_modality()[layer].float().numpy()  # (H, Q, M)
        values = present_mean(pooled[:, rows], axis=(0, 1))  # (M,)
        own = dict(zip(mass.modalities, values.tolist(), strict=True))
        records += [
            {"order": order, "layer": layer, "kind": kind, "modality": m, "mass": own.get(m, 0.0)} for m in modalities
        ]
    return pd.DataFrame(records, columns=["order", "layer", "kind", "modality", "mass"])


def mass_for_layer(run, layer: int):
    """The `ModalityMass` (attention or Mamba) that holds a layer."""
    entries = combine_in_layer_order(run.attention_mass, run.mamba_mass)
    for number, _, mass in entries:
        if number == int(layer):
            return mass
    captured = [number for number, _, _ in entries]
    raise OmniLabInputError(f"layer {layer} has no captured mass; captured layers: {captured}")


def head_mass(run, layer: int, query="answer") -> tuple[np.ndarray, list[str]]:
    """Per-head mass over modalities at one layer.

    Returns:
        (`(heads, modalities)` mean over the query rows, the modality names).
    """
    mass = mass_for_layer(run, layer)
    rows, _ = mass.query_rows(query)
    pooled = mass.by_modality()[int(layer)].float().numpy()  # (H, Q, M)
    return present_mean(pooled[:, rows], axis=1), list(mass.modalities)


def segment_mass(run, layer: int, query="answer"):
    """Mass over every segment (media item, text span, tubelet, audio window, region, as captured) at one layer.

    Returns:
        DataFrame: segment, label, modality, mass (mean over heads and query rows; sums to 1).
    """
    mass = mass_for_layer(run, layer)
    rows, _ = mass.query_rows(query)
    values = present_mean(mass.mass[int(layer)].float().numpy()[:, rows], axis=(0, 1))  # (S,)
    table = mass.segments[["label", "modality"]].copy()
    table.insert(0, "segment", np.arange(len(table)))
    table["mass"] = values
    return table.reset_index(drop=True)


def query_choices(mass) -> list[tuple[str, object]]:
    """The query menu of the mass views: (label, query) for the answer's tokens, then each query group (grouped
    captures) or each answer token the capture saw (at most `MAX_QUERY_CHOICES`), then all queries.

    Args:
        mass: a `ModalityMass` (any of the run's: they share their query rows).
    """
    _, label = mass.query_rows("answer")
    choices: list[tuple[str, object]] = [(label, "answer")]
    if mass.grouped:
        choices += [(f"group {name!r}", name) for name in mass.queries]
    else:
        present = set(mass.queries)
        answer = [int(p) for p in mass.token_map.answer_positions() if int(p) in present][:MAX_QUERY_CHOICES]
        choices += [(position_label(mass.token_map, position), position) for position in answer]
    choices.append(("all queries", "all"))
    unique: dict[str, tuple[str, object]] = {}
    for label, value in choices:
        unique.setdefault(repr(value), (label, value))
    return list(unique.values())
