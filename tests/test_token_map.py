"""Token map counts and geometry, against counts worked out by hand from the model's rules.

Rules (docs/model_layout.md §4-6; transformers' processors):
- image: patch grid ph0 = round(H/16 + 0.5), pw0 = round(W/16 + 0.5); scaled down into the 13,312-patch budget,
  up to at least 1,024 patches, sides even; tokens = ph * pw / 4 (2x2 pixel shuffle).
- video frame: ph = round(sqrt(1024 / a)), pw = round(sqrt(1024 a)), a = W/H, both rounded up to even if the
  product stays <= 1024 else down; tokens per 2-frame tubelet = ph * pw / 4; an odd last frame pads the tubelet.
- audio: frames = 1 + samples // 160, then three stride-2 convs L -> (L - 1) // 2 + 1; 80 ms per token.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from omni_lab.media import VideoClip
from tests import synth


@pytest.mark.parametrize(
    ("size", "resized", "tokens"),
    [
        ((224, 224), (512, 512), 256),  # 14x14 patches, upsampled to the 1,024-patch minimum
        ((1000, 500), (1024, 512), 512),  # 32 x 16 patches (round(31.75 + .5) = 32, round(63 + .5) = 64)
        ((1920, 1080), (1920, 1088), 2040),  # 120 x 68 patches, under the budget as is
    ],
)
def test_image_token_counts_and_boxes(full_meta_lab, size, resized, tokens):
    width, height = size
    prompt = full_meta_lab.prompt("Describe.", images=[synth.image_array(width, height)])
    rows = prompt.token_map.df[prompt.token_map.df.modality == "image"]
    assert len(rows) == tokens
    grid_h, grid_w = prompt.inputs["image_grid_hw"][0].tolist()
    assert (grid_w * 16, grid_h * 16) == resized
    cols = resized[0] // 32
    assert rows.col.max() + 1 == cols and rows.row.max() + 1 == resized[1] // 32
    first, last = rows.iloc[0], rows.iloc[-1]
    assert (first.x0, first.y0) == (0, 0)
    assert first.x1 == pytest.approx(32 * width / resized[0]) and first.y1 == pytest.approx(32 * height / resized[1])
    assert (last.x1, last.y1) == (pytest.approx(width), pytest.approx(height))
    assert rows.iloc[cols].row == 1 and rows.iloc[cols].col == 0  # row-major over the merged grid


def test_merged_grid_order_is_transformers_pixel_shuffle():
    """Token k of an image is the 2x2 patch block at (k // cols, k % cols), as the model's pixel shuffle makes it."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    rows, cols = 3, 5
    features = torch.zeros(1, 2 * rows, 2 * cols, 2)
    for r in range(2 * rows):
        for c in range(2 * cols):
            features[0, r, c] = torch.tensor([r, c])
    shuffled = NemotronH_Omni_Reasoning_V3.pixel_shuffle(None, features, 0.5).reshape(rows * cols, 4, 2)
    for token in range(rows * cols):
        row, col = divmod(token, cols)
        assert shuffled[token, 0].tolist() == [2 * row, 2 * col]  # top-left patch of the block
        assert shuffled[token, 3].tolist() == [2 * row + 1, 2 * col + 1]


@pytest.mark.parametrize(("frames", "tubelets"), [(1, 1), (4, 2), (9, 5)])
def test_video_token_counts_frames_and_times(full_meta_lab, frames, tubelets):
    clip = VideoClip(np.zeros((frames, 240, 320, 3), np.uint8), fps=2.0)
    prompt = full_meta_lab.prompt("What happens?", video=clip)
    df = prompt.token_map.df
    video = df[df.modality == "video"]
    assert len(video) == 252 * tubelets  # 4:3 -> 28 x 36 patches -> 14 x 18 merged cells
    assert video.row.max() == 13 and video.col.max() == 17
    assert sorted(video.tubelet.unique()) == list(range(tubelets))
    last = video[video.tubelet == tubelets - 1].iloc[0]
    expected_frames = tuple(i for i in (2 * tubelets - 2, 2 * tubelets - 1) if i < frames)
    assert last.frames == expected_frames
    assert last.t0 == expected_frames[0] * 0.5 and last.t1 == expected_frames[-1] * 0.5
    assert (last.x1 - last.x0) == pytest.approx(32 * 320 / 576)
    text = full_meta_lab.tokenizer.decode(prompt.input_ids[0])
    if frames % 2:
        assert f"Frame {frames} sampled at {(frames - 1) * 0.5:.2f} seconds: <img>" in text
    assert text.count("<img>") == tubelets


@pytest.mark.parametrize(("seconds", "tokens"), [(0.5, 7), (3.0, 38), (31.0, 388)])
def test_audio_token_counts_and_windows(full_meta_lab, seconds, tokens):
    prompt = full_meta_lab.prompt("How many beeps?", audio=(synth.tone(seconds), 16000))
    audio = prompt.token_map.df[prompt.token_map.df.modality == "audio"]
    assert len(audio) == tokens
    assert audio.t0.iloc[1] == pytest.approx(0.08) and audio.t1.iloc[1] == pytest.approx(0.16)
    assert audio.t1.iloc[-1] == pytest.approx(min(tokens * 0.08, seconds))


def test_audio_windows_match_the_encoder_output_length(small_lab):
    """The counts the map predicts are the counts the model's audio tower emits (31 s crosses 30 s)."""
    from omni_lab.forward import encode_media

    prompt = small_lab.prompt("?", audio=[(synth.tone(31.0), 16000), (synth.tone(0.5), 16000)])
    encoded = encode_media(small_lab.model, prompt)
    assert [len(e) for e in encoded.audios] == [388, 7]


def test_select_and_rows(toy_lab):
    prompt = toy_lab.prompt(
        "Q",
        images=[synth.image_array(64, 64), synth.image_array(80, 40)],
        video=VideoClip(synth.moving_square_frames(4), fps=4.0),
    )
    tm = prompt.token_map
    assert tm.select(modality="image", item=1).sum() == len(tm.df.query("modality == 'image' and item == 1"))
    frame_rows = tm.rows(modality="video", frame=2)
    assert set(tm.df[frame_rows].tubelet) == {1}
    reduced = tm.with_reduction(~tm.rows(modality="video", frame=0))
    assert reduced.num_positions == len(tm) - frame_rows.sum()
    assert reduced.select(modality="video").sum() == frame_rows.sum()
    assert (reduced.df[reduced.rows(kept=False)].position == -1).all()
    assert reduced.rows(modality="video", kept=False).sum() == frame_rows.sum()
    assert (np.diff(reduced.df.position[reduced.df.kept]) == 1).all()


def test_text_spans_are_numbered_in_order(toy_lab):
    prompt = toy_lab.prompt("Q", images=[synth.image_array(64, 64)])
    text = prompt.token_map.df[prompt.token_map.df.modality == "text"]
    assert text.item.iloc[0] == 0 and text.item.iloc[-1] == 1  # before and after the image


def test_box_overlap_counts_shared_pixels_and_ignores_rows_without_boxes():
    from omni_lab.token_map import TokenMap, _empty_columns

    columns = _empty_columns(3)
    columns["modality"][:] = ["image", "image", "text"]
    for name, values in zip(("x0", "y0", "x1", "y1"), ([0, 32], [0, 0], [32, 64], [32, 32]), strict=True):
        columns[name][:2] = values
    token_map = TokenMap(columns)
    # a 20 x 10 box straddling the two cells: 12 x 10 in the first (x 20-32), 8 x 10 in the second (x 32-40)
    assert token_map.box_overlap((20, 5, 40, 15)).tolist() == [120.0, 80.0, 0.0]
    assert token_map.box_overlap((64, 0, 80, 32)).tolist() == [0.0, 0.0, 0.0]  # touching edges share no pixel


def _reduced_map_with_generated_rows(lab):
    prompt = lab.prompt(
        "Q", images=[synth.image_array(64, 64)], video=VideoClip(synth.moving_square_frames(4), fps=4.0)
    )
    token_map = prompt.token_map
    keep = np.ones(len(token_map), dtype=bool)
    keep[np.flatnonzero(token_map.rows(modality="video"))[::3]] = False  # every third video token pruned
    return token_map.with_reduction(keep), keep


def test_by_position_follows_the_positions_the_llm_saw(toy_lab):
    reduced, keep = _reduced_map_with_generated_rows(toy_lab)
    full = reduced.with_generated([5, 6], ["a", "b"])
    expected = list(np.asarray(reduced["modality"])[keep]) + ["generated", "generated"]  # rows are in prompt order
    assert full.by_position("modality").tolist() == expected
    assert full.by_position("position").tolist() == list(range(full.num_positions))
    assert full.by_position("text").tolist()[-2:] == ["a", "b"]
    rows = full.position_rows()
    assert len(rows) == full.num_positions and (full["position"][rows] == np.arange(full.num_positions)).all()


def test_with_llm_drop_works_before_or_after_the_generated_rows(toy_lab):
    reduced, _ = _reduced_map_with_generated_rows(toy_lab)
    positions = reduced.num_positions
    keep = np.ones(positions, dtype=bool)
    keep[[3, 7, positions - 2]] = False
    scores = np.where(keep, np.nan, np.arange(positions, dtype=float))
    scores[4] = 0.25
    before = reduced.with_llm_drop(5, keep, scores).with_generated([9, 10], ["x", "y"])
    after = reduced.with_generated([9, 10], ["x", "y"]).with_llm_drop(5, keep, scores)
    pd.testing.assert_frame_equal(before.df, after.df)
    dropped = after.df[after.df.dropped_at_layer == 5]
    assert dropped.position.tolist() == [3, 7, positions - 2]
    assert after.df.set_index("position").loc[[3, 4], "score"].tolist() == [3.0, 0.25]
    assert (after.df[after.df.modality == "generated"].dropped_at_layer == -1).all()
    with pytest.raises(ValueError, match="one entry per prompt position"):
        reduced.with_llm_drop(5, keep[:-1], scores[:-1])
