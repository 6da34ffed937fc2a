"""What every view shares: `.figure()`, `.widget()`, `.save_html(path)` and a notebook repr with an HTML fallback.

A view is a thin object over its data module (`token_reduction_data.py`, ...; all in `data.py`):

    view.figure()      a plotly `go.Figure` (kernel-free interactions through plotly sliders, frames, buttons)
    view.widget()      the live ipywidgets container (plotly `FigureWidget` + controls), built once
    view.save_html(p)  one self-contained page (plotly.js inline, nothing fetched)

In a notebook the view displays as its live widget; `_repr_mimebundle_` also carries the page as `text/html`, so an
nbconvert export, a GitHub preview or VS Code without a kernel still shows the figure.
"""

from __future__ import annotations

import html
from pathlib import Path

from . import render


class View:
    """Base of the widgets. Subclasses set `title` and implement `figure()`; `_build_widget()` may add controls."""

    title = "omni-lab view"

    def figure(self):
        """The view as a plotly `go.Figure`."""
        raise NotImplementedError

    def figure_for_html(self):
        """The figure a saved page holds: `figure()`, or its plain dict where validating it would be slow."""
        return self.figure()

    def sections(self) -> list[tuple[str, object]]:
        """(heading, figure or figure dict) pairs of the saved page (one figure by default)."""
        return [("", self.figure_for_html())]

    def notes(self) -> str:
        """One line of HTML shown under the saved page's title."""
        return ""

    # ----------------------------------------------------------------------------------------------------- live
    def widget(self):
        """The live widget (built on first use and kept)."""
        if getattr(self, "_widget", None) is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self):
        import ipywidgets
        import plotly.graph_objects as go

        from . import render

        figure = self.figure()
        figure.layout.width = render.LIVE_WIDTH
        return ipywidgets.VBox([go.FigureWidget(figure)])

    # ----------------------------------------------------------------------------------------------------- HTML
    def to_html(self) -> str:
        """The self-contained page `save_html` writes, as text."""
        return render.page(self.title, self.sections(), self.notes())

    def save_html(self, path) -> Path:
        """Write one self-contained HTML page (plotly.js inline, no CDN, nothing fetched).

        Args:
            path: the file to write (parent folders are created).
        Returns:
            the path written.
        """
        return render.write_page(path, self.to_html())

    def html_fallback(self) -> str:
        """The `text/html` a kernel-less viewer shows: the figures with plotly.js inline."""
        parts = [render.figure_div(fig, include_plotlyjs=index == 0) for index, (_, fig) in enumerate(self.sections())]
        return f"<div class='omni-lab-view' title='{html.escape(self.title)}'>" + "".join(parts) + "</div>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": repr(self), "text/html": self.html_fallback()}
        widget_bundle = self.widget()._repr_mimebundle_(include=include, exclude=exclude)
        bundle.update({key: value for key, value in widget_bundle.items() if key != "text/plain"})
        return bundle
