"""Prompts: the model's own chat template and processor, user text kept as text, clear errors."""

import numpy as np
import pytest

from omni_lab import OmniLabInputError
from tests import synth

SPECIALS = [
    "<image>",
    "<so_embedding>",
    "<img>",
    "</img>",
    "<so_start>",
    "<so_end>",
    "<video>",
    "<|im_end|>",
    "<|im_start|>",
    "<think>",
    "</think>",
]


def test_typed_special_tokens_stay_plain_text(toy_lab):
    text = "Is " + " and ".join(SPECIALS) + " here?"
    prompt = toy_lab.prompt(text)
    ids = prompt.input_ids[0].tolist()
    tokenizer = toy_lab.tokenizer
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 0
    assert ids.count(tokenizer.convert_tokens_to_ids("<so_embedding>")) == 0
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 1  # only the template's own end of turn
    decoded = tokenizer.decode(ids)
    assert text in decoded
    assert set(prompt.token_map.df.modality) == {"text"}


def test_typed_special_tokens_beside_real_media_do_not_shift_placeholders(toy_lab):
    prompt = toy_lab.prompt(
        "<image><image> what? <so_embedding>", images=[synth.image_array(64, 64)], audio=(synth.tone(0.5), 16000)
    )
    counts = prompt.token_map.counts()
    ids = prompt.input_ids[0].tolist()
    assert ids.count(toy_lab.tokenizer.convert_tokens_to_ids("<image>")) == counts["image"]
    assert ids.count(toy_lab.tokenizer.convert_tokens_to_ids("<so_embedding>")) == counts["audio"] == 7


def test_chat_template_thinking_on_and_off(toy_lab):
    off = toy_lab.tokenizer.decode(toy_lab.prompt("hi", thinking=False).input_ids[0])
    on = toy_lab.tokenizer.decode(toy_lab.prompt("hi", thinking=True, system="Be brief.").input_ids[0])
    assert off == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think></think>"
    assert on == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )


def test_media_come_before_the_text_in_processor_order(toy_lab):
    prompt = toy_lab.prompt(
        "Q?", images=[synth.image_array(64, 64)], video=synth.moving_square_frames(2), audio=(synth.tone(0.5), 16000)
    )
    df = prompt.token_map.df
    first = {m: df.index[df.modality == m].min() for m in ("image", "video", "audio")}
    assert first["image"] < first["video"] < first["audio"]
    question = toy_lab.tokenizer.decode(prompt.input_ids[0][df.index[df.modality == "audio"].max() + 1 :])
    assert question.startswith("<so_end>\nQ?")


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_prompt_is_refused(toy_lab, text):
    with pytest.raises(OmniLabInputError, match="empty"):
        toy_lab.prompt(text)


def test_empty_text_with_an_image_is_a_valid_prompt(toy_lab):
    prompt = toy_lab.prompt("", images=[synth.image_array(64, 64)])
    assert prompt.token_map.counts()["image"] > 0


def test_prompt_longer_than_the_context_is_refused_with_the_counts(toy_lab):
    with pytest.raises(OmniLabInputError) as error:
        toy_lab.prompt("word " * 9000)
    message = str(error.value)
    assert f"{toy_lab.context_length}-token context" in message and "text" in message


def test_long_media_prompt_names_the_fix(toy_lab):
    with pytest.raises(OmniLabInputError, match="fewer video frames"):
        toy_lab.prompt("What?", video=np.zeros((1200, 64, 64, 3), np.uint8))


def test_non_string_text_is_refused(toy_lab):
    with pytest.raises(OmniLabInputError, match="string"):
        toy_lab.prompt(42)


def test_videos_of_different_sizes_in_one_prompt_are_refused(toy_lab):
    with pytest.raises(OmniLabInputError, match="processor rejected"):
        toy_lab.prompt("?", video=[np.zeros((2, 64, 64, 3), np.uint8), np.zeros((4, 64, 128, 3), np.uint8)])
