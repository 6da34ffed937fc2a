"""ShapesWorld's hard tier: long, mostly still clips whose answer lies in a few brief events.

    events  flash_colour | flash_count | appeared_shape | flash_time
    sync    beep_shape | beep_flash

Every clip has 32-64 frames (an even count) at 8 fps, so 4-8 s and 16-32 tubelets of 16 tokens (256-512 video
tokens). Two small grey shapes (16-22 px, two different kinds) stand still on a textured background, and in half of the
clips a grey distractor of the third kind glides 1-2 px a frame along a straight line for the whole clip (motion that
is not the answer). Colour marks an event, and the answer lies in brief events of 1-3 frames:

    flash    a still shape shows a colour                  flash_colour: "What colour does the square flash?"
                                                           flash_count: 1-4 flashes of 1-2 frames, each inside one
                                                           tubelet, at least 3 tubelets apart ("How many flashes are
                                                           there?"); flash_time: "early", "middle" or "late" (the
                                                           flash lies inside one third of the clip, clear of its ends)
    appear   a shape (20-24 px) shows for 2-3 frames       appeared_shape: "Which shape appears for a moment?" (its
             where nothing was, then is gone               kind is drawn independently of the still shapes' kinds)

No event touches the first or the last tubelet (the first shows the resting scene, and EVS always keeps it), so an
event occupies 1-2 of the clip's 16-32 tubelets and 1-4 of their 16 cells: a reducer that keeps 30% of the video tokens
can lose it. The tokens that hold the answer are few, but each shows it plainly (the only colour in the clip): what is
hard is that they are sparse, not that they must be told from look-alikes. A first version with coloured still shapes,
where a flash is one colour among others and only a comparison across tubelets finds it, was still at chance on every
task after 4,200 training examples, and the twin's CPU budget (about 10,000 hard-tier examples an hour) leaves no room
to wait for it.

The sync family adds a sound track of exactly the clip's length on the clip's own clock (frame i is shown at i / 8 s,
the audio starts at 0 s), so the pair can be written as one video file with its sound. It holds one beep (0.12-0.25 s,
high or low, tone or noise): in beep_shape two still shapes of different kinds flash at least 1.5 s apart and the beep
starts on the first frame of one of those flashes ("Which shape flashes when the beep sounds?"); in beep_flash one
shape flashes once and the beep starts on its first frame or at least 1 s away from it ("Does anything flash when the
beep sounds?"). Neither can be answered from one modality: in beep_shape the video shows two flashing shapes and only
the beep's time picks one (50% without it), and in beep_flash the flash is drawn before the answer and the beep's place
alone gives at most 58% (the Bayes rate of a simulation of this draw). A before/after question is not asked: on a 4-8 s
clip with the two at least 1 s apart, the beep's place alone answers it 85% of the time and the flash's 87%, so it
would not test the sync.

Ground truth (`EventTruth`): the still shapes at rest, the distractor's box in every frame, and every event with its
kind, frames, seconds, tubelets and the pixel boxes that differ from the resting scene while it lasts, so a study can
find the tokens that held it (`EventTruth.event_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import (
    COLOURS,
    SHAPES,
    SIZE,
    ShapeTruth,
    choose,
    jittered_colour,
    paint,
    place,
    textured_background,
)
from .sounds import KINDS, PITCHES, SAMPLING_RATE, beeps_at

FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "events": ("flash_colour", "flash_count", "appeared_shape", "flash_time"),
    "sync": ("beep_shape", "beep_flash"),
}
EVENT_FPS = 8.0
EVENT_FRAMES = (32, 64)  # inclusive range of frame counts (always even: whole tubelets)
SHAPE_SIZES = (16, 22)  # inclusive range of a shape's box side in pixels
STILL_SHAPES = 2  # still shapes per clip; with the distractor, the three kinds are each drawn once
GREY = "grey"  # the colour name of still shapes and the distractor: colour belongs to events only
GREY_LEVELS = (150, 210)  # inclusive range of their grey level (backgrounds stay at or below 80)
FLASH_FRAMES = (1, 3)  # inclusive range of a flash's frames (flash_count: 1-2, inside one tubelet)
APPEAR_FRAMES = (2, 3)
APPEAR_SIZES = (20, 24)  # an appearing shape is a little larger: its kind must be read from 1-2 tubelets
FLASH_COUNTS = (1, 4)
COUNT_GAP_TUBELETS = 3  # flash_count: flashes at least this many tubelets apart
DISTRACTOR_PROBABILITY = 0.5
DISTRACTOR_SPEED = (1.0, 2.0)  # pixels per frame
DISTRACTOR_DISTANCE = 70.0  # at most this many pixels over the whole clip
TIMES = ("early", "middle", "late")
BEEP_SECONDS = (0.12, 0.25)
BEEP_SHAPE_GAP_FRAMES = 12  # beep_shape: the two flashes start at least 1.5 s apart
BEEP_FLASH_GAP_SECONDS = 1.0  # beep_flash, "no": the beep starts at least 1 s before or after the flash
BEEP_EARLIEST, BEEP_LATEST_END = 0.25, 0.3  # a beep starts 0.25 s into the clip or later, ends 0.3 s before its end


@dataclass(frozen=True)
class Event:
    """One brief event of a clip.

    Attributes:
        kind: "flash" (a still shape shows another colour) or "appear" (a shape shows where nothing was).
        shape: the shape as the event shows it: the flash colour at the resting box, or the appearing shape.
        frames: the consecutive frame indices it lasts.
        fps: the clip's frame rate.
        still: index into `EventTruth.still` of the shape it happens to (None for "appear").
        boxes: the pixel boxes `(x0, y0, x1, y1)` that differ from the resting scene while it lasts.
    """

    kind: str
    shape: ShapeTruth
    frames: tuple[int, ...]
    fps: float
    still: int | None
    boxes: tuple[tuple[int, int, int, int], ...]

    @property
    def seconds(self) -> tuple[float, float]:
        """`(start, end)` on the clip's clock: the first frame's time and the end of the last frame."""
        return self.frames[0] / self.fps, (self.frames[-1] + 1) / self.fps

    @property
    def tubelets(self) -> tuple[int, ...]:
        """The 2-frame tubelets that show it."""
        return tuple(sorted({frame // 2 for frame in self.frames}))


@dataclass(frozen=True)
class EventTruth:
    """What a hard-tier clip shows.

    Attributes:
        still: the still shapes at rest (colour, kind, box).
        events: the events in time order.
        distractor: the gliding distractor as first drawn, or None.
        distractor_boxes: `(T, 4)` its box in every frame, or None.
        fps: frames per second; frame i is shown at `i / fps` seconds (`frame_times`).
        num_frames: T.
    """

    still: tuple[ShapeTruth, ...]
    events: tuple[Event, ...]
    distractor: ShapeTruth | None
    distractor_boxes: np.ndarray | None
    fps: float
    num_frames: int

    @property
    def seconds(self) -> float:
        """The clip's length: `num_frames / fps` (a sync clip's audio has exactly this length)."""
        return self.num_frames / self.fps

    def frame_times(self) -> np.ndarray:
        """`(T,)` seconds at which each frame is shown, on the clock the sync family's audio shares."""
        return np.arange(self.num_frames) / self.fps

    def event_rows(self, token_map, event: int | None = None) -> np.ndarray:
        """Bool mask over the token map's rows: video tokens whose tubelet packs a frame of the event and whose pixel
        box overlaps a box that differs from the resting scene then.

        Args:
            token_map: the prompt's (or a run's) `TokenMap`.
            event: index into `events`, or None for every event.
        """
        chosen = self.events if event is None else (self.events[event],)
        mask = np.zeros(len(token_map), dtype=bool)
        video = token_map.rows(modality="video")
        for item in chosen:
            during = np.zeros(len(token_map), dtype=bool)
            for frame in item.frames:
                during |= token_map.rows(modality="video", frame=frame)
            for box in item.boxes:
                mask |= video & during & (token_map.box_overlap(box) > 0)
        return mask


def example(rng: np.random.Generator, family: str, task: str) -> tuple[str, str, dict, dict]:
    """Draw one hard-tier example.

    Args:
        rng: the example's generator.
        family: "events" or "sync".
        task: one of `FAMILY_TASKS[family]`.
    Returns:
        `(question, answer, media, truth)`: media `{"video": VideoClip}` (+ `"audio": (waveform, 16000)` for sync),
        truth `{"events": EventTruth}` (+ `"audio": AudioTruth`).
    """
    builders = {
        "flash_colour": _flash_colour,
        "flash_count": _flash_count,
        "appeared_shape": _appeared_shape,
        "flash_time": _flash_time,
        "beep_shape": _beep_shape,
        "beep_flash": _beep_flash,
    }
    if task not in FAMILY_TASKS.get(family, ()):
        raise ValueError(f"unknown {family} task {task!r}; choose from {FAMILY_TASKS.get(family)}")
    return builders[task](rng)


# ------------------------------------------------------------------------------------------------------- scenes
@dataclass
class _Scene:
    """A clip being drawn: the resting scene and the events added so far."""

    frames_count: int
    background: np.ndarray
    still: list[ShapeTruth]
    still_rgb: list[np.ndarray]
    distractor: ShapeTruth | None
    distractor_rgb: np.ndarray | None
    distractor_boxes: np.ndarray | None
    events: list[Event]
    event_rgb: list[np.ndarray]

    def taken(self) -> list[tuple[int, int, int, int]]:
        """Every box in use: still shapes, the distractor's path, events' boxes."""
        boxes = [shape.box for shape in self.still] + [box for event in self.events for box in event.boxes]
        if self.distractor_boxes is not None:
            path = self.distractor_boxes
            boxes.append((int(path[:, 0].min()), int(path[:, 1].min()), int(path[:, 2].max()), int(path[:, 3].max())))
        return boxes

    def truth(self) -> EventTruth:
        events = tuple(sorted(self.events, key=lambda event: event.frames[0]))
        return EventTruth(
            tuple(self.still), events, self.distractor, self.distractor_boxes, EVENT_FPS, self.frames_count
        )

    def render(self):
        """The `VideoClip` at `EVENT_FPS`: the resting scene, the distractor in its box of each frame, the events."""
        from ..media import VideoClip

        frames = np.repeat(self.background[None], self.frames_count, axis=0)
        for index, frame in enumerate(frames):
            if self.distractor is not None:
                x0, y0, x1, _ = (int(v) for v in self.distractor_boxes[index])
                paint(frame, self.distractor.shape, self.distractor_rgb, x0, y0, x1 - x0)
            shown = {}  # still index -> (rgb, box) during an event
            for event, rgb in zip(self.events, self.event_rgb, strict=True):
                if index not in event.frames:
                    continue
                if event.kind == "appear":
                    x0, y0, x1, _ = event.shape.box
                    paint(frame, event.shape.shape, rgb, x0, y0, x1 - x0)
                else:  # a flash: the still shape in the event's colour
                    shown[event.still] = (rgb, event.shape.box)
            for still_index, (shape, rgb) in enumerate(zip(self.still, self.still_rgb, strict=True)):
                rgb, (x0, y0, x1, _) = shown.get(still_index, (rgb, shape.box))
                paint(frame, shape.shape, rgb, x0, y0, x1 - x0)
        return VideoClip(frames, fps=EVENT_FPS, source="<shapesworld>")


def _scene(rng: np.random.Generator) -> _Scene:
    """A resting scene: two grey still shapes of different kinds and (half the time) a grey gliding distractor of the
    third kind, so "the square" names one shape."""
    frames_count = 2 * int(rng.integers(EVENT_FRAMES[0] // 2, EVENT_FRAMES[1] // 2 + 1))
    kinds = choose(rng, SHAPES, STILL_SHAPES + 1)  # the last one is the distractor's
    with_distractor = rng.random() < DISTRACTOR_PROBABILITY
    while True:
        taken, distractor, path_boxes = [], None, None
        if with_distractor:
            size = int(rng.integers(SHAPE_SIZES[0], SHAPE_SIZES[1] + 1))
            speed = min(rng.uniform(*DISTRACTOR_SPEED), DISTRACTOR_DISTANCE / (frames_count - 1))
            angle = rng.uniform(0, 2 * np.pi)
            step = speed * np.array([np.cos(angle), np.sin(angle)])
            span = np.abs(step) * (frames_count - 1)
            start = np.array([rng.uniform(2, SIZE - 2 - size - span[axis]) for axis in (0, 1)])
            start += np.where(step < 0, span, 0.0)
            corners = np.rint(start[None] + np.arange(frames_count)[:, None] * step[None]).astype(int)  # (T, 2)
            path_boxes = np.concatenate([corners, corners + size], axis=1)  # (T, 4)
            distractor = ShapeTruth(GREY, kinds[-1], tuple(int(v) for v in path_boxes[0]))
            taken.append(
                (
                    int(path_boxes[:, 0].min()),
                    int(path_boxes[:, 1].min()),
                    int(path_boxes[:, 2].max()),
                    int(path_boxes[:, 3].max()),
                )
            )
        still = []
        for index in range(STILL_SHAPES):
            size = int(rng.integers(SHAPE_SIZES[0], SHAPE_SIZES[1] + 1))
            corner = place(rng, size, taken, gap=8)
            if corner is None:
                break
            box = (corner[0], corner[1], corner[0] + size, corner[1] + size)
            taken.append(box)
            still.append(ShapeTruth(GREY, kinds[index], box))
        if len(still) == STILL_SHAPES:
            break
    background = textured_background(rng)
    still_rgb = [_grey(rng) for _ in still]
    distractor_rgb = _grey(rng) if distractor else None
    return _Scene(frames_count, background, still, still_rgb, distractor, distractor_rgb, path_boxes, [], [])


def _span(rng: np.random.Generator, scene: _Scene, length: int, low: float = 0, high: float | None = None):
    """`length` consecutive frames starting in `[low, high - length]`, clear of the first and last tubelet."""
    first = max(2, int(np.ceil(low)))
    last = min(scene.frames_count - 2, int(np.floor(high if high is not None else scene.frames_count))) - length
    if last < first:
        raise ValueError(f"no {length}-frame span in [{low}, {high}] of a {scene.frames_count}-frame clip")
    start = int(rng.integers(first, last + 1))
    return tuple(range(start, start + length))


def _grey(rng: np.random.Generator) -> np.ndarray:
    level = int(rng.integers(GREY_LEVELS[0], GREY_LEVELS[1] + 1))
    return np.full(3, level, dtype=np.uint8)


def _flash(rng: np.random.Generator, scene: _Scene, still: int, frames: tuple[int, ...]) -> Event:
    """Add a flash of still shape `still` to one of the six colours over `frames`."""
    resting = scene.still[still]
    colour = choose(rng, tuple(COLOURS))
    event = Event("flash", ShapeTruth(colour, resting.shape, resting.box), frames, EVENT_FPS, still, (resting.box,))
    scene.events.append(event)
    scene.event_rgb.append(jittered_colour(rng, colour))
    return event


def _flash_length(rng: np.random.Generator) -> int:
    return int(rng.integers(FLASH_FRAMES[0], FLASH_FRAMES[1] + 1))


# -------------------------------------------------------------------------------------------------------- tasks
def _flash_colour(rng):
    scene = _scene(rng)
    target = int(rng.integers(len(scene.still)))
    event = _flash(rng, scene, target, _span(rng, scene, _flash_length(rng)))
    question = f"What colour does the {scene.still[target].shape} flash?"
    return question, event.shape.colour, {"video": scene.render()}, {"events": scene.truth()}


def _flash_count(rng):
    scene = _scene(rng)
    count = int(rng.integers(FLASH_COUNTS[0], FLASH_COUNTS[1] + 1))
    candidates = np.arange(1, scene.frames_count // 2 - 1)  # tubelets clear of the first and the last
    while True:
        tubelets = np.sort(rng.choice(candidates, size=count, replace=False))
        if count == 1 or np.diff(tubelets).min() >= COUNT_GAP_TUBELETS:
            break
    for tubelet in tubelets:
        length = int(rng.integers(1, 3))
        first = 2 * int(tubelet) + (int(rng.integers(2)) if length == 1 else 0)
        _flash(rng, scene, int(rng.integers(len(scene.still))), tuple(range(first, first + length)))
    return "How many flashes are there?", str(count), {"video": scene.render()}, {"events": scene.truth()}


def _appeared_shape(rng):
    scene = _scene(rng)
    kind, colour = choose(rng, SHAPES), choose(rng, tuple(COLOURS))
    while True:
        size = int(rng.integers(APPEAR_SIZES[0], APPEAR_SIZES[1] + 1))
        corner = place(rng, size, scene.taken(), gap=6)
        if corner is not None:
            break
    box = (corner[0], corner[1], corner[0] + size, corner[1] + size)
    frames = _span(rng, scene, int(rng.integers(APPEAR_FRAMES[0], APPEAR_FRAMES[1] + 1)))
    scene.events.append(Event("appear", ShapeTruth(colour, kind, box), frames, EVENT_FPS, None, (box,)))
    scene.event_rgb.append(jittered_colour(rng, colour))
    return "Which shape appears for a moment?", kind, {"video": scene.render()}, {"events": scene.truth()}


def _flash_time(rng):
    scene = _scene(rng)
    target = int(rng.integers(len(scene.still)))
    third = int(rng.integers(3))
    frames_count = scene.frames_count
    margin = frames_count / 12  # clear of the thirds' borders by a quarter of a third
    low, high = third * frames_count / 3 + margin, (third + 1) * frames_count / 3 - margin
    _flash(rng, scene, target, _span(rng, scene, _flash_length(rng), low, high))
    question = f"When does the {scene.still[target].shape} flash: early, middle or late?"
    return question, TIMES[third], {"video": scene.render()}, {"events": scene.truth()}


def _sound(rng: np.random.Generator, scene: _Scene, start: float):
    """One beep starting at `start` seconds in a track of the clip's length, on the clip's clock."""
    length = rng.uniform(*BEEP_SECONDS)
    seconds = scene.frames_count / EVENT_FPS
    track = beeps_at(rng, [(start, start + length)], seconds, choose(rng, tuple(PITCHES)), choose(rng, KINDS))
    return (track.waveform, SAMPLING_RATE), track.truth()


def _beep_shape(rng):
    scene = _scene(rng)
    flashing = choose(rng, tuple(range(len(scene.still))), 2)  # both still shapes, in random order
    lengths = [_flash_length(rng) for _ in flashing]
    while True:
        spans = [_span(rng, scene, length) for length in lengths]
        if abs(spans[0][0] - spans[1][0]) >= BEEP_SHAPE_GAP_FRAMES:
            break
    for still, frames in zip(flashing, spans, strict=True):
        _flash(rng, scene, still, frames)
    with_beep = int(rng.integers(2))
    audio, sound = _sound(rng, scene, spans[with_beep][0] / EVENT_FPS)
    answer = scene.still[flashing[with_beep]].shape
    media = {"video": scene.render(), "audio": audio}
    return "Which shape flashes when the beep sounds?", answer, media, {"events": scene.truth(), "audio": sound}


def _beep_flash(rng):
    scene = _scene(rng)
    length = _flash_length(rng)
    frames = _span(rng, scene, length)
    _flash(rng, scene, int(rng.integers(len(scene.still))), frames)
    flash_start = frames[0] / EVENT_FPS
    synced = bool(rng.integers(2))
    if synced:
        start = flash_start
    else:  # anywhere a beep fits, at least BEEP_FLASH_GAP_SECONDS from the flash's start
        latest = scene.frames_count / EVENT_FPS - BEEP_LATEST_END - BEEP_SECONDS[1]
        while True:
            start = rng.uniform(BEEP_EARLIEST, latest)
            if abs(start - flash_start) >= BEEP_FLASH_GAP_SECONDS:
                break
    audio, sound = _sound(rng, scene, float(start))
    media = {"video": scene.render(), "audio": audio}
    answer = "yes" if synced else "no"
    return "Does anything flash when the beep sounds?", answer, media, {"events": scene.truth(), "audio": sound}
