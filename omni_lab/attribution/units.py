"""Attribution units: named groups of token-map rows (modality, item, region, tubelet, frame, audio window, text).

Every attribution scores *units*; each unit is a boolean mask over the prompt's token-map rows, built from the map's
columns (../shared/DESIGN.md, "TokenMap"), plus the facts that say what the unit is (its modality and item, its
pixel box, tubelet and frames, its seconds). Only rows the LLM saw (`kept`) belong to units: a pruned token cannot
be occluded.

    kind            one unit per ...
    modality        modality present (text = the non-special text tokens)
    item            media item (image 0, video 0, audio 0, ...) plus one for the text
    region          cell of a `grid` (rows, cols) laid over each image / video item's pixel extent; a token belongs
                    to the cell holding its box centre; a video region spans every tubelet
    tubelet         video tubelet (the 2-frame Conv3D patch group) of each video
    frame           source frame of each video; two frames share a tubelet's tokens, so frame units overlap at the
                    token level (fine for input occlusion, refused where units must be disjoint)
    audio_window    `seconds`-long window of each audio clip (a token belongs to the window holding its start)
    text_token      non-special text token
    word            run of non-special text tokens from one starting with whitespace to the next
    {name: mask}    arbitrary groups: a bool mask over the token map's rows or a dict for `token_map.rows(...)`
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import OmniLabInputError

KINDS = ("modality", "item", "region", "tubelet", "frame", "audio_window", "text_token", "word")
MEDIA = ("image", "video", "audio")


@dataclass(frozen=True)
class Unit:
    """One unit: its name, its rows, and what it is.

    Attributes:
        name: readable label ("video 0 tubelet 3", "audio 0 1.50-2.00 s", "text 'colour'").
        rows: `(rows,)` bool mask over the token map.
        modality, item: the media item it belongs to ("text", -1 for text units and mixed groups).
        box: `(x0, y0, x1, y1)` pixel box in the item's original coordinates (regions), else None.
        frames: source-frame positions within the clip (0-based, frames / tubelets), else ().
        tubelet: tubelet index (tubelets), else -1.
        seconds: `(t0, t1)` (audio windows, tubelets, frames), else None.
    """

    name: str
    rows: np.ndarray
    modality: str = "text"
    item: int = -1
    box: tuple[float, float, float, float] | None = None
    frames: tuple[int, ...] = ()
    tubelet: int = -1
    seconds: tuple[float, float] | None = None


@dataclass(frozen=True)
class Units:
    """The units of one attribution, in order.

    Attributes:
        kind: the unit kind ("region", ...), or "groups" for a dict of masks.
        units: tuple of `Unit`.
        options: the options they were built with (grid, seconds, modality).
    """

    kind: str
    units: tuple[Unit, ...]
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self):
        return iter(self.units)

    @property
    def names(self) -> list[str]:
        return [unit.name for unit in self.units]

    @property
    def masks(self) -> np.ndarray:
        """`(U, rows)` bool."""
        return np.stack([unit.rows for unit in self.units])

    def is_disjoint(self) -> bool:
        return bool((self.masks.sum(axis=0) <= 1).all())

    def require_disjoint(self, method: str) -> None:
        """OmniLabInputError when a token belongs to two units (frames sharing a tubelet, overlapping groups)."""
        if self.is_disjoint():
            return
        hint = (
            "two frames share each tubelet's tokens: use unit='tubelet', or input_occlusion(unit='frame') to occlude "
            "single frames in the video itself"
            if self.kind == "frame"
            else "give groups that share no token"
        )
        raise OmniLabInputError(f"{method} needs units that share no token, but unit={self.kind!r} overlaps: {hint}")


def build_units(token_map, unit="modality", *, grid=(4, 4), seconds: float = 0.5, modality=None) -> Units:
    """Units of a prompt from its token map.

    Args:
        token_map: the prompt's `TokenMap` (after reduction: pruned rows belong to no unit).
        unit: one of `KINDS`, or {name: mask over rows | dict of `token_map.rows` criteria}.
        grid: `(rows, cols)` of the region grid.
        seconds: length of an audio window.
        modality: keep only units of this modality (or collection of modalities), e.g. "video".
    Returns:
        `Units` (never empty).
    Raises:
        OmniLabInputError: unknown unit kind, a bad grid or window, an empty group, no unit of that kind in the prompt.
    """
    options = {"grid": tuple(grid) if grid is not None else None, "seconds": seconds, "modality": modality}
    if isinstance(unit, dict):
        built = _groups(token_map, unit)
        kind = "groups"
    elif isinstance(unit, str) and unit in KINDS:
        _check_options(unit, grid, seconds)
        builder = {
            "modality": _modalities,
            "item": _items,
            "region": lambda tm: _regions(tm, tuple(grid)),
            "tubelet": _tubelets,
            "frame": _frames,
            "audio_window": lambda tm: _audio_windows(tm, float(seconds)),
            "text_token": _text_tokens,
            "word": _words,
        }[unit]
        built = [u for u in builder(token_map) if u.rows.any()]
        kind = unit
    else:
        raise OmniLabInputError(
            f"unknown unit {unit!r}: choose one of {', '.join(KINDS)}, or pass {{name: mask}} groups "
            "(a bool mask over the token map's rows or a dict of token_map.rows criteria)"
        )
    if modality is not None:
        names = (modality,) if isinstance(modality, str) else tuple(modality)
        unknown = set(names) - {"text", *MEDIA}
        if unknown:
            raise OmniLabInputError(f"modality {sorted(unknown)}: choose from text, image, video, audio")
        built = [u for u in built if u.modality in names]
    if not built:
        present = sorted(set(token_map["modality"][token_map["kept"]]))
        raise OmniLabInputError(
            f"unit={unit!r}"
            + (f" with modality={modality!r}" if modality is not None else "")
            + f" gives no unit on this prompt (it holds {', '.join(present)} tokens); pick a unit its tokens have"
        )
    return Units(kind, tuple(built), options)


def _check_options(unit: str, grid, seconds) -> None:
    if unit == "region":
        ok = (
            isinstance(grid, (tuple, list))
            and len(grid) == 2
            and all(isinstance(g, (int, np.integer)) and g >= 1 for g in grid)
        )
        if not ok:
            raise OmniLabInputError(f"grid={grid!r}: give (rows, cols), two positive integers, e.g. (4, 4)")
    if unit == "audio_window" and not (isinstance(seconds, (int, float)) and seconds > 0):
        raise OmniLabInputError(f"seconds={seconds!r}: an audio window needs a positive length in seconds, e.g. 0.5")


def _kept(token_map) -> np.ndarray:
    return np.asarray(token_map["kept"], dtype=bool)


def text_rows(token_map) -> np.ndarray:
    """Bool mask of the kept, non-special text rows (the text units' rows)."""
    return (token_map["modality"] == "text") & ~np.asarray(token_map["special"], dtype=bool) & _kept(token_map)


def _items_of(token_map, modality: str) -> list[int]:
    rows = token_map["modality"] == modality
    return sorted({int(i) for i in token_map["item"][rows]})


def _modalities(token_map) -> list[Unit]:
    units = [Unit("text", text_rows(token_map))]
    for modality in MEDIA:
        rows = (token_map["modality"] == modality) & _kept(token_map)
        units.append(Unit(modality, rows, modality))
    return units


def _items(token_map) -> list[Unit]:
    units = [Unit("text", text_rows(token_map))]
    for modality in MEDIA:
        for item in _items_of(token_map, modality):
            rows = token_map.rows(modality=modality, item=item) & _kept(token_map)
            units.append(Unit(f"{modality} {item}", rows, modality, item))
    return units


def _regions(token_map, grid: tuple[int, int]) -> list[Unit]:
    grid_rows, grid_cols = grid
    units = []
    for modality in ("image", "video"):
        for item in _items_of(token_map, modality):
            rows = token_map.rows(modality=modality, item=item)
            width, height = float(np.nanmax(token_map["x1"][rows])), float(np.nanmax(token_map["y1"][rows]))
            centre_x = (token_map["x0"] + token_map["x1"]) / 2
            centre_y = (token_map["y0"] + token_map["y1"]) / 2
            cell_col = np.clip(np.floor(np.nan_to_num(centre_x) / width * grid_cols), 0, grid_cols - 1)
            cell_row = np.clip(np.floor(np.nan_to_num(centre_y) / height * grid_rows), 0, grid_rows - 1)
            for r in range(grid_rows):
                for c in range(grid_cols):
                    mask = rows & _kept(token_map) & (cell_row == r) & (cell_col == c)
                    box = (c * width / grid_cols, r * height / grid_rows, (c + 1) * width / grid_cols,
                           (r + 1) * height / grid_rows)  # fmt: skip
                    units.append(Unit(f"{modality} {item} region ({r}, {c})", mask, modality, item, box=box))
    return units


def _tubelets(token_map) -> list[Unit]:
    units = []
    for item in _items_of(token_map, "video"):
        rows = token_map.rows(modality="video", item=item)
        positions = _frame_positions(token_map, rows)
        for tubelet in sorted({int(t) for t in token_map["tubelet"][rows]}):
            mask = rows & (token_map["tubelet"] == tubelet)
            first = np.flatnonzero(mask)[0]
            frames = tuple(positions[f] for f in token_map["frames"][first])
            seconds = (float(token_map["t0"][first]), float(token_map["t1"][first]))
            name = f"video {item} tubelet {tubelet}"
            units.append(Unit(name, mask & _kept(token_map), "video", item, None, frames, tubelet, seconds))
    return units


def _frame_positions(token_map, rows: np.ndarray) -> dict[int, int]:
    """{source frame index: its 0-based position in the clip} for one video's rows."""
    indices = sorted({int(f) for frames in token_map["frames"][rows] for f in frames})
    return {index: position for position, index in enumerate(indices)}


def _frames(token_map) -> list[Unit]:
    units = []
    for item in _items_of(token_map, "video"):
        rows = token_map.rows(modality="video", item=item)
        positions = _frame_positions(token_map, rows)
        for index, position in positions.items():
            mask = rows & np.array([index in frames for frames in token_map["frames"]], dtype=bool)
            first = np.flatnonzero(mask)[0]
            tubelet = int(token_map["tubelet"][first])
            time = float(token_map["t0"][first] if token_map["frames"][first][0] == index else token_map["t1"][first])
            name = f"video {item} frame {position}"
            units.append(Unit(name, mask & _kept(token_map), "video", item, None, (position,), tubelet, (time, time)))
    return units


def _audio_windows(token_map, seconds: float) -> list[Unit]:
    units = []
    for item in _items_of(token_map, "audio"):
        rows = token_map.rows(modality="audio", item=item)
        duration = float(np.nanmax(token_map["t1"][rows]))
        count = max(1, int(np.ceil(duration / seconds - 1e-9)))
        starts = token_map["t0"]
        for window in range(count):
            t0, t1 = window * seconds, min((window + 1) * seconds, duration)
            mask = rows & _kept(token_map) & (starts >= t0 - 1e-9) & (starts < t1 - 1e-9)
            name = f"audio {item} {t0:.2f}-{t1:.2f} s"
            units.append(Unit(name, mask, "audio", item, seconds=(t0, t1)))
    return units


def _text_tokens(token_map) -> list[Unit]:
    units = []
    for row in np.flatnonzero(text_rows(token_map)):
        mask = np.zeros(len(token_map), dtype=bool)
        mask[row] = True
        units.append(Unit(f"text {row} {token_map['text'][row]!r}", mask))
    return units


def _words(token_map) -> list[Unit]:
    rows = np.flatnonzero(text_rows(token_map))
    texts = token_map["text"]
    groups: list[list[int]] = []
    for row in rows:
        text = str(texts[row])
        starts_word = not groups or groups[-1][-1] != row - 1 or text[:1].isspace() or str(texts[row - 1]).isspace()
        if starts_word:
            groups.append([row])
        else:
            groups[-1].append(row)
    units = []
    for group in groups:
        mask = np.zeros(len(token_map), dtype=bool)
        mask[group] = True
        word = "".join(str(texts[row]) for row in group)
        units.append(Unit(f"text {group[0]} {word!r}", mask))
    return units


def _groups(token_map, groups: dict) -> list[Unit]:
    if not groups:
        raise OmniLabInputError("unit={} has no groups; give {name: mask over the token map's rows}")
    units = []
    for name, selector in groups.items():
        if isinstance(selector, dict):
            mask = token_map.rows(**selector)
        else:
            mask = np.asarray(selector)
            if mask.dtype != bool or mask.shape != (len(token_map),):
                raise OmniLabInputError(
                    f"group {name!r}: give a bool mask over the token map's {len(token_map)} rows (or a dict of "
                    f"token_map.rows criteria), got an array of shape {mask.shape} and dtype {mask.dtype}"
                )
        mask = mask & _kept(token_map)
        if not mask.any():
            raise OmniLabInputError(f"group {name!r} is empty: it selects no token the LLM saw")
        modalities = set(token_map["modality"][mask])
        items = set(token_map["item"][mask])
        modality = modalities.pop() if len(modalities) == 1 else "mixed"
        item = int(items.pop()) if len(items) == 1 and modality in MEDIA else -1
        units.append(Unit(str(name), mask, modality, item))
    return units
