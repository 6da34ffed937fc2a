"""The playground's Gradio app: `build_app(lab)` builds the Blocks, `launch(lab)` serves them.

Layout: the question, image / video / audio inputs (audio from a file or the microphone; "Use the video's sound" adds
the video's own sound track), the thinking toggle, the reducer and its rate, max new tokens; the answer streamed token
by token beside its stats; the token-reduction map, expert routing and modality attention panels; a gallery of
ShapesWorld examples with their known answers.

The Chat tab (`chat.py`) holds a conversation: each turn may attach media, and the model answers with the history in
context (a single-turn model, the toy twin, answers each turn alone and the tab says so). The Compare tab
(`compare_tab.py`) runs one question in two arms (reducer and rate each) side by side; "Download" in
both tabs writes the last answer as one self-contained HTML report and its JSON with provenance (`export.py`).

Programs use the public endpoints `/ask` (see `handlers.ask`) and `/compare` (see `compare.compare`):

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    answer, stats, reduction, routing, attention = client.predict(
        "What colour is the square?", handle_file("square.png"), None, None, "model", 0.5, 16, api_name="/ask")
    answer_a, answer_b, table, comparison, map_a, map_b, shift, mass = client.predict(
        "How many beeps?", None, None, handle_file("beeps.flac"), "evs", 0.7, "random-matched", 0.7, 16,
        api_name="/compare")

Serving: the queue lets one request at a time touch the model (concurrency limit 1, one concurrency group for
every model event), holds at most `settings.queue_size` waiting requests, and each request stops at
`settings.time_limit_s`; uploads over `settings.max_file_mb` are refused by gradio at upload and by the handler.
The app binds to 127.0.0.1 and opens no share link unless asked.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import gradio as gr

from . import export, handlers
from .chat import build_chat_tab
from .compare_tab import build_compare_tab
from .examples import load_examples
from .inputs import media_inputs, new_tokens_slider, rate_slider, thinking_box

CONCURRENCY_ID = "model"  # every event that runs the model joins this group: one request at a time
DEFAULT_MAX_NEW_TOKENS = 16
DEFAULT_RATE = 0.5
EXAMPLES_PER_PAGE = 6
MEDIA_HEIGHT = 180


def _header(lab) -> str:
    info = f"**Model:** `{lab.source.spec}` on `{lab.device}` — layers `{lab.layer_pattern}`"
    if handlers.is_shapesworld_model(lab):
        info += (
            " — the toy twin: it knows ShapesWorld only (coloured shapes, moving shapes, beeps). Pick an example "
            "below, or upload a 128×128 picture or an 8 fps clip (mp4, webm) of shapes and ask about them."
        )
    return (
        "# omni-lab playground\nAsk about text, an image, a video and audio; watch the answer stream, and see which "
        "tokens reached the model, which experts they were routed to, and where the answer looked.\n\n" + info
    )


def build_app(lab, settings: handlers.PlaygroundSettings | None = None) -> gr.Blocks:
    """Build the playground for one loaded model without launching it.

    Args:
        lab: the loaded `Lab` (every request runs on it, one at a time).
        settings: limits and video sampling; default `handlers.default_settings(lab)`.
    Returns:
        `gr.Blocks` with the queue configured; `.launch()` it, or call `launch(lab)`.
    """
    settings = settings or handlers.default_settings(lab)
    note = handlers.reasoning_note(lab, settings)
    examples = gallery_order(load_examples())
    with gr.Blocks(title="omni-lab playground", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(_header(lab))
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Ask", id="ask", elem_id="ask-tab"):
                with gr.Row():
                    with gr.Column(scale=3):
                        question = gr.Textbox(
                            label="Question", placeholder="What colour is the square?", lines=2, elem_id="question"
                        )
                        with gr.Row():
                            image, video, video_audio, audio = media_inputs("", MEDIA_HEIGHT)
                        thinking = thinking_box(note)
                        with gr.Row():
                            reducer = gr.Dropdown(
                                label="Token reducer",
                                choices=list(handlers.REDUCERS),
                                value="model",
                                info="model: the model's own EVS at its rate · none · video: evs, pixeldiff, uniform · "
                                "image, video, audio: random, divprune · image, video: tome, visionzip, downsample (a control) "
                                "· inside the LLM (dropped tokens leave the later layers' panels): pyramiddrop, sparsevlm",
                            )
                            rate = rate_slider(DEFAULT_RATE)
                        max_new_tokens = new_tokens_slider(settings, DEFAULT_MAX_NEW_TOKENS)
                        with gr.Row():
                            submit = gr.Button("Ask", variant="primary", elem_id="ask-button")
                            clear = gr.ClearButton(value="Clear")
                    with gr.Column(scale=2):
                        answer = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id="answer")
                        known_answer = gr.Textbox(
                            label="Known answer (ShapesWorld ground truth of the chosen example)",
                            interactive=False,
                            elem_id="known-answer",
                        )
                        stats = gr.JSON(
                            label="Stats: tokens per modality before / after reduction, timings",
                            elem_id="stats",
                            open=True,
                            max_height=420,
                        )
                        with gr.Row():
                            download, exported = export.download_controls("ask")
                gr.Examples(
                    examples=[
                        [example.question, example.image, example.video, example.audio, example.answer]
                        for example in examples
                    ],
                    inputs=[question, image, video, audio, known_answer],
                    label="ShapesWorld examples (image, video, audio, video + audio, text) with their known answers",
                    examples_per_page=EXAMPLES_PER_PAGE,
                    api_visibility="private",
                )
                gr.Markdown("## Inside the answer")
                reduction_plot = gr.Plot(
                    label="Token reduction map", show_label=False, elem_id="reduction-plot"
                )  # titled by the figure
                routing_plot = gr.Plot(
                    label="Expert routing", show_label=False, elem_id="routing-plot"
                )  # titled by the figure
                attention_plot = gr.Plot(
                    label="Modality attention and Mamba mass", show_label=False, elem_id="attention-plot"
                )  # titled by the figure
                inputs = [question, image, video, audio, reducer, rate, max_new_tokens, thinking, video_audio]
                outputs = [answer, stats, reduction_plot, routing_plot, attention_plot]
                ask = functools.partial(export.ask_keeping_run, lab, settings)  # handlers.ask + the run for Download
                kept = export.session_state()
                common = {
                    "fn": ask,
                    "inputs": inputs,
                    "outputs": [*outputs, kept],
                    "preprocess": False,  # uploads reach the handler as files, so a corrupt one gets a message of ours
                    "concurrency_limit": 1,
                    "concurrency_id": CONCURRENCY_ID,
                }
                submit.click(**common, api_name="ask", api_description=_API_DESCRIPTION)
                question.submit(**common, api_visibility="private")
                clear.add([question, image, video, audio, known_answer, *outputs, exported])
                for event in (question.input, image.upload, video.upload, audio.upload, audio.stop_recording):
                    event(_no_known_answer, None, known_answer, queue=False, api_visibility="private")
                download.click(
                    functools.partial(export.download_run, lab), inputs=kept, outputs=exported, api_visibility="private"
                )
            with gr.Tab("Compare", id="compare", elem_id="compare-tab"):
                build_compare_tab(
                    lab,
                    settings,
                    examples,
                    concurrency_id=CONCURRENCY_ID,
                    max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                    examples_per_page=EXAMPLES_PER_PAGE,
                )
            with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                build_chat_tab(
                    lab,
                    settings,
                    concurrency_id=CONCURRENCY_ID,
                    max_new_tokens=min(DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens),
                )
    app.queue(default_concurrency_limit=1, max_size=settings.queue_size)
    return app


_API_DESCRIPTION = (
    "Answer a question about optional image, video and audio files. Arguments: question, image, video, audio "
    f"(handle_file(path) or None), reducer ({' | '.join(handlers.REDUCERS)}), rate "
    "(fraction of tokens dropped, 0-0.95), max_new_tokens, thinking (optional, default False), video_audio "
    "(optional, default True: the video file's own sound track goes right after the video; a video without one is "
    "answered without sound and the stats carry a note). Returns: answer, stats "
    "(tokens per modality before/after reduction, timings, tokens per second), token-reduction map, expert routing "
    "and modality attention figures (plotly)."
)


def gallery_order(examples: list) -> list:
    """Examples interleaved by family (image, video, audio, omni, text, image, ...), so every page shows each."""
    families: dict[str, list] = {}
    for example in examples:
        families.setdefault(example.family, []).append(example)
    rounds = max(len(members) for members in families.values())
    return [members[turn] for turn in range(rounds) for members in families.values() if turn < len(members)]


def _no_known_answer():
    """Any new upload or typed question is no longer the chosen example: its known answer no longer applies."""
    return ""


def launch(
    lab,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_file_mb: float | None = None,
    settings: handlers.PlaygroundSettings | None = None,
    block: bool = True,
    quiet: bool = False,
):
    """Build and serve the playground.

    Args:
        lab: the loaded `Lab`.
        host: interface to bind (127.0.0.1: this machine only).
        port: TCP port.
        share: open a public gradio.live link (only when asked).
        max_file_mb: upload limit in MB (overrides `settings.max_file_mb`).
        settings: playground limits; default `handlers.default_settings(lab)`.
        block: keep serving until interrupted (False: return once the server is up, e.g. in tests).
        quiet: do not print the URL.
    Returns:
        (`gr.Blocks`, local URL).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    settings = settings or handlers.default_settings(lab)
    if max_file_mb is not None:
        settings = dataclasses.replace(settings, max_file_mb=float(max_file_mb))
    app = build_app(lab, settings)
    _, local_url, _ = app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=settings.max_file_bytes,
        show_error=True,
        ssr_mode=False,
        prevent_thread_lock=not block,
        quiet=quiet,
    )
    return app, local_url
