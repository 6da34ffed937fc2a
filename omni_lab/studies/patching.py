"""`activation_patching`: the standard causal experiment, clean -> corrupted, per position group and hook point.

A clean prompt and a corrupted one (the same layout, one fact changed: a clip played backwards, another colour)
give different first answer tokens, c and k. For every hook point (default: each layer's input, the residual stream)
and every unit of a grouping of the one partition (default: each media item and text span), the corrupted prompt
runs with that unit's activations at that point patched from the clean run (`ol.patch_from`), and the study reports
how much of the clean behaviour comes back:

    recovered = (LD(patched) - LD(corrupted)) / (LD(clean) - LD(corrupted)),   LD = logit[c] - logit[k]

at the last prompt position: 1 where the patch restores the clean logit difference, 0 where it changes nothing. The
patched runs go through `Lab.prefill` in batches, each row with its own patch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import validate
from ..errors import OmniLabInputError
from .common import progress_bar


@dataclass(frozen=True)
class PatchingResult:
    """`activation_patching`'s result.

    Attributes:
        table: one row per (point, unit): point, layer (-1 for points outside the layers), unit, positions (how
            many were patched), logit_diff (LD of the patched run), recovered.
        clean_token, corrupt_token: the first answer tokens c and k (ids) and their texts.
        clean_diff, corrupt_diff: LD of the clean and the corrupted run.
    """

    table: object
    clean_token: int
    corrupt_token: int
    clean_text: str
    corrupt_text: str
    clean_diff: float
    corrupt_diff: float

    def grid(self):
        """`recovered` as a point x unit DataFrame (points in model order, units in prompt order)."""
        table = self.table
        grid = table.pivot(index="point", columns="unit", values="recovered")
        return grid.loc[list(dict.fromkeys(table.point)), list(dict.fromkeys(table.unit))]

    def figure(self):
        """A heatmap of `grid()`: plotly `go.Figure`."""
        import plotly.graph_objects as go

        grid = self.grid()
        figure = go.Figure(
            go.Heatmap(
                z=grid.to_numpy(),
                x=list(grid.columns),
                y=list(grid.index),
                colorscale="RdBu",
                zmid=0,
                colorbar={"title": "recovered"},
            )  # fmt: skip
        )
        figure.update_layout(
            title=f"activation patching: {self.clean_text!r} (clean) vs {self.corrupt_text!r} (corrupted)",
            xaxis_title="patched unit",
            yaxis_title="hook point",
            yaxis={"autorange": "reversed"},
        )
        return figure


def activation_patching(
    lab,
    clean,
    corrupt,
    points=None,
    groups="item",
    *,
    units=None,
    batch_size: int = 16,
    progress: bool = True,
) -> PatchingResult:
    """Patch each unit at each point from the clean prompt into the corrupted one; report the recovered share.

    Args:
        lab: the `Lab`.
        clean, corrupt: `Prompt`s (or strings) whose first answer tokens differ.
        points: hook names or patterns (default each layer's input, `llm.layers.{i}.in`, in model order).
        groups: a grouping of the one partition ("item", "tubelet", ("tubelet", "region"), {name: mask}...).
        units: the labels of the units to patch (default every unit the two prompts share).
        batch_size: patched runs per forward.
        progress: show a progress bar.
    Returns:
        `PatchingResult`.
    """
    import pandas as pd

    from ..capture.hooks import expand_names, hook_points
    from ..capture.patching import _units, patch_from
    from ..partition import GroupBy

    batch_size = validate.number("batch_size", batch_size, low=1, integer=True)
    clean, corrupt = lab.as_prompt(clean), lab.as_prompt(corrupt)
    names = expand_names(points or [f"llm.layers.{i}.in" for i in range(lab.config.text_config.num_hidden_layers)],
                         hook_points(lab.model))  # fmt: skip
    GroupBy.of(groups)
    source = lab.prefill([clean], cache=names, reducer=None)[0]
    corrupted = lab.prefill([corrupt], reducer=None)[0]
    clean_token, corrupt_token = int(source.next_token_logits.argmax()), int(corrupted.next_token_logits.argmax())
    if clean_token == corrupt_token:
        raise OmniLabInputError(
            f"the clean and the corrupted prompt both answer {lab.tokenizer.decode([clean_token])!r} first: there is "
            "no difference to recover; corrupt the fact the answer depends on"
        )

    def difference(logits) -> float:
        return float(logits[clean_token] - logits[corrupt_token])

    clean_diff, corrupt_diff = difference(source.next_token_logits), difference(corrupted.next_token_logits)
    shared = _units(source.token_map, groups)
    wanted = [label for label in _units(corrupted.token_map, groups) if label in shared]
    if units is not None:
        units = [units] if isinstance(units, str) else list(units)
        missing = [label for label in units if label not in wanted]
        if missing:
            raise OmniLabInputError(f"units {missing[:4]} are not units both prompts share; they share {wanted[:8]}")
        wanted = units
    cells = [(name, label) for name in names for label in wanted]
    bar = progress_bar(len(cells), "activation patching", progress)
    records = []
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        patches = [[patch_from(source, points=name, positions=groups, units=[label])] for name, label in chunk]
        rows = lab.prefill([corrupt] * len(chunk), reducer=None, interventions=patches)
        for (name, label), row in zip(chunk, rows, strict=True):
            value = difference(row.next_token_logits)
            layer = int(name.split(".")[2]) if name.startswith("llm.layers.") else -1
            records.append({"point": name, "layer": layer, "unit": label, "positions": len(shared[label]),
                            "logit_diff": value,
                            "recovered": (value - corrupt_diff) / (clean_diff - corrupt_diff)})  # fmt: skip
        bar.update(len(chunk))
    bar.close()
    decode = lab.tokenizer.decode
    return PatchingResult(
        pd.DataFrame(records, columns=["point", "layer", "unit", "positions", "logit_diff", "recovered"]),
        clean_token,
        corrupt_token,
        decode([clean_token]),
        decode([corrupt_token]),
        clean_diff,
        corrupt_diff,
    )
