"""Media panels: the pictures the token-reduction map and the attribution overlay draw, one per image and per video
tubelet, built from the one partition of token-map rows (`token_map.partition("tubelet")`, `omni_lab/partition.py`).

A `MediaPanel` is the view-specific shape of one such unit: its token grid, the media's size in pixels, its rows in
grid (row-major) order, and the source frames the tubelet packs. Plain functions, no plotly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omni_lab.modalities import VISUAL
from omni_lab.partition import Unit


@dataclass(frozen=True)
class MediaPanel:
    """One picture a map draws: an image, or one video tubelet shown on its first frame.

    Attributes:
        unit: the partition's unit (`token_map.partition("tubelet")`): modality, item, tubelet, seconds, label.
        frames: source frame indices the tubelet packs (the token map's `frames`; empty for images).
        size: (width, height) of the original media in pixels.
        grid: (rows, cols) of the merged token grid.
        rows: token-map rows drawn on this panel, in grid (row-major) order.
    """

    unit: Unit
    frames: tuple[int, ...]
    size: tuple[int, int]
    grid: tuple[int, int]
    rows: np.ndarray

    @property
    def modality(self) -> str:
        """The media kind: "image" or "video"."""
        return self.unit.modality

    @property
    def item(self) -> int:
        """The item's index within its modality."""
        return self.unit.item

    @property
    def tubelet(self) -> int:
        """The tubelet index (-1 for images)."""
        return self.unit.tubelet

    @property
    def t0(self) -> float:
        """Seconds of the tubelet's first frame (NaN when unknown or for images)."""
        return np.nan if self.unit.seconds is None else self.unit.seconds[0]

    @property
    def t1(self) -> float:
        """Seconds of the tubelet's last frame (NaN when unknown or for images)."""
        return np.nan if self.unit.seconds is None else self.unit.seconds[1]

    @property
    def label(self) -> str:
        """The unit's label, then for a tubelet its source frames and seconds:
        "image 0" or "video 0 tubelet 2 · frames 4-5 (0.50-0.62 s)"."""
        if self.modality == "image":
            return self.unit.label
        seconds = "" if np.isnan(self.t0) else f" ({self.t0:.2f}-{self.t1:.2f} s)"
        return f"{self.unit.label} · frames {self._frame_span()}{seconds}"

    @property
    def short_label(self) -> str:
        """A slider tick's label: "img 0" or "v0 f4-5"."""
        if self.modality == "image":
            return f"img {self.item}"
        return f"v{self.item} f{self._frame_span()}"

    @property
    def cell(self) -> tuple[float, float]:
        """(width, height) of one token's box in original pixels."""
        return self.size[0] / self.grid[1], self.size[1] / self.grid[0]

    def _frame_span(self) -> str:
        if not self.frames:
            return "?"
        if len(self.frames) == 1:
            return str(self.frames[0])
        return f"{self.frames[0]}-{self.frames[-1]}"


def media_panels(token_map) -> list[MediaPanel]:
    """Every image and every video tubelet of a token map: the image and tubelet units of
    `token_map.partition("tubelet")`, images first (by item), then each video's tubelets in order.

    Args:
        token_map: a `TokenMap` (prompt rows; pruned rows included).
    Returns:
        list of `MediaPanel`.
    """
    units = token_map.partition("tubelet").only(VISUAL)
    ordered = sorted(units, key=lambda unit: (VISUAL.index(unit.modality), unit.item, unit.tubelet))
    return [_panel(token_map, unit) for unit in ordered]


def _panel(token_map, unit: Unit) -> MediaPanel:
    rows = np.flatnonzero(unit.rows)
    grid_row, grid_col = token_map["row"][rows], token_map["col"][rows]
    rows = rows[np.lexsort((grid_col, grid_row))]
    width = float(np.nanmax(token_map["x1"][rows]))
    height = float(np.nanmax(token_map["y1"][rows]))
    return MediaPanel(
        unit=unit,
        frames=tuple(int(frame) for frame in token_map["frames"][rows[0]]),
        size=(round(width), round(height)),
        grid=(int(grid_row.max()) + 1, int(grid_col.max()) + 1),
        rows=rows,
    )


def media_coverage(token_map) -> np.ndarray:
    """Token-map rows of every media token as the views draw them: each panel's rows, then each audio clip's rows
    (the audio units of `token_map.partition("item")`)."""
    visual = [panel.rows for panel in media_panels(token_map)]
    audio = [np.flatnonzero(unit.rows) for unit in token_map.partition("item").only("audio")]
    parts = visual + audio
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def score_grid(values: np.ndarray, panel: MediaPanel) -> np.ndarray:
    """`(grid rows, grid cols)` of a per-row quantity laid out on the panel's grid.

    Args:
        values: one value per token-map row (e.g. `token_map["score"]`, or attribution scores); NaN = unscored.
        panel: the panel.
    Returns:
        float64 array, NaN where a cell has no value.
    """
    grid = np.full(panel.grid, np.nan)
    grid.reshape(-1)[: len(panel.rows)] = np.asarray(values, dtype=np.float64)[panel.rows]
    return grid


def panel_pixels(media_source, panel: MediaPanel, max_side: int = 320) -> np.ndarray | None:
    """The pixels under a panel, shrunk so the longer side is at most `max_side`.

    Args:
        media_source: a `Prompt` (or a `Run`, whose `.prompt` is used) holding the decoded images and videos.
        panel: the panel.
        max_side: longest side in pixels of the returned picture.
    Returns:
        `(h, w, 3)` uint8, or None when the source holds no pixels for it.
    """
    prompt = getattr(media_source, "prompt", media_source)
    if prompt is None:
        return None
    if panel.modality == "image":
        images = getattr(prompt, "images", None) or []
        if panel.item >= len(images):
            return None
        picture = images[panel.item]
    else:
        videos = getattr(prompt, "videos", None) or []
        if panel.item >= len(videos) or not panel.frames:
            return None
        clip = videos[panel.item]
        picture = clip.frames[list(clip.frame_indices).index(panel.frames[0])]
    return shrink(picture, max_side)


def shrink(picture, max_side: int) -> np.ndarray:
    """A PIL image or `(H, W, 3)` array as uint8 RGB with its longer side at most `max_side`."""
    from PIL import Image

    image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, dtype=np.uint8))
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return np.asarray(image)
