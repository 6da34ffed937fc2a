"""Sweep rows report agreement with the unreduced run (same answer, KL, margin change) and FLOPs next to accuracy,
and take Downsample as a second equal-budget control."""

import math

import numpy as np
import pytest

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.media import VideoClip
from omni_lab.studies.common import margin
from tests import synth


@pytest.fixture(scope="module")
def swept(toy_lab):
    prompt = toy_lab.prompt(
        "What moves?", video=VideoClip(synth.moving_square_frames(8, 96, 64), fps=2.0), reference="left"
    )
    frame = ol.studies.sweep(
        toy_lab, [prompt], ["evs", "pyramiddrop"], [0.5], progress=False, controls=("random", "downsample")
    )
    return toy_lab, prompt, frame


def test_rows_per_reducer_and_both_controls(swept):
    _, _, frame = swept
    assert list(frame.reducer) == [
        "none",
        "EVS(rate=0.5)",
        "RandomDrop.matching(EVS(rate=0.5), seed=0)",
        "Downsample.matching(EVS(rate=0.5))",
        "PyramidDrop(rate=0.5)",
        "RandomDrop.matching(PyramidDrop(rate=0.5), seed=0)",
        "Downsample.matching(PyramidDrop(rate=0.5))",
    ]
    assert list(frame.control_for.iloc[1:4]) == [None, "EVS(rate=0.5)", "EVS(rate=0.5)"]
    # 8 frames = 4 tubelets of n tokens; EVS keeps max(n, int(4n x 0.5)) = 2n: exactly 2 whole tubelets downsampled
    tubelet = frame.kept_video.iloc[0] // 4
    assert list(frame.kept_video.iloc[:4]) == [4 * tubelet, 2 * tubelet, 2 * tubelet, 2 * tubelet]
    assert frame.prompt_tokens.iloc[3] < frame.prompt_tokens.iloc[0]  # fewer frames, fewer frame labels too


def test_agreement_columns_are_what_the_runs_say(swept):
    lab, prompt, frame = swept
    baseline = lab.run(prompt, max_new_tokens=8, reducer=None, return_logits=True)
    evs = lab.run(prompt, max_new_tokens=8, reducer=ol.reducers.EVS(0.5), return_logits=True)
    target = lab.tokenizer.encode("left", add_special_tokens=False)[0]
    row = frame.iloc[1]
    assert row.same_answer == (evs.answer == baseline.answer)
    expected = margin(evs.logits[0], target) - margin(baseline.logits[0], target)
    assert row.margin_change == pytest.approx(expected, abs=1e-4)
    none = frame.iloc[0]
    assert none.same_answer and none.kl_first_token == pytest.approx(0, abs=1e-6) and none.margin_change == 0
    assert none.saved_flops == 0 and none.equivalent_tokens == none.kept_tokens
    assert row.saved_flops > 0 and row.equivalent_tokens == row.kept_tokens  # before the LLM: its own length
    in_llm = frame.iloc[4]
    assert in_llm.kept_tokens == none.kept_tokens and in_llm.equivalent_tokens < none.kept_tokens
    downsampled = frame.iloc[3]
    assert downsampled.saved_flops > row.saved_flops  # the encoder saw half the frames too
    assert frame.same_answer.dtype == bool and np.isfinite(frame.margin_change).all()


def test_downsample_control_is_left_out_for_audio_reducers(toy_lab):
    prompt = toy_lab.prompt("How many beeps?", audio=(synth.tone(1.0), 16000))
    frame = ol.studies.sweep(
        toy_lab, [prompt], ["audiomerge"], [0.5], progress=False, controls=("random", "downsample")
    )
    assert list(frame.reducer) == ["none", "AudioMerge(rate=0.5)", "RandomDrop.matching(AudioMerge(rate=0.5), seed=0)"]
    assert math.isnan(frame.margin_change.iloc[0]) or frame.margin_change.iloc[0] == 0
    with pytest.raises(OmniLabInputError, match="controls"):
        ol.studies.sweep(toy_lab, [prompt], ["audiomerge"], [0.5], progress=False, controls=("downsample",))
