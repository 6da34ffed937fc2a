"""Runs: generation with the hybrid cache, stopping, sampling, logits, timings, answers."""

import copy

import numpy as np
import pytest
import torch

from omni_lab import OmniLabInputError
from omni_lab.lab import split_answer
from omni_lab.media import VideoClip
from tests import synth


def test_cached_greedy_decoding_equals_recomputing_the_whole_sequence(small_lab):
    prompt = small_lab.prompt("Count the beeps.", images=[synth.image_array(90, 60)], audio=(synth.tone(0.7), 16000))
    run = small_lab.run(prompt, max_new_tokens=6, return_logits=True)
    assert run.logits.shape == (6, small_lab.config.text_config.vocab_size)
    model = small_lab.model
    from omni_lab.forward import encode_media, merge_embeddings

    with torch.inference_mode():
        embeds = merge_embeddings(model, prompt, encode_media(model, prompt))
        for step, token in enumerate(run.generated_ids):
            generated = torch.tensor([run.generated_ids[:step]], dtype=torch.long)
            full = torch.cat([embeds, model.get_input_embeddings()(generated)], dim=1)
            logits = model.language_model(inputs_embeds=full).logits[0, -1].float()
            assert int(logits.argmax()) == token
            torch.testing.assert_close(run.logits[step], logits, rtol=0, atol=1e-4)


def test_run_on_image_video_and_audio_fills_the_run(small_lab):
    prompt = small_lab.prompt(
        "What moves?",
        images=[synth.image_array(64, 64)],
        video=VideoClip(synth.moving_square_frames(6, 96, 64), fps=3.0),
        audio=(synth.tone(1.0), 16000),
    )
    run = small_lab.run(prompt, max_new_tokens=4)
    assert set(run.timings) >= {"encode_s", "reduce_s", "prefill_s", "decode_s", "total_s"}
    assert all(value >= 0 for value in run.timings.values())
    assert len(run.generated_ids) == 4 and run.stop_reason == "max_new_tokens"
    assert len(run.token_ids) == run.token_map.num_positions
    assert run.token_ids[-4:].tolist() == run.generated_ids
    assert run.token_map.counts()["generated"] == 4
    pruned = run.token_map.rows(kept=False)
    assert pruned.sum() > 0 and set(run.token_map.df[pruned].modality) == {"video"}  # the model's own EVS
    assert not np.isnan(run.token_map.df[run.token_map.df.modality == "video"].score).any()
    assert isinstance(run.answer, str) and run.reasoning is None


def test_generation_stops_at_an_end_token(toy_lab):
    lab = copy.copy(toy_lab)
    lab.model = copy.deepcopy(toy_lab.model)
    first = toy_lab.run("hello", max_new_tokens=1).generated_ids[0]
    lab.model.generation_config.eos_token_id = [first]
    run = lab.run("hello", max_new_tokens=8)
    assert run.stop_reason == "eos" and run.generated_ids == [first]


def test_sampling_is_reproducible_with_a_seed_and_greedy_with_top_k_1(toy_lab):
    prompt = toy_lab.prompt("Tell me a story.")
    a = toy_lab.run(prompt, max_new_tokens=8, do_sample=True, seed=5, temperature=1.5)
    b = toy_lab.run(prompt, max_new_tokens=8, do_sample=True, seed=5, temperature=1.5)
    others = [
        toy_lab.run(prompt, max_new_tokens=8, do_sample=True, seed=s, temperature=1.5).generated_ids
        for s in range(6, 9)
    ]
    assert a.generated_ids == b.generated_ids
    assert any(ids != a.generated_ids for ids in others)
    greedy = toy_lab.run(prompt, max_new_tokens=8)
    assert toy_lab.run(prompt, max_new_tokens=8, do_sample=True, top_k=1, seed=1).generated_ids == greedy.generated_ids


def test_zero_new_tokens_only_prefills(toy_lab):
    run = toy_lab.run("hi", max_new_tokens=0)
    assert run.generated_ids == [] and run.answer == "" and run.timings["decode_s"] >= 0


def test_prompt_plus_new_tokens_beyond_the_context_is_refused(toy_lab):
    with pytest.raises(OmniLabInputError, match="max_new_tokens"):
        toy_lab.run("hi", max_new_tokens=toy_lab.context_length)


@pytest.mark.parametrize(
    "arguments",
    [
        dict(temperature=0.0, do_sample=True),
        dict(top_p=0.0, do_sample=True),
        dict(max_new_tokens=-1),
        dict(reducer="fastest"),
        dict(reducer=42),
    ],
)
def test_bad_run_arguments(toy_lab, arguments):
    with pytest.raises(OmniLabInputError):
        toy_lab.run("hi", **arguments)


def test_run_leaves_the_model_bit_identical(toy_lab):
    before = {name: tensor.clone() for name, tensor in toy_lab.model.state_dict().items()}
    toy_lab.run(toy_lab.prompt("?", video=synth.moving_square_frames(4)), max_new_tokens=3)
    after = toy_lab.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_answer_and_reasoning_split_at_end_of_thinking(toy_lab):
    tokenizer = toy_lab.tokenizer
    ids = (
        tokenizer.encode("the square moves", add_special_tokens=False)
        + [tokenizer.convert_tokens_to_ids("</think>")]
        + tokenizer.encode(" left", add_special_tokens=False)
        + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    )
    assert split_answer(tokenizer, ids, thinking=True) == ("left", "the square moves")
    assert split_answer(tokenizer, ids[:3], thinking=True)[0] == ""
    plain = tokenizer.encode("left", add_special_tokens=False)
    assert split_answer(tokenizer, plain, thinking=False) == ("left", None)


def test_edge_media_run_through_the_model(small_lab, tmp_path):
    """Silent audio, 8 kHz stereo audio and a one-frame video are valid input: they run and give finite logits."""
    silent = (np.zeros(16000, np.float32), 16000)
    stereo = synth.write_audio(tmp_path / "stereo.wav", seconds=1.0, rate=8000, channels=2)
    one_frame = synth.write_video(tmp_path / "one.mp4", count=1)
    prompt = small_lab.prompt("What do you hear and see?", audio=[silent, stereo], video=one_frame)
    assert prompt.token_map.counts()["audio"] == 2 * 13  # 1 s each: 101 -> 51 -> 26 -> 13 tokens
    video = prompt.token_map.df[prompt.token_map.df.modality == "video"]
    assert set(video.tubelet) == {0} and set(video.frames) == {(0,)}
    logits = small_lab.logits(prompt)
    assert torch.isfinite(logits).all()
    assert small_lab.run(prompt, max_new_tokens=2).stop_reason in ("eos", "max_new_tokens")
