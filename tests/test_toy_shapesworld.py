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


# ------------------------------------------------------------------------------------------------- the hard tier
HARD_SEEDS = range(24)


def test_the_hard_tier_is_appended_so_the_basic_tier_keeps_its_seeds():
    """`eval_seed` numbers families by their place in FAMILIES: the basic five keep places 0-4 (and so every held-out
    example they had), and a seed drawn without a family still draws one of them."""
    assert sw.FAMILIES[:5] == ("image", "video", "audio", "omni", "text") == sw.TIERS["basic"]
    assert sw.FAMILIES[5:] == sw.TIERS["hard"] == ("events", "sync")
    assert sw.eval_seed(3, "omni", 7) == sw.EVAL_SEED_BASE + 3 * 10**6 + 3 * 10**5 + 7
    assert {sw.sample(seed).family for seed in range(300)} == set(sw.TIERS["basic"])
    assert sw.answer_words()[: len(sw.BASIC_ANSWER_WORDS)] == sw.BASIC_ANSWER_WORDS
    assert not set(sw.HARD_ANSWER_WORDS) & set(sw.BASIC_ANSWER_WORDS)
    assert sw.frame_labels(16) == sw.frame_labels()[:16] and len(sw.frame_labels()) == 64


def _events(example):
    return example.truth["events"]


def _changed_outside(frames: np.ndarray, boxes_by_frame: list[list[tuple]]) -> bool:
    """Whether any pixel differs from frame 0 outside the boxes allowed to differ in that frame (or in frame 0)."""
    for index in range(1, len(frames)):
        changed = (frames[index] != frames[0]).any(axis=-1)
        allowed = np.zeros_like(changed)
        for x0, y0, x1, y1 in boxes_by_frame[index] + boxes_by_frame[0]:
            allowed[max(y0, 0) : y1, max(x0, 0) : x1] = True
        if (changed & ~allowed).any():
            return True
    return False


@pytest.mark.parametrize("family", sw.TIERS["hard"])
def test_hard_clips_are_long_mostly_still_and_change_only_where_the_truth_says(family):
    for seed in HARD_SEEDS:
        example = sw.sample(seed, family=family)
        clip, truth = example.video, _events(example)
        frames = clip.frames
        assert 32 <= clip.num_frames <= 64 and clip.num_frames % 2 == 0 and clip.fps == 8.0
        assert truth.num_frames == clip.num_frames and truth.seconds == clip.num_frames / 8
        np.testing.assert_allclose(truth.frame_times(), np.arange(clip.num_frames) / 8)
        assert len(truth.still) == 2 and truth.events
        assert {s.colour for s in truth.still} == {"grey"} and len({s.shape for s in truth.still}) == 2
        allowed = [[] for _ in frames]
        if truth.distractor is not None:
            assert truth.distractor_boxes.shape == (clip.num_frames, 4)
            assert truth.distractor.colour == "grey" and truth.distractor.shape not in {s.shape for s in truth.still}
            for index, box in enumerate(truth.distractor_boxes):
                allowed[index].append(tuple(int(v) for v in box))
        for event in truth.events:
            assert 1 <= len(event.frames) <= 3 and list(event.frames) == list(
                range(event.frames[0], event.frames[-1] + 1)
            )
            assert event.frames[0] >= 2 and event.frames[-1] < clip.num_frames - 2  # clear of the first/last tubelet
            assert event.seconds == (event.frames[0] / 8, (event.frames[-1] + 1) / 8)
            assert event.tubelets == tuple(sorted({f // 2 for f in event.frames}))
            for index in event.frames:
                allowed[index] += list(event.boxes)
        assert not _changed_outside(frames, allowed), "pixels changed outside the distractor and the events"
        moving = truth.distractor is not None
        still_frames = [i for i in range(clip.num_frames) if not any(i in e.frames for e in truth.events)]
        assert not _saturated(frames[still_frames]).any(), "colour outside the events"
        if not moving:  # no distractor: every frame without an event is the resting scene
            assert all(np.array_equal(frames[i], frames[still_frames[0]]) for i in still_frames)


@pytest.mark.parametrize("family", sw.TIERS["hard"])
def test_every_event_shows_in_its_frames_and_boxes(family):
    for seed in HARD_SEEDS:
        example = sw.sample(seed, family=family)
        frames, truth = example.video.frames, _events(example)
        for event in truth.events:
            x0, y0, x1, y1 = event.shape.box
            for index in event.frames:
                shown = _colour_mask(frames[index][y0:y1, x0:x1], event.shape.colour).mean()
                assert shown > 0.4, (example, event, index, shown)  # a triangle fills half its box
            before = frames[event.frames[0] - 1]
            if event.kind == "flash":  # the still shape was grey and bright just before
                resting = before[y0:y1, x0:x1].astype(int)
                grey = (resting.max(axis=-1) - resting.min(axis=-1) < 8) & (resting.min(axis=-1) >= 150)
                assert grey.mean() > 0.4
            if event.kind == "appear":
                assert not _saturated(before[y0:y1, x0:x1]).any()  # nothing was there


def test_hard_answers_follow_from_the_events():
    for seed in range(60):
        for task in sw.TASKS["events"]:
            example = sw.sample(seed, family="events", task=task)
            truth = _events(example)
            kinds = [event.kind for event in truth.events]
            if task == "flash_colour":
                (flash,) = truth.events
                rest = truth.still[flash.still]
                assert kinds == ["flash"] and example.answer == flash.shape.colour != rest.colour
                assert f"the {rest.shape} flash" in example.question
            if task == "flash_count":
                assert set(kinds) == {"flash"} and example.answer == str(len(truth.events))
                tubelets = [event.tubelets for event in truth.events]
                assert all(len(t) == 1 for t in tubelets) and len(truth.events) <= 4
                assert all(b[0] - a[0] >= 3 for a, b in zip(tubelets, tubelets[1:], strict=False))
            if task == "appeared_shape":
                (appear,) = truth.events
                assert kinds == ["appear"] and appear.still is None and example.answer == appear.shape.shape
            if task == "flash_time":
                (flash,) = truth.events
                third = truth.num_frames / 3
                start, end = flash.frames[0], flash.frames[-1] + 1
                expected = sw.events.TIMES[int(start // third)]
                assert example.answer == expected and int(start // third) == int((end - 1e-9) // third)


def test_sync_audio_shares_the_clip_clock_and_the_beep_sits_where_the_answer_says():
    for seed in range(60):
        for task in sw.TASKS["sync"]:
            example = sw.sample(seed, family="sync", task=task)
            truth, sound = _events(example), example.truth["audio"]
            waveform, rate = example.audio
            assert rate == SAMPLING_RATE and len(waveform) == truth.num_frames * SAMPLING_RATE // 8
            assert sound.seconds == truth.seconds
            ((start, end),) = sound.beeps
            assert 0.12 <= end - start <= 0.25 + 1e-4 and end <= truth.seconds
            segment = waveform[int(start * rate) : int(end * rate)]
            assert np.sqrt(np.mean(segment**2)) > 0.15
            quiet = np.concatenate([waveform[: int(start * rate)], waveform[int(end * rate) :]])
            assert np.sqrt(np.mean(quiet**2)) < 0.06
            flashes = truth.events
            if task == "beep_shape":
                assert len(flashes) == 2 and abs(flashes[0].frames[0] - flashes[1].frames[0]) >= 12
                (synced,) = [event for event in flashes if abs(event.seconds[0] - start) < 1 / SAMPLING_RATE]
                assert example.answer == synced.shape.shape != [e for e in flashes if e is not synced][0].shape.shape
            if task == "beep_flash":
                (flash,) = flashes
                synced = abs(flash.seconds[0] - start) < 1 / SAMPLING_RATE
                assert synced or abs(flash.seconds[0] - start) >= 1.0
                assert example.answer == ("yes" if synced else "no")


def test_hard_answers_are_balanced():
    """No answer is a safe guess: the commonest answer of each task is under half of 300 draws (binary tasks: 62%)."""
    for family in sw.TIERS["hard"]:
        for task in sw.TASKS[family]:
            answers = [sw.sample(sw.train_seed(0, i), family=family, task=task).answer for i in range(300)]
            values, counts = np.unique(answers, return_counts=True)
            assert counts.max() / 300 < (0.62 if len(values) == 2 else 0.5), (
                task,
                dict(zip(values, counts, strict=True)),
            )


def test_beeps_at_places_beeps_and_refuses_overlaps():
    from omni_lab.toy.sounds import beeps_at

    track = beeps_at(np.random.default_rng(0), [(0.5, 0.7), (1.25, 1.4)], 2.0, "high", "tone")
    assert len(track.waveform) == 2 * SAMPLING_RATE and track.beeps == ((0.5, 0.7), (1.25, 1.4))
    with pytest.raises(ValueError, match="overlaps"):
        beeps_at(np.random.default_rng(0), [(0.5, 0.7), (0.6, 0.8)], 2.0, "high", "tone")
    with pytest.raises(ValueError, match="leaves"):
        beeps_at(np.random.default_rng(0), [(1.9, 2.1)], 2.0, "high", "tone")


@pytest.fixture(scope="module")
def twin():
    import omni_lab as ol

    return ol.load("toy-hard", progress=False)  # the twin whose vocabulary has the hard tier's words


def test_event_rows_are_the_cells_and_tubelets_that_showed_the_event(twin):
    cell = 32  # 128 px frames, a 4 x 4 grid of merged tokens
    for index in range(6):
        example = sw.sample(sw.eval_seed(0, "events", index), family="events", task="flash_count")
        truth, token_map = _events(example), example.prompt(twin).token_map
        rows = truth.event_rows(token_map)
        assert rows.any() and not (rows & ~token_map.rows(modality="video")).any()
        expected = 0
        for event in truth.events:
            x0, y0, x1, y1 = event.shape.box
            cells = (len(range(x0 // cell, (x1 - 1) // cell + 1))) * len(range(y0 // cell, (y1 - 1) // cell + 1))
            expected += cells * len(event.tubelets)
            mine = truth.event_rows(token_map, event=truth.events.index(event))
            assert set(token_map["tubelet"][mine]) == set(event.tubelets)
            assert (token_map.box_overlap(event.shape.box)[mine] > 0).all()
        assert rows.sum() == expected  # flash_count's flashes are 3+ tubelets apart: no row counted twice


def test_hard_prompts_fit_the_context_with_one_label_token_per_tubelet(twin):
    for family in sw.TIERS["hard"]:
        for task in sw.TASKS[family]:
            example = sw.sample(sw.eval_seed(0, family, 0), family=family, task=task)
            prompt = example.prompt(twin)
            counts = prompt.token_map.counts()
            tubelets = example.video.num_frames // 2
            assert counts["video"] == 16 * tubelets
            labels = sum(text.startswith("Frame ") for text in prompt.token_map["text"][prompt.token_map.rows("text")])
            assert labels == tubelets
            assert len(prompt) <= 900 < twin.context_length
