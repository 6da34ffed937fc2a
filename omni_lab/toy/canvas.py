"""Pixels of ShapesWorld: textured grey backgrounds and flat-coloured shapes, drawn with numpy.

Everything is drawn on a square canvas of `SIZE` pixels, the size the twin's processors keep without resizing (8 x 8
patches of 16 px, a 4 x 4 grid of merged tokens), so a shape's pixel box maps onto the token map's boxes exactly.
Backgrounds are dark grey (levels 25-50 with +-25 of texture) so that colour always belongs to a shape and every shape
is brighter than what it covers: where a shape arrives between two frames the pixels brighten, where it leaves they
darken, whatever its colour. The texture (three gratings plus fixed noise) makes background tokens non-trivial while
staying identical from frame to frame in a video. `ShapeTruth` records a shape as drawn; `place` and `choose` are the
seeded draws every scene is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 128
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (230, 215, 40),
    "green": (40, 180, 60),
    "blue": (45, 85, 230),
    "purple": (150, 55, 200),
}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class ShapeTruth:
    """A shape as drawn: its names and its pixel box `(x0, y0, x1, y1)` (x1, y1 exclusive)."""

    colour: str
    shape: str
    box: tuple[int, int, int, int]


def choose(rng: np.random.Generator, options, size: int | None = None):
    """One of `options` drawn with `rng`, or `size` distinct ones (in random order) when `size` is given."""
    if size is None:
        return options[int(rng.integers(len(options)))]
    return [options[i] for i in rng.permutation(len(options))[:size]]


def shape_mask(shape: str, size: int) -> np.ndarray:
    """`(size, size)` bool mask of a shape filling a `size`-pixel box.

    Args:
        shape: "circle", "square" or "triangle" (pointing up).
        size: side of the box in pixels.
    Returns:
        bool array, True inside the shape.
    """
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    if shape == "circle":
        return (x - centre) ** 2 + (y - centre) ** 2 <= (size / 2) ** 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "triangle":
        half_width = (y + 1) / size * (size / 2)  # widens from the apex (top row) to the base (bottom row)
        return np.abs(x - centre) <= half_width
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def textured_background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """`(size, size, 3)` uint8 dark grey texture (at most 80): a base level, three random gratings, fixed pixel noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    level = rng.uniform(25, 50)
    texture = np.full((size, size), level)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        cycles = rng.uniform(2, 10)
        phase = rng.uniform(0, 2 * np.pi)
        texture += rng.uniform(2, 7) * np.sin(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    texture += rng.normal(0, rng.uniform(1, 4), (size, size))
    grey = np.clip(np.rint(texture), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def jittered_colour(rng: np.random.Generator, colour: str) -> np.ndarray:
    """The RGB of a named colour with a little per-object jitter (+-12 per channel)."""
    return np.clip(np.asarray(COLOURS[colour]) + rng.integers(-12, 13, 3), 0, 255).astype(np.uint8)


def paint(pixels: np.ndarray, shape: str, rgb: np.ndarray, x0: int, y0: int, size: int) -> None:
    """Paint a shape whose box has its top-left corner at `(x0, y0)` onto `(H, W, 3)` pixels, in place."""
    mask = shape_mask(shape, size)
    region = pixels[y0 : y0 + size, x0 : x0 + size]
    region[mask[: region.shape[0], : region.shape[1]]] = rgb


def boxes_overlap(a, b, gap: float = 0.0) -> bool:
    """Whether boxes `(x0, y0, x1, y1)` overlap once each is grown by `gap` pixels."""
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def place(
    rng: np.random.Generator,
    size: int,
    taken: list,
    gap: float,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    tries: int = 200,
) -> tuple[int, int] | None:
    """Top-left corner for a `size`-pixel box that keeps `gap` pixels from every box in `taken`.

    Args:
        x_range, y_range: allowed range of the box centre (default: anywhere on the canvas with a 2-pixel margin).
    Returns:
        `(x0, y0)`, or None when no spot was found in `tries` attempts.
    """
    low, high = 2 + size / 2, SIZE - 2 - size / 2
    x_low, x_high = x_range or (low, high)
    y_low, y_high = y_range or (low, high)
    x_low, x_high, y_low, y_high = max(x_low, low), min(x_high, high), max(y_low, low), min(y_high, high)
    if x_low > x_high or y_low > y_high:
        return None
    for _ in range(tries):
        x0 = int(round(rng.uniform(x_low, x_high) - size / 2))
        y0 = int(round(rng.uniform(y_low, y_high) - size / 2))
        box = (x0, y0, x0 + size, y0 + size)
        if not any(boxes_overlap(box, other, gap) for other in taken):
            return x0, y0
    return None
