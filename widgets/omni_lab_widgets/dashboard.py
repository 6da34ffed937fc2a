"""Dashboard: every view a run supports, in tabs, under a one-line summary of the run.

    Dashboard(run, lab)            # live in JupyterLab: token reduction (rate slider), routing, mass, audio
    Dashboard(run).save_html(p)    # one self-contained page with every figure (plotly.js inline once)

Tabs appear for what the run holds: "Token reduction" (images / video), "Expert routing" (`capture=["routing"]`),
"Modality mass" (`attention_mass` / `mamba_mass`), one "Audio" tab per clip, and "Attribution" when an
attribution result is given. `.figure()` is the run's summary table: tokens per media item before and after
reduction, the answer and the timings.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from omni_lab.capture.results import combine_in_layer_order

from . import render
from .attention import ModalityAttentionView
from .attribution import AttributionOverlay
from .audio import AudioTimeline
from .audio_data import audio_items
from .base import View
from .panels import media_panels
from .routing import ExpertRoutingView
from .token_reduction import TokenReductionMap
from .token_reduction_data import reduction_counts


class Dashboard(View):
    """The views of one run in tabs.

    Args:
        run: a `Run`.
        lab: the `Lab` that made it (enables the reduction map's rate slider).
        attribution: an optional attribution result for an "Attribution" tab (see `AttributionOverlay`).
    Attributes:
        views: {tab title: view} in tab order.
    """

    title = "omni-lab run"

    def __init__(self, run, lab=None, *, attribution=None):
        self.run = run
        self.lab = lab
        self.views: dict[str, View] = {}
        if media_panels(run.token_map):
            self.views["Token reduction"] = TokenReductionMap(run, lab)
        if getattr(run, "routing", None) is not None:
            self.views["Expert routing"] = ExpertRoutingView(run)
        if combine_in_layer_order(run.attention_mass, run.mamba_mass):
            self.views["Modality mass"] = ModalityAttentionView(run)
        audio = audio_items(run.token_map)
        for item in audio:
            self.views["Audio" if len(audio) == 1 else f"Audio {item}"] = AudioTimeline(run, item=item)
        if attribution is not None:
            self.views["Attribution"] = AttributionOverlay(attribution, media=run)
        self._widget = None

    def __repr__(self) -> str:
        return f"Dashboard({list(self.views)}; answer={getattr(self.run, 'answer', '')!r})"

    @property
    def reduction(self) -> TokenReductionMap | None:
        """The token-reduction map, when the run has images or video."""
        return self.views.get("Token reduction")

    def summary_table(self):
        """Tokens per media item before and after reduction (`run.ledger.summary()`, or the token map's counts)."""
        ledger = getattr(self.run, "ledger", None)
        if ledger is not None:
            return ledger.summary()
        import pandas as pd

        table = reduction_counts(self.run.token_map, media_panels(self.run.token_map))
        return pd.DataFrame(table)

    def headline(self) -> str:
        """One line: the question, the answer, the timings."""
        prompt = getattr(self.run, "prompt", None)
        question = getattr(prompt, "text", "") or ""
        timings = getattr(self.run, "timings", {}) or {}
        spent = ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in timings.items() if key.endswith("_s"))
        return f"Q: {question!r} → A: {getattr(self.run, 'answer', '')!r}" + (f" · {spent}" if spent else "")

    def figure(self) -> go.Figure:
        """The run's summary as a `go.Figure` (a table of tokens per media item before and after reduction)."""
        table = self.summary_table()
        fig = go.Figure(
            go.Table(
                header={"values": list(table.columns), "fill": {"color": "#eef1f5"}, "align": "left"},
                cells={
                    "values": [
                        [f"{value:.2f}" if isinstance(value, float) else value for value in table[column]]
                        for column in table.columns
                    ],
                    "align": "left",
                },
            )
        )
        fig.update_layout(
            template=render.TEMPLATE,
            title={"text": self.headline(), "x": 0.01, "font": {"size": 13}},
            height=140 + 28 * max(1, len(table)),
            margin={"l": 20, "r": 20, "t": 60, "b": 10},
        )
        return fig

    def sections(self) -> list[tuple[str, object]]:
        return [("Summary", self.figure())] + [(name, view.figure_for_html()) for name, view in self.views.items()]

    def notes(self) -> str:
        return html.escape(self.headline())

    def _build_widget(self):
        import ipywidgets

        tabs = ipywidgets.Tab(children=[view.widget() for view in self.views.values()])
        for index, name in enumerate(self.views):
            tabs.set_title(index, name)
        header = ipywidgets.HTML(value=f"<b>{html.escape(self.headline())}</b>")
        table = ipywidgets.HTML(value=self.summary_table().to_html(index=False, float_format=lambda x: f"{x:.2f}"))
        return ipywidgets.VBox([header, table, tabs])
