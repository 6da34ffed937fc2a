"""The playground end to end in headless Chromium (Debian's, driven by Playwright): upload, ask, answer, panels,
then a corrupt upload's error and a good request after it."""

import pytest

from omni_lab.playground.examples import load_examples
from tests.browser_support import artifact_path, free_port, skip_unless_browser  # noqa: F401

pytestmark = pytest.mark.browser
PANELS = ("reduction-plot", "routing-plot", "attention-plot")


@pytest.fixture(scope="module")
def playground_url(twin_lab):
    skip_unless_browser()
    pytest.importorskip("gradio")
    from omni_lab.playground import launch

    app, url = launch(twin_lab, port=free_port(), block=False, quiet=True)
    try:
        yield url
    finally:
        app.close()


def _ask(page, image_path, question):
    page.locator("#question textarea").fill(question)
    page.locator("#image-input input[type=file]").set_input_files(str(image_path))
    page.locator("#image-input img").first.wait_for(timeout=30_000)
    page.locator("#ask-button").click()


def test_upload_ask_see_the_answer_and_panels_then_a_corrupt_upload_errors_and_the_next_answers(
    fresh_chromium,
    playground_url,
    tmp_path,
):
    from playwright.sync_api import expect

    example = next(example for example in load_examples() if example.name == "image-colour")
    page = fresh_chromium.new_page(viewport={"width": 1400, "height": 1100})
    console_errors = []
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        # "load", not "networkidle": the app's session state (gr.State) keeps gradio's heartbeat request open
        page.goto(playground_url, wait_until="load", timeout=60_000)
        page.locator("#question textarea").wait_for(timeout=60_000)
        _ask(page, example.image, example.question)
        answer = page.locator("#answer textarea")
        expect(answer).to_have_value(example.answer, timeout=120_000)
        for panel in PANELS:
            page.locator(f"#{panel} .js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
            assert page.locator(f"#{panel} .js-plotly-plot .plot-container").count() >= 1, panel
        expect(page.locator("#stats")).to_contain_text("tokens_before", timeout=30_000)
        page.screenshot(path=str(artifact_path("playground.png")), full_page=True)

        corrupt = tmp_path / "corrupt.png"
        corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not a picture" * 20)
        page.locator("#image-input button[aria-label='Remove Image']").click()
        page.locator("#image-input input[type=file]").set_input_files(str(corrupt))
        page.locator("#ask-button").click()
        error = page.locator(".toast-body").filter(has_text="'corrupt.png' could not be decoded")
        error.first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(800)  # let the toast finish sliding in before the screenshot
        page.screenshot(path=str(artifact_path("playground_error.png")))
        expect(answer).to_have_value("", timeout=30_000)  # the earlier answer does not linger beside the error

        page.locator("#image-input button[aria-label='Remove Image']").click()
        _ask(page, example.image, example.question)
        expect(answer).to_have_value(example.answer, timeout=120_000)
        assert not console_errors, console_errors
    finally:
        page.close()
