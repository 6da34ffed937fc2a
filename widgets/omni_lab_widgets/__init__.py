"""Notebook widgets for omni-lab runs: token-reduction maps, expert routing, attention and Mamba mass over modalities,
audio timelines, attribution overlays, and a dashboard of them all (see the README's "Widgets" section).

    from omni_lab.widgets import TokenReductionMap, Dashboard
    TokenReductionMap(run).figure()          # a plotly go.Figure
    Dashboard(run, lab)                       # live in JupyterLab; .save_html("run.html") for a self-contained page

Each view has a pure data layer beside it (`token_reduction_data.py`, `routing_data.py`, ...: plain functions, no
plotly, gathered in `omni_lab.widgets.data`) that asks the domain objects for every fact, a `.figure()` returning a
plotly `go.Figure` coloured from `palette.py` (the playground's figures use it too), and a live ipywidgets widget
whose notebook repr also carries self-contained HTML. Importing this package is cheap; plotly and ipywidgets load when
a view is first used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TokenReductionMap": "token_reduction",
    "ExpertRoutingView": "routing",
    "ModalityAttentionView": "attention",
    "AudioTimeline": "audio",
    "AttributionOverlay": "attribution",
    "Dashboard": "dashboard",
    "LogitLensView": "logit_lens",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'omni_lab.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*__all__, "data"])
