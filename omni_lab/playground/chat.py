"""The playground's Chat tab: a conversation where each turn may attach an image, a video and an audio clip.

The model answers each turn with the whole conversation in context (`lab.chat`, the release's chat template over
every turn); the reducer acts on every turn's media, and the token map and the three panels cover the whole
conversation, with a table of each turn's tokens before and after reduction. A reasoning model gets a thinking toggle
and a thinking budget (the most reasoning tokens before `</think>` is written for it, `RunOptions.thinking_budget`).

A model trained on single questions (the ShapesWorld twin, `conversation.single_turn_reason`) cannot use a history:
there each turn is answered from that turn's question and media alone, and the tab says so above the chat.

The conversation lives in the session's `gr.State` (each turn's question, its uploads as gradio file payloads, the
answer); every turn decodes the earlier turns' uploads again, so nothing but those payloads is kept.
"""

from __future__ import annotations

import functools
import html
import time

import gradio as gr

from ..conversation import single_turn_reason
from ..errors import OmniLabInputError, OmniLabModelError
from ..modalities import MEDIA
from . import handlers
from .figures import figures
from .inputs import new_tokens_slider, rate_slider, thinking_box

DEFAULT_THINKING_BUDGET = 256
TABLE_COLUMNS = ["turn", "modality", "item", "tokens", "kept"]


def history_note(lab) -> str | None:
    """The note above the chat of a model that takes one question at a time (None when it takes the history)."""
    if single_turn_reason(lab.source) is None:
        return None
    return (
        "**The toy twin is single-turn and non-thinking:** it was trained on single ShapesWorld questions, so each "
        "turn is answered from that turn's question and media alone (earlier turns stay on screen, not in its "
        "context). Attach new media to each turn you ask about."
    )


def chat_messages(history: list[dict]) -> list[dict]:
    """The `gr.Chatbot` messages of the conversation so far: each user turn's uploads then its question; each answer,
    after its reasoning (a collapsible "Reasoning" message) when there was some."""
    messages = []
    for turn in history:
        files = [
            {"path": str(upload[0])}
            for kind in MEDIA
            if (upload := handlers.upload_path(kind, turn.get(kind))) is not None
        ]
        content = [*files, turn["question"]] if turn["question"] else files
        messages.append({"role": "user", "content": content})
        if turn.get("reasoning"):
            messages.append({"role": "assistant", "content": turn["reasoning"], "metadata": {"title": "Reasoning"}})
        if turn.get("answer") is not None:
            messages.append({"role": "assistant", "content": turn["answer"]})
    return messages


def conversation_messages(history: list[dict], settings: handlers.PlaygroundSettings) -> list[dict]:
    """`lab.chat` messages of the conversation: each user turn's decoded uploads then its question; each answer."""
    messages = []
    for turn in history:
        uploads = handlers.load_uploads(turn.get("image"), turn.get("video"), turn.get("audio"), settings)
        content = [{"type": "image", "image": image} for image in uploads.get("images", [])]
        if "video" in uploads:
            content.append({"type": "video", "video": uploads["video"]})
        if "audio" in uploads:
            content.append({"type": "audio", "audio": uploads["audio"]})
        if turn["question"]:
            content.append({"type": "text", "text": turn["question"]})
        messages.append({"role": "user", "content": content})
        if turn.get("answer") is not None:
            messages.append({"role": "assistant", "content": turn["answer"]})
    return messages


def turn_table(run, first_turn: int = 0):
    """Each turn's tokens per modality and item, before reduction and kept (the answer as "generated").

    Args:
        run: the `Run`.
        first_turn: the conversation's number of the run's turn 0 (a single-turn model's run is one turn).
    Returns:
        pandas DataFrame with `TABLE_COLUMNS`.
    """
    df = run.token_map.df
    table = df.groupby(["turn", "modality", "item"], sort=True).agg(tokens=("kept", "size"), kept=("kept", "sum"))
    table = table.reset_index()
    table["turn"] += first_turn
    table["kept"] = table["kept"].astype(int)
    return table[TABLE_COLUMNS]


def chat(
    lab,
    settings: handlers.PlaygroundSettings,
    history: list[dict] | None,
    question: str,
    image=None,
    video=None,
    audio=None,
    reducer: str = "model",
    rate: float = 0.5,
    max_new_tokens: int = 16,
    thinking: bool = False,
    thinking_budget: int | None = None,
):
    """Answer the next turn of a conversation, streaming the answer.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits.
        history: the turns so far (dicts with "question", "image", "video", "audio", "answer", "reasoning").
        question: this turn's text.
        image, video, audio: this turn's uploads (None, paths or gradio file payloads).
        reducer, rate, max_new_tokens: as in `handlers.ask`.
        thinking: let a reasoning model think first (refused for models without reasoning).
        thinking_budget: the most reasoning tokens (None: no budget); used with `thinking`.
    Yields:
        (chat messages, history, stats, turn table, reduction figure, routing figure, attention figure): the turn
        pending, then one tuple per decoded token, then everything filled in with the turn added to the history.
    Raises:
        gr.Error: any input problem (named), a model that cannot run, or the per-request time limit; the chat then
            shows the conversation as it was.
    """
    from ..lab import Run

    started = time.perf_counter()
    history = list(history or [])
    turn = {"question": question or "", "image": image, "video": video, "audio": audio, "answer": None}
    shown = chat_messages(history)
    try:
        try:
            prompt, first_turn, budget = _prompt(lab, settings, history, turn, thinking, thinking_budget)
            max_new_tokens = handlers._check_max_new_tokens(max_new_tokens, settings)
            run_reducer = handlers.make_reducer(reducer, rate)
            pending = [*history, {**turn, "answer": ""}]
            yield chat_messages(pending), gr.skip(), {}, None, None, None, None
            run, first_token_s = None, None
            stream = lab.stream(
                prompt,
                max_new_tokens=max_new_tokens,
                reducer=run_reducer,
                capture=handlers.captures(run_reducer),
                thinking_budget=budget,
            )
            try:
                for item in stream:
                    if isinstance(item, Run):
                        run = item
                        break
                    first_token_s = first_token_s or time.perf_counter() - started
                    if time.perf_counter() - started > settings.time_limit_s:
                        raise OmniLabInputError(
                            f"the answer was still being written after {settings.time_limit_s:g} s, this "
                            "playground's per-request time limit; ask for fewer new tokens or use shorter media"
                        )
                    pending[-1]["answer"] += item.text
                    yield chat_messages(pending), *([gr.skip()] * 6)
            finally:
                stream.close()
            if run is None:
                raise RuntimeError("the model's stream ended without its Run")
            figure_set = figures(run)
            stats = handlers.run_stats(lab, run, first_token_s, time.perf_counter() - started)
        except (OmniLabInputError, OmniLabModelError) as error:
            raise gr.Error(
                html.escape(str(error), quote=False), title="Cannot answer this turn", print_exception=False
            ) from None
    except gr.Error:
        yield shown, *([gr.skip()] * 6)  # the conversation as it was, without the turn that failed
        raise
    single = first_turn > 0 or single_turn_reason(lab.source) is not None
    context = "this turn only (the model is single-turn)" if single else f"all {len(history) + 1} turn(s)"
    stats = {"turn": len(history), "context": context, **stats}
    history.append({**turn, "answer": run.answer, "reasoning": run.reasoning or None})
    yield chat_messages(history), history, stats, turn_table(run, first_turn), *figure_set


def _prompt(lab, settings, history, turn, thinking, thinking_budget):
    """(the `Prompt` of this turn, the conversation number of its turn 0, the thinking budget to run with)."""
    note = handlers.reasoning_note(lab, settings)
    if thinking and note is not None:
        raise OmniLabInputError(f"thinking=True: {note} Ask again with thinking off.")
    budget = None
    if thinking and thinking_budget is not None:
        if isinstance(thinking_budget, bool) or not isinstance(thinking_budget, (int, float)) or thinking_budget < 0:
            raise OmniLabInputError(f"the thinking budget must be a whole number >= 0, got {thinking_budget!r}")
        budget = int(thinking_budget)
    if single_turn_reason(lab.source) is not None:  # each turn alone
        uploads = handlers.load_uploads(turn["image"], turn["video"], turn["audio"], settings)
        return lab.prompt(turn["question"], thinking=bool(thinking), **uploads), len(history), budget
    messages = conversation_messages([*history, turn], settings)
    return lab.chat(messages, thinking=bool(thinking), fps=settings.fps, max_frames=settings.max_frames), 0, budget


def clear_inputs():
    """Empty question and uploads once a turn is answered (the next turn attaches its own)."""
    return "", None, None, None


def new_conversation():
    """An empty chat, history, stats, table and panels."""
    return [], [], {}, None, None, None, None


def build_chat_tab(lab, settings: handlers.PlaygroundSettings, *, concurrency_id: str, max_new_tokens: int) -> None:
    """Build the Chat tab's components and events inside the current `gr.Tab`.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits.
        concurrency_id: the model's concurrency group (one request at a time, shared with the other tabs).
        max_new_tokens: the slider's starting value.
    """
    reasoning = handlers.reasoning_note(lab, settings)
    single = history_note(lab)
    gr.Markdown(
        single
        or "Each turn may attach an image, a video and an audio clip; the model answers with the whole conversation "
        "in context. The reducer acts on every turn's media.",
        elem_id="chat-note",
    )
    history = gr.State([])
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot", buttons=["copy"])
            question = gr.Textbox(label="Your turn", placeholder="Ask about this turn's media", elem_id="chat-question")
            with gr.Row():
                image = gr.Image(
                    label="Image", type="filepath", sources=["upload"], height=140, elem_id="chat-image-input"
                )
                video = gr.Video(label="Video", sources=["upload"], height=140, elem_id="chat-video-input")
                audio = gr.Audio(label="Audio", type="filepath", sources=["upload"], elem_id="chat-audio-input")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                restart = gr.Button("New conversation", elem_id="chat-restart")
        with gr.Column(scale=2):
            thinking = thinking_box(reasoning, "Let the model reason before each answer.", elem_id="chat-thinking")
            budget = gr.Slider(
                label="Thinking budget (most reasoning tokens, then </think>)",
                minimum=1,
                maximum=settings.max_new_tokens,
                step=1,
                value=min(DEFAULT_THINKING_BUDGET, settings.max_new_tokens),
                interactive=reasoning is None,
                elem_id="chat-thinking-budget",
            )
            reducer = gr.Dropdown(
                label="Token reducer (every turn's media)", choices=list(handlers.REDUCERS), value="model"
            )
            rate = rate_slider(0.5)
            new_tokens = new_tokens_slider(settings, max_new_tokens)
            stats = gr.JSON(label="Stats of the last turn", elem_id="chat-stats", max_height=300)
    table = gr.Dataframe(
        headers=TABLE_COLUMNS, label="Tokens per turn (before reduction, kept)", elem_id="chat-turns", interactive=False
    )
    reduction_plot = gr.Plot(show_label=False, elem_id="chat-reduction-plot")
    routing_plot = gr.Plot(show_label=False, elem_id="chat-routing-plot")
    attention_plot = gr.Plot(show_label=False, elem_id="chat-attention-plot")

    inputs = [history, question, image, video, audio, reducer, rate, new_tokens, thinking, budget]
    outputs = [chatbot, history, stats, table, reduction_plot, routing_plot, attention_plot]
    common = {
        "fn": functools.partial(chat, lab, settings),
        "inputs": inputs,
        "outputs": outputs,
        "preprocess": False,  # uploads reach the handler as files (see handlers.py)
        "concurrency_limit": 1,
        "concurrency_id": concurrency_id,
        "api_visibility": "private",
    }
    for event in (send.click, question.submit):
        event(**common).success(
            clear_inputs, None, [question, image, video, audio], queue=False, api_visibility="private"
        )
    restart.click(new_conversation, None, outputs, queue=False, api_visibility="private")
    chatbot.clear(
        new_conversation, None, outputs, queue=False, api_visibility="private"
    )  # its bin empties the state too
