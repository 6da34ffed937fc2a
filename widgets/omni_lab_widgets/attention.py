"""ModalityAttentionView: how much of a query's attention, and of its Mamba-2 state, falls on each modality, at every
attention and Mamba layer in the model's own order.

Figure (`.figure()`): stacked bars of mass per modality for every captured layer (attention layers shaded and
labelled "attn", Mamba layers "mamba"); a dropdown picks the query (the answer's tokens by default, each answer
token, all queries, or the capture's query groups); a slider picks a layer for the detail below: mass per head over
modalities, and mass per segment (media item, text span, tubelet, audio window or region, as captured). All of it
works without a kernel.

Live widget (`.widget()`): query and layer dropdowns driving the same figure; clicking a bar selects its layer.
Reads `run.attention_mass` and `run.mamba_mass` (`by_modality()`, `mass`, `segments`, `query_rows()`) in the model's
layer order (`combine_in_layer_order`) through `attention_data.py`.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from omni_lab.capture.results import combine_in_layer_order
from omni_lab.errors import OmniLabInputError

from . import render
from .attention_data import head_mass, mass_for_layer, mass_modalities, modality_mass, query_choices, segment_mass
from .base import View
from .palette import ATTENTION_SHADE, modality_colour

KIND_LABEL = {"attention": "attn", "mamba": "mamba"}


class ModalityAttentionView(View):
    """Mass over modalities per layer (attention and Mamba in model order), with per-head and per-segment detail.

    Args:
        run: a `Run` captured with "attention_mass" and / or "mamba_mass".
        query: the query rows to show first (see `ModalityMass.query_rows`; default the answer's tokens).
    """

    title = "Attention and Mamba mass over modalities"

    def __init__(self, run, *, query="answer"):
        self.run = run
        self.entries = combine_in_layer_order(run.attention_mass, run.mamba_mass)
        if not self.entries:
            raise OmniLabInputError(
                "ModalityAttentionView needs a run captured with capture=['attention_mass', 'mamba_mass'] (either)"
            )
        self.modalities = mass_modalities(run)
        self.query = query
        self.layer = self.entries[0][0]
        self.choices = query_choices(self.entries[0][2])
        self._widget = None

    def __repr__(self) -> str:
        kinds = {}
        for _, kind, _ in self.entries:
            kinds[kind] = kinds.get(kind, 0) + 1
        layers = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        return f"ModalityAttentionView({layers} layers; modalities {self.modalities}; query={self.query!r})"

    @property
    def layer_labels(self) -> list[str]:
        """Category label of each captured layer, in model order ("3 attn", "5 mamba")."""
        return [f"{layer} {KIND_LABEL.get(kind, kind)}" for layer, kind, _ in self.entries]

    # ----------------------------------------------------------------------------------------------------- data
    def table(self, query=None):
        """`modality_mass` for a query (default: the view's)."""
        return modality_mass(self.run, self.query if query is None else query)

    def _bar_values(self, query) -> dict[str, np.ndarray]:
        table = self.table(query)
        return {
            name: table[table.modality == name].sort_values("order").mass.to_numpy(np.float32)
            for name in self.modalities
        }

    def _detail(self, layer: int, query) -> dict:
        heads, names = head_mass(self.run, layer, query)
        columns = [names.index(name) if name in names else None for name in self.modalities]
        z = np.stack([heads[:, c] if c is not None else np.zeros(len(heads)) for c in columns], axis=1)
        segments = segment_mass(self.run, layer, query)
        kind = dict((number, kind) for number, kind, _ in self.entries)[layer]
        return {
            "heads": z.astype(np.float32),
            "segment_labels": segments.label.tolist(),
            "segment_mass": segments.mass.to_numpy(np.float32),
            "segment_colours": [modality_colour(m) for m in segments.modality],
            "title_heads": f"layer {layer} ({kind}): mass per head",
            "title_segments": f"layer {layer} ({kind}): mass per segment",
        }

    # --------------------------------------------------------------------------------------------------- figure
    def figure(self) -> go.Figure:
        """The view as a `go.Figure`: query dropdown and layer slider work without a kernel."""
        detail = self._detail(self.layer, self.query)
        fig = make_subplots(
            rows=2,
            cols=2,
            row_heights=[0.5, 0.5],
            column_widths=[0.38, 0.62],
            specs=[[{"colspan": 2}, None], [{}, {}]],
            vertical_spacing=0.26,
            horizontal_spacing=0.15,
            subplot_titles=(
                "mass over modalities at every layer, in model order",
                detail["title_heads"],
                detail["title_segments"],
            ),
        )
        values = self._bar_values(self.query)
        labels = self.layer_labels
        for name in self.modalities:
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=values[name],
                    name=name,
                    marker={"color": modality_colour(name)},
                    hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        selected_index = [layer for layer, _, _ in self.entries].index(self.layer)
        fig.add_trace(
            go.Scatter(
                x=[labels[selected_index]],
                y=[1.06],
                mode="markers",
                marker={"symbol": "triangle-down", "size": 12, "color": "#222"},
                name="detail layer",
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Heatmap(
                z=detail["heads"],
                x=self.modalities,
                colorscale="Magma",
                reversescale=True,
                zmin=0,
                zmax=1,
                colorbar={
                    "title": {"text": "mass"},
                    "len": 0.37,
                    "y": 0.0,
                    "yanchor": "bottom",
                    "x": fig.layout.xaxis2.domain[1] + 0.01,
                    "thickness": 10,
                },
                hovertemplate="head %{y} · %{x}<br>mass %{z:.3f}<extra></extra>",
                name="per head",
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=detail["segment_labels"],
                y=detail["segment_mass"],
                marker={"color": detail["segment_colours"]},
                name="per segment",
                showlegend=False,
                hovertemplate="%{x}<br>mass %{y:.3f}<extra></extra>",
            ),
            row=2,
            col=2,
        )
        for index, (_, kind, _) in enumerate(self.entries):
            if kind == "attention":
                fig.add_vrect(
                    x0=index - 0.5,
                    x1=index + 0.5,
                    fillcolor=ATTENTION_SHADE,
                    opacity=0.6,
                    layer="below",
                    line_width=0,
                    row=1,
                    col=1,
                )
        fig.update_xaxes(title_text="layer (attention shaded)", type="category", row=1, col=1)
        fig.update_yaxes(title_text="share of mass", range=[0, 1.12], row=1, col=1)
        fig.update_xaxes(title_text="modality", row=2, col=1)
        fig.update_yaxes(title_text="head", autorange="reversed", row=2, col=1)
        fig.update_xaxes(title_text="segment", tickangle=-35, automargin=True, row=2, col=2)
        fig.update_yaxes(title_text="share of mass", row=2, col=2)
        _, query_label = self.entries[0][2].query_rows(self.query)
        fig.update_layout(
            template=render.TEMPLATE,
            height=820,
            barmode="stack",
            bargap=0.15,
            title={"text": f"{self.title} — query: {query_label}", "x": 0.01, "font": {"size": 14}},
            legend={
                "orientation": "h",
                "x": 1.0,
                "xanchor": "right",
                "y": 1.04,
                "yanchor": "bottom",
                "traceorder": "normal",
            },
            margin={"l": 70, "r": 30, "t": 110, "b": 60},
            updatemenus=[self._query_menu(fig)],
            sliders=[self._layer_slider(fig)],
            hoverlabel={"align": "left"},
        )
        return fig

    def _query_menu(self, fig) -> dict:
        buttons = []
        for label, value in self.choices:
            values = self._bar_values(value)
            buttons.append(
                {
                    "label": f"query: {label}"[:60],
                    "method": "restyle",
                    "args": [{"y": [values[name] for name in self.modalities]}, list(range(len(self.modalities)))],
                }
            )
        return {
            "buttons": buttons,
            "type": "dropdown",
            "direction": "down",
            "x": 0.0,
            "xanchor": "left",
            "y": fig.layout.yaxis.domain[1] + 0.012,
            "yanchor": "bottom",
            "showactive": True,
        }

    def _layer_slider(self, fig) -> dict:
        count = len(self.modalities)
        marker, heads, segments = count, count + 1, count + 2
        steps = []
        for label, (layer, _, _) in zip(self.layer_labels, self.entries, strict=True):
            detail = self._detail(layer, self.query)
            steps.append(
                {
                    "label": label,
                    "method": "update",
                    "args": [
                        {
                            "x": [[label], self.modalities, detail["segment_labels"]],
                            "z": [None, detail["heads"], None],
                            "y": [[1.06], None, detail["segment_mass"]],
                            "marker.color": ["#222", None, detail["segment_colours"]],
                        },
                        {"annotations[1].text": detail["title_heads"], "annotations[2].text": detail["title_segments"]},
                        [marker, heads, segments],
                    ],
                }
            )
        active = [layer for layer, _, _ in self.entries].index(self.layer)
        return {
            "active": active,
            "steps": steps,
            "x": 0.0,
            "len": 1.0,
            "y": fig.layout.yaxis.domain[0] - 0.075,
            "yanchor": "top",
            "pad": {"t": 0, "b": 0},
            "currentvalue": {"prefix": "detail layer: ", "font": {"size": 12, "color": "#222"}},
            **render.hidden_tick_slider(len(steps)),
        }

    # ---------------------------------------------------------------------------------------------- live widget
    def _build_widget(self):
        import ipywidgets

        figure = self.figure()
        figure.layout.updatemenus = ()
        figure.layout.sliders = ()
        figure.layout.width = render.LIVE_WIDTH
        self._figure_widget = go.FigureWidget(figure)
        query = ipywidgets.Dropdown(
            options=[(label, index) for index, (label, _) in enumerate(self.choices)],
            value=0,
            description="query",
            layout={"width": "420px"},
        )
        query.observe(lambda change: self.set_query(self.choices[change["new"]][1]), names="value")
        layer = ipywidgets.Dropdown(
            options=[(label, number) for label, (number, _, _) in zip(self.layer_labels, self.entries, strict=True)],
            value=self.layer,
            description="layer",
            layout={"width": "260px"},
        )
        layer.observe(lambda change: self.select_layer(change["new"]), names="value")
        self._layer_box = layer
        for trace in self._figure_widget.data[: len(self.modalities)]:
            trace.on_click(self._on_bar_click)
        return ipywidgets.VBox([ipywidgets.HBox([query, layer]), self._figure_widget])

    def _on_bar_click(self, trace, points, state) -> None:
        if points.point_inds:
            self.select_layer(self.entries[points.point_inds[0]][0])

    def set_query(self, query) -> None:
        """Show another query (see `ModalityMass.query_rows`) in the live widget."""
        self.query = query
        if getattr(self, "_figure_widget", None) is None:
            return
        values = self._bar_values(query)
        _, label = self.entries[0][2].query_rows(query)
        with self._figure_widget.batch_update():
            for trace, name in zip(self._figure_widget.data, self.modalities, strict=False):
                trace.y = values[name]
            self._figure_widget.layout.title.text = f"{self.title} — query: {label}"
            self._update_detail()

    def select_layer(self, layer: int) -> None:
        """Show per-head and per-segment detail of one captured layer in the live widget."""
        mass_for_layer(self.run, layer)  # refuses a layer without mass
        self.layer = int(layer)
        if getattr(self, "_figure_widget", None) is None:
            return
        with self._figure_widget.batch_update():
            self._update_detail()
        if self._layer_box.value != self.layer:
            self._layer_box.value = self.layer

    def _update_detail(self) -> None:
        widget = self._figure_widget
        count = len(self.modalities)
        detail = self._detail(self.layer, self.query)
        index = [layer for layer, _, _ in self.entries].index(self.layer)
        widget.data[count].x = [self.layer_labels[index]]
        widget.data[count + 1].z = detail["heads"]
        widget.data[count + 2].update(
            x=detail["segment_labels"], y=detail["segment_mass"], marker={"color": detail["segment_colours"]}
        )
        widget.layout.annotations[1].text = detail["title_heads"]
        widget.layout.annotations[2].text = detail["title_segments"]
