"""Our merged-embedding forward equals transformers' own forward wherever transformers can run the input.

transformers' `NemotronH_Omni_Reasoning_V3.forward` is the reference: same input ids, same processor tensors, logits
compared at every position in float32 (max |difference| <= 1e-5). Image + video in one prompt, which transformers'
forward refuses, is checked against transformers' forward driven the documented way around its placeholder check
(docs/model_layout.md §9): image features scattered by hand, image ids relabelled, video and audio
left to transformers.
"""

import contextlib

import pytest
import torch

from omni_lab.media import VideoClip
from tests import synth

ATOL = 1e-5


@contextlib.contextmanager
def pruning_rate(model, rate):
    """transformers reads the EVS rate from `model.video_pruning_rate`; set it for one comparison."""
    previous = model.video_pruning_rate
    model.video_pruning_rate = rate
    try:
        yield
    finally:
        model.video_pruning_rate = previous


def transformers_logits(model, prompt):
    with torch.inference_mode():
        return model(**prompt.inputs).logits.float()


def assert_parity(lab, prompt, reducer="model"):
    ours = lab.logits(prompt, reducer=reducer)
    reference = transformers_logits(lab.model, prompt)
    assert ours.shape == reference.shape
    difference = (ours - reference).abs().max().item()
    assert difference <= ATOL, f"max |logit difference| {difference:.3g} > {ATOL}"


def media(kind):
    image = synth.image_array(150, 100, seed=1)
    video = VideoClip(synth.moving_square_frames(5, 96, 64), fps=5.0)
    audio = (synth.tone(1.3, frequency=660.0), 16000)
    return {
        "image": {"images": [image]},
        "video": {"video": video},
        "audio": {"audio": audio},
        "two_images": {"images": [image, synth.image_array(64, 200, seed=2)]},
    }[kind]


@pytest.mark.parametrize(
    "kinds", [(), ("image",), ("two_images",), ("audio",), ("image", "audio"), ("video",), ("video", "audio")]
)
def test_logits_equal_transformers_forward(small_lab, kinds):
    arguments = {}
    for kind in kinds:
        arguments.update(media(kind))
    prompt = small_lab.prompt("What is going on here?", **arguments)
    assert_parity(small_lab, prompt)  # with video this includes the model's own EVS at rate 0.7


def test_video_without_pruning_equals_transformers_forward(small_lab):
    prompt = small_lab.prompt("Which way?", **media("video"))
    with pruning_rate(small_lab.model, 0.0):
        reference = transformers_logits(small_lab.model, prompt)
    ours = small_lab.logits(prompt, reducer=None)
    assert ours.shape[1] == len(prompt) and (ours - reference).abs().max().item() <= ATOL


def test_evs_run_prunes_what_transformers_prunes(small_lab):
    prompt = small_lab.prompt("Which way?", video=VideoClip(synth.moving_square_frames(8, 96, 64), fps=4.0))
    ours = small_lab.logits(prompt)
    reference = transformers_logits(small_lab.model, prompt)
    assert ours.shape == reference.shape and ours.shape[1] < len(prompt)
    assert (ours - reference).abs().max().item() <= ATOL


def test_image_video_and_audio_together_match_transformers_driven_around_its_check(small_lab):
    model = small_lab.model
    arguments = {**media("image"), **media("video"), **media("audio")}
    prompt = small_lab.prompt("What is shown and heard?", **arguments)
    inputs = prompt.inputs
    with pytest.raises(ValueError, match="placeholder"):
        transformers_logits(model, prompt)  # the failure omni-lab exists to get around
    with torch.inference_mode():
        image_features = torch.cat(
            model.get_image_features(inputs["pixel_values"], inputs["image_grid_hw"]).pooler_output
        )
        input_ids = inputs["input_ids"].clone()
        embeds = model.get_input_embeddings()(input_ids)
        image_positions = torch.nonzero(input_ids[0] == model.image_token_id)[: len(image_features), 0]
        embeds[0, image_positions] = image_features
        input_ids[0, image_positions] = 0  # no longer a placeholder
        reference = model(
            input_ids=input_ids,
            inputs_embeds=embeds,
            pixel_values_videos=inputs["pixel_values_videos"],
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
        ).logits.float()
    ours = small_lab.logits(prompt)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= ATOL
    df = prompt.token_map.df
    assert {"image", "video", "audio", "text"} == set(df.modality)
