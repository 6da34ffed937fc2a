"""Pictures for the README's notebook tour: one PNG per notebook, taken from the executed notebook itself.

Each notebook marks one cell with the tag "tour". This script executes the notebooks (nbclient, the same private
kernel as tests/test_notebooks.py), takes that cell's output — a view's self-contained `text/html` (plotly.js
inline) or a plotly figure's JSON — writes it to an HTML page and screenshots the page in Debian's headless Chromium
(tests/browser_support.py; no network, plotly's static export is not needed). A notebook whose tour cell produced
nothing (60_real_checkpoint without a GPU) gets no picture.

    .venv/bin/python docs/notebooks/make_pictures.py                  # every notebook
    .venv/bin/python docs/notebooks/make_pictures.py 10_token_reduction_maps --executed /tmp/executed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VIEWPORT = (1280, 320)  # width, and a first height; the shot grows to the content (at most MAX_HEIGHT)
MAX_HEIGHT = 1600


def tour_output(notebook) -> str | None:
    """The HTML page of the notebook's "tour" cell output, or None when it has none."""
    for cell in notebook.cells:
        if cell.cell_type != "code" or "tour" not in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.plotly.v1+json" in data:
                import plotly.io

                figure = plotly.io.from_json(json.dumps(data["application/vnd.plotly.v1+json"]))
                return figure.to_html(
                    full_html=True, include_plotlyjs=True, auto_play=False, config={"displaylogo": False}
                )
            if "text/html" in data:
                return (
                    "<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{font-family:system-ui,sans-serif;"
                    f"margin:12px 16px}}</style></head><body>{data['text/html']}</body></html>"
                )
    return None


def screenshot(page_html: str, png: Path, browser) -> None:
    """Open the page offline in Chromium, let plotly draw, and save a screenshot of its content."""
    from tests.browser_support import OfflinePage

    with tempfile.TemporaryDirectory() as folder:
        page_path = Path(folder) / "page.html"
        page_path.write_text(page_html, encoding="utf-8")
        page = OfflinePage(browser, viewport=VIEWPORT)
        try:
            page.open_file(page_path, wait_selector=".main-svg", timeout_ms=60_000)
            page.page.wait_for_timeout(1500)
            height = min(page.page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
            page.page.set_viewport_size({"width": VIEWPORT[0], "height": int(height) + 16})
            page.page.screenshot(path=str(png), full_page=False)
        finally:
            page.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all numbered notebooks)")
    parser.add_argument("--executed", default=None, help="folder to keep (or reuse) executed notebooks in")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import nbformat
    from playwright.sync_api import sync_playwright

    from tests.browser_support import launch_chromium
    from tests.test_notebooks import NOTEBOOKS, execute, private_kernel

    chosen = [path for path in NOTEBOOKS if not args.names or path.stem in args.names]
    executed_dir = Path(args.executed) if args.executed else Path(tempfile.mkdtemp())
    executed_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base, private_kernel(Path(base)), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for path in chosen:
            done = executed_dir / path.name
            if done.exists():
                notebook = nbformat.read(done, as_version=4)
            else:
                with tempfile.TemporaryDirectory() as workdir:
                    notebook, seconds = execute(path, Path(workdir))
                nbformat.write(notebook, done)
                print(f"{path.stem}: executed in {seconds:.1f} s", flush=True)
            page_html = tour_output(notebook)
            if page_html is None:
                print(f"{path.stem}: no tour output, no picture", flush=True)
                continue
            png = HERE / f"{path.stem}.png"
            screenshot(page_html, png, browser)
            print(f"{path.stem}: {png.relative_to(ROOT)}", flush=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
