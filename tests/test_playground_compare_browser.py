"""Compare mode and "Download" in headless Chromium: a gallery example loaded into the Compare tab, both answers and
panels, then the exported report opened offline (every request refused and recorded) and its JSON checked."""

import hashlib
import json
from pathlib import Path

import pytest

from omni_lab.playground.app import EXAMPLES_PER_PAGE, gallery_order
from omni_lab.playground.examples import load_examples
from tests.browser_support import OfflinePage, artifact_path, free_port, skip_unless_browser

pytestmark = pytest.mark.browser
COMPARE_PANELS = ("compare-reduction-a", "compare-reduction-b", "compare-routing-shift", "compare-mass-difference")


@pytest.fixture(scope="module")
def playground_url(twin_lab):
    skip_unless_browser()
    pytest.importorskip("gradio")
    from omni_lab.playground import handlers, launch

    settings = handlers.default_settings(twin_lab, time_limit_s=900.0)  # two arms on a shared 2-core machine
    app, url = launch(twin_lab, port=free_port(), block=False, quiet=True, settings=settings)
    try:
        yield url
    finally:
        app.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, wait_until="load", timeout=120_000)
    return page, errors


def _download_all(page, prefix: str, folder: Path) -> dict[str, Path]:
    """Click Download, then each exported file's link; {suffix: saved path}."""
    page.locator(f"#{prefix}-download").click()
    links = page.locator(f"#{prefix}-files a[download]")
    links.nth(1).wait_for(timeout=120_000)
    saved = {}
    for index in range(links.count()):
        with page.expect_download(timeout=60_000) as info:
            links.nth(index).click()
        download = info.value
        path = folder / download.suggested_filename
        download.save_as(path)
        saved[path.suffix] = path
    return saved


def _check_offline(browser, report: Path, screenshot: str) -> int:
    """Open the report with every request refused; returns the number of plots drawn."""
    offline = OfflinePage(browser, viewport=(1400, 1000))
    try:
        offline.open_file(report, wait_selector=".plotly-graph-div .main-svg", timeout_ms=120_000)
        page = offline.page
        expected = report.read_text().count('class="plotly-graph-div"')
        page.wait_for_function(
            f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= {expected}", timeout=120_000
        )
        drawn = page.locator(".plotly-graph-div").evaluate_all(
            "(divs) => divs.filter(d => d.querySelector('.main-svg') && d._fullLayout).length"
        )
        assert drawn == expected >= 3
        text = page.locator("body").inner_text()
        assert "Error" not in text and "Traceback" not in text  # no exception's name or trace on the page
        assert offline.requests == [] and offline.refused == [], offline.requests  # nothing fetched but the page
        assert not offline.console_errors, offline.console_errors
        page.screenshot(path=str(artifact_path(screenshot)), full_page=True)
        return drawn
    finally:
        offline.close()


def _checkpoint_hashes(record: dict) -> None:
    model = record["provenance"]["model"]
    folder = Path(model["path"])
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    assert {entry["name"]: entry["sha256"] for entry in model["files"]} == on_disk
    import torch
    import transformers

    versions = record["provenance"]["versions"]
    assert (versions["transformers"], versions["torch"]) == (transformers.__version__, torch.__version__)


def test_compare_a_gallery_example_side_by_side_then_download_a_report_that_opens_offline(
    fresh_chromium, playground_url, tmp_path
):
    from playwright.sync_api import expect

    example = next(e for e in gallery_order(load_examples())[:EXAMPLES_PER_PAGE] if e.family == "omni")
    page, errors = _open(fresh_chromium, playground_url)
    try:
        page.get_by_role("tab", name="Compare").click()
        tab = page.locator("#compare-tab")
        row = tab.locator("tr.tr-body").filter(has_text=Path(example.audio).name)  # long questions are cut short
        row.first.click()  # the gallery loads into compare mode
        expect(page.locator("#compare-question textarea")).to_have_value(example.question, timeout=30_000)
        expect(page.locator("#compare-known-answer textarea")).to_have_value(example.answer, timeout=30_000)
        page.locator("#compare-video video").first.wait_for(state="attached", timeout=60_000)
        page.locator("#compare-button").click()
        for arm in ("a", "b"):
            expect(page.locator(f"#compare-answer-{arm} textarea")).to_have_value(example.answer, timeout=300_000)
        for panel in COMPARE_PANELS:
            page.locator(f"#{panel} .js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
        table = page.locator("#compare-table")
        expect(table).to_contain_text("random for EVS 0.7", timeout=30_000)
        expect(table).to_contain_text("time to first token (s)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifact_path("playground_compare.png")), full_page=True)

        files = _download_all(page, "compare", tmp_path)
        assert set(files) == {".html", ".json"}
        record = json.loads(files[".json"].read_text())
        assert [arm["answer"] for arm in record["arms"]] == [example.answer] * 2
        assert [arm["label"] for arm in record["arms"]] == ["EVS 0.7", "random for EVS 0.7"]
        _checkpoint_hashes(record)
        assert not errors, errors
    finally:
        page.close()
    drawn = _check_offline(fresh_chromium, files[".html"], "exported_report.png")
    assert drawn >= 2 + 2 * 3  # routing shift, mass difference, and each arm's summary, map and routing at least


def test_download_in_the_ask_tab_exports_the_answer_shown(fresh_chromium, playground_url, tmp_path):
    from playwright.sync_api import expect

    example = next(e for e in load_examples() if e.name == "image-colour")
    page, errors = _open(fresh_chromium, playground_url)
    try:
        page.locator("#question textarea").fill(example.question)
        page.locator("#image-input input[type=file]").set_input_files(example.image)
        page.locator("#image-input img").first.wait_for(timeout=60_000)
        page.locator("#ask-button").click()
        expect(page.locator("#answer textarea")).to_have_value(example.answer, timeout=300_000)
        expect(page.locator("#stats")).to_contain_text("tokens_before", timeout=120_000)  # the request has finished
        files = _download_all(page, "ask", tmp_path)
        record = json.loads(files[".json"].read_text())
        assert record["answer"] == example.answer and record["prompt"]["text"] == example.question
        assert record["timings"]["first_token_s"] > 0
        _checkpoint_hashes(record)
        assert not errors, errors
    finally:
        page.close()
    _check_offline(fresh_chromium, files[".html"], "exported_run.png")
