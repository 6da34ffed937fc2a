"""Multi-turn chat (`lab.chat`): the release's chat template over every turn, media of every turn reduced and mapped,
each token-map row's turn, the thinking budget, and the single-turn twin."""

import numpy as np
import pytest

import omni_lab as ol
from omni_lab import OmniLabInputError
from tests import synth

IMAGE = synth.image_array(64, 48, seed=1)
FRAMES = synth.moving_square_frames(4)
WAVE = synth.tone(0.5)


def _conversation(image=IMAGE, frames=FRAMES, wave=WAVE):
    """Two user turns with media (an image; then audio and a video, audio first), and the answer between them."""
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A red square."},
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio": wave},
                {"type": "video", "video": frames},
                {"type": "text", "text": "And which way does it move?"},
            ],
        },
    ]


@pytest.fixture(scope="module")
def chat_prompt(small_lab):
    messages = _conversation(wave=(WAVE, 16000))
    return small_lab.chat(messages)


def test_chat_renders_as_transformers_apply_chat_template(small_lab, chat_prompt):
    # Independent expectation: transformers' own processor on the same messages (raw arrays, 16 kHz waveform).
    expected = small_lab.processor.apply_chat_template(
        _conversation(),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        enable_thinking=False,
    )
    assert chat_prompt.input_ids[0].tolist() == expected["input_ids"][0].tolist()
    assert np.array_equal(chat_prompt.inputs["pixel_values_videos"].numpy(), expected["pixel_values_videos"].numpy())

    token_map = chat_prompt.token_map
    df = token_map.df
    # Media blocks in conversation order: the image (turn 0), then the audio before the video (turn 1, as given).
    first = {modality: int(df.index[df.modality == modality][0]) for modality in ("image", "audio", "video")}
    assert first["image"] < first["audio"] < first["video"]
    ids = chat_prompt.input_ids[0].numpy()
    assert (ids[df.modality.isin(["image", "video"])] == small_lab.processor.image_token_id).all()
    assert (ids[df.modality == "audio"] == small_lab.processor.audio_token_id).all()
    assert df[df.modality == "video"].tubelet.max() == 1  # 4 frames -> 2 tubelets

    # Each row's turn, checked against the text the rows spell (hand-written from the ChatML layout).
    tokenizer = small_lab.tokenizer
    turn0 = tokenizer.decode(ids[df.turn == 0])
    turn1 = tokenizer.decode(ids[df.turn == 1])
    assert turn0.startswith("<|im_start|>user\n<img><image>")
    assert turn0.endswith("</img>\nWhat is it?<|im_end|>\n<|im_start|>assistant\nA red square.<|im_end|>\n")
    assert turn1.startswith("<|im_start|>user\n<so_start><so_embedding>")
    assert turn1.endswith("And which way does it move?<|im_end|>\n<|im_start|>assistant\n<think></think>")
    assert set(df.turn) == {0, 1}
    assert set(df[df.turn == 0].modality) == {"text", "image"}
    assert set(df[df.turn == 1].modality) == {"text", "audio", "video"}
    assert chat_prompt.text == "And which way does it move?"
    assert [turn.role for turn in chat_prompt.turns] == ["user", "assistant", "user"]


def test_reducer_acts_on_media_of_every_turn(small_lab):
    messages = _conversation(wave=(WAVE, 16000))
    messages[2]["content"].insert(0, {"type": "image", "image": synth.image_array(48, 64, seed=2)})
    prompt = small_lab.chat(messages)
    prepared = small_lab.prepare(prompt, ol.reducers.RandomDrop(0.5))
    df = prepared.token_map.df
    media = df[df.modality != "text"]
    assert set(zip(media.turn, media.modality, media.item, strict=True)) == {
        (0, "image", 0),
        (1, "image", 1),
        (1, "audio", 0),
        (1, "video", 0),
    }
    for (turn, modality, item), rows in media.groupby(["turn", "modality", "item"]):
        # RandomDrop keeps max(1, int(N x (1 - rate))) tokens of each item, whatever its turn
        assert rows.kept.sum() == max(1, int(len(rows) * 0.5)), (turn, modality, item)
    assert len(prepared) == int(df.kept.sum())


def test_downsample_rewrites_every_turn_of_a_conversation(small_lab):
    # Downsample acts before the encoders by building the prompt again: a conversation keeps all its turns
    messages = _conversation(image=synth.image_array(128, 96, seed=1), wave=(WAVE, 16000))
    messages[2]["content"].insert(0, {"type": "image", "image": synth.image_array(96, 128, seed=2)})
    prompt = small_lab.chat(messages)
    prepared = small_lab.prepare(prompt, {"image": ol.reducers.Downsample(0.75)})
    assert prepared.prompt.turns == prompt.turns
    before, after = prompt.token_map.df, prepared.token_map.df
    for turn in (0, 1):
        images_after = after[(after.turn == turn) & (after.modality == "image")]
        images_before = before[(before.turn == turn) & (before.modality == "image")]
        assert 0 < len(images_after) < len(images_before), turn
    text = lambda p: small_lab.tokenizer.decode(p.input_ids[0].numpy()[(p.token_map.df.modality == "text").to_numpy()])  # noqa: E731
    assert text(prepared.prompt) == text(prompt)  # the same conversation around smaller pictures


def test_run_on_a_conversation_answers_and_captures(small_lab, chat_prompt):
    mass = ol.capture.attention_mass(queries="answer")  # the playground's capture
    run = small_lab.run(chat_prompt, max_new_tokens=2, capture=["routing", mass], reducer=None)
    assert len(run.generated_ids) >= 1
    df = run.token_map.df
    assert (df[df.modality == "generated"].turn == 1).all()
    positions = run.token_map.num_positions
    load = run.routing.load(by="modality")
    assert set(load.modality) >= {"text", "image", "video", "audio"}
    segments = set(run.attention_mass.segments.label)
    assert {"image 0", "video 0", "audio 0"} <= segments
    assert run.token_ids.shape[0] == positions
    # the same conversation rendered by hand through lab.prompt's single turn would lose the history: it differs
    assert len(chat_prompt) > len(small_lab.prompt("And which way does it move?", video=FRAMES, audio=(WAVE, 16000)))


def test_thinking_budget_closes_the_reasoning(small_lab):
    text_only = [
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ]
    prompt = small_lab.chat(text_only, thinking=True)
    assert small_lab.tokenizer.decode(prompt.input_ids[0]).endswith("<|im_start|>assistant\n<think>\n")
    think_end = small_lab.tokenizer.convert_tokens_to_ids("</think>")
    free = small_lab.run(prompt, max_new_tokens=4, reducer=None)
    assert think_end not in free.generated_ids[:3]  # the random model does not close its reasoning by itself
    budgeted = small_lab.run(prompt, max_new_tokens=4, reducer=None, thinking_budget=2)
    assert budgeted.generated_ids[:2] == free.generated_ids[:2]
    assert budgeted.generated_ids[2] == think_end
    assert budgeted.reasoning == small_lab.tokenizer.decode(free.generated_ids[:2], skip_special_tokens=True).strip()
    with pytest.raises(OmniLabInputError, match="thinking_budget"):
        ol.RunOptions(thinking_budget=-1)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "non-empty list"),
        ([{"role": "assistant", "content": "hi"}], "system or user"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "assistant message belongs"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with the user message"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "image", "image": IMAGE}]},
                {"role": "user", "content": "c"},
            ],
            "holds text only",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "is empty"),
        ([{"role": "user", "content": [{"type": "picture", "picture": IMAGE}]}], "content\\[0\\]"),
        ([{"role": "user", "content": [{"type": "image", "image": "/nonexistent/cat.png"}]}], "messages\\[0\\]"),
    ],
)
def test_chat_refuses_malformed_messages(small_lab, messages, match):
    with pytest.raises(OmniLabInputError, match=match):
        small_lab.chat(messages)


def test_twin_takes_one_turn_only(twin_lab):
    square = synth.image_array(128, 128, seed=3)
    one_turn = [{"role": "user", "content": [{"type": "image", "image": square}, {"type": "text", "text": "Colour?"}]}]
    # one user turn is lab.prompt's own layout (media before the text), every row turn 0
    chat = twin_lab.chat(one_turn)
    single = twin_lab.prompt("Colour?", images=[square])
    assert chat.input_ids[0].tolist() == single.input_ids[0].tolist()
    assert set(chat.token_map.df.turn) == {0} and set(single.token_map.df.turn) == {0}
    with pytest.raises(OmniLabInputError, match="single ShapesWorld questions"):
        twin_lab.chat([*one_turn, {"role": "assistant", "content": "red"}, {"role": "user", "content": "Shape?"}])


def test_playground_chat_on_the_twin_answers_each_turn_from_its_own_media(twin_lab):
    from omni_lab.playground import chat, handlers
    from omni_lab.playground.examples import load_examples

    examples = {example.name: example for example in load_examples()}
    colour, beeps = examples["image-colour"], examples["audio-beep-count"]
    settings = handlers.default_settings(twin_lab)
    assert "single-turn" in chat.history_note(twin_lab)
    *_, first = chat.chat(twin_lab, settings, [], colour.question, image=str(colour.image), max_new_tokens=8)
    messages, history, stats, table, *panels = first
    assert history[0]["answer"] == colour.answer
    assert stats["context"].startswith("this turn only")
    # the second turn asks about new media (an audio clip): answered from it alone, its rows numbered turn 1
    *_, second = chat.chat(twin_lab, settings, history, beeps.question, audio=str(beeps.audio), max_new_tokens=8)
    messages, history, stats, table, *panels = second
    assert [turn["answer"] for turn in history] == [colour.answer, beeps.answer]
    assert stats["turn"] == 1
    assert set(table.turn) == {1} and "audio" in set(table.modality)
    assert [message["role"] for message in messages] == ["user", "assistant", "user", "assistant"]
    assert all(panel is not None for panel in panels)
    with pytest.raises(gr_error()):  # the twin has no reasoning: the toggle is refused, the history kept
        *_, last = chat.chat(twin_lab, settings, history, "Colour?", image=str(colour.image), thinking=True)


def gr_error():
    import gradio as gr

    return gr.Error


def test_playground_chat_tab_runs_on_the_model_queue_and_adds_no_public_endpoint(twin_lab):
    from omni_lab.playground import build_app, chat

    app = build_app(twin_lab)
    turns = [fn for fn in app.fns.values() if getattr(fn.fn, "func", None) is chat.chat]
    assert len(turns) == 2  # Send and Enter in the question box
    assert all(fn.concurrency_id == "model" and fn.concurrency_limit == 1 for fn in turns)
    endpoints = app.get_api_info()["named_endpoints"]
    assert not [name for name in endpoints if "chat" in name or "clear_inputs" in name or "conversation" in name]


def test_input_occlusion_refuses_a_conversation_by_name(small_lab, chat_prompt):
    from omni_lab.attribution import input_occlusion

    with pytest.raises(OmniLabInputError, match="lab.chat"):
        input_occlusion(small_lab, chat_prompt, progress=False)
