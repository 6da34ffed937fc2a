"""Reduction ledger counts (worked out by hand), merges entering the LLM as group means, encoder reuse."""

import pytest
import torch

import omni_lab as ol
from omni_lab.media import VideoClip
from omni_lab.reduction import Reduction
from tests import synth


def test_ledger_counts_match_hand_worked_counts(small_lab):
    # random:small: images get 64..1024 patches, video frames aim at 256 patches, 16 px patches, 2x2 shuffle.
    prompt = small_lab.prompt(
        "What?",
        images=[synth.image_array(200, 120)],
        video=VideoClip(synth.moving_square_frames(9, 96, 64), fps=3.0),
        audio=(synth.tone(1.3), 16000),
    )
    run = small_lab.run(prompt, max_new_tokens=1)  # the model's own EVS at 0.7 on the video
    stages = run.ledger.stages.set_index(["modality", "stage"])
    # image 200x120: grid round(120/16 + .5) = 8 rows, round(200/16 + .5) = 13 -> 14 cols (even) = 112 patches
    assert tuple(stages.loc[("image", "resize"), ["count_in", "count_out"]]) == (200 * 120, 112)
    assert tuple(stages.loc[("image", "pixel shuffle"), ["count_in", "count_out"]]) == (112, 28)
    assert tuple(stages.loc[("image", "reducer"), ["count_in", "count_out"]]) == (28, 28)
    # video 96x64 frames: a = 1.5, 13 x 20 patches -> 14 x 20 = 280 > 256 -> 12 x 20 = 240 patches per tubelet;
    # 9 frames -> 5 tubelets (the last frame repeated); EVS keeps max(60, int(300 * 0.3)) = 90 tokens
    assert tuple(stages.loc[("video", "tubelets"), ["count_in", "count_out"]]) == (9, 5)
    assert tuple(stages.loc[("video", "pixel shuffle"), ["count_in", "count_out"]]) == (5 * 240, 300)
    assert tuple(stages.loc[("video", "reducer"), ["count_in", "count_out"]]) == (300, 90)
    # audio 1.3 s = 20,800 samples -> 1 + 130 = 131 mel frames -> 66 -> 33 -> 17 tokens
    assert tuple(stages.loc[("audio", "mel frames"), ["count_in", "count_out"]]) == (20800, 131)
    assert tuple(stages.loc[("audio", "subsampling"), ["count_in", "count_out"]]) == (131, 17)
    summary = run.ledger.summary().set_index("modality")
    assert summary.loc["video", "pruned"] == 210 and summary.loc["image", "kept"] == 28
    pruned = run.ledger.pruned("video")
    assert len(pruned) == 210 and (pruned.position == -1).all() and pruned.frames.map(len).min() >= 1


class PairMerge:
    """Test reducer: keeps every even token and merges each odd token into the even one before it."""

    modalities = ("audio",)

    def budget(self, item):
        return (item.num_tokens + 1) // 2

    def __call__(self, item):
        count = item.num_tokens
        keep = torch.arange(count) % 2 == 0
        merged_into = torch.where(keep, -1, torch.arange(count) - 1)
        return Reduction(keep=keep, merged_into=merged_into)


def test_merged_tokens_enter_the_llm_as_group_means(small_lab):
    prompt = small_lab.prompt("Listen.", audio=(synth.tone(0.9), 16000))
    plain = small_lab.run(prompt, max_new_tokens=1, reducer=None, cache=["reduce.audio.0"])
    merged = small_lab.run(prompt, max_new_tokens=1, reducer={"audio": PairMerge()}, cache=["reduce.audio.0"])
    original = plain.cache["reduce.audio.0"]  # (N, D)
    count = original.shape[0]
    expected = torch.stack([original[i : i + 2].mean(0) for i in range(0, count, 2)])
    torch.testing.assert_close(merged.cache["reduce.audio.0"], expected, rtol=0, atol=1e-6)
    rows = merged.ledger.tokens("audio")
    assert (rows.merged_into >= 0).sum() == count // 2 and rows.kept.sum() == (count + 1) // 2
    assert merged.ledger.summary().loc[0, "merged"] == count // 2


def test_reusing_encoded_media_gives_the_same_run(small_lab):
    prompt = small_lab.prompt("What?", images=[synth.image_array(64, 64)], audio=(synth.tone(0.5), 16000))
    encoded = small_lab.encode(prompt)
    fresh = small_lab.run(prompt, max_new_tokens=3, return_logits=True)
    reused = small_lab.run(prompt, max_new_tokens=3, return_logits=True, encoded=encoded)
    assert fresh.generated_ids == reused.generated_ids and torch.equal(fresh.logits, reused.logits)
    other = small_lab.prompt("Else?", images=[synth.image_array(64, 64)])
    with pytest.raises(ol.OmniLabInputError, match="another prompt"):
        small_lab.run(other, encoded=encoded)


def test_the_ledger_is_built_on_first_access_only_and_equals_one_built_from_the_run(small_lab, monkeypatch):
    import pandas as pd

    import omni_lab.lab as lab_module
    from omni_lab.reduction.ledger import build_ledger

    built = []
    monkeypatch.setattr(lab_module, "build_ledger", lambda *args, **kw: built.append(1) or build_ledger(*args, **kw))
    prompt = small_lab.prompt("What?", video=VideoClip(synth.moving_square_frames(9, 96, 64), fps=3.0))
    run = small_lab.run(prompt, max_new_tokens=2, reducer=ol.reducers.EVS(0.5))
    assert built == []  # the run itself did not build it
    ledger = run.ledger
    assert built == [1] and run.ledger is ledger  # built once, on first access
    expected = build_ledger(prompt, run.reducers, run.token_map, small_lab.processor, config=small_lab.config)
    pd.testing.assert_frame_equal(ledger.stages, expected.stages)
    assert run.to_dict()["flops"] == expected.flops_summary() and built == [1]
