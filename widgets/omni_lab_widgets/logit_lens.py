"""LogitLensView: in which layer the answer forms, and who writes it.

Layers on x in the model's order (the embedding first). Bars: each layer's direct logit of the target (its write read
through the final norm, the norm's scale frozen), stacked by writer (embedding, Mamba, attention, routed experts,
shared expert, MLP) or by the groups of the positions that wrote it (`by="group"`: modality, item, tubelet... as the
study split them); the bars add up to the target's logit. Line (right axis): the target's rank under the logit lens
after each layer (0 = the model would answer it there). Draws a `LogitAttribution`
(`ol.studies.direct_logit_attribution`).
"""

from __future__ import annotations

from .base import View
from .logit_lens_data import layer_labels, stacks
from .palette import WRITER_COLOURS, modality_colour


class LogitLensView(View):
    """Args:
    result: a `LogitAttribution`.
    by: "kind" or "group" (see the module header).
    """

    title = "omni-lab · logit lens and direct logit attribution"

    def __init__(self, result, by: str = "kind"):
        from omni_lab.errors import OmniLabInputError

        if by not in ("kind", "group"):
            raise OmniLabInputError(f"by={by!r}: stack the writes by 'kind' or by 'group'")
        if not hasattr(result, "lens") or not hasattr(result, "components"):
            raise OmniLabInputError("LogitLensView draws ol.studies.direct_logit_attribution(...)'s result")
        self.result, self.by = result, by

    def figure(self):
        from plotly.subplots import make_subplots

        result = self.result
        labels = layer_labels(result)
        figure = make_subplots(specs=[[{"secondary_y": True}]])
        groups = result.groups.drop_duplicates("group").set_index("group").modality.to_dict()
        for name, values in stacks(result, self.by).items():
            colour = WRITER_COLOURS.get(name) if self.by == "kind" else modality_colour(groups.get(name, name))
            figure.add_bar(x=labels, y=values, name=name, marker_color=colour, secondary_y=False,
                           hovertemplate=f"<b>{name}</b><br>%{{x}}: %{{y:.3f}}<extra></extra>")  # fmt: skip
        figure.add_scatter(x=labels, y=result.lens["rank"], name="rank under the logit lens", mode="lines+markers",
                           line={"color": "#111111", "dash": "dot"}, secondary_y=True,
                           customdata=result.lens[["logprob", "top_text"]].to_numpy(),
                           hovertemplate="%{x}: rank %{y}<br>log p %{customdata[0]:.3f}<br>top %{customdata[1]}"
                                         "<extra></extra>")  # fmt: skip
        formed = result.forms_at()
        where = "never" if formed is None else "at the embedding" if formed < 0 else f"after layer {formed}"
        figure.update_layout(
            barmode="relative",
            title=f"{result.target_text!r}: direct logit per layer (sum {result.target_logit:.2f}); answer formed {where}",
            xaxis_title="layer (model order; M Mamba, E MoE, * attention)",
            legend={"orientation": "h", "y": -0.25},
            margin={"l": 60, "r": 60, "t": 60, "b": 110},
            height=460,
        )
        figure.update_yaxes(title_text="direct logit", secondary_y=False)
        figure.update_yaxes(title_text="rank (0 = top)", secondary_y=True, rangemode="tozero")
        return figure
