"""ShapesWorld: a seeded synthetic multimodal world whose ground truth is known, for the toy twin.

Every example is a question with a short answer about media drawn from one integer seed:

    image  colour | shape | position | count      a shape (1-4 of distinct colours to count) on a textured background
    video  direction | moving_colour | moving_shape | any_motion
                                                  8-16 frames at 8 fps: one target shape moves left, right, up or
                                                  down by 4.5-6.5 px a frame (or stays), 1-2 distractors stay still
    audio  beep_count | pitch | kind             1-5 beeps, high or low, tone or noise, 1-4 s at 16 kHz
    omni   count_and_direction | pitch_and_colour | kind_and_shape
                                                  a video and a clip together; the answer needs both ("3, left")
    text   successor | opposite | repeat         text only, so the language model stays a language model

The hard tier (`TIERS["hard"]`, events.py) asks about long, mostly still clips whose answer lies in brief events:

    events flash_colour | flash_count | appeared_shape | flash_time
                                                  32-64 frames at 8 fps; a still shape flashes another colour for
                                                  1-3 frames, a shape appears for 2-3 frames
    sync   beep_shape | beep_flash               the same clips with a beep on the clip's own clock: which shape
                                                  flashes when the beep sounds, does anything flash then

Answers are one or two lowercase words ("red", "3", "none", "high, red", "early"). Each example carries the ground
truth it was drawn from (`ImageTruth`, `VideoTruth`, `AudioTruth`, `events.EventTruth`): every shape's pixel box, the
moving target's box in every frame, the beep intervals in seconds, every event's frames, boxes and seconds, so studies
can check which tokens the model relies on.

Seeds: training draws example seeds below `EVAL_SEED_BASE` (`train_seed`), evaluation draws them from
`EVAL_SEED_BASE` upward (`eval_seed`), so held-out examples never appear in training media. Families are numbered by
their place in `FAMILIES`, where new ones are appended, so the basic tier's examples never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import events
from .canvas import COLOURS, SHAPES, SIZE, ShapeTruth, choose, jittered_colour, paint, place, textured_background
from .sounds import KINDS, MAX_BEEPS, PITCHES, SAMPLING_RATE, beep_track

# New families are appended: `eval_seed` numbers held-out examples by a family's index here.
FAMILIES = ("image", "video", "audio", "omni", "text", *events.FAMILY_TASKS)
TIERS = {"basic": FAMILIES[:5], "hard": tuple(events.FAMILY_TASKS)}
TASKS: dict[str, tuple[str, ...]] = {
    "image": ("colour", "shape", "position", "count"),
    "video": ("direction", "moving_colour", "moving_shape", "any_motion"),
    "audio": ("beep_count", "pitch", "kind"),
    "omni": ("count_and_direction", "pitch_and_colour", "kind_and_shape"),
    "text": ("successor", "opposite", "repeat"),
    **events.FAMILY_TASKS,
}
DIRECTIONS = ("left", "right", "up", "down", "none")
POSITIONS = ("left", "right", "top", "bottom")
VIDEO_FPS = 8.0
VIDEO_FRAMES = (8, 16)  # inclusive range of frame counts (basic tier)
MAX_VIDEO_FRAMES = max(VIDEO_FRAMES[1], events.EVENT_FRAMES[1])  # the longest clip of any tier
MAX_SHAPES = 4
EVAL_SEED_BASE = 1_000_000_000
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "none": (0, 0)}
OPPOSITES = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "top": "bottom",
    "bottom": "top",
    "high": "low",
    "low": "high",
    "yes": "no",
    "no": "yes",
}
NUMBER_WORDS = tuple(str(n) for n in range(10))


def train_seed(run_seed: int, index: int) -> int:
    """Example seed of the `index`-th training example of a run: `run_seed * 10**7 + index`, below EVAL_SEED_BASE."""
    if not 0 <= run_seed < 100 or not 0 <= index < 10**7:
        raise ValueError(f"training uses run seeds 0-99 and at most 10**7 examples, got {run_seed}, {index}")
    return run_seed * 10**7 + index


def eval_seed(eval_run_seed: int, family: str, index: int) -> int:
    """Example seed of the `index`-th held-out example of a family (at least EVAL_SEED_BASE)."""
    if not 0 <= eval_run_seed < 1000 or not 0 <= index < 10**5:
        raise ValueError(f"evaluation uses seeds 0-999 and at most 10**5 examples per family, got {eval_run_seed}")
    return EVAL_SEED_BASE + eval_run_seed * 10**6 + FAMILIES.index(family) * 10**5 + index


@dataclass(frozen=True)
class ImageTruth:
    """The shapes of an image; `target` indexes the one the question is about (None for count questions)."""

    shapes: tuple[ShapeTruth, ...]
    target: int | None = None
    position: str | None = None


@dataclass(frozen=True)
class VideoTruth:
    """A clip's motion: the target's box in every frame `(T, 4)`, its direction, the still distractors."""

    target: ShapeTruth
    direction: str
    boxes: np.ndarray
    distractors: tuple[ShapeTruth, ...]
    fps: float

    @property
    def moves(self) -> bool:
        return self.direction != "none"

    def path_box(self) -> tuple[int, int, int, int]:
        """The union of the target's boxes over all frames."""
        return (
            int(self.boxes[:, 0].min()),
            int(self.boxes[:, 1].min()),
            int(self.boxes[:, 2].max()),
            int(self.boxes[:, 3].max()),
        )


@dataclass
class Example:
    """One ShapesWorld example.

    Attributes:
        family, task: see `TASKS`.
        question: the user text.
        answer: the expected answer (exact match).
        media: keyword arguments for `lab.prompt`: `images=[PIL.Image]`, `video=VideoClip` (with fps),
            `audio=(waveform, 16000)`; empty for text.
        truth: {"image": ImageTruth, "video": VideoTruth, "audio": AudioTruth} for the media present; the hard
            tier's clips have {"events": events.EventTruth} instead of "video".
        seed: the seed it was drawn from.
    """

    family: str
    task: str
    question: str
    answer: str
    media: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    seed: int = -1

    @property
    def image(self):
        return self.media["images"][0] if "images" in self.media else None

    @property
    def video(self):
        return self.media.get("video")

    @property
    def audio(self):
        return self.media.get("audio")

    def prompt(self, lab, **kwargs):
        """`lab.prompt(question, images=..., video=..., audio=..., thinking=False)` for this example."""
        kwargs.setdefault("thinking", False)
        return lab.prompt(self.question, **self.media, **kwargs)

    def __repr__(self) -> str:
        return f"Example({self.family}/{self.task}, {self.question!r} -> {self.answer!r}, seed={self.seed})"


# ---------------------------------------------------------------------------------------------------- sampling
def sample(seed: int, family: str | None = None, task: str | None = None) -> Example:
    """Draw one example deterministically from `seed`.

    Args:
        seed: any non-negative integer (see `train_seed` / `eval_seed` for the split convention).
        family: one of `FAMILIES`, or None to draw one of the basic tier's five from the seed (the hard tier is
            asked for by name, so a seed drawn before it existed still gives the same example).
        task: one of `TASKS[family]`, or None to draw it from the seed.
    Returns:
        `Example`.
    """
    rng = np.random.default_rng(seed)
    family = family or TIERS["basic"][int(rng.integers(len(TIERS["basic"])))]
    if family not in TASKS:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    task = task or TASKS[family][int(rng.integers(len(TASKS[family])))]
    if task not in TASKS[family]:
        raise ValueError(f"unknown {family} task {task!r}; choose from {TASKS[family]}")
    builder = {"image": _image_example, "video": _video_example, "audio": _audio_example}
    builder |= {"omni": _omni_example, "text": _text_example}
    if family in events.FAMILY_TASKS:
        example = Example(family, task, *events.example(rng, family, task))
    else:
        example = builder[family](rng, task)
    example.seed = seed
    return example


def _image_example(rng: np.random.Generator, task: str) -> Example:
    """One shape for colour, shape and position questions (the answer needs no binding); 1-4 for counting."""
    from PIL import Image

    count = int(rng.integers(1, MAX_SHAPES + 1)) if task == "count" else 1
    colours = choose(rng, tuple(COLOURS), count)
    shapes = [choose(rng, SHAPES) for _ in range(count)]
    position = choose(rng, POSITIONS) if task == "position" else None
    while True:
        pixels = textured_background(rng)
        drawn: list[ShapeTruth] = []
        for index in range(count):
            size = int(rng.integers(22, 33))
            ranges = _position_ranges(position) if position else {}
            corner = place(rng, size, [s.box for s in drawn], gap=6, **ranges)
            if corner is None:
                break
            x0, y0 = corner
            paint(pixels, shapes[index], jittered_colour(rng, colours[index]), x0, y0, size)
            drawn.append(ShapeTruth(colours[index], shapes[index], (x0, y0, x0 + size, y0 + size)))
        if len(drawn) == count:
            break
    truth = ImageTruth(tuple(drawn), None if task == "count" else 0, position)
    first = drawn[0]
    if task == "colour":
        question, answer = f"What colour is the {first.shape}?", first.colour
    elif task == "shape":
        question, answer = f"What shape is the {first.colour} one?", first.shape
    elif task == "position":
        question, answer = f"Where is the {first.colour} {first.shape}?", position
    else:
        question, answer = "How many shapes are there?", str(count)
    return Example("image", task, question, answer, {"images": [Image.fromarray(pixels)]}, {"image": truth})


def _position_ranges(position: str) -> dict:
    """Centre ranges that put a shape unambiguously on one side of the picture."""
    side, middle = (0, 40), (44, 84)
    far = (SIZE - 40, SIZE)
    return {
        "left": {"x_range": side, "y_range": middle},
        "right": {"x_range": far, "y_range": middle},
        "top": {"x_range": middle, "y_range": side},
        "bottom": {"x_range": middle, "y_range": far},
    }[position]


def _moving_scene(rng: np.random.Generator, direction: str):
    """Frames of one target moving in `direction` (or still) and 1-2 still distractors, with the truth."""
    from ..media import VideoClip

    frames_count = int(rng.integers(VIDEO_FRAMES[0], VIDEO_FRAMES[1] + 1))
    colours = choose(rng, tuple(COLOURS), 3)
    shapes = choose(rng, SHAPES, 3)  # every shape in a clip is a different kind, so "the circle" is unique
    distractor_count = int(rng.integers(1, 3))
    while True:
        size = int(rng.integers(20, 27))
        speed = rng.uniform(4.5, 6.5)  # pixels per frame, so the two frames of every tubelet show the motion
        distance = min(speed * (frames_count - 1), 80.0) if direction != "none" else 0.0
        step_x, step_y = _STEP[direction]
        span_x, span_y = abs(step_x) * distance, abs(step_y) * distance
        low = 2
        x_start = rng.uniform(low, SIZE - 2 - size - span_x) + (span_x if step_x < 0 else 0)
        y_start = rng.uniform(low, SIZE - 2 - size - span_y) + (span_y if step_y < 0 else 0)
        progress = np.linspace(0, 1, frames_count)
        xs = np.rint(x_start + step_x * distance * progress).astype(int)
        ys = np.rint(y_start + step_y * distance * progress).astype(int)
        boxes = np.stack([xs, ys, xs + size, ys + size], axis=1)
        path = (int(xs.min()), int(ys.min()), int(xs.max()) + size, int(ys.max()) + size)
        taken = [path]
        distractors = []
        for index in range(1, distractor_count + 1):
            other = int(rng.integers(20, 27))
            corner = place(rng, other, taken, gap=6)
            if corner is None:
                break
            box = (corner[0], corner[1], corner[0] + other, corner[1] + other)
            taken.append(box)
            distractors.append(ShapeTruth(colours[index], shapes[index], box))
        if len(distractors) == distractor_count:
            break
    background = textured_background(rng)
    for distractor in distractors:
        x0, y0, x1, _ = distractor.box
        paint(background, distractor.shape, jittered_colour(rng, distractor.colour), x0, y0, x1 - x0)
    target_rgb = jittered_colour(rng, colours[0])
    frames = np.repeat(background[None], frames_count, axis=0)
    for index, (x0, y0, _, _) in enumerate(boxes):
        paint(frames[index], shapes[0], target_rgb, int(x0), int(y0), size)
    target = ShapeTruth(colours[0], shapes[0], tuple(int(v) for v in boxes[0]))
    truth = VideoTruth(target, direction, boxes, tuple(distractors), VIDEO_FPS)
    return VideoClip(frames, fps=VIDEO_FPS, source="<shapesworld>"), truth


def _video_example(rng: np.random.Generator, task: str) -> Example:
    if task == "any_motion":
        direction = choose(rng, DIRECTIONS[:4]) if rng.random() < 0.5 else "none"
    elif task == "direction":
        direction = choose(rng, DIRECTIONS)
    else:
        direction = choose(rng, DIRECTIONS[:4])
    clip, truth = _moving_scene(rng, direction)
    target = truth.target
    if task == "direction":
        question, answer = f"Which way does the {target.colour} {target.shape} move?", direction
    elif task == "moving_colour":
        question, answer = "What colour is the moving shape?", target.colour
    elif task == "moving_shape":
        question, answer = "Which shape is moving?", target.shape
    else:
        question, answer = "Does anything move?", "yes" if truth.moves else "no"
    return Example("video", task, question, answer, {"video": clip}, {"video": truth})


def _beeps(rng: np.random.Generator):
    count = int(rng.integers(1, MAX_BEEPS + 1))
    track = beep_track(rng, count, choose(rng, tuple(PITCHES)), choose(rng, KINDS))
    return (track.waveform, SAMPLING_RATE), track.truth()


def _audio_example(rng: np.random.Generator, task: str) -> Example:
    audio, truth = _beeps(rng)
    if task == "beep_count":
        question, answer = "How many beeps are there?", str(len(truth.beeps))
    elif task == "pitch":
        question, answer = "Is the sound high or low?", truth.pitch
    else:
        question, answer = "Is it a tone or noise?", truth.kind
    return Example("audio", task, question, answer, {"audio": audio}, {"audio": truth})


def _omni_example(rng: np.random.Generator, task: str) -> Example:
    direction = choose(rng, DIRECTIONS) if task == "count_and_direction" else choose(rng, DIRECTIONS[:4])
    clip, video = _moving_scene(rng, direction)
    audio, sound = _beeps(rng)
    target = video.target
    if task == "count_and_direction":
        question = f"How many beeps are there, and which way does the {target.colour} {target.shape} move?"
        answer = f"{len(sound.beeps)}, {direction}"
    elif task == "pitch_and_colour":
        question, answer = (
            "Is the sound high or low, and what colour is the moving shape?",
            f"{sound.pitch}, {target.colour}",
        )
    else:
        question, answer = "Is it a tone or noise, and which shape is moving?", f"{sound.kind}, {target.shape}"
    return Example("omni", task, question, answer, {"video": clip, "audio": audio}, {"video": video, "audio": sound})


def _text_example(rng: np.random.Generator, task: str) -> Example:
    if task == "successor":
        number = int(rng.integers(0, 9))
        question, answer = f"What number comes after {number}?", str(number + 1)
    elif task == "opposite":
        word = choose(rng, tuple(OPPOSITES))
        question, answer = f"What is the opposite of {word}?", OPPOSITES[word]
    else:
        words = BASIC_ANSWER_WORDS
        chosen = [choose(rng, words) for _ in range(int(rng.integers(1, 4)))]
        question, answer = f"Repeat: {' '.join(chosen)}", " ".join(chosen)
    return Example("text", task, question, answer)


# The basic tier's answer words in the order its repeat questions draw them from, and the only words the BPE merges
# (`corpus`) were learned with: the hard tier's words are added tokens (`added_tokens`), so neither the basic tier's
# examples nor the ids the checkpoint's embeddings were trained on change.
BASIC_ANSWER_WORDS = tuple(
    dict.fromkeys(
        tuple(COLOURS) + SHAPES + DIRECTIONS + POSITIONS + tuple(PITCHES) + KINDS + ("yes", "no") + NUMBER_WORDS
    )
)
HARD_ANSWER_WORDS = events.TIMES  # "early", "middle", "late"; every other hard-tier answer is a basic word


def answer_words() -> tuple[str, ...]:
    """Every word an answer can contain."""
    return BASIC_ANSWER_WORDS + HARD_ANSWER_WORDS


def corpus() -> list[str]:
    """The text the twin's BPE merges are learned from: every basic-tier question template, answer and frame label.

    Frozen with the basic tier: new merges would renumber the tokens the checkpoint was trained on. The hard tier's
    question words take a few tokens each; its answer words and longer clips' frame labels are `added_tokens`.
    """
    colours, shapes = tuple(COLOURS), SHAPES
    lines = ["How many shapes are there?", "Which shape is moving?", "Does anything move?"]
    lines += ["What colour is the moving shape?", "How many beeps are there?", "Is the sound high or low?"]
    lines += ["Is it a tone or noise?", "Is the sound high or low, and what colour is the moving shape?"]
    lines += ["Is it a tone or noise, and which shape is moving?"]
    for colour in colours:
        lines.append(f"What shape is the {colour} one?")
        for shape in shapes:
            lines += [f"What colour is the {shape}?", f"Where is the {colour} {shape}?"]
            lines += [f"Which way does the {colour} {shape} move?"]
            lines += [f"How many beeps are there, and which way does the {colour} {shape} move?"]
            lines += [f"Repeat: {colour} {shape}"]
    lines += [f"What number comes after {n}?" for n in range(9)]
    lines += [f"What is the opposite of {word}?" for word in OPPOSITES]
    for word in BASIC_ANSWER_WORDS:
        lines += [word, f"{word}, {word}", f" {word}"] * 4
    lines += ["user", "assistant", "system", "You are a helpful assistant."]
    return lines + frame_labels(VIDEO_FRAMES[1])


def frame_labels(max_frames: int = events.EVENT_FRAMES[1]) -> list[str]:
    """The processor's text label of every tubelet of a ShapesWorld clip (8 fps, up to `max_frames` frames), as it
    writes them: for each tubelet the two-frame label, then the one-frame label of a clip that ends on its first frame.
    The default covers the hard tier's 64-frame clips; the first 16 labels (clips up to 16 frames) come first."""
    frame_ms = int(1000.0 / VIDEO_FPS)
    labels = []
    for first in range(0, max_frames, 2):
        t0, t1 = first * frame_ms / 1000.0, (first + 1) * frame_ms / 1000.0
        labels.append(
            f"Frame {first + 1} sampled at {t0:.2f} seconds and frame {first + 2} sampled at {t1:.2f} seconds: "
        )
        labels.append(f"Frame {first + 1} sampled at {t0:.2f} seconds: ")
    return labels


def added_tokens() -> tuple[list[str], list[str]]:
    """Whole-string tokens the twin's tokenizer appends after its BPE vocabulary, in id order.

    Returns:
        `(labels, words)`: every frame label of clips up to 64 frames (the basic tier's 16 first, so their ids never
        move) and the hard tier's answer words (matched as single words only).
    """
    return frame_labels(), list(HARD_ANSWER_WORDS)
