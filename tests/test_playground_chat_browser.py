"""The playground's Chat tab in headless Chromium on the toy twin: a first turn about an image, a second turn about new
media (an audio clip), each answered from its own media, the single-turn note and the disabled thinking toggle shown."""

import pytest

from omni_lab.playground.examples import load_examples
from tests.browser_support import artifact_path, free_port, skip_unless_browser

pytestmark = pytest.mark.browser


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


def _send(page, question, kind, path):
    page.locator("#chat-question textarea").fill(question)
    page.locator(f"#chat-{kind}-input input[type=file]").set_input_files(str(path))
    preview = "img" if kind == "image" else "audio, .waveform-container, wave"
    page.locator(f"#chat-{kind}-input").locator(preview).first.wait_for(state="attached", timeout=30_000)
    page.locator("#chat-send").click()


def test_chat_tab_second_turn_asks_about_new_media(fresh_chromium, playground_url):
    from playwright.sync_api import expect

    examples = {example.name: example for example in load_examples()}
    colour, beeps = examples["image-colour"], examples["audio-beep-count"]
    page = fresh_chromium.new_page(viewport={"width": 1400, "height": 1300})
    console_errors = []
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        page.goto(playground_url, wait_until="load", timeout=120_000)
        page.get_by_role("tab", name="Chat").click(timeout=120_000)
        expect(page.locator("#chat-note")).to_contain_text("single-turn and non-thinking")
        expect(page.locator("#chat-thinking input[type=checkbox]")).to_be_disabled()

        bot = page.locator("#chatbot .message.bot")
        _send(page, colour.question, "image", colour.image)
        expect(bot.last).to_have_text(colour.answer, timeout=120_000)
        expect(page.locator("#chat-question textarea")).to_have_value("", timeout=30_000)  # cleared for the next turn

        _send(page, beeps.question, "audio", beeps.audio)
        expect(bot).to_have_count(2, timeout=120_000)
        expect(bot.last).to_have_text(beeps.answer, timeout=120_000)
        expect(bot.first).to_have_text(colour.answer)
        expect(page.locator("#chat-stats")).to_contain_text("this turn only", timeout=30_000)
        turns = page.locator("#chat-turns")
        expect(turns).to_contain_text("audio", timeout=30_000)
        page.locator("#chat-reduction-plot .js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
        page.screenshot(path=str(artifact_path("playground_chat.png")), full_page=True)
        assert not console_errors, console_errors
    finally:
        page.close()
