"""Shared drawing helpers: pictures as inline data URIs and self-contained HTML (plotly.js inline); the colours are
in `palette.py`.

Every page and every `text/html` fallback carries plotly.js itself and embeds pictures as `data:` URIs, so it opens
from a file, in an nbconvert export, a GitHub preview or VS Code without a kernel, with nothing fetched. Interactions
that need no kernel (frame scrubbers, layer sliders, dropdowns) are plotly's own sliders, frames and buttons.

A saved page (`page`) carries plotly.js once, gzip-compressed (4.6 MiB of JavaScript in 1.9 MiB of base64): the
browser inflates it with its own `DecompressionStream` and every figure's script waits for it (`omniLabPlotly`). A
figure whose script is larger than `COMPRESS_SCRIPT_BYTES` ships gzip-compressed the same way (`omniLabRun`): at the
real model's scale the Dashboard's figures hold 6.0 MiB of JSON that compresses to 1.7 MiB, nothing dropped.
Arrays travel in plotly's binary form (numpy arrays become base64 typed arrays), so figures pass numpy arrays of
compact dtypes, never Python lists.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import io
from pathlib import Path

import numpy as np

ANIMATE_NOW = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}
TEMPLATE = "plotly_white"
LIVE_WIDTH = 980  # px: FigureWidgets do not follow their output area's width, so live figures get one
COMPRESS_SCRIPT_BYTES = 16 * 1024  # a page's figure script larger than this ships gzip-compressed (`after_plotlyjs`)


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


def typed_arrays(value):
    """`value` with every numpy array, at any depth of dicts and lists, as plotly's typed array (`{"dtype", "bdata"}`,
    int64 narrowed to the smallest integer type that holds it): for what plotly.py leaves as nested lists, such as
    the `args` of dropdown buttons and slider steps."""
    from _plotly_utils.utils import to_typed_array_spec

    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype == object else to_typed_array_spec(value)
    if isinstance(value, dict):
        return {key: typed_arrays(entry) for key, entry in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed_arrays(entry) for entry in value]
    return value


def with_layout(fig, **layout) -> dict:
    """A figure as a plain dict with layout entries (dropdowns, sliders) added unvalidated, their numpy arrays as
    plotly's typed arrays: validating large `args` converts every array to nested Python lists, slowly."""
    figure = fig if isinstance(fig, dict) else fig.to_dict()
    for key, value in layout.items():
        figure["layout"][key] = typed_arrays(value)
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
    """One self-contained HTML page holding figures under headings, plotly.js inlined once (compressed, first).

    Args:
        title: the page title.
        sections: (heading, content) pairs, drawn top to bottom; content is a `go.Figure` (or its dict), or a `str`:
            an HTML fragment placed as it is (already escaped where needed: answers, tables of numbers).
        notes: an HTML paragraph shown under the title (already escaped where needed).
    Returns:
        the page's HTML text.
    """
    parts = []
    for heading, content in sections:
        heading_html = f"<h2>{html.escape(heading)}</h2>" if heading else ""
        body = content if isinstance(content, str) else after_plotlyjs(figure_div(content, include_plotlyjs=False))
        parts.append(f"<section>{heading_html}{body}</section>")
    if any(not isinstance(content, str) for _, content in sections):
        parts.insert(0, compressed_plotlyjs())
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:16px 24px;color:#222}"
        "h1{font-size:20px;margin:4px 0 8px}h2{font-size:16px;margin:18px 0 4px}p.notes{color:#555;margin:0 0 8px}"
        "section{max-width:1400px}table.stats{border-collapse:collapse;font-size:14px}"
        "table.stats td,table.stats th{padding:3px 10px;border-bottom:1px solid #e5e5e5;text-align:left;"
        "vertical-align:top}pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:480px;font-size:12px}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<p class='notes'>{notes}</p>" if notes else "")
        + "".join(parts)
        + "</body></html>\n"
    )


@functools.cache
def compressed_plotlyjs() -> str:
    """A `<script>` that defines `window.omniLabPlotly`: a promise that runs the bundled plotly.js, shipped inline
    gzip-compressed and inflated by the browser (`DecompressionStream`, no network); built once per process."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    packed = _packed(get_plotlyjs(), level=9)
    return (
        f"<script>/** inline, gzip-compressed and base64-encoded:\n* plotly.js v{get_plotlyjs_version()} */\n"
        "window.PlotlyConfig = {MathJaxConfig: 'local'};\n"
        "window.omniLabInflate = async function (packed) {  // base64 of gzip -> text, in the browser\n"
        "  const text = atob(packed);\n"
        "  const bytes = new Uint8Array(text.length);\n"
        "  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);\n"
        "  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));\n"
        "  return await new Response(stream).text();\n"
        "};\n"
        "window.omniLabRun = async function (packed, wrap) {  // runs compressed code as a script of the page\n"
        "  const code = await window.omniLabInflate(packed);\n"
        "  const script = document.createElement('script');\n"
        "  script.textContent = wrap ? '(function () {' + code + '\\n})();' : code;\n"
        "  document.head.appendChild(script);\n"
        "};\n"
        f'window.omniLabPlotly = window.omniLabRun("{packed}", false);  // plotly.js, in the global scope\n'
        "</script>"
    )


def _packed(text: str, level: int = 6) -> str:
    """`text` gzip-compressed (no timestamp: the same text gives the same page) and base64-encoded."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=level, mtime=0)).decode("ascii")


def after_plotlyjs(fragment: str) -> str:
    """A `figure_div(..., include_plotlyjs=False)` fragment whose one script waits for `compressed_plotlyjs`; a
    script larger than `COMPRESS_SCRIPT_BYTES` ships gzip-compressed and runs as its own function once inflated."""
    head, opening, rest = fragment.partition("<script>")
    body, closing, tail = rest.rpartition("</script>")
    if not opening or not closing or "<script" in body:
        raise ValueError("expected a figure fragment with exactly one <script>")
    if len(body) > COMPRESS_SCRIPT_BYTES:
        run = f'window.omniLabRun("{_packed(body)}", true)'
        return f"{head}<script>window.omniLabPlotly.then(function () {{ return {run}; }});</script>{tail}"
    return f"{head}<script>window.omniLabPlotly.then(function () {{{body}}});</script>{tail}"


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
