"""The playground's Compare tab: one question and its media, two arms side by side (`compare.compare`, `/compare`).

Layout: the question and image / video / audio inputs, arm A's and arm B's reducer and rate, max new tokens, the
thinking toggle; both answers streamed side by side over a table of tokens before / after, time to first token and
prefill per arm; "Download" (the HTML report and JSON of the comparison, `export.py`); the ShapesWorld gallery; each
arm's token-reduction map, the routing shift and the modality-mass difference; the comparison as JSON.
"""

from __future__ import annotations

import functools

import gradio as gr

from . import compare, export, handlers
from .inputs import media_inputs, new_tokens_slider, rate_slider, thinking_box

MEDIA_HEIGHT = 160
RATE_HELP = "fraction of tokens dropped; unused by model, none and random at arm A's budget"

API_DESCRIPTION = (
    "Answer one question about optional image, video and audio files in two arms, one after the other, and compare "
    "them. Arguments: question, image, video, audio (handle_file(path) or None), reducer_a, rate_a, reducer_b, "
    f"rate_b ({' | '.join(handlers.REDUCERS)}; reducer_b also {compare.MATCHED!r}: RandomDrop keeping arm A's "
    "budget; rates in 0-0.95), max_new_tokens, thinking (optional, default False), video_audio (optional, default "
    "True: the video file's own sound track goes right after the video, as in /ask). Returns: answer A, answer B, the "
    "side-by-side table (headers, data), the comparison as JSON (each arm's stats: tokens before/after, timings with "
    "first_token_s and prefill_s; the routing shift of each arm against no reduction; the modality-mass difference "
    "B - A), and four plotly figures: token-reduction map A, token-reduction map B, routing shift, mass difference."
)


def _arm(name: str, choice: str, rate: float):
    with gr.Column(min_width=220):
        reducer = gr.Dropdown(
            label=f"Arm {name}: token reducer",
            choices=compare.arm_choices(name),
            value=choice,
            elem_id=f"compare-reducer-{name.lower()}",
        )
        slider = rate_slider(rate, label=f"Arm {name}: rate", info=RATE_HELP, elem_id=f"compare-rate-{name.lower()}")
    return reducer, slider


def build_compare_tab(
    lab,
    settings: handlers.PlaygroundSettings,
    examples: list,
    *,
    concurrency_id: str,
    max_new_tokens: int,
    examples_per_page: int,
) -> None:
    """Build the Compare tab's components and events inside the current `gr.Tab`.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits.
        examples: the gallery (`GalleryExample`s, in display order).
        concurrency_id: the model's concurrency group (one request at a time, shared with `/ask`).
        max_new_tokens: the slider's starting value.
        examples_per_page: gallery page size.
    """
    note = handlers.reasoning_note(lab, settings)
    with gr.Row():
        with gr.Column(scale=3):
            question = gr.Textbox(
                label="Question", placeholder="How many beeps are there?", lines=2, elem_id="compare-question"
            )
            with gr.Row():
                image, video, video_audio, audio = media_inputs("compare-", MEDIA_HEIGHT)
            with gr.Row():
                reducer_a, rate_a = _arm("A", *compare.DEFAULT_ARMS[0])
                reducer_b, rate_b = _arm("B", *compare.DEFAULT_ARMS[1])
            with gr.Row():
                tokens = new_tokens_slider(settings, max_new_tokens)
                thinking = thinking_box(note)
            with gr.Row():
                submit = gr.Button("Compare", variant="primary", elem_id="compare-button")
                clear = gr.ClearButton(value="Clear")
        with gr.Column(scale=2):
            with gr.Row():
                answer_a = gr.Textbox(label="Answer A", lines=2, interactive=False, elem_id="compare-answer-a")
                answer_b = gr.Textbox(label="Answer B", lines=2, interactive=False, elem_id="compare-answer-b")
            known_answer = gr.Textbox(
                label="Known answer (ShapesWorld ground truth of the chosen example)",
                interactive=False,
                elem_id="compare-known-answer",
            )
            download, files = export.download_controls("compare")
    table = gr.Dataframe(
        headers=compare.table_headers(),
        label="Side by side: tokens before / after, time to first token, prefill",
        interactive=False,
        wrap=True,
        column_widths=["30%", "35%", "35%"],
        elem_id="compare-table",
    )
    gr.Examples(
        examples=[[e.question, e.image, e.video, e.audio, e.answer] for e in examples],
        inputs=[question, image, video, audio, known_answer],
        label="ShapesWorld examples (load into compare mode) with their known answers",
        examples_per_page=examples_per_page,
        api_visibility="private",
    )
    gr.Markdown("## Inside the two answers")
    reduction_a = gr.Plot(show_label=False, elem_id="compare-reduction-a")  # titled by the figure; full width each,
    reduction_b = gr.Plot(show_label=False, elem_id="compare-reduction-b")  # as the map's panels need it
    shift_plot = gr.Plot(show_label=False, elem_id="compare-routing-shift")
    mass_plot = gr.Plot(show_label=False, elem_id="compare-mass-difference")
    with gr.Accordion("The comparison as JSON (what /compare returns)", open=False):
        comparison = gr.JSON(label="Comparison", elem_id="compare-json", max_height=480)
    kept = export.session_state()

    inputs = [question, image, video, audio, reducer_a, rate_a, reducer_b, rate_b, tokens, thinking, video_audio]
    outputs = [answer_a, answer_b, table, comparison, reduction_a, reduction_b, shift_plot, mass_plot, kept]
    common = {
        "fn": functools.partial(compare.compare, lab, settings),
        "inputs": inputs,
        "outputs": outputs,
        "preprocess": False,  # uploads reach the handler as files (see handlers.upload_path)
        "concurrency_limit": 1,
        "concurrency_id": concurrency_id,
    }
    submit.click(**common, api_name="compare", api_description=API_DESCRIPTION)
    question.submit(**common, api_visibility="private")
    download.click(
        functools.partial(export.download_comparison, lab), inputs=kept, outputs=files, api_visibility="private"
    )
    clear.add([question, image, video, audio, known_answer, *outputs[:-1], files])
    for event in (question.input, image.upload, video.upload, audio.upload, audio.stop_recording):
        event(lambda: "", None, known_answer, queue=False, api_visibility="private")
