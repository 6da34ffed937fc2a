"""The logit lens view's data: a `LogitAttribution`'s direct logits per layer, stacked by writer or by group, and the
target's rank per layer. Plain functions, no plotly."""

from __future__ import annotations

import numpy as np


def layer_labels(result) -> list[str]:
    """One x label per layer boundary in the model's order: "embed", then "0 M", "1 E", "3 *"... (the layer and its
    kind's letter in the release's pattern)."""
    letters = {"mamba": "M", "moe": "E", "attention": "*", "mlp": "-", "embedding": ""}
    return ["embed" if layer < 0 else f"{layer} {letters.get(kind, '?')}"
            for layer, kind in zip(result.lens.layer, result.lens.kind, strict=True)]  # fmt: skip


def stacks(result, by: str = "kind") -> dict[str, np.ndarray]:
    """{writer or group: `(boundaries,)` direct logit per layer} in the lens's layer order (0 where it wrote nothing).

    Args:
        result: a `LogitAttribution`.
        by: "kind" (embedding, mamba, attention, routed experts, shared expert, mlp) or "group" (the grouping the
            study split the writes by).
    """
    table = result.by_kind().rename(columns={"writer": "stack"}) if by == "kind" else result.by_group()
    if by != "kind":
        table = table.rename(columns={"group": "stack"})
    order = list(result.lens.layer)
    out = {}
    for name, part in table.groupby("stack", sort=False):
        values = np.zeros(len(order))
        for layer, logit in zip(part.layer, part.logit, strict=True):
            values[order.index(layer)] += logit
        out[str(name)] = values
    return out
