"""ExpertRoutingView: where the MoE router sends each modality, layer by layer, and what one token chose.

Figure (`.figure()`):
    top left     layer x expert load heatmap (share of the layer's top-k picks); a dropdown filters by modality
    top right    routing entropy (bits) per MoE layer, overall and per modality (log2(experts) = uniform)
    middle       modality of every position (bins of positions for long runs)
    bottom left  token strip: the top-weighted expert of every position at every MoE layer
    bottom right the selected token's k experts and weights at every MoE layer; a dropdown picks the answer's
                 tokens and the first token of each media item without a kernel

Second figure (`.coactivation_figure()`, also on the saved page): which experts fire together (expert x expert counts
of positions that chose both, a dropdown per MoE layer; the diagonal is each expert's own load), and the most frequent
routes tokens take through the layers (their top expert at every MoE layer), per modality.

Live widget (`.widget()`): modality buttons, and a position box; clicking the strip selects a token.
Reads `run.routing` (`load(by="modality")`, `entropy()`, `for_token()`, `experts`, `weights`) through
`routing_data.py`; a real-model run (52 layers x 128 experts x 20K positions) is binned to at most `max_columns`
strip columns.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from omni_lab.errors import OmniLabInputError
from omni_lab.modalities import MODALITIES

from . import render
from .base import View
from .palette import modality_colour
from .routing_data import (
    coactivation_matrices,
    expert_loads,
    position_label,
    routing_entropy,
    token_choices,
    top_expert_strip,
    top_paths,
)


class ExpertRoutingView(View):
    """Expert load by layer and modality, routing entropy, a token strip by top expert, and one token's experts.

    Args:
        run: a `Run` captured with `capture=["routing"]`.
        max_columns: most strip columns (longer runs pool consecutive positions).
    """

    title = "Expert routing"

    def __init__(self, run, *, max_columns: int = 1024):
        routing = getattr(run, "routing", None)
        if routing is None:
            raise OmniLabInputError("ExpertRoutingView needs a run captured with capture=['routing']")
        self.run = run
        self.routing = routing
        self.token_map = routing.token_map
        self.layers, self.loads = expert_loads(routing)
        self.entropy = routing_entropy(routing)
        self.strip = top_expert_strip(routing, max_columns=max_columns)
        self.positions = int(routing.experts.shape[1])
        self.choices = token_choices(self.token_map, self.positions)
        self.position = self.choices[0] if self.choices else 0
        self._widget = None

    def __repr__(self) -> str:
        return (
            f"ExpertRoutingView({len(self.layers)} MoE layers x {self.routing.num_experts} experts, "
            f"{self.positions} positions, groups {list(self.loads)})"
        )

    def summary(self) -> str:
        """ "4 MoE layers x 16 experts (top-2), 128 positions"."""
        k = int(self.routing.experts.shape[2])
        return (
            f"{len(self.layers)} MoE layers × {self.routing.num_experts} experts (top-{k}), {self.positions} positions"
        )

    # --------------------------------------------------------------------------------------------------- figure
    def figure(self) -> go.Figure:
        """The routing view as a `go.Figure` (modality and token dropdowns work without a kernel)."""
        fig = self._figure()
        fig.update_layout(updatemenus=[self._modality_menu(fig), self._token_menu(fig)])
        return fig

    def figure_for_html(self) -> dict:
        """`figure()` as a plain dict, its dropdowns added unvalidated with their arrays in binary form."""
        fig = self._figure()
        return render.with_layout(fig, updatemenus=[self._modality_menu(fig), self._token_menu(fig)])

    def _figure(self) -> go.Figure:
        fig = make_subplots(
            rows=3,
            cols=2,
            column_widths=[0.64, 0.36],
            row_heights=[0.42, 0.035, 0.545],
            horizontal_spacing=0.17,
            vertical_spacing=0.075,
            specs=[[{}, {}], [{}, None], [{}, {}]],
            subplot_titles=(
                "expert load: share of each layer's top-k picks",
                "routing entropy per layer",
                "",
                "token strip: top expert of each position",
                "",
            ),
        )
        fig.add_trace(self._load_trace("all"), row=1, col=1)
        for trace in self._entropy_traces():
            fig.add_trace(trace, row=1, col=2)
        fig.add_trace(self._modality_band(), row=2, col=1)
        fig.add_trace(self._strip_trace(), row=3, col=1)
        fig.add_trace(self._token_trace(self.position), row=3, col=2)
        layer_labels = [f"L{layer}" for layer in self.layers]
        fig.update_xaxes(title_text="expert", row=1, col=1)
        fig.update_yaxes(title_text="MoE layer", autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text="MoE layer", tickvals=self.layers if len(self.layers) <= 16 else None, row=1, col=2)
        fig.update_yaxes(title_text="entropy (bits)", row=1, col=2)
        fig.update_xaxes(showticklabels=False, matches="x4", row=2, col=1)
        fig.update_yaxes(tickfont={"size": 10}, row=2, col=1)
        fig.update_xaxes(title_text="LLM position", row=3, col=1)
        fig.update_yaxes(title_text="MoE layer", autorange="reversed", row=3, col=1)
        fig.update_xaxes(title_text="MoE layer", type="category", categoryarray=layer_labels, row=3, col=2)
        fig.update_yaxes(title_text="expert", range=[-1, self.routing.num_experts], row=3, col=2)
        binned = " (positions binned: mode of each bin)" if self.strip.binned else ""
        fig.update_layout(
            template=render.TEMPLATE,
            height=860,
            title={"text": f"{self.title}: {self.summary()}{binned}", "x": 0.01, "y": 0.985, "font": {"size": 14}},
            margin={"l": 70, "r": 110, "t": 100, "b": 50},
            legend={"x": 1.01, "xanchor": "left", "y": 1.0, "font": {"size": 11}},
            hoverlabel={"align": "left"},
        )
        return fig

    def coactivation_figure(self, top: int = 8) -> go.Figure:
        """Expert co-activation per MoE layer (a dropdown picks the layer) and the `top` routes per modality."""
        fig, menus = self._coactivation(top)
        fig.update_layout(updatemenus=menus)
        return fig

    def _coactivation(self, top: int) -> tuple[go.Figure, list[dict]]:
        """The co-activation figure without its layer dropdown, and the dropdown."""
        layers, matrices = coactivation_matrices(self.routing)
        paths = top_paths(self.routing, top)
        fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.14,
                            subplot_titles=(f"co-activation, MoE layer {layers[0]}", f"top {top} routes per modality"))  # fmt: skip
        fig.add_trace(
            go.Heatmap(
                z=matrices[0],
                colorscale="Blues",
                colorbar={"x": 0.4, "title": "positions"},
                hovertemplate="experts %{y} & %{x}: %{z} positions<extra></extra>",
            ),  # fmt: skip
            row=1,
            col=1,
        )
        for modality, part in paths.groupby("modality", sort=False):
            fig.add_bar(x=part["share"], y=[f"{modality}: {path}" for path in part.path], orientation="h",
                        name=modality, marker_color=modality_colour(modality),
                        customdata=part["count"], hovertemplate="%{y}<br>%{customdata} positions (%{x:.0%})"
                                                                 "<extra></extra>", row=1, col=2)  # fmt: skip
        buttons = [
            {"label": f"layer {layer}", "method": "update",
             "args": [{"z": [matrices[slot]]}, {"annotations[0].text": f"co-activation, MoE layer {layer}"}, [0]]}
            for slot, layer in enumerate(layers)
        ]  # fmt: skip
        menus = [{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.12}]
        fig.update_layout(
            title=f"Which experts fire together, and the routes tokens take ({self.summary()})",
            height=max(420, 28 * len(paths) + 160),
            margin={"l": 60, "r": 20, "t": 100, "b": 50},
            legend={"orientation": "h", "y": -0.12},
        )
        fig.update_xaxes(title_text="expert", row=1, col=1)
        fig.update_yaxes(title_text="expert", autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text="share of the modality's positions", tickformat=".0%", row=1, col=2)
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        return fig, menus

    def sections(self) -> list[tuple[str, object]]:
        coactivation, menus = self._coactivation(8)
        return [
            ("", self.figure_for_html()),
            ("Co-activation and routes", render.with_layout(coactivation, updatemenus=menus)),
        ]

    def _load_trace(self, group: str) -> go.Heatmap:
        counts = self.loads[group]
        totals = counts.sum(1, keepdims=True)
        share = counts / np.maximum(totals, 1)
        return go.Heatmap(
            z=share.astype(np.float32),
            x=np.arange(self.routing.num_experts),
            y=[f"L{layer}" for layer in self.layers],
            customdata=counts.astype(np.int32),
            colorscale="Blues",
            zmin=0,
            colorbar={"title": {"text": "share"}, "len": 0.38, "y": 1.0, "yanchor": "top", "x": 0.54, "thickness": 10},
            hovertemplate="%{y} · expert %{x}<br>picks %{customdata}<br>share %{z:.3f}<extra></extra>",
            name=f"load ({group})",
        )

    def _entropy_traces(self) -> list:
        traces = []
        for group in self.loads:
            mine = self.entropy[self.entropy.group == group].sort_values("layer")
            traces.append(
                go.Scatter(
                    x=mine.layer.to_numpy(),
                    y=mine.entropy_bits.to_numpy(np.float32),
                    mode="lines+markers",
                    name=group,
                    line={"color": "#000000" if group == "all" else modality_colour(group), "width": 2},
                    marker={"size": 5},
                    hovertemplate=f"{group} · layer %{{x}}<br>%{{y:.2f}} bits<extra></extra>",
                )
            )
        uniform = float(np.log2(self.routing.num_experts))
        traces.append(
            go.Scatter(
                x=[min(self.layers), max(self.layers)],
                y=[uniform, uniform],
                mode="lines",
                name="uniform",
                line={"color": "#999", "dash": "dash", "width": 1},
                hovertemplate=f"uniform over {self.routing.num_experts} experts: {uniform:.2f} bits<extra></extra>",
            )
        )
        return traces

    def _columns(self) -> np.ndarray:
        return ((self.strip.start + self.strip.stop - 1) / 2).astype(np.float32)

    def _modality_band(self) -> go.Heatmap:
        names = list(dict.fromkeys([*MODALITIES, "mixed", *self.strip.modality.tolist()]))
        codes = np.array([names.index(name) for name in self.strip.modality], dtype=np.int16)
        scale = []
        for index, name in enumerate(names):
            low, high = index / len(names), (index + 1) / len(names)
            scale += [[low, modality_colour(name)], [high, modality_colour(name)]]
        return go.Heatmap(
            z=codes[None, :],
            x=self._columns(),
            y=["modality"],
            zmin=-0.5,
            zmax=len(names) - 0.5,
            colorscale=scale,
            showscale=False,
            customdata=np.array([self.strip.modality.tolist()], dtype=object),
            hovertemplate="position %{x}<br>%{customdata}<extra></extra>",
            name="modality",
        )

    def _strip_trace(self) -> go.Heatmap:
        return go.Heatmap(
            z=np.where(self.strip.expert >= 0, self.strip.expert, np.nan).astype(np.float32),  # gap: dropped in LLM
            x=self._columns(),
            y=[f"L{layer}" for layer in self.layers],
            customdata=self.strip.share.astype(np.float32),
            zmin=0,
            zmax=self.routing.num_experts - 1,
            colorscale="Turbo",
            colorbar={
                "title": {"text": "expert"},
                "len": 0.5,
                "y": 0.0,
                "yanchor": "bottom",
                "x": 0.54,
                "thickness": 10,
            },
            hovertemplate="%{y} · position %{x}<br>top expert %{z}<br>share of bin %{customdata:.2f}<extra></extra>",
            name="top expert",
        )

    def _token_arrays(self, position: int) -> dict:
        table = self.routing.for_token(int(position))
        weights = table.weight.to_numpy(np.float32)
        top = float(weights.max()) if len(weights) else 1.0
        return {
            "x": [f"L{layer}" for layer in table.layer],
            "y": table.expert.to_numpy(np.int16),
            "customdata": np.column_stack([table["rank"].to_numpy(), weights]).astype(np.float32),
            "marker": {
                "size": (8 + 22 * weights / max(top, 1e-9)).astype(np.float32),
                "color": weights,
                "colorscale": "Oranges",
                "cmin": 0,
                "cmax": top,
                "line": {"width": 1, "color": "#444"},
            },
            "name": position_label(self.token_map, position),
        }

    def _token_trace(self, position: int) -> go.Scatter:
        return go.Scatter(
            mode="markers",
            showlegend=False,
            hovertemplate="%{x} · expert %{y}<br>rank %{customdata[0]:.0f}, weight %{customdata[1]:.3f}<extra></extra>",
            **self._token_arrays(position),
        )

    def _modality_menu(self, fig) -> dict:
        buttons = []
        for group in self.loads:
            trace = self._load_trace(group)
            buttons.append(
                {
                    "label": group,
                    "method": "restyle",
                    "args": [{"z": [trace.z], "customdata": [trace.customdata], "name": trace.name}, [0]],
                }
            )
        domain = fig.layout.yaxis.domain
        return {
            "buttons": buttons,
            "type": "dropdown",
            "direction": "down",
            "x": 0.0,
            "xanchor": "left",
            "y": domain[1] + 0.008,
            "yanchor": "bottom",
            "showactive": True,
            "pad": {"r": 4, "t": 0},
        }

    def _token_menu(self, fig) -> dict:
        index = len(fig.data) - 1
        buttons = []
        for position in self.choices:
            arrays = self._token_arrays(position)
            buttons.append(
                {
                    "label": "experts of " + arrays["name"][:48],
                    "method": "restyle",
                    "args": [
                        {
                            "x": [arrays["x"]],
                            "y": [arrays["y"]],
                            "customdata": [arrays["customdata"]],
                            "marker.size": [arrays["marker"]["size"]],
                            "marker.color": [arrays["marker"]["color"]],
                            "marker.cmax": [arrays["marker"]["cmax"]],
                        },
                        [index],
                    ],
                }
            )
        domain = fig.layout.xaxis5.domain
        return {
            "buttons": buttons,
            "type": "dropdown",
            "direction": "down",
            "x": domain[0],
            "xanchor": "left",
            "y": fig.layout.yaxis5.domain[1] + 0.008,
            "yanchor": "bottom",
            "showactive": True,
            "pad": {"r": 4, "t": 0},
        }

    # ---------------------------------------------------------------------------------------------- live widget
    def _build_widget(self):
        import ipywidgets

        figure = self.figure()
        figure.layout.updatemenus = ()
        figure.layout.width = render.LIVE_WIDTH
        self._figure_widget = go.FigureWidget(figure)
        groups = ipywidgets.ToggleButtons(options=list(self.loads), value="all", description="modality")
        groups.observe(lambda change: self.show_group(change["new"]), names="value")
        position = ipywidgets.BoundedIntText(
            value=self.position, min=0, max=self.positions - 1, description="position", layout={"width": "200px"}
        )
        position.observe(lambda change: self.select_token(change["new"]), names="value")
        self._position_box = position
        self._label = ipywidgets.HTML(value=self._label_text())
        strip = self._figure_widget.data[-2]
        strip.on_click(lambda trace, points, state: points.xs and self.select_token(self._position_of(points.xs[0])))
        return ipywidgets.VBox(
            [ipywidgets.HBox([groups]), ipywidgets.HBox([position, self._label]), self._figure_widget]
        )

    def _position_of(self, x: float) -> int:
        column = int(np.argmin(np.abs(self._columns() - x)))
        return int(self.strip.start[column])

    def _label_text(self) -> str:
        return f"selected: {position_label(self.token_map, self.position)} (click the strip to choose)"

    def show_group(self, group: str) -> None:
        """Show the load of one group ("all" or a modality) in the live widget."""
        if group not in self.loads:
            raise OmniLabInputError(f"group {group!r}: this run has {list(self.loads)}")
        trace = self._load_trace(group)
        if getattr(self, "_figure_widget", None) is not None:
            with self._figure_widget.batch_update():
                self._figure_widget.data[0].z = trace.z
                self._figure_widget.data[0].customdata = trace.customdata

    def select_token(self, position: int) -> None:
        """Show one LLM position's experts and weights at every MoE layer."""
        if not 0 <= int(position) < self.positions:
            raise OmniLabInputError(f"position {position}: routing covers positions 0..{self.positions - 1}")
        self.position = int(position)
        if getattr(self, "_figure_widget", None) is not None:
            arrays = self._token_arrays(self.position)
            with self._figure_widget.batch_update():
                self._figure_widget.data[-1].update(arrays)
            self._label.value = self._label_text()
            if self._position_box.value != self.position:
                self._position_box.value = self.position
