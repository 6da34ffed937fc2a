"""Activation patching in one call (`ol.patch_from`) and as a study (`ol.studies.activation_patching`): patching
everything gives the clean logits exactly, patching nothing leaves the corrupted ones, and on ShapesWorld the
direction comes back when the moving shape's tokens are patched, not when as many static ones are."""

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.media import VideoClip
from omni_lab.toy import shapesworld as sw


def _backwards(lab, prompt):
    """The same question about the same clip played backwards: a moving shape moves the other way, the rest stays."""
    clip = prompt.videos[0]
    frames = np.ascontiguousarray(np.asarray(clip.frames)[::-1])
    return lab.prompt(prompt.text, video=VideoClip(frames, clip.fps, list(clip.frame_indices), clip.source, clip.times))


@pytest.fixture(scope="module")
def pair(twin_lab):
    """(example, clean prompt, corrupted prompt): a held-out direction clip that moves, and the clip reversed."""
    for index in range(20):
        example = sw.sample(sw.eval_seed(0, "video", 200 + index), family="video", task="direction")
        if example.answer in ("left", "right", "up", "down"):
            clean = example.prompt(twin_lab)
            return example, clean, _backwards(twin_lab, clean)
    raise AssertionError("no moving clip among 20 held-out direction examples")


def test_patching_everything_gives_the_clean_logits_and_nothing_the_corrupted(twin_lab, pair):
    _, clean, corrupt = pair
    clean_logits = twin_lab.logits(clean, reducer=None)
    corrupt_logits = twin_lab.logits(corrupt, reducer=None)
    assert (clean_logits - corrupt_logits).abs().max() > 1.0
    everything = twin_lab.logits(corrupt, reducer=None, interventions=[ol.patch_from(clean)])
    torch.testing.assert_close(everything, clean_logits, rtol=0, atol=1e-6)
    nothing = ol.patch_from(clean, positions="item", units=[])
    torch.testing.assert_close(
        twin_lab.logits(corrupt, reducer=None, interventions=[nothing]), corrupt_logits, rtol=0, atol=0
    )
    cached = twin_lab.run(clean, max_new_tokens=1, reducer=None, cache=["llm.layers.*.in"])
    from_run = twin_lab.logits(corrupt, reducer=None, interventions=[ol.patch_from(cached)])
    torch.testing.assert_close(from_run, clean_logits, rtol=0, atol=1e-6)


def test_the_moving_shape_carries_the_direction_and_static_tokens_do_not(twin_lab, pair):
    example, clean, corrupt = pair
    token_map = clean.token_map
    video = token_map.rows(modality="video")
    path = video & (token_map.box_overlap(example.truth["video"].path_box()) > 0)
    static = np.zeros(len(token_map), dtype=bool)
    rng = np.random.default_rng(0)
    static[rng.choice(np.flatnonzero(video & ~path), size=int(path.sum()), replace=False)] = True
    result = ol.studies.activation_patching(
        twin_lab, clean, corrupt, points=["llm.layers.0.in", "llm.layers.5.in"], groups={"path": path,
        "static": static}, progress=False)  # fmt: skip
    grid = result.grid()
    assert result.clean_text.strip() == example.answer.split(",")[0].strip()
    assert list(grid.columns) == ["path", "static"] and list(grid.index) == ["llm.layers.0.in", "llm.layers.5.in"]
    assert grid.loc["llm.layers.0.in", "path"] > 0.8  # the moving shape's tokens bring the direction back
    assert abs(grid.loc["llm.layers.0.in", "static"]) < 0.1  # as many static tokens do not
    assert set(result.table.positions) == {int(path.sum())}
    assert result.figure().data[0].type == "heatmap"


def test_prompts_that_cannot_be_aligned_are_refused(twin_lab, pair):
    _, clean, _ = pair
    other = sw.sample(sw.eval_seed(0, "audio", 1), family="audio").prompt(twin_lab)
    with pytest.raises(OmniLabInputError, match="lay their positions out differently"):
        twin_lab.logits(other, reducer=None, interventions=[ol.patch_from(clean)])
    with pytest.raises(OmniLabInputError, match="not in both prompts"):
        twin_lab.logits(other, reducer=None, interventions=[ol.patch_from(clean, positions="item", units=["video 0"])])
    with pytest.raises(OmniLabInputError, match="patch LLM points"):
        twin_lab.logits(clean, reducer=None, interventions=[ol.patch_from(clean, points="llm.layers.*.moe.router")])
    with pytest.raises(OmniLabInputError, match="no difference to recover"):
        ol.studies.activation_patching(twin_lab, clean, clean, progress=False)
