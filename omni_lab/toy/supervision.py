"""Dense auxiliary supervision of the twin's media tokens from ShapesWorld's ground truth (training only).

The release's encoders came pretrained (RADIO by distillation, Parakeet on speech) before the omni model learned to
answer. The twin's encoders start from scratch, and through the LLM alone they learn slowly: the answer loss reaches a
media token only through attention and Mamba mixing that are themselves untrained. So during training, linear
read-outs of every post-projector media token (what the LLM sees) must predict what the ground truth says is there:

    image / video token   colour and shape of the shape with most drawn pixels in its 32 x 32 cell (or none), and,
                          for video, the direction the target moves if its box covers the cell in the tubelet's frames
    image / video token   its grid row and column
    image token           whether it is a shape's first cell in raster order
    audio token           silent, or the pitch and kind of the beep sounding in its 80 ms window, and whether a beep
                          starts in it

The read-outs are not part of the model: the checkpoint is transformers' model alone. Targets come from the token map's
pixel boxes, frame indices and time windows, so they are exactly the tokens the LLM sees.
"""

from __future__ import annotations

import numpy as np
import torch

from .canvas import COLOURS, SHAPES, SIZE, shape_mask
from .shapesworld import DIRECTIONS
from .sounds import KINDS, PITCHES

MIN_OVERLAP_PIXELS = 64  # a shape "covers" a cell when at least 64 of its drawn pixels lie inside the cell
HEAD_WEIGHTS = {"shape": 3.0}  # shape is the slowest attribute for the ViT to learn
MIN_OVERLAP_SECONDS = 0.04  # a beep "sounds" in an 80 ms window when at least half of the window holds it
COLOUR_CLASSES = ("none", *COLOURS)
SHAPE_CLASSES = ("none", *SHAPES)
MOTION_CLASSES = ("still", *DIRECTIONS[:4])
SOUND_CLASSES = ("silent", *(f"{pitch} {kind}" for pitch in PITCHES for kind in KINDS))


def covered_pixels(token_map, rows: np.ndarray, shape: str, box) -> np.ndarray:
    """For each of `rows`, how many pixels of the drawn shape (its mask at `box`) lie in the row's cell."""
    x0, y0, x1, y1 = (int(v) for v in box)
    canvas = np.zeros((max(y1, SIZE) + 1, max(x1, SIZE) + 1))
    canvas[y0 + 1 : y1 + 1, x0 + 1 : x1 + 1] = shape_mask(shape, x1 - x0)
    table = canvas.cumsum(0).cumsum(1)  # table[y, x] = pixels above and left of (x, y)
    left, top, right, bottom = (
        np.clip(np.rint(token_map[name][rows]).astype(int), 0, None) for name in ("x0", "y0", "x1", "y1")
    )
    return table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]


def _dominant(count: int, shapes_and_pixels: list) -> tuple[np.ndarray, np.ndarray]:
    """Colour and shape class per row of the shape with the most pixels in its cell (0 when none has enough)."""
    colours = np.zeros(count, dtype=np.int64)
    shapes = np.zeros(count, dtype=np.int64)
    best = np.full(count, MIN_OVERLAP_PIXELS - 1e-9)
    for shape, pixels in shapes_and_pixels:
        better = pixels > best
        colours[better] = COLOUR_CLASSES.index(shape.colour)
        shapes[better] = SHAPE_CLASSES.index(shape.shape)
        best = np.where(better, pixels, best)
    return colours, shapes


def image_targets(prompt, truth) -> dict[str, np.ndarray]:
    """{"colour", "shape", "row", "col", "start"}: class per image token of the prompt's first image."""
    token_map = prompt.token_map
    rows = np.flatnonzero(token_map.rows(modality="image", item=0))
    covered = [(shape, covered_pixels(token_map, rows, shape.shape, shape.box)) for shape in truth.shapes]
    colours, shapes = _dominant(len(rows), covered)
    start = np.zeros(len(rows), dtype=np.int64)
    for shape in truth.shapes:  # each shape's first cell (raster order) among the cells it dominates
        mine = np.flatnonzero(colours == COLOUR_CLASSES.index(shape.colour))
        if len(mine):
            start[mine[0]] = 1
    grid_rows = token_map["row"][rows].astype(np.int64)
    grid_cols = token_map["col"][rows].astype(np.int64)
    return {"colour": colours, "shape": shapes, "row": grid_rows, "col": grid_cols, "start": start}


def video_targets(prompt, truth) -> dict[str, np.ndarray]:
    """{"colour", "shape", "motion", "row", "col"}: class per video token (tubelet by tubelet) of the prompt's video."""
    token_map = prompt.token_map
    rows = np.flatnonzero(token_map.rows(modality="video", item=0))
    tubelets = token_map["tubelet"][rows]
    colours = np.zeros(len(rows), dtype=np.int64)
    shapes = np.zeros(len(rows), dtype=np.int64)
    motion = np.zeros(len(rows), dtype=np.int64)
    for tubelet in np.unique(tubelets):
        members = rows[tubelets == tubelet]
        frames = list(token_map["frames"][members[0]])
        still = [(shape, covered_pixels(token_map, members, shape.shape, shape.box)) for shape in truth.distractors]
        target = np.max(
            [covered_pixels(token_map, members, truth.target.shape, truth.boxes[f]) for f in frames], axis=0
        )
        colour, shape = _dominant(len(members), [*still, (truth.target, target)])
        colours[tubelets == tubelet], shapes[tubelets == tubelet] = colour, shape
        if truth.moves:
            box = (
                int(truth.boxes[frames, 0].min()),
                int(truth.boxes[frames, 1].min()),
                int(truth.boxes[frames, 2].max()),
                int(truth.boxes[frames, 3].max()),
            )
            covered = token_map.box_overlap(box)[members] >= MIN_OVERLAP_PIXELS
            motion[np.flatnonzero(tubelets == tubelet)[covered]] = MOTION_CLASSES.index(truth.direction)
    grid_rows = token_map["row"][rows].astype(np.int64)
    grid_cols = token_map["col"][rows].astype(np.int64)
    return {"colour": colours, "shape": shapes, "motion": motion, "row": grid_rows, "col": grid_cols}


def audio_targets(prompt, truth) -> dict[str, np.ndarray]:
    """{"sound", "start"}: per audio token, silent or the clip's pitch and kind where a beep fills its window; and
    whether a beep starts inside the window."""
    token_map = prompt.token_map
    rows = np.flatnonzero(token_map.rows(modality="audio", item=0))
    t0, t1 = token_map["t0"][rows], token_map["t1"][rows]
    sounding = np.zeros(len(rows), dtype=bool)
    onset = np.zeros(len(rows), dtype=np.int64)
    for start, end in truth.beeps:
        sounding |= (np.minimum(t1, end) - np.maximum(t0, start)) >= MIN_OVERLAP_SECONDS
        onset[(t0 <= start) & (start < t1)] = 1
    label = SOUND_CLASSES.index(f"{truth.pitch} {truth.kind}")
    return {"sound": np.where(sounding, label, 0).astype(np.int64), "start": onset}


HEAD_CLASSES = {
    "colour": COLOUR_CLASSES,
    "shape": SHAPE_CLASSES,
    "motion": MOTION_CLASSES,
    "sound": SOUND_CLASSES,
    "row": tuple(range(4)),
    "col": tuple(range(4)),
    "start": (False, True),
}


class TokenHeads(torch.nn.Module):
    """Read-outs of post-projector media tokens, one per ground-truth attribute (training only).

    Each class is a learned direction in the LLM's embedding space held at norm `scale` (a cosine classifier without
    the feature normalisation): the read-out can turn towards what the encoders find but cannot grow, so lowering the
    loss means the encoders write each attribute along its direction with a clear margin. A media token then reaches
    the LLM already spelling out what it shows, as a pretrained encoder's would, instead of carrying faint features
    that only a magnifying read-out could decode.
    """

    def __init__(self, hidden_size: int, scale: float = 3.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.directions = torch.nn.ParameterDict(
            {
                name: torch.nn.Parameter(torch.randn(len(classes), hidden_size, generator=generator))
                for name, classes in HEAD_CLASSES.items()
            }
        )

    @staticmethod
    def class_weights(name: str) -> torch.Tensor | None:
        """Most video tokens are still: the motion classes weigh 4x more than "still" so they are not ignored."""
        if name != "motion":
            return None
        return torch.tensor([0.25] + [1.0] * (len(MOTION_CLASSES) - 1))

    def logits(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        """`(N, classes)` logits of one attribute for `(N, D)` tokens."""
        directions = self.directions[name]
        return tokens @ (self.scale * directions / directions.norm(dim=-1, keepdim=True)).T

    def loss(self, prepared, encoded) -> torch.Tensor:
        """Mean cross-entropy over every (token, attribute) target of a batch.

        Args:
            prepared: `batching.PreparedExample`s.
            encoded: their `forward.EncodedMedia` (post-projector features, with gradients).
        Returns:
            scalar loss (0 when the batch has no media).
        """
        features: dict[str, list] = {name: [] for name in HEAD_CLASSES}
        targets: dict[str, list] = {name: [] for name in HEAD_CLASSES}
        for item, media in zip(prepared, encoded, strict=True):
            truth = item.example.truth
            pairs = []
            if media.images:
                pairs.append((media.images[0], image_targets(item.prompt, truth["image"])))
            if media.videos and "video" in truth:  # hard-tier clips ("events" truth) have no read-out targets
                pairs.append((media.videos[0], video_targets(item.prompt, truth["video"])))
            if media.audios:
                pairs.append((media.audios[0], audio_targets(item.prompt, truth["audio"])))
            for tokens, labels in pairs:
                for name, values in labels.items():
                    features[name].append(tokens)
                    targets[name].append(torch.from_numpy(values).to(tokens.device))
        losses = [
            HEAD_WEIGHTS.get(name, 1.0)
            * torch.nn.functional.cross_entropy(
                self.logits(name, torch.cat(features[name])), torch.cat(targets[name]), weight=self.class_weights(name)
            )
            for name in HEAD_CLASSES
            if features[name]
        ]
        return torch.stack(losses).mean() if losses else torch.zeros(())
