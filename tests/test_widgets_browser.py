"""The widgets in a real headless Chromium (Debian's package, driven by Playwright; its own download is never used).

(a) every view's saved HTML, opened from a file with every network request refused: plotly's SVG is drawn, the
    console has no errors, nothing was requested; a screenshot of each is saved in tests/artifacts/.
(b) JupyterLab started on 127.0.0.1 (token auth, a free port, a temporary folder): a notebook building
    `Dashboard(run, lab)` is run from the browser's Run menu; the widget renders (plotly SVG present, no "Error
    displaying widget") and moving the rate slider changes the number of kept tokens drawn; screenshots saved.

Both skip, naming what is missing, only without Chromium (or without playwright / jupyterlab).
"""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np
import pytest

from tests.browser_support import (
    OfflinePage,
    accept_dialog,
    artifact_path,
    jupyterlab_server,
    skip_unless_browser,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOAD_SOURCE = """\
import omni_lab as ol

lab = ol.load("toy", progress=False)
"""
RUN_SOURCE = """\
import omni_lab as ol
from omni_lab.toy import shapesworld

example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), "omni")
prompt = example.prompt(lab)
run = lab.run(prompt, max_new_tokens=8, capture=["routing", "attention_mass", "mamba_mass"], reducer=ol.reducers.EVS(0.5))
"""


@pytest.fixture(scope="module")
def saved_pages(tmp_path_factory, twin_lab):
    """Every view of one toy-twin run (video + audio, an image run, an attribution) saved as HTML."""
    import omni_lab as ol
    from omni_lab.toy import shapesworld
    from omni_lab.widgets import (
        AttributionOverlay,
        AudioTimeline,
        Dashboard,
        ExpertRoutingView,
        LogitLensView,
        ModalityAttentionView,
        TokenReductionMap,
    )

    namespace: dict = {"lab": twin_lab}
    exec(RUN_SOURCE, namespace)  # the same run the notebook test builds
    lab, run, prompt, example = twin_lab, namespace["run"], namespace["prompt"], namespace["example"]
    image_example = shapesworld.sample(shapesworld.eval_seed(0, "image", 1), "image", "count")
    image_run = lab.run(image_example.prompt(lab), max_new_tokens=4, reducer={"image": ol.reducers.ToMe(0.5)})
    scores = np.linspace(-1.0, 1.0, len(run.token_map))
    folder = tmp_path_factory.mktemp("pages")
    views = {
        "token_reduction_video": TokenReductionMap(run, lab),
        "token_reduction_image": TokenReductionMap(image_run),
        "expert_routing": ExpertRoutingView(run),
        "modality_attention": ModalityAttentionView(run),
        "audio_timeline": AudioTimeline(run),
        "attribution_overlay": AttributionOverlay((run.token_map, scores), media=run),
        "dashboard": Dashboard(run, lab),
        "logit_lens": LogitLensView(ol.studies.direct_logit_attribution(lab, prompt, example.answer, reducer=None)),
    }
    return {name: view.save_html(folder / f"{name}.html") for name, view in views.items()}


PAGES = (
    "token_reduction_video",
    "token_reduction_image",
    "expert_routing",
    "modality_attention",
    "audio_timeline",
    "attribution_overlay",
    "dashboard",
    "logit_lens",
)


@pytest.mark.parametrize("name", PAGES)
def test_saved_html_offline(chromium_browser, saved_pages, name):
    text = saved_pages[name].read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text), "a script is loaded from elsewhere"
    assert not re.search(r"<link[^>]+href=", text), "a stylesheet is loaded from elsewhere"
    assert text.count("<script") >= 2, "plotly.js is not inlined"
    browser_page = OfflinePage(chromium_browser)
    try:
        browser_page.open_file(saved_pages[name])
        page = browser_page.page
        page.wait_for_timeout(300)
        assert page.locator(".js-plotly-plot .main-svg").count() >= 1
        drawn = page.locator(".js-plotly-plot .trace, .js-plotly-plot .hm, .js-plotly-plot .im, .js-plotly-plot .table")
        assert drawn.count() >= 1, "plotly drew no trace"
        page.screenshot(path=str(artifact_path(f"{name}.png")), full_page=True)
        if name in ("token_reduction_video", "attribution_overlay"):  # several tubelets to scrub
            _scrub_to_last(page)
            page.screenshot(path=str(artifact_path(f"{name}_last_panel.png")), full_page=True)
        assert browser_page.console_errors == [], browser_page.console_errors
        assert browser_page.requests == [], f"the page requested {browser_page.requests}"
        assert browser_page.refused == []
    finally:
        browser_page.close()


def _scrub_to_last(page) -> None:
    """Drag plotly's slider to its end: a kernel-free frame change that must redraw without errors."""
    rail = page.locator(".slider-container .slider-rail-touch-rect").first
    box = rail.bounding_box()
    before = page.locator(".slider-container .slider-group > text.slider-label").first
    label_before = before.text_content() if before.count() else ""
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(600)
    label_after = before.text_content() if before.count() else ""
    assert label_after != label_before, f"the slider did not move ({label_before!r})"


def _notebook(source: str) -> dict:
    cells = [
        source,
        "from omni_lab.widgets import Dashboard\n"
        "dashboard = Dashboard(run, lab)\n"
        "dashboard.reduction.show_panel(-1)  # the last tubelet: one EVS prunes\n"
        "dashboard",
    ]
    return {
        "cells": [
            {
                "id": f"cell-{index}",
                "cell_type": "code",
                "metadata": {},
                "source": cell,
                "outputs": [],
                "execution_count": None,
            }
            for index, cell in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_dashboard_in_jupyterlab(fresh_chromium, tmp_path):
    skip_unless_browser(jupyterlab=True)
    (tmp_path / "dashboard.ipynb").write_text(json.dumps(_notebook(LOAD_SOURCE + RUN_SOURCE)), encoding="utf-8")
    with jupyterlab_server(tmp_path) as (base, token):
        page = fresh_chromium.new_page(viewport={"width": 1500, "height": 1500})
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text[:300]}"))
        try:
            _drive_dashboard(page, base, token)
        except Exception:
            lines = [f"{len(console)} console messages", *console[:40], "...", *console[-40:]]
            artifact_path("jupyterlab_dashboard_console.txt").write_text("\n".join(lines), encoding="utf-8")
            raise


def _drive_dashboard(page, base: str, token: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{base}/lab/tree/dashboard.ipynb?token={token}", timeout=90_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        accept_dialog(page)  # "Select Kernel", when JupyterLab asks
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        plot = page.locator(".jp-OutputArea .js-plotly-plot .main-svg").first
        plot.wait_for(timeout=150_000)
        page.wait_for_function(f"() => ({KEPT_POINTS_JS})() > 0", timeout=30_000)
        assert page.get_by_text("Error displaying widget").count() == 0
        before = page.evaluate(KEPT_POINTS_JS)
        output = page.locator(".jp-OutputArea-output").last
        output.scroll_into_view_if_needed()
        page.screenshot(path=str(artifact_path("jupyterlab_dashboard.png")))
        output.screenshot(path=str(artifact_path("jupyterlab_dashboard_widget.png")))
        _set_rate(page, 0.9)
        page.wait_for_function(f"before => ({KEPT_POINTS_JS})() !== before", arg=before, timeout=60_000)
        after = page.evaluate(KEPT_POINTS_JS)
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifact_path("jupyterlab_dashboard_rate.png")))
        output.screenshot(path=str(artifact_path("jupyterlab_dashboard_rate_widget.png")))
        assert after < before, f"raising the rate to 0.9 should draw fewer kept tokens ({before} -> {after})"
        page.locator(".lm-TabBar-tabLabel", has_text="Expert routing").first.click()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot'))"
            ".filter(plot => plot.getBoundingClientRect().width > 300).length === 1",
            timeout=30_000,
        )  # the routing tab's plot draws when shown, and the reduction map's is hidden
        output.screenshot(path=str(artifact_path("jupyterlab_dashboard_routing_tab.png")))
        assert page.get_by_text("Error displaying widget").count() == 0
        assert errors == [], errors
    except Exception:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(artifact_path("jupyterlab_dashboard_failure.png")), timeout=10_000)
        raise


# Kept-token marks drawn by the live TokenReductionMap: the SVG points of its "kept" scatter trace (FigureWidget gives
# traces fresh uids, so the trace is found by name in plotly's own _fullData, then its points counted in the DOM).
KEPT_POINTS_JS = """() => {
  let count = 0;
  for (const plot of document.querySelectorAll('.jp-OutputArea .js-plotly-plot')) {
    for (const trace of plot._fullData || []) {
      if (trace.type === 'scatter' && trace.name === 'kept' && trace.mode === 'markers') {
        count += plot.querySelectorAll('g.trace' + trace.uid + ' path.point').length;
      }
    }
  }
  return count;
}"""


def _set_rate(page, value: float) -> None:
    """Type a value into the rate slider's readout (what a user does to set it exactly)."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^rate$"))).first
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(f"{value:.2f}")
    page.keyboard.press("Enter")
