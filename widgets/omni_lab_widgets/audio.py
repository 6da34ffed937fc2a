"""AudioTimeline: one audio clip's waveform and the log-mel features the encoder heard, its 80 ms tokens (kept, merged,
pruned, with the reducer's score), and beneath them where the answer looked: attention / Mamba mass over the clip's
segments, or an attribution over its tokens.

Figure (`.figure()`), four rows on one time axis (zoom one, all follow):
    waveform envelope, pruned spans shaded
    log-mel features (the processor's own, 10 ms hop) with the token boundaries
    tokens: a cell per 80 ms token coloured kept / merged / pruned (hover: row, seconds, reducer score)
    mass per segment for the query (mean over layers and heads; per window with `segments="audio_window"`), or
    the attribution's score per token when `attribution=` is given

Live widget (`.widget()`): the figure with a query dropdown for the mass row.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from omni_lab.capture.results import combine_in_layer_order
from omni_lab.errors import OmniLabInputError
from omni_lab.token_map import STATUSES

from . import render
from .attention_data import query_choices
from .attribution_data import attribution_scores
from .audio_data import audio_items, audio_mass, audio_mel, audio_tokens, audio_waveform, pruned_spans
from .base import View
from .palette import KIND_COLOURS, STATUS_COLOURS

MAX_SHADED_SPANS = 200
MAX_BOUNDARIES = 1500


class AudioTimeline(View):
    """Waveform, log-mel features, 80 ms tokens and the mass (or attribution) over time of one audio clip.

    Args:
        run: a `Run` whose prompt holds audio.
        item: which audio clip (0-based).
        attribution: optional attribution result (see `AttributionOverlay`) drawn in the bottom row instead of mass.
        query: the query rows of the mass row (see `ModalityMass.query_rows`).
    """

    title = "Audio timeline"

    def __init__(self, run, *, item: int = 0, attribution=None, query="answer"):
        self.run = run
        self.prompt = run.prompt
        self.token_map = run.token_map
        items = audio_items(self.token_map)
        if item not in items:
            raise OmniLabInputError(f"AudioTimeline: the run has no audio clip {item} (audio items: {items})")
        self.item = int(item)
        self.attribution = None if attribution is None else attribution_scores(attribution)
        self.query = query
        self._widget = None

    def summary(self) -> str:
        """ "audio 0 (1.94 s): 25 of 25 tokens kept"."""
        tokens = audio_tokens(self.token_map, self.item)
        seconds = float(tokens.t1.max())
        return f"audio {self.item} ({seconds:.2f} s): {int(tokens.kept.sum())} of {len(tokens)} tokens kept"

    def __repr__(self) -> str:
        return f"AudioTimeline({self.summary()})"

    # --------------------------------------------------------------------------------------------------- figure
    def figure(self) -> go.Figure:
        """The timeline as a `go.Figure` (four rows sharing the time axis)."""
        tokens = audio_tokens(self.token_map, self.item)
        bottom = "attribution per token" if self.attribution is not None else "mass on the clip's segments"
        fig = make_subplots(
            rows=4,
            cols=1,
            shared_xaxes=True,
            row_heights=[0.2, 0.34, 0.2, 0.26],
            vertical_spacing=0.05,
            subplot_titles=("waveform", "log-mel features the encoder received", "80 ms tokens", bottom),
        )
        envelope = audio_waveform(self.prompt, self.item)
        fig.add_trace(
            go.Scatter(
                x=envelope.t.to_numpy(np.float32),
                y=envelope.high.to_numpy(np.float32),
                mode="lines",
                line={"width": 0.6, "color": "#3b6ea5"},
                name="waveform",
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=envelope.t.to_numpy(np.float32),
                y=envelope.low.to_numpy(np.float32),
                mode="lines",
                fill="tonexty",
                fillcolor="rgba(59,110,165,0.55)",
                line={"width": 0.6, "color": "#3b6ea5"},
                name="waveform (min)",
                showlegend=False,
                hovertemplate="%{x:.2f} s<extra></extra>",
            ),
            row=1,
            col=1,
        )
        times, mel = audio_mel(self.prompt, self.item)
        fig.add_trace(
            go.Heatmap(
                z=mel,
                x=times.astype(np.float32),
                colorscale="Magma",
                showscale=False,
                name="log-mel",
                hovertemplate="%{x:.2f} s · mel bin %{y}<br>%{z:.2f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
        if len(tokens) <= MAX_BOUNDARIES:
            edges = np.unique(np.r_[tokens.t0.to_numpy(), tokens.t1.to_numpy()[-1:]]).astype(np.float32)
            top = float(mel.shape[0] - 0.5)
            fig.add_trace(
                go.Scatter(
                    x=np.column_stack([edges, edges, np.full(len(edges), np.nan)]).reshape(-1),
                    y=np.tile(np.array([-0.5, top, np.nan], dtype=np.float32), len(edges)),
                    mode="lines",
                    line={"width": 0.5, "color": "rgba(255,255,255,0.55)"},
                    name="token boundaries",
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=2,
                col=1,
            )
        for status in STATUSES:
            mine = tokens[tokens.status == status]
            fig.add_trace(
                go.Bar(
                    x=((mine.t0 + mine.t1) / 2).to_numpy(np.float32),
                    y=np.ones(len(mine), dtype=np.float32),
                    width=(mine.t1 - mine.t0).to_numpy(np.float32) * 0.92,
                    name=status,
                    marker={"color": STATUS_COLOURS[status]},
                    customdata=np.column_stack([mine.row, mine.t0, mine.t1, mine.score]).astype(np.float32),
                    hovertemplate=(
                        f"<b>{status}</b> · row %{{customdata[0]:.0f}}<br>%{{customdata[1]:.2f}}–%{{customdata[2]:.2f}} s"
                        "<br>score %{customdata[3]:.4g}<extra></extra>"
                    ),
                ),
                row=3,
                col=1,
            )
        spans = pruned_spans(tokens)
        if len(spans) <= MAX_SHADED_SPANS:
            for t0, t1 in spans:
                fig.add_vrect(
                    x0=t0, x1=t1, fillcolor=STATUS_COLOURS["pruned"], opacity=0.12, line_width=0, row=1, col=1
                )
        for trace in self._bottom_traces(self.query):
            fig.add_trace(trace, row=4, col=1)
        fig.update_yaxes(title_text="amplitude", row=1, col=1)
        fig.update_yaxes(title_text="mel bin", row=2, col=1)
        fig.update_yaxes(showticklabels=False, range=[0, 1], row=3, col=1)
        fig.update_yaxes(title_text="score" if self.attribution is not None else "share of mass", row=4, col=1)
        fig.update_xaxes(title_text="time (s)", row=4, col=1)
        seconds = float(tokens.t1.max())
        fig.update_xaxes(range=[0, seconds], tick0=0, dtick=_tick_step(seconds))
        fig.update_layout(
            template=render.TEMPLATE,
            height=760,
            barmode="overlay",
            title={"text": f"{self.title}: {self.summary()}", "x": 0.01, "font": {"size": 14}},
            legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
            margin={"l": 70, "r": 30, "t": 90, "b": 50},
            hoverlabel={"align": "left"},
        )
        return fig

    def _bottom_traces(self, query) -> list:
        if self.attribution is not None:
            scores = self.attribution.scores
            tokens = audio_tokens(self.attribution.token_map, self.item)
            values = scores[tokens.row.to_numpy()].astype(np.float32)
            label = self.attribution.method or "attribution"
            return [
                go.Bar(
                    x=((tokens.t0 + tokens.t1) / 2).to_numpy(np.float32),
                    y=values,
                    width=(tokens.t1 - tokens.t0).to_numpy(np.float32) * 0.92,
                    marker={"color": values, "colorscale": "RdBu", "cmid": 0},
                    name=label,
                    hovertemplate=f"%{{x:.2f}} s<br>{label}: %{{y:.4g}}<extra></extra>",
                )
            ]
        table = audio_mass(self.run, self.item, query) if self._masses() else None
        if table is None or table.empty:
            return [
                go.Scatter(
                    x=[0],
                    y=[0],
                    mode="text",
                    text=["capture attention_mass / mamba_mass (segments='audio_window') to see mass over time"],
                    textposition="middle right",
                    showlegend=False,
                    hoverinfo="skip",
                )
            ]
        traces = []
        for kind in ("attention", "mamba"):
            mine = table[table.kind == kind]
            if mine.empty:
                continue
            gaps = np.full(len(mine), np.nan)
            traces.append(
                go.Scatter(
                    x=np.column_stack([mine.t0, mine.t1, gaps]).reshape(-1).astype(np.float32),
                    y=np.column_stack([mine.mass, mine.mass, gaps]).reshape(-1).astype(np.float32),
                    mode="lines",
                    fill="tozeroy",
                    name=f"{kind} mass",
                    line={"color": KIND_COLOURS[kind], "width": 2},
                    customdata=np.repeat(mine.label.to_numpy(), 3),
                    hovertemplate=f"%{{customdata}}<br>{kind} mass %{{y:.3f}} (mean over layers, heads)<extra></extra>",
                )
            )
        return traces

    def _masses(self) -> list:
        """(layer, kind, ModalityMass) of the run's captured layers, in the model's order."""
        return combine_in_layer_order(self.run.attention_mass, self.run.mamba_mass)

    # ---------------------------------------------------------------------------------------------- live widget
    def _build_widget(self):
        import ipywidgets

        self._figure_widget = go.FigureWidget(self.figure())
        self._figure_widget.layout.width = render.LIVE_WIDTH
        children = [self._figure_widget]
        entries = self._masses()
        if self.attribution is None and entries:
            choices = query_choices(entries[0][2])
            query = ipywidgets.Dropdown(
                options=[(label, index) for index, (label, _) in enumerate(choices)],
                value=0,
                description="query",
                layout={"width": "420px"},
            )
            query.observe(lambda change: self.set_query(choices[change["new"]][1]), names="value")
            children.insert(0, query)
        return ipywidgets.VBox(children)

    def set_query(self, query) -> None:
        """Redraw the mass row for another query (see `ModalityMass.query_rows`)."""
        self.query = query
        widget = getattr(self, "_figure_widget", None)
        if widget is None:
            return
        traces = self._bottom_traces(query)
        bars = [trace for trace in widget.data if trace.name in {"attention mass", "mamba mass"}]
        with widget.batch_update():
            for target, source in zip(bars, traces, strict=False):
                target.update(x=source.x, y=source.y, customdata=source.customdata)


def _tick_step(seconds: float) -> float:
    """A 1-2-5 tick step giving about eight ticks over `seconds`."""
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800):
        if seconds / step <= 10:
            return step
    return 3600.0
