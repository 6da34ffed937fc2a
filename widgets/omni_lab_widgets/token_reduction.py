"""TokenReductionMap: every image and video tubelet with its kept, merged and pruned tokens over the pixels they came
from, the reducer's scores, and (given the Lab) a rate slider that re-runs only the reducer.

Figure (`.figure()`): left, the picture with each token's box centre marked (square = kept, cross = pruned, circle =
merged, with a line to the token it merged into) and dropped cells shaded; right, the reducer's score on the token
grid; below, kept / merged / pruned tokens per image and tubelet. A plotly slider (frames) scrubs through the images
and tubelets with no kernel. Hover gives a token's provenance: row, item, frames, seconds, box, score, status.

Live widget (`.widget()`): the same figure as a `FigureWidget`, a panel slider, and with `lab` a reducer choice and a
rate slider: `lab.encode(prompt)` runs once, each move calls `lab.prepare(prompt, reducer=..., encoded=...)` (merge and
reduce only) and redraws the tokens (benchmarks/bench_widgets.py times it).
"""

from __future__ import annotations

import os
import time

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from omni_lab.errors import OmniLabInputError
from omni_lab.token_map import STATUSES

from . import render
from .base import View
from .palette import DROPPED_SHADE, STATUS_COLOURS, translucent
from .panels import MediaPanel, media_panels, panel_pixels, score_grid
from .token_reduction_data import (
    make_reducer,
    reducer_choices,
    reduction_counts,
    slider_setting,
    status_grid,
    token_arrays,
)

PARALLEL_PICTURES = 8  # from this many panels without a picture, `_prefetch_pictures` makes them in threads
PANEL_TRACES = ("picture", "shading", "kept", "merged", "pruned", "links", "scores", "current")
# What a frame changes in each panel trace (plotly merges a frame's trace dicts into the traces): the styling shared
# by every panel travels once, in the figure's own traces.
_FRAME_KEYS = (
    ("source", "z", "dx", "dy", "x0", "y0"),
    ("z", "x0", "dx", "y0", "dy"),
    *[("x", "y", "customdata", "hovertemplate", "marker")] * 3,
    ("x", "y"),
    ("z", "showscale"),
    ("x", "y", "hovertemplate"),
)
_SHADING = [  # status_grid's codes: 0 pruned, 1 merged
    [0.0, DROPPED_SHADE],
    [0.5, DROPPED_SHADE],
    [0.5, translucent(STATUS_COLOURS["merged"], 0.5)],
    [1.0, translucent(STATUS_COLOURS["merged"], 0.5)],
]
_SYMBOLS = {"kept": "square-open", "merged": "circle-open", "pruned": "x-thin-open"}


def reduce_token_map(lab, prompt, reducer, encoded):
    """The prompt's token map after `reducer`, re-running only merge + reduce on already encoded media.

    Args:
        lab: the `Lab`.
        prompt: the run's prompt.
        reducer: a reducer object (or a {modality: reducer} dict).
        encoded: `lab.encode(prompt)`.
    Returns:
        `TokenMap` of the prompt rows with kept / score / merged_into of this reduction.
    """
    return lab.prepare(prompt, reducer=reducer, encoded=encoded).token_map


class TokenReductionMap(View):
    """Kept, merged and pruned tokens over the pixels they came from, with the reducer's scores.

    Args:
        run: a `Run` (reads `run.token_map` and `run.prompt`'s images and videos).
        lab: the `Lab` that made the run; enables the reducer choice and rate slider of the live widget.
        max_side: longest side in pixels of the pictures embedded in figures.
    """

    title = "Token reduction map"

    def __init__(self, run, lab=None, *, max_side: int = 320):
        self.run = run
        self.lab = lab
        self.prompt = getattr(run, "prompt", None)
        self.token_map = run.token_map
        self.panels = media_panels(self.token_map)
        if not self.panels:
            raise OmniLabInputError("TokenReductionMap needs a run with an image or a video; this prompt has none")
        self.max_side = int(max_side)
        self.reducer = _reducer_of(run)
        self.panel_index = 0
        self.last_update_s: float | None = None
        self._pictures: dict[int, str | None] = {}
        self._encoded = None
        self._widget = None
        self._figure_widget = None

    def __repr__(self) -> str:
        counts = self.counts()
        return (
            f"TokenReductionMap({len(self.panels)} panels, {int(counts.kept.sum())} of {int(counts.tokens.sum())} "
            f"visual tokens kept, reducer={self.reducer!r})"
        )

    # ----------------------------------------------------------------------------------------------------- data
    def counts(self):
        """Kept / merged / pruned tokens per panel for the current token map (`reduction_counts`)."""
        return reduction_counts(self.token_map, self.panels)

    def picture(self, index: int) -> str | None:
        """Panel `index`'s pixels as an inline data URI (cached), or None without pixels."""
        if index not in self._pictures:
            self._pictures[index] = self._make_picture(index)
        return self._pictures[index]

    def _make_picture(self, index: int) -> str | None:
        pixels = panel_pixels(self.prompt, self.panels[index], self.max_side)
        return None if pixels is None else render.picture_uri(pixels)

    def _prefetch_pictures(self) -> None:
        """Every panel's picture, several at a time: PIL releases the GIL while it resizes and encodes, and a
        128-tubelet video's pictures were most of what was left of a real-scale page's build (0.3 of 1.9 s)."""
        from concurrent.futures import ThreadPoolExecutor

        missing = [index for index in range(len(self.panels)) if index not in self._pictures]
        if len(missing) < PARALLEL_PICTURES:
            return  # `picture` makes the few there are
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            self._pictures.update(zip(missing, pool.map(self._make_picture, missing), strict=True))

    # --------------------------------------------------------------------------------------------------- figure
    def figure(self, panel: int = 0) -> go.Figure:
        """The map as a `go.Figure` with a kernel-free slider over images and tubelets (plotly frames).

        Args:
            panel: the panel shown first.
        """
        fig = self._base_figure(panel)
        fig.frames = self._frames()
        fig.update_layout(sliders=[self._slider(panel)])
        return fig

    def figure_for_html(self, panel: int = 0) -> dict:
        """`figure()` as a plain dict, its frames left unvalidated: the same page, written in a fraction of the time
        for long videos (validation dominates the cost of a 128-tubelet figure)."""
        fig = self._base_figure(panel)
        fig.update_layout(sliders=[self._slider(panel)])
        return render.with_frames(fig, self._frames(changes_only=True))

    def _frames(self, changes_only: bool = False) -> list[dict]:
        """One frame per panel: its whole traces (validated figures need their types), or with `changes_only`
        what differs between panels (`_FRAME_KEYS`; a saved page's frames, merged into the traces by plotly.js)."""
        counts = self.counts()  # every panel's counts at once, for the frames' titles
        self._prefetch_pictures()
        return [
            {
                "name": str(index),
                "data": [
                    {key: trace[key] for key in keys if key in trace} if changes_only else trace
                    for trace, keys in zip(self._panel_traces(index), _FRAME_KEYS, strict=True)
                ],
                "traces": list(range(len(PANEL_TRACES))),
                "layout": self._panel_layout(index, counts.iloc[index]),
            }
            for index in range(len(self.panels))
        ]

    def _slider(self, panel: int) -> dict:
        steps = [
            {
                "method": "animate",
                "label": panel_.short_label,
                "args": [[str(index)], render.ANIMATE_NOW],
            }
            for index, panel_ in enumerate(self.panels)
        ]
        return {
            "active": panel,
            "steps": steps,
            "x": 0.0,
            "len": 1.0,
            "y": -0.02,
            "yanchor": "top",
            "pad": {"t": 36, "b": 4},
            "currentvalue": {"prefix": "showing: ", "font": {"size": 13, "color": "#222"}},
            **render.hidden_tick_slider(len(steps)),
        }

    def _base_figure(self, panel: int) -> go.Figure:
        fig = make_subplots(
            rows=2,
            cols=2,
            column_widths=[0.6, 0.4],
            row_heights=[0.7, 0.3],
            specs=[[{}, {}], [{"colspan": 2}, None]],
            horizontal_spacing=0.09,
            vertical_spacing=0.14,
            subplot_titles=(
                "pixels and tokens (□ kept · ○ merged · ✕ pruned)",
                "reducer score per token",
                "tokens per image / tubelet",
            ),
        )
        cells = [(1, 1)] * 6 + [(1, 2), (2, 1)]
        for trace, (row, col) in zip(self._panel_traces(panel), cells, strict=True):
            fig.add_trace(trace, row=row, col=col)
        for trace in self._count_traces():
            fig.add_trace(trace, row=2, col=1)
        fig.update_layout(
            template=render.TEMPLATE,
            height=780,
            barmode="stack",
            margin={"l": 60, "r": 100, "t": 80, "b": 60},
            legend={"x": 1.01, "xanchor": "left", "y": 0.0, "yanchor": "bottom"},
            hoverlabel={"align": "left"},
            **self._panel_layout(panel),
        )
        fig.update_xaxes(title_text="x (pixels)", showgrid=False, zeroline=False, constrain="domain", row=1, col=1)
        fig.update_yaxes(
            title_text="y (pixels)", showgrid=False, zeroline=False, scaleanchor="x", constrain="domain", row=1, col=1
        )
        fig.update_xaxes(
            title_text="grid column", showgrid=False, zeroline=False, constrain="domain", dtick=1, row=1, col=2
        )
        fig.update_yaxes(
            title_text="grid row",
            showgrid=False,
            zeroline=False,
            scaleanchor="x2",
            constrain="domain",
            dtick=1,
            row=1,
            col=2,
        )
        labels = [p.label for p in self.panels]
        fig.update_xaxes(
            title_text="image / tubelet",
            tickvals=list(range(len(labels))) if len(labels) <= 16 else None,
            ticktext=[panel.short_label for panel in self.panels] if len(labels) <= 16 else None,
            row=2,
            col=1,
        )
        fig.update_yaxes(title_text="tokens", row=2, col=1)
        return fig

    def _panel_layout(self, index: int, counts=None) -> dict:
        """The layout a panel's frame sets: its title (with `counts`, the panel's `counts()` row, computed when not
        given) and its axes' ranges."""
        panel = self.panels[index]
        width, height = panel.size
        if counts is None:
            counts = reduction_counts(self.token_map, [panel]).iloc[0]
        title = (
            f"{self.title}: {panel.label} — {counts.kept} kept, {counts.merged} merged, {counts.pruned} pruned "
            f"of {counts.tokens} · {self.reducer!r}"
        )
        return {
            "title": {"text": title, "x": 0.01, "font": {"size": 15}},
            "xaxis": {"range": [0, width]},
            "yaxis": {"range": [height, 0]},
            "xaxis2": {"range": [-0.5, panel.grid[1] - 0.5]},
            "yaxis2": {"range": [panel.grid[0] - 0.5, -0.5]},
        }

    def _token_properties(self, index: int) -> list[dict]:
        """What a reduction changes in each panel trace (`PANEL_TRACES` order): shading, marks, links, scores."""
        panel = self.panels[index]
        tokens = token_arrays(self.token_map, panel)
        marks = []
        for status in STATUSES:
            mine = tokens["status"] == status
            marks.append(
                {
                    "x": tokens["cx"][mine].astype(np.float32),
                    "y": tokens["cy"][mine].astype(np.float32),
                    "customdata": _provenance(tokens, mine),
                }
            )
        merged = tokens["status"] == "merged"
        gaps = np.full(int(merged.sum()), np.nan)
        links = {
            axis: np.column_stack([tokens[f"c{axis}"][merged], tokens[f"target_c{axis}"][merged], gaps])
            .reshape(-1)
            .astype(np.float32)
            for axis in ("x", "y")
        }
        grid = score_grid(self.token_map["score"], panel).astype(np.float32)
        return [
            {},
            {"z": status_grid(self.token_map, panel).astype(np.float32)},
            *marks,
            links,
            {"z": grid, "showscale": bool(np.isfinite(grid).any())},
            {"x": [index], "y": [len(panel.rows) * 1.08]},
        ]

    def _panel_traces(self, index: int) -> list[dict]:
        """The traces of one panel (plain dicts), in `PANEL_TRACES` order."""
        panel = self.panels[index]
        width, height = panel.size
        cell_w, cell_h = panel.cell
        changing = self._token_properties(index)
        picture = self.picture(index)
        if picture is None:
            image = {"type": "image", "z": np.full((1, 1, 3), 235, dtype=np.uint8), "dx": width, "dy": height}
        else:
            pixels_w, pixels_h = _picture_size(self, index)
            step_x, step_y = width / pixels_w, height / pixels_h
            image = {"type": "image", "source": picture, "dx": step_x, "dy": step_y, "x0": step_x / 2, "y0": step_y / 2}
        image.update(hoverinfo="skip", name="pixels")
        shading = {
            "type": "heatmap",
            "x0": cell_w / 2,
            "dx": cell_w,
            "y0": cell_h / 2,
            "dy": cell_h,
            "zmin": 0,
            "zmax": 1,
            "colorscale": _SHADING,
            "showscale": False,
            "hoverinfo": "skip",
            "name": "dropped cells",
            **changing[1],
        }
        marks = [
            {
                "type": "scatter",
                "mode": "markers",
                "name": status,
                "uid": f"tokens-{status}",
                "legendgroup": status,
                "showlegend": False,
                "marker": {
                    "symbol": _SYMBOLS[status],
                    "size": _marker_size(panel),
                    "color": STATUS_COLOURS[status],
                    "line": {"width": 1.6, "color": STATUS_COLOURS[status]},
                },
                "hovertemplate": _hover(status, panel),
                **properties,
            }
            for status, properties in zip(STATUSES, changing[2:5], strict=True)
        ]
        links = {
            "type": "scatter",
            "mode": "lines",
            "name": "merged → target",
            "legendgroup": "merged",
            "showlegend": False,
            "line": {"color": STATUS_COLOURS["merged"], "width": 1},
            "hoverinfo": "skip",
            **changing[5],
        }
        scores = {
            "type": "heatmap",
            "colorscale": "Viridis",
            "colorbar": {"title": {"text": "score"}, "len": 0.62, "y": 0.99, "yanchor": "top", "thickness": 12},
            "hovertemplate": "cell (%{y}, %{x})<br>score %{z:.4g}<extra></extra>",
            "name": "score",
            **changing[6],
        }
        current = {
            "type": "scatter",
            "mode": "markers",
            "marker": {"symbol": "triangle-down", "size": 11, "color": "#222"},
            "name": "shown",
            "showlegend": False,
            "hovertemplate": f"shown: {panel.label}<extra></extra>",
            **changing[7],
        }
        return [image, shading, *marks, links, scores, current]

    def _count_traces(self) -> list:
        counts = self.counts()
        return [
            go.Bar(
                x=np.arange(len(counts)),
                y=counts[status].to_numpy(),
                name=status,
                legendgroup=status,
                marker={"color": STATUS_COLOURS[status]},
                customdata=counts.label.to_numpy(),
                hovertemplate=f"%{{customdata}}<br>{status}: %{{y}}<extra></extra>",
            )
            for status in STATUSES
        ]

    # ---------------------------------------------------------------------------------------------- live widget
    def _build_widget(self):
        import ipywidgets

        self._figure_widget = go.FigureWidget(self._base_figure(self.panel_index))
        self._figure_widget.layout.width = render.LIVE_WIDTH
        panel_slider = ipywidgets.SelectionSlider(
            options=[(panel.unit.label, index) for index, panel in enumerate(self.panels)],
            value=self.panel_index,
            description="show",
            continuous_update=False,
            layout={"width": "620px"},
            style={"description_width": "60px"},
        )
        panel_slider.observe(lambda change: self.show_panel(change["new"]), names="value")
        self._panel_slider = panel_slider
        self._status = ipywidgets.HTML(value=self._status_text())
        controls = [panel_slider]
        if self.lab is not None:
            if self._encoded is None:  # encode once now, so every slider move runs merge + reduce only
                self._encoded = self.lab.encode(self.prompt)
            name, rate = slider_setting(self.reducer, self.panels)
            self._reducer_choice = ipywidgets.Dropdown(
                options=reducer_choices(self.panels),
                value=name,
                description="reducer",
                style={"description_width": "60px"},
                layout={"width": "240px"},
            )
            self._rate_slider = ipywidgets.FloatSlider(
                value=rate,
                min=0.0,
                max=0.95,
                step=0.05,
                description="rate",
                continuous_update=False,
                readout_format=".2f",
                style={"description_width": "60px"},
                layout={"width": "420px"},
            )
            self._reducer_choice.observe(self._on_reducer_control, names="value")
            self._rate_slider.observe(self._on_reducer_control, names="value")
            controls.append(ipywidgets.HBox([self._reducer_choice, self._rate_slider]))
        return ipywidgets.VBox([*controls, self._status, self._figure_widget])

    def show_panel(self, index: int) -> None:
        """Show panel `index` (an image or a tubelet) in the live widget."""
        if not -len(self.panels) <= int(index) < len(self.panels):
            raise OmniLabInputError(f"panel {index}: this run has {len(self.panels)} images / tubelets")
        self.panel_index = int(index) % len(self.panels)
        if self._figure_widget is not None:
            self._redraw(counts=False)
            if self._panel_slider.value != self.panel_index:
                self._panel_slider.value = self.panel_index

    def set_reducer(self, reducer) -> None:
        """Re-run only the reducer on the run's encoded media and redraw (the rate slider calls this).

        Args:
            reducer: a reducer object or {modality: reducer}.
        Raises:
            OmniLabInputError: the view was built without `lab`.
        """
        if self.lab is None:
            raise OmniLabInputError("set_reducer needs the Lab: build TokenReductionMap(run, lab=lab)")
        started = time.perf_counter()
        if self._encoded is None:
            self._encoded = self.lab.encode(self.prompt)
        self.token_map = reduce_token_map(self.lab, self.prompt, reducer, self._encoded)
        self.reducer = reducer
        if self._figure_widget is not None:
            self._redraw(counts=True)
        self.last_update_s = time.perf_counter() - started
        if self._figure_widget is not None:
            self._status.value = self._status_text()

    def _on_reducer_control(self, _change) -> None:
        self.set_reducer(make_reducer(self._reducer_choice.value, self._rate_slider.value))

    def _redraw(self, counts: bool) -> None:
        """Push the current panel to the FigureWidget: every trace on a panel change, only the token arrays (and
        the per-panel bars) after a reduction."""
        widget = self._figure_widget
        with widget.batch_update():
            if counts:
                for target, properties in zip(widget.data, self._token_properties(self.panel_index), strict=False):
                    if properties:
                        target.update(properties)
                table = self.counts()
                for target, status in zip(widget.data[len(PANEL_TRACES) :], STATUSES, strict=True):
                    target.y = table[status].to_numpy()
            else:
                for target, source in zip(widget.data, self._panel_traces(self.panel_index), strict=False):
                    properties = {key: value for key, value in source.items() if key != "type"}
                    target.update(properties, overwrite=True)
            widget.update_layout(self._panel_layout(self.panel_index))

    def _status_text(self) -> str:
        counts = self.counts()
        kept, total = int(counts.kept.sum()), int(counts.tokens.sum())
        timing = "" if self.last_update_s is None else f" · updated in {self.last_update_s * 1000:.0f} ms"
        return f"<b>{kept}</b> of {total} image / video tokens kept · {self.reducer!r}{timing}"


# ---------------------------------------------------------------------------------------------------------- helpers
def _reducer_of(run):
    reducers = dict(getattr(run, "reducers", None) or {})
    reducers.pop("llm", None)
    values = list({id(value): value for value in reducers.values()}.values())
    if not values:
        return None
    return values[0] if len(values) == 1 else reducers


def _picture_size(view: TokenReductionMap, index: int) -> tuple[int, int]:
    panel = view.panels[index]
    scale = min(1.0, view.max_side / max(panel.size))
    return max(1, round(panel.size[0] * scale)), max(1, round(panel.size[1] * scale))


def _marker_size(panel: MediaPanel) -> int:
    return int(np.clip(300 / max(panel.grid), 4, 14))


def _provenance(tokens: dict, mask: np.ndarray) -> np.ndarray:
    """`(n, 5)` float32 hover data of the `mask`ed tokens (`token_arrays`): row, grid row, grid col, score,
    merged_into (the box is the point's cell: its centre is the point, its size the panel's cell, both in the hover
    text)."""
    columns = ("row", "grid_row", "grid_col", "score", "merged_into")
    return np.column_stack([np.asarray(tokens[name][mask], dtype=np.float32) for name in columns]).astype(np.float32)


def _hover(status: str, panel: MediaPanel) -> str:
    merged = "<br>merged into row %{customdata[4]}" if status == "merged" else ""
    cell_w, cell_h = panel.cell
    return (
        f"<b>{status}</b> · row %{{customdata[0]}}<br>{panel.label}<br>cell (%{{customdata[1]}}, %{{customdata[2]}})"
        f"<br>box {cell_w:.4g} × {cell_h:.4g} px centred at x %{{x:.1f}}, y %{{y:.1f}}"
        f"<br>score %{{customdata[3]:.4g}}{merged}<extra></extra>"
    )
