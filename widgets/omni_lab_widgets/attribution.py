"""AttributionOverlay: per-token scores mapped through the token map, drawn over images, video frames, audio and text.

What it reads (the protocol, kept small so any result can be drawn):

    result.token_map   a TokenMap
    result.scores      np.ndarray (or tensor), one float per token-map row, NaN where a row was not scored
    result.method      optional str (e.g. "FeatureAblation"), result.target optional str (what was attributed)
    result.prompt      optional Prompt (or result.run, a Run) holding the pixels; else pass media=

or a plain `(token_map, scores)` pair. The attribution issue's `Attribution` results and the studies' per-group
effects (spread over their rows) fit it.

Figure (`.figure()`): one shared diverging colour scale (0 = white); rows for what the map holds: the pictures
(each image and video tubelet, scores as a translucent heatmap over the pixels, a plotly slider with frames to scrub
them), the audio tokens over time, and the text and generated tokens as a heat-coloured strip.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import render
from .attribution_data import attribution_scores, text_scores
from .audio_data import audio_items, audio_tokens
from .base import View
from .panels import media_panels, panel_pixels, score_grid

TEXT_COLUMNS = 20
MAX_TEXT_LINES = 40
PANEL_TRACES = 2  # picture, score overlay


class AttributionOverlay(View):
    """A heatmap of per-token scores over images, frames, audio and text.

    Args:
        result: an object with `.token_map` and `.scores` (one per row), or a `(token_map, scores)` pair.
        media: a `Prompt` or `Run` to take the pixels from (default: the result's own `.prompt` / `.run`).
        max_side: longest side in pixels of the pictures embedded in figures.
    """

    title = "Attribution overlay"

    def __init__(self, result, *, media=None, max_side: int = 320):
        self.scores = attribution_scores(result, media)
        self.token_map = self.scores.token_map
        self.panels = media_panels(self.token_map)
        self.audio = audio_items(self.token_map)
        self.text = text_scores(self.token_map, self.scores.scores)
        self.max_side = int(max_side)
        finite = np.abs(self.scores.scores[np.isfinite(self.scores.scores)])
        self.limit = float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
        self._pictures: dict[int, str | None] = {}
        self._widget = None

    def __repr__(self) -> str:
        scored = int(np.isfinite(self.scores.scores).sum())
        method = f"{self.scores.method} " if self.scores.method else ""
        return f"AttributionOverlay({method}{scored} of {len(self.token_map)} rows scored)"

    def parts(self) -> list[str]:
        """The rows the figure draws: "pictures", "audio", "text" where the result scored any token (every present
        part when it scored none)."""
        scores = self.scores.scores
        visual = np.concatenate([panel.rows for panel in self.panels]) if self.panels else np.zeros(0, dtype=int)
        audio = np.flatnonzero(self.token_map.rows(modality="audio"))
        text = self.text.row.to_numpy()
        present = {name: rows for name, rows in (("pictures", visual), ("audio", audio), ("text", text)) if len(rows)}
        scored = [name for name, rows in present.items() if np.isfinite(scores[rows]).any()]
        return scored or list(present)

    @property
    def scrubbed(self) -> bool:
        """Whether the figure carries a slider over several images / tubelets."""
        return len(self.panels) > 1 and "pictures" in self.parts()

    def label(self) -> str:
        """ "FeatureAblation → 'left'" or "attribution"."""
        method = self.scores.method or "attribution"
        return f"{method} → {self.scores.target}" if self.scores.target else method

    def picture(self, index: int) -> str | None:
        if index not in self._pictures:
            pixels = panel_pixels(self.scores.media, self.panels[index], self.max_side)
            self._pictures[index] = None if pixels is None else render.picture_uri(pixels)
        return self._pictures[index]

    # --------------------------------------------------------------------------------------------------- figure
    def figure(self, panel: int = 0) -> go.Figure:
        """The overlay as a `go.Figure` (a slider with frames scrubs images and tubelets without a kernel)."""
        fig = self._layout_figure(panel)
        if self.scrubbed:
            fig.frames = self._frames()
            fig.update_layout(sliders=[self._slider(fig, panel)])
        return fig

    def _layout_figure(self, panel: int) -> go.Figure:
        rows = self.parts()
        heights = {"pictures": 0.55, "audio": 0.17, "text": 0.28}
        titles = {
            "pictures": "scores over the pixels",
            "audio": "scores over audio tokens",
            "text": "scores over text and answer tokens",
        }
        fig = make_subplots(
            rows=len(rows),
            cols=1,
            row_heights=[heights[name] for name in rows],
            vertical_spacing=0.09,
            subplot_titles=[titles[name] for name in rows],
        )
        for number, name in enumerate(rows, start=1):
            if name == "pictures":
                for trace in self._panel_traces(panel):
                    fig.add_trace(trace, row=number, col=1)
                width, height = self.panels[panel].size
                fig.update_xaxes(title_text="x (pixels)", range=[0, width], showgrid=False, row=number, col=1)
                fig.update_yaxes(
                    title_text="y (pixels)",
                    range=[height, 0],
                    scaleanchor=f"x{'' if number == 1 else number}",
                    showgrid=False,
                    row=number,
                    col=1,
                )
            elif name == "audio":
                for trace in self._audio_traces():
                    fig.add_trace(trace, row=number, col=1)
                fig.update_xaxes(title_text="time (s)", row=number, col=1)
                fig.update_yaxes(title_text="score", row=number, col=1)
            else:
                fig.add_trace(self._text_trace(), row=number, col=1)
                fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=number, col=1)
                fig.update_yaxes(
                    title_text="line", autorange="reversed", dtick=1, showgrid=False, zeroline=False, row=number, col=1
                )
        fig.update_layout(
            template=render.TEMPLATE,
            height=380 + 260 * len(rows),
            title={"text": f"{self.title}: {self.label()}", "x": 0.01, "font": {"size": 14}},
            coloraxis={
                "colorscale": "RdBu",
                "cmin": -self.limit,
                "cmax": self.limit,
                "colorbar": {"title": {"text": "score"}, "thickness": 12},
            },
            margin={"l": 70, "r": 30, "t": 110 if self.scrubbed else 80, "b": 60},
            showlegend=False,
            hoverlabel={"align": "left"},
        )
        return fig

    def _panel_traces(self, index: int) -> list[dict]:
        """The picture and score overlay of one image / tubelet (plain dicts)."""
        panel = self.panels[index]
        width, height = panel.size
        cell_w, cell_h = panel.cell
        picture = self.picture(index)
        if picture is None:
            image = {"type": "image", "z": np.full((1, 1, 3), 235, dtype=np.uint8), "dx": width, "dy": height}
        else:
            scale = min(1.0, self.max_side / max(panel.size))
            step_x = width / max(1, round(width * scale))
            step_y = height / max(1, round(height * scale))
            image = {"type": "image", "source": picture, "dx": step_x, "dy": step_y, "x0": step_x / 2, "y0": step_y / 2}
        image["hoverinfo"] = "skip"
        grid = score_grid(self.scores.scores, panel)
        rows = np.full(panel.grid, -1.0)
        rows.reshape(-1)[: len(panel.rows)] = panel.rows
        overlay = {
            "type": "heatmap",
            "z": grid.astype(np.float32),
            "x0": cell_w / 2,
            "dx": cell_w,
            "y0": cell_h / 2,
            "dy": cell_h,
            "coloraxis": "coloraxis",
            "opacity": 0.6,
            "customdata": rows.astype(np.float32),
            "hovertemplate": f"{panel.label}<br>row %{{customdata:.0f}}<br>score %{{z:.4g}}<extra></extra>",
            "name": "scores",
        }
        return [image, overlay]

    def _frames(self) -> list[dict]:
        return [
            {
                "name": str(index),
                "data": self._panel_traces(index),
                "traces": list(range(PANEL_TRACES)),
                "layout": {"xaxis": {"range": [0, p.size[0]]}, "yaxis": {"range": [p.size[1], 0]}},
            }
            for index, p in enumerate(self.panels)
        ]

    def _slider(self, fig, panel: int) -> dict:
        steps = [
            {
                "method": "animate",
                "label": p.short_label,
                "args": [[str(index)], render.ANIMATE_NOW],
            }
            for index, p in enumerate(self.panels)
        ]
        return {
            "active": panel,
            "steps": steps,
            "x": 0.64,
            "len": 0.36,
            "y": fig.layout.yaxis.domain[1] + 0.005,
            "yanchor": "bottom",
            "pad": {"t": 0, "b": 0},
            "currentvalue": {"prefix": "showing: ", "font": {"size": 12, "color": "#222"}},
            **render.hidden_tick_slider(len(steps) * 3),
        }

    def figure_for_html(self, panel: int = 0):
        """`figure()` with its frames left as unvalidated dicts (much faster for long videos)."""
        fig = self._layout_figure(panel)
        if self.scrubbed:
            fig.update_layout(sliders=[self._slider(fig, panel)])
            return render.with_frames(fig, self._frames())
        return fig

    # ---------------------------------------------------------------------------------------------- live widget
    def _build_widget(self):
        import ipywidgets

        figure = self.figure()
        figure.frames = ()
        figure.layout.sliders = ()
        figure.layout.width = render.LIVE_WIDTH
        self._figure_widget = go.FigureWidget(figure)
        children = [self._figure_widget]
        if self.scrubbed:
            scrubber = ipywidgets.SelectionSlider(
                options=[(p.unit.label, index) for index, p in enumerate(self.panels)],
                value=0,
                description="show",
                continuous_update=False,
                layout={"width": "620px"},
            )
            scrubber.observe(lambda change: self.show_panel(change["new"]), names="value")
            children.insert(0, scrubber)
        return ipywidgets.VBox(children)

    def show_panel(self, index: int) -> None:
        """Show image / tubelet `index` in the live widget."""
        widget = getattr(self, "_figure_widget", None)
        if widget is None:
            return
        panel = self.panels[index]
        with widget.batch_update():
            for target, source in zip(widget.data[:PANEL_TRACES], self._panel_traces(index), strict=True):
                target.update({key: value for key, value in source.items() if key != "type"}, overwrite=True)
            widget.layout.xaxis.range = [0, panel.size[0]]
            widget.layout.yaxis.range = [panel.size[1], 0]

    def _audio_traces(self) -> list:
        traces = []
        for item in self.audio:
            tokens = audio_tokens(self.token_map, item)
            values = self.scores.scores[tokens.row.to_numpy()].astype(np.float32)
            traces.append(
                go.Bar(
                    x=((tokens.t0 + tokens.t1) / 2).to_numpy(np.float32),
                    y=values,
                    width=(tokens.t1 - tokens.t0).to_numpy(np.float32) * 0.92,
                    marker={"color": values, "coloraxis": "coloraxis"},
                    name=f"audio {item}",
                    customdata=tokens.row.to_numpy(np.float32),
                    hovertemplate=f"audio {item} · row %{{customdata:.0f}}<br>%{{x:.2f}} s<br>score %{{y:.4g}}<extra></extra>",
                )
            )
        return traces

    def _text_trace(self) -> go.Heatmap:
        table = self.text.iloc[: TEXT_COLUMNS * MAX_TEXT_LINES]
        lines = -(-len(table) // TEXT_COLUMNS)
        z = np.full((lines, TEXT_COLUMNS), np.nan, dtype=np.float32)
        words = np.full((lines, TEXT_COLUMNS), "", dtype=object)
        rows = np.full((lines, TEXT_COLUMNS), -1.0, dtype=np.float32)
        z.reshape(-1)[: len(table)] = table.score.to_numpy(np.float32)
        words.reshape(-1)[: len(table)] = [_visible(text) for text in table.text]
        rows.reshape(-1)[: len(table)] = table.row.to_numpy(np.float32)
        return go.Heatmap(
            z=z,
            text=words,
            texttemplate="%{text}",
            textfont={"size": 10},
            customdata=rows,
            coloraxis="coloraxis",
            xgap=1,
            ygap=1,
            hovertemplate="row %{customdata:.0f}: %{text}<br>score %{z:.4g}<extra></extra>",
            name="text",
        )


def _visible(text: str) -> str:
    """A token's text as a short visible label (spaces and newlines shown)."""
    shown = str(text).replace("\n", "⏎").replace(" ", "·")
    return shown if len(shown) <= 12 else shown[:11] + "…"
