"""Shared drawing helpers: pictures as inline data URIs and self-contained HTML (plotly.js inline); the colours are
in `palette.py`.

Every page and every `text/html` fallback carries plotly.js itself and embeds pictures as `data:` URIs, so it opens
from a file, in an nbconvert export, a GitHub preview or VS Code without a kernel, with nothing fetched. Interactions
that need no kernel (frame scrubbers, layer sliders, dropdowns) are plotly's own sliders, frames and buttons.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

ANIMATE_NOW = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}
TEMPLATE = "plotly_white"
LIVE_WIDTH = 980  # px: FigureWidgets do not follow their output area's width, so live figures get one


def picture_uri(pixels: np.ndarray, quality: int = 82) -> str:
    """`(h, w, 3)` uint8 pixels as a `data:image/jpeg;base64,...` URI (PNG for pictures under 64 px a side)."""
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    if max(image.size) < 64:
        image.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        image.save(buffer, format="JPEG", quality=quality)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_frames(fig, frames: list[dict]) -> dict:
    """A figure as a plain dict with animation frames added unvalidated (numpy arrays as plotly's typed arrays)."""
    from _plotly_utils.utils import convert_to_base64

    figure = fig.to_dict()
    figure["frames"] = frames
    convert_to_base64(figure["frames"])
    return figure


def figure_div(fig, include_plotlyjs: bool = True, post_script: str | None = None) -> str:
    """One figure (a `go.Figure` or its dict) as an HTML fragment (`<div>` + scripts), plotly.js inline when asked,
    nothing from a CDN."""
    import plotly.io as pio

    return pio.to_html(
        fig,
        validate=False,
        full_html=False,
        include_plotlyjs=include_plotlyjs,
        include_mathjax=False,
        config=PLOT_CONFIG,
        auto_play=False,
        post_script=post_script,
    )


def page(title: str, sections: list[tuple[str, object]], notes: str = "") -> str:
    """One self-contained HTML page holding figures under headings, plotly.js inlined once.

    Args:
        title: the page title.
        sections: (heading, go.Figure) pairs, drawn top to bottom.
        notes: an HTML paragraph shown under the title (already escaped where needed).
    Returns:
        the page's HTML text.
    """
    parts = []
    for index, (heading, fig) in enumerate(sections):
        heading_html = f"<h2>{html.escape(heading)}</h2>" if heading else ""
        parts.append(f"<section>{heading_html}{figure_div(fig, include_plotlyjs=index == 0)}</section>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:16px 24px;color:#222}"
        "h1{font-size:20px;margin:4px 0 8px}h2{font-size:16px;margin:18px 0 4px}p.notes{color:#555;margin:0 0 8px}"
        "section{max-width:1400px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p class='notes'>{notes}</p>" if notes else "")
        + "".join(parts)
        + "</body></html>\n"
    )


def write_page(path, text: str) -> Path:
    """Write an HTML page (creating parent folders) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def hidden_tick_slider(count: int) -> dict:
    """Slider styling: step labels under the ticks only while they fit (the current value always shows)."""
    if count <= 14:
        return {}
    return {"font": {"color": "rgba(0,0,0,0)"}, "ticklen": 2, "minorticklen": 0}
