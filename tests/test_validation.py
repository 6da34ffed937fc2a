"""Every public argument is checked at the boundary: a wrong one gets an OmniLabInputError that names it.

Each case is a call a user could make by mistake, with the argument name (or the fix) its message must contain;
none of them may surface a TypeError, ValueError or RuntimeError from torch, the tokenizer or FFmpeg, or pass
silently.
"""

import numpy as np
import pytest

import omni_lab as ol
from omni_lab import OmniLabInputError, OmniLabModelError, validate

FRAMES = np.zeros((4, 32, 32, 3), np.uint8)
SILENCE = np.zeros(1600, np.float32)


@pytest.fixture(scope="module")
def lab():
    return ol.load("random:toy")


CASES = {
    "lone surrogate in the text": (lambda lab: lab.prompt("hi \ud800 there"), "surrogate"),
    "fps as a string": (lambda lab: lab.prompt("v", video=FRAMES, fps="1"), "fps='1'"),
    "fps infinite": (lambda lab: lab.prompt("v", video=FRAMES, fps=float("inf")), "fps=inf"),
    "max_frames None": (lambda lab: lab.prompt("v", video=FRAMES, max_frames=None), "max_frames=None"),
    "max_frames fractional": (lambda lab: lab.prompt("v", video=FRAMES, max_frames=2.5), "max_frames=2.5"),
    "max_frames as a string": (lambda lab: lab.prompt("v", video=FRAMES, max_frames="5"), "max_frames='5'"),
    "system not text": (lambda lab: lab.prompt("x", system=5), "system=5"),
    "thinking not a bool": (lambda lab: lab.prompt("x", thinking="yes"), "thinking='yes'"),
    "audio rate NaN": (lambda lab: lab.prompt("a", audio=(SILENCE, float("nan"))), "sampling_rate=nan"),
    "audio rate infinite": (lambda lab: lab.prompt("a", audio=(SILENCE, float("inf"))), "sampling_rate=inf"),
    "audio rate 1 Hz": (lambda lab: lab.prompt("a", audio=(SILENCE, 1)), "sampling_rate=1"),
    "audio rate a string": (lambda lab: lab.prompt("a", audio=(SILENCE, "16000")), "sampling_rate='16000'"),
    "audio ragged": (lambda lab: lab.prompt("a", audio=([[0.0, 1.0], [0.0]], 16000)), "ragged"),
    "audio list without rate": (lambda lab: lab.prompt("a", audio=[0.0] * 16000), "sampling rate"),
    "temperature NaN": (lambda lab: lab.run("hi", do_sample=True, temperature=float("nan")), "temperature=nan"),
    "top_p zero": (lambda lab: lab.run("hi", do_sample=True, top_p=0), "top_p=0"),
    "top_k negative": (lambda lab: lab.run("hi", do_sample=True, top_k=-1), "top_k=-1"),
    "seed a string": (lambda lab: lab.run("hi", do_sample=True, seed="a"), "seed='a'"),
    "do_sample a string": (lambda lab: lab.run("hi", do_sample="yes"), "do_sample='yes'"),
    "reducer class, video": (lambda lab: lab.run(lab.prompt("v", video=FRAMES), reducer=ol.reducers.EVS), "class"),
    "reducer class, text": (lambda lab: lab.run("hi", reducer=ol.reducers.EVS), "EVS(0.5)"),
    "max_new_tokens negative": (lambda lab: lab.run("hi", max_new_tokens=-1), "max_new_tokens=-1"),
    "max_new_tokens huge": (lambda lab: lab.run("hi", max_new_tokens=10**9), "max_new_tokens=1000000000"),
    "max_new_tokens a bool": (lambda lab: lab.run("hi", max_new_tokens=True), "max_new_tokens=True"),
    "capture a number": (lambda lab: lab.run("hi", capture=5), "capture=5"),
    "capture_budget negative": (lambda lab: lab.run("hi", capture="routing", capture_budget=-1), "capture_budget"),
    "EVS rate a word": (lambda lab: ol.reducers.EVS("half"), "EVS rate"),
    "EVS rate NaN": (lambda lab: ol.reducers.EVS(float("nan")), "EVS rate"),
    "FastV layer a word": (lambda lab: ol.reducers.FastV(layer="x", rate=0.5), "layer='x'"),
    "reducer name unknown": (lambda lab: ol.reducers.at_rate("evz", 0.5), "evz"),
    "device unknown": (lambda lab: ol.load("random:toy", device="gpu9"), "device='gpu9'"),
    "sweep rates a string": (lambda lab: ol.studies.sweep(lab, ["hi"], [ol.reducers.EVS], rates="0.5"), "rates='0.5'"),
    "sweep rate NaN": (lambda lab: ol.studies.sweep(lab, ["hi"], [ol.reducers.EVS], rates=[float("nan")]), "rates[0]"),
    "study prompts a number": (lambda lab: ol.studies.expert_specialization(lab, 5), "prompts=int"),
    "reinsertion k zero": (
        lambda lab: ol.studies.reinsertion(lab, lab.prompt("v", video=FRAMES), ol.reducers.EVS(0.5), "topk", k=0),
        "k=0",
    ),
    "contribution max_tokens negative": (
        lambda lab: ol.studies.pruned_contribution(lab, "hi", ol.reducers.EVS(0.5), max_tokens=-1),
        "max_tokens=-1",
    ),
    "specialization top a string": (lambda lab: ol.studies.expert_specialization(lab, ["hi"], top="5"), "top='5'"),
    "attribution target a number": (
        lambda lab: ol.attribution.occlusion(lab, lab.prompt("v", video=FRAMES), ol.attribution.Target(5)),
        "token ids",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_argument_is_named(lab, case):
    call, named = CASES[case]
    with pytest.raises((OmniLabInputError, OmniLabModelError)) as error:
        call(lab)
    assert named in str(error.value)


def test_cuda_on_a_machine_without_it_is_a_model_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(OmniLabModelError, match="device='cuda'.*device='cpu'"):
        ol.load("random:toy", device="cuda")


@pytest.mark.parametrize(
    ("value", "expected"), [(np.int64(3), 3), (np.float32(0.5), 0.5), (2.0, 2), ("torch", 7)], ids=str
)
def test_numbers_arrive_as_python_numbers(value, expected):
    if value == "torch":
        import torch

        value = torch.tensor(7)
    checked = validate.number("n", value, integer=isinstance(expected, int))
    assert checked == expected and type(checked) is type(expected)


def test_the_message_says_what_was_given_and_what_to_pass():
    with pytest.raises(OmniLabInputError) as error:
        validate.number("max_frames", 0, low=1, high=10, integer=True)
    assert str(error.value) == "max_frames=0: is below the allowed range in [1, 10]; pass an integer in [1, 10]"
