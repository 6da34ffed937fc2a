"""ShapesWorld: determinism, answers that agree with the pixels and samples, ground truth that locates the evidence."""

import numpy as np
import pytest

from omni_lab.toy import shapesworld as sw
from omni_lab.toy.canvas import COLOURS, SHAPES, SIZE
from omni_lab.toy.sounds import SAMPLING_RATE

SEEDS = range(40)


def _colour_mask(pixels: np.ndarray, colour: str, tolerance: int = 30) -> np.ndarray:
    """Pixels within `tolerance` of a named colour in every channel (the generator jitters by at most 12)."""
    return (np.abs(pixels.astype(int) - np.asarray(COLOURS[colour])) <= tolerance).all(axis=-1)


def _saturated(pixels: np.ndarray) -> np.ndarray:
    """Pixels that are clearly not grey (backgrounds are grey: equal channels)."""
    channels = pixels.astype(int)
    return (channels.max(axis=-1) - channels.min(axis=-1)) > 60


def test_the_same_seed_gives_the_same_example():
    for family in sw.FAMILIES:
        first, second = sw.sample(123, family=family), sw.sample(123, family=family)
        assert (first.task, first.question, first.answer) == (second.task, second.question, second.answer)
        if first.image is not None:
            assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
        if first.video is not None:
            assert np.array_equal(first.video.frames, second.video.frames)
        if first.audio is not None:
            assert np.array_equal(first.audio[0], second.audio[0])
    assert sw.sample(1, family="image").question != sw.sample(2, family="image").question or not np.array_equal(
        np.asarray(sw.sample(1, family="image").image), np.asarray(sw.sample(2, family="image").image)
    )


@pytest.mark.parametrize("family", sw.FAMILIES)
def test_every_task_is_drawn_and_answers_are_short_words(family):
    allowed = set(sw.answer_words())
    seen = set()
    for seed in range(200):
        example = sw.sample(seed, family=family)
        seen.add(example.task)
        words = example.answer.replace(",", "").split()
        assert 1 <= len(words) <= 3 and set(words) <= allowed, example
        assert example.answer == example.answer.strip().lower()
    assert seen == set(sw.TASKS[family])


def test_image_answers_agree_with_the_pixels():
    for seed in SEEDS:
        example = sw.sample(seed, family="image")
        pixels = np.asarray(example.image)
        assert pixels.shape == (SIZE, SIZE, 3)
        truth = example.truth["image"]
        for shape in truth.shapes:
            x0, y0, x1, y1 = shape.box
            inside = _colour_mask(pixels[y0:y1, x0:x1], shape.colour)
            fill = inside.mean()
            expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[shape.shape]
            assert abs(fill - expected) < 0.12, (example, shape, fill)
        painted = _saturated(pixels)
        in_boxes = np.zeros_like(painted)
        for shape in truth.shapes:
            x0, y0, x1, y1 = shape.box
            in_boxes[y0:y1, x0:x1] = True
        assert not (painted & ~in_boxes).any(), "coloured pixels outside every shape's box"
        if example.task == "count":
            assert example.answer == str(len(truth.shapes))
        first = truth.shapes[0]
        if example.task == "colour":
            assert example.answer == first.colour and f"the {first.shape}?" in example.question
            assert [s.shape for s in truth.shapes].count(first.shape) == 1
        if example.task == "shape":
            assert example.answer == first.shape and first.colour in example.question
        if example.task == "position":
            cx, cy = (first.box[0] + first.box[2]) / 2, (first.box[1] + first.box[3]) / 2
            expected = {"left": cx < 48, "right": cx > SIZE - 48, "top": cy < 48, "bottom": cy > SIZE - 48}
            assert (
                expected[example.answer]
                and 40 < {"left": cy, "right": cy, "top": cx, "bottom": cx}[example.answer] < SIZE - 40
            )
        assert len({s.colour for s in truth.shapes}) == len(truth.shapes)


def _target_centroid(frame: np.ndarray, colour: str) -> np.ndarray:
    ys, xs = np.nonzero(_colour_mask(frame, colour))
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("family", ["video", "omni"])
def test_the_target_moves_as_the_answer_says_and_nothing_else_moves(family):
    for seed in SEEDS:
        example = sw.sample(seed, family=family)
        clip, truth = example.video, example.truth["video"]
        frames = clip.frames
        assert sw.VIDEO_FRAMES[0] <= clip.num_frames <= sw.VIDEO_FRAMES[1] and clip.fps == sw.VIDEO_FPS
        assert truth.boxes.shape == (clip.num_frames, 4)
        shift = _target_centroid(frames[-1], truth.target.colour) - _target_centroid(frames[0], truth.target.colour)
        if truth.direction == "none":
            assert np.array_equal(frames[0], frames[-1])
        else:
            axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[truth.direction]
            assert sign * shift[axis] > 25 and abs(shift[1 - axis]) < 2, (example, shift)
        changed = (frames != frames[:1]).any(axis=(0, 3))  # pixels that differ from frame 0 in some frame
        x0, y0, x1, y1 = truth.path_box()
        outside = np.ones_like(changed)
        outside[y0:y1, x0:x1] = False
        assert not (changed & outside).any(), "pixels outside the target's path changed"
        for distractor in truth.distractors:
            assert truth.target.shape != distractor.shape and truth.target.colour != distractor.colour
            dx0, dy0, dx1, dy1 = distractor.box
            assert not changed[dy0:dy1, dx0:dx1].any()
        for index, (bx0, by0, bx1, by1) in enumerate(truth.boxes):
            target = _colour_mask(frames[index], truth.target.colour)
            assert target[by0:by1, bx0:bx1].sum() == target.sum() > 0  # every target pixel sits in that frame's box
        if example.family == "video" and example.task == "direction":
            assert example.answer == truth.direction
        if example.task == "any_motion":
            assert example.answer == ("yes" if truth.moves else "no")


def _band_energy(segment: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(segment)) ** 2
    frequencies = np.fft.rfftfreq(len(segment), 1 / SAMPLING_RATE)
    return float(spectrum[(frequencies >= low) & (frequencies <= high)].sum() / spectrum.sum())


@pytest.mark.parametrize("family", ["audio", "omni"])
def test_beeps_sound_where_the_truth_says(family):
    for seed in SEEDS:
        example = sw.sample(seed, family=family)
        waveform, rate = example.audio
        truth = example.truth["audio"]
        assert rate == SAMPLING_RATE and 1.0 <= len(waveform) / rate <= 4.0 and waveform.dtype == np.float32
        assert 1 <= len(truth.beeps) <= 5
        loud = np.zeros(len(waveform), dtype=bool)
        for start, end in truth.beeps:
            segment = waveform[int(start * rate) : int(end * rate)]
            assert np.sqrt(np.mean(segment**2)) > 0.15
            low, high = (200, 700) if truth.pitch == "low" else (1000, 3500)
            assert _band_energy(segment, low, high) > 0.6, (example, truth.pitch)
            loud[int(start * rate) : int(end * rate)] = True
        quiet = waveform[~loud]
        assert np.sqrt(np.mean(quiet**2)) < 0.06
        for (_, end), (start, _) in zip(truth.beeps[:-1], truth.beeps[1:], strict=True):
            assert start - end >= 0.15
        if example.task == "beep_count":
            assert example.answer == str(len(truth.beeps))
        if family == "omni" and example.task == "count_and_direction":
            assert example.answer == f"{len(truth.beeps)}, {example.truth['video'].direction}"


def test_tones_are_pure_and_noise_is_spread():
    for seed in range(60):
        example = sw.sample(seed, family="audio", task="kind")
        waveform, rate = example.audio
        truth = example.truth["audio"]
        start, end = truth.beeps[0]
        segment = waveform[int(start * rate) : int(end * rate)]
        narrow = _band_energy(segment, truth.frequency * 0.97, truth.frequency * 1.03)
        assert (narrow > 0.7) == (truth.kind == "tone"), (truth.kind, narrow)
        assert example.answer == truth.kind


def test_text_tasks():
    for seed in range(60):
        example = sw.sample(seed, family="text")
        assert not example.media and not example.truth
        if example.task == "successor":
            assert int(example.answer) == int(example.question.split()[-1].rstrip("?")) + 1
        if example.task == "opposite":
            word = example.question.split()[-1].rstrip("?")
            assert sw.OPPOSITES[example.answer] == word
        if example.task == "repeat":
            assert example.question == f"Repeat: {example.answer}"


def test_training_and_evaluation_seeds_never_meet():
    assert sw.train_seed(99, 10**7 - 1) < sw.EVAL_SEED_BASE <= sw.eval_seed(0, "image", 0)
    eval_seeds = {sw.eval_seed(s, f, i) for s in range(3) for f in sw.FAMILIES for i in range(50)}
    assert len(eval_seeds) == 3 * len(sw.FAMILIES) * 50
    with pytest.raises(ValueError):
        sw.train_seed(100, 0)
    with pytest.raises(ValueError):
        sw.eval_seed(0, "image", 10**5)


def test_unknown_family_or_task_is_refused():
    with pytest.raises(ValueError, match="family"):
        sw.sample(0, family="smell")
    with pytest.raises(ValueError, match="task"):
        sw.sample(0, family="image", task="direction")


def test_every_shape_and_colour_appears():
    colours, shapes = set(), set()
    for seed in range(100):
        for shape in sw.sample(seed, family="image").truth["image"].shapes:
            colours.add(shape.colour)
            shapes.add(shape.shape)
    assert colours == set(COLOURS) and shapes == set(SHAPES)
