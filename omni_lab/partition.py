"""Partition: the one way omni-lab groups token-map rows into named units.

Capture segments (attention and Mamba mass), `Routing.load(by=...)` and `Routing.compare`, reinsertion groups,
attribution units and the widgets' panels all take the same grouping, with one set of option names (`by`, `grid`,
`seconds`) and one label format. Pandas' `groupby` keys are the model: `by` names one key or a tuple of keys, and every
row falls into the unit of its key values.

    by             one unit per ...                                                  label
    modality       modality ("text", "image", "video", "audio", "generated")         video
    item           media item; text span (the `item` of text rows); generated tokens  video 0 · text 1 · generated
    tubelet        video tubelet (the 2-frame Conv3D patch group)                    video 0 tubelet 3
    frame          source frame of a video; two frames share a tubelet's tokens, so   video 0 frame 7
                   frame units overlap (refused where units must be disjoint)
    region         cell of a `grid` (rows, cols) laid over each image's / video's     image 0 region 1,0
                   pixel extent, holding the token box's centre; spans every tubelet
    audio_window   `seconds`-long window of an audio clip, holding the token's start   audio 0 1.00-2.00 s
    text_token     non-special text token                                            text 17 'colour'
    word           run of non-special text tokens, a new one at leading whitespace     text 17 ' colour'
    (k1, k2, ...)  keys combined, e.g. ("tubelet", "region")                         video 0 tubelet 3 region 1,0
    {name: mask}   user groups: a bool mask over the rows (or over the prompt's rows: generated rows join no group), or
                   a dict of `TokenMap.rows` criteria

A key refines only the rows it applies to; the others stay grouped by item (text rows by span, special text tokens
with their span under `text_token` and `word`, generated rows together), so a keyed partition covers every row once
(except `frame`). Labels are "{modality} {item}", then " tubelet t", " frame f", " region r,c", " t0-t1 s" for the
keys that refine the unit; text-token and word units are "text {row} {text!r}" (the row of their first token).
Frame numbers are 0-based positions within the clip (frame f of a clip sampled at 1 fps is its f-th sampled frame).

    units = token_map.partition(("tubelet", "region"), grid=(2, 2))
    units.table()                          # one row per unit: label, modality, item, tubelet, frame, region, window...
    units.position_ids(token_map)          # the unit of every LLM position (-1: none)
    units.restrict(token_map["kept"])      # the same units over the rows the LLM saw (empty units dropped)

A `GroupBy` holds a grouping before there is a token map (a capture's `segments=`, a study's `groups=`):
`GroupBy.of("region", grid=(4, 4)).apply(token_map)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import OmniLabInputError
from .modalities import MEDIA, MODALITIES, VISUAL

KEYS = ("modality", "item", "tubelet", "frame", "region", "audio_window", "text_token", "word")
KEY_MODALITIES = {
    "modality": MODALITIES,
    "item": MODALITIES,
    "tubelet": ("video",),
    "frame": ("video",),
    "region": VISUAL,
    "audio_window": ("audio",),
    "text_token": ("text",),
    "word": ("text",),
}  # the rows each key splits


@dataclass(frozen=True)
class Unit:
    """One group of token-map rows and what it is.

    Attributes:
        label: its name in the one label format ("video 0 tubelet 3 region 1,0", "audio 0 1.00-2.00 s").
        rows: `(rows,)` bool mask over the token map.
        modality: the modality its rows share ("mixed" for a user group spanning several).
        item: the media item or text span (-1 for modality units, generated tokens and mixed groups).
        tubelet: the video tubelet (tubelet and frame units), else -1.
        frames: 0-based positions within the clip of the source frames its video rows show, else ().
        region: `(row, col)` of its grid cell (region units), else None.
        box: `(x0, y0, x1, y1)` of its grid cell in the item's original pixels (region units), else None.
        seconds: `(t0, t1)` it spans (video and audio units when the times are known: an audio window's own bounds,
            a tubelet's first and last frame time, a frame's time twice), else None.
        window: the audio window index (audio_window units), else -1.
    """

    label: str
    rows: np.ndarray
    modality: str = "text"
    item: int = -1
    tubelet: int = -1
    frames: tuple[int, ...] = ()
    region: tuple[int, int] | None = None
    box: tuple[float, float, float, float] | None = None
    seconds: tuple[float, float] | None = None
    window: int = -1


@dataclass(frozen=True)
class GroupBy:
    """A grouping not yet applied to a token map: the keys (or user groups) and the options.

    Attributes:
        by: a key, a tuple of keys (see the module header) or {name: mask over rows | dict of `TokenMap.rows`
            criteria}.
        grid: `(rows, cols)` of the region grid.
        seconds: length of an audio window.
    """

    by: object = "item"
    grid: tuple[int, int] = (2, 2)
    seconds: float = 1.0

    @classmethod
    def of(cls, by="item", *, grid=None, seconds=None, default_grid=(2, 2), default_seconds=1.0) -> GroupBy:
        """A checked `GroupBy` from what a user passed (a key, keys, groups or a `GroupBy`) and the options.

        Args:
            by: a key, a tuple of keys, {name: mask} groups, or a `GroupBy` (returned as is; then `grid` and
                `seconds` must not be given).
            grid: `(rows, cols)` or one int for a square grid; default `default_grid`.
            seconds: audio window length; default `default_seconds`.
        Raises:
            OmniLabInputError: an unknown key, `frame` or `modality` combined with other keys, a bad grid or window.
        """
        if isinstance(by, GroupBy):
            if grid is not None or seconds is not None:
                raise OmniLabInputError("give grid= and seconds= inside the GroupBy, not beside it")
            return by
        grid = _check_grid(default_grid if grid is None else grid)
        seconds = _check_seconds(default_seconds if seconds is None else seconds)
        if isinstance(by, dict):
            if not by:
                raise OmniLabInputError("groups={} has no groups; give {name: mask over the token map's rows}")
            return cls(dict(by), grid, seconds)
        keys = (by,) if isinstance(by, str) else tuple(by) if isinstance(by, (tuple, list)) else None
        unknown = [key for key in keys or (by,) if not isinstance(key, str) or key not in KEYS]
        if keys is None or not keys or unknown:
            raise OmniLabInputError(
                f"by={by!r}: group by one of {', '.join(KEYS)}, a tuple of them such as ('tubelet', 'region'), or "
                "{name: mask} groups (a bool mask over the token map's rows, or a dict of token_map.rows criteria)"
            )
        for alone in ("modality", "frame"):
            if alone in keys and len(keys) > 1:
                raise OmniLabInputError(f"by={by!r}: {alone!r} groups on its own; drop the other keys")
        keys = tuple(dict.fromkeys(key for key in keys if key != "item" or len(keys) == 1))
        return cls(keys[0] if len(keys) == 1 else keys, grid, seconds)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys (empty for user groups)."""
        if isinstance(self.by, dict):
            return ()
        return (self.by,) if isinstance(self.by, str) else tuple(self.by)

    @property
    def refines(self) -> tuple[str, ...]:
        """The modalities whose rows the keys split finer than by item (all of them for "modality", "item" and user
        groups): what an attribution over "region" units switches, say, is the image and video cells alone."""
        if not self.keys or set(self.keys) <= {"modality", "item"}:
            return MODALITIES
        return tuple(m for m in MODALITIES if any(m in KEY_MODALITIES[key] for key in self.keys))

    @property
    def name(self) -> str:
        """A short name: the key, the keys joined by '+', or 'groups'."""
        return "groups" if isinstance(self.by, dict) else "+".join(self.keys)

    def apply(self, token_map) -> Partition:
        """The partition of `token_map`'s rows, computed once per token map for a grouping by keys (`TokenMap.cached`;
        {name: mask} groups are computed each time)."""
        try:
            hash(self)  # a GroupBy built by hand may hold a list
        except TypeError:
            return self._partition(token_map)
        if not hasattr(token_map, "cached"):
            return self._partition(token_map)
        return token_map.cached(("partition", self), lambda: self._partition(token_map))

    def _partition(self, token_map) -> Partition:
        if isinstance(self.by, dict):
            units = _user_groups(token_map, self.by)
        elif self.keys == ("frame",):
            units = _frame_units(token_map)
        else:
            units = _keyed_units(token_map, self.keys, self.grid, self.seconds)
        return Partition(self, tuple(units), len(token_map))

    def to_dict(self) -> dict:
        """JSON-able options (user groups by name only)."""
        by = sorted(self.by) if isinstance(self.by, dict) else self.by
        return {"by": by if isinstance(by, str) else list(by), "grid": list(self.grid), "seconds": self.seconds}


@dataclass(frozen=True)
class Partition:
    """Units of one token map's rows, in prompt order (generated tokens last).

    Attributes:
        grouping: the `GroupBy` it was made with.
        units: tuple of `Unit`.
        num_rows: rows of the token map the masks cover.
    """

    grouping: GroupBy
    units: tuple[Unit, ...]
    num_rows: int
    _ids: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self):
        return iter(self.units)

    def __getitem__(self, index: int) -> Unit:
        return self.units[index]

    def __repr__(self) -> str:
        shown = ", ".join(self.labels[:4]) + (", ..." if len(self) > 4 else "")
        return f"Partition(by={self.grouping.name!r}, {len(self)} units: {shown})"

    @property
    def labels(self) -> list[str]:
        return [unit.label for unit in self.units]

    @property
    def masks(self) -> np.ndarray:
        """`(units, rows)` bool."""
        if not self.units:
            return np.zeros((0, self.num_rows), dtype=bool)
        return np.stack([unit.rows for unit in self.units])

    def is_disjoint(self) -> bool:
        return bool((self.masks.sum(axis=0) <= 1).all())

    def require_disjoint(self, what: str) -> None:
        """OmniLabInputError when a row belongs to two units (frames sharing a tubelet, overlapping user groups)."""
        if self.is_disjoint():
            return
        hint = (
            "two frames share each tubelet's tokens: group by 'tubelet' instead"
            if self.grouping.keys == ("frame",)
            else "give groups that share no token"
        )
        raise OmniLabInputError(
            f"{what} needs units that share no token, but by={self.grouping.name!r} overlaps: {hint}"
        )

    def row_ids(self) -> np.ndarray:
        """`(rows,)` int64: the unit of every row, -1 for rows in none (the units must be disjoint)."""
        if "rows" not in self._ids:
            self.require_disjoint("a unit per row")
            ids = np.full(self.num_rows, -1, dtype=np.int64)
            for index, unit in enumerate(self.units):
                ids[unit.rows] = index
            self._ids["rows"] = ids
        return self._ids["rows"]

    def position_ids(self, token_map) -> np.ndarray:
        """`(num_positions,)` int64: the unit of every LLM position of `token_map` (-1: in none)."""
        self._check_map(token_map)
        return self.row_ids()[token_map.position_rows()]

    def restrict(self, rows, drop_empty: bool = True) -> Partition:
        """The same units over the given rows only (a bool mask, e.g. `token_map["kept"]`); empty units dropped."""
        rows = np.asarray(rows, dtype=bool)
        if rows.shape != (self.num_rows,):
            raise OmniLabInputError(f"restrict() takes a bool mask over the {self.num_rows} rows, got {rows.shape}")
        units = [replace(unit, rows=unit.rows & rows) for unit in self.units]
        return Partition(self.grouping, tuple(u for u in units if u.rows.any() or not drop_empty), self.num_rows)

    def only(self, modality) -> Partition:
        """The units of one modality (or a collection of them)."""
        names = (modality,) if isinstance(modality, str) else tuple(modality)
        return Partition(self.grouping, tuple(u for u in self.units if u.modality in names), self.num_rows)

    def complete(self, label: str = "rest", within=None) -> Partition:
        """A copy with one more unit holding the rows no unit covers (among `within`, a bool mask over the rows, when
        given); none is added when every such row is covered."""
        uncovered = ~self.masks.any(axis=0)
        if within is not None:
            uncovered &= np.asarray(within, dtype=bool)
        if not uncovered.any():
            return self
        return Partition(self.grouping, (*self.units, Unit(label, uncovered, "mixed")), self.num_rows)

    def table(self):
        """One row per unit: label, modality, item, tubelet, frame (first frame position or -1), region ("r,c" or
        ""), window, t0, t1, rows (how many); indexed by unit number."""
        import pandas as pd

        records = [
            {
                "label": unit.label,
                "modality": unit.modality,
                "item": unit.item,
                "tubelet": unit.tubelet,
                "frame": unit.frames[0] if len(unit.frames) == 1 else -1,
                "region": "" if unit.region is None else f"{unit.region[0]},{unit.region[1]}",
                "window": unit.window,
                "t0": np.nan if unit.seconds is None else unit.seconds[0],
                "t1": np.nan if unit.seconds is None else unit.seconds[1],
                "rows": int(unit.rows.sum()),
            }
            for unit in self.units
        ]
        columns = ["label", "modality", "item", "tubelet", "frame", "region", "window", "t0", "t1", "rows"]
        return pd.DataFrame(records, columns=columns, index=pd.RangeIndex(len(records), name="unit"))

    def _check_map(self, token_map) -> None:
        if len(token_map) != self.num_rows:
            raise OmniLabInputError(
                f"this partition covers {self.num_rows} token-map rows, the map given has {len(token_map)}: "
                "partition the same token map"
            )


def partition(token_map, by="item", *, grid=None, seconds=None) -> Partition:
    """Group `token_map`'s rows (`TokenMap.partition` is the same): see the module header for `by`.

    Args:
        token_map: a `TokenMap`.
        by: a key, a tuple of keys, {name: mask} groups, or a `GroupBy`.
        grid: `(rows, cols)` of the region grid, or one int (default (2, 2)).
        seconds: audio window length (default 1.0).
    Returns:
        `Partition`.
    """
    return GroupBy.of(by, grid=grid, seconds=seconds).apply(token_map)


# ------------------------------------------------------------------------------------------------------- options
def _check_grid(grid) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = (int(grid), int(grid))
    ok = (
        isinstance(grid, (tuple, list))
        and len(grid) == 2
        and all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1 for g in grid)
    )
    if not ok:
        raise OmniLabInputError(f"grid={grid!r}: give (rows, cols), two positive integers, e.g. (4, 4), or one int")
    return int(grid[0]), int(grid[1])


def _check_seconds(seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not np.isfinite(seconds) or seconds <= 0:
        raise OmniLabInputError(f"seconds={seconds!r}: an audio window needs a positive length in seconds, e.g. 0.5")
    return float(seconds)


# --------------------------------------------------------------------------------------------------- keyed units
def _keyed_units(token_map, keys: tuple[str, ...], grid: tuple[int, int], seconds: float) -> list[Unit]:
    """The units of a keyed grouping, in order of their first row. A row's key is `(modality,)` for
    `keys == ("modality",)` and for generated rows, else `(modality, item)` followed by what `keys` ask of its
    modality: ("tubelet", t) for video, ("region", row, col) for images and video, ("window", w) for audio,
    ("token", first row of the token or word) for non-special text. The keys are built as integer columns and
    grouped at once (`np.unique` over rows), so a 21K-row map costs milliseconds, not a Python loop per row."""
    names = np.asarray(token_map["modality"], dtype=object)
    count = len(names)
    labels, codes = np.unique(names, return_inverse=True)  # codes only tell modalities apart; units keep row order
    whole = np.ones(count, dtype=bool) if keys == ("modality",) else names == "generated"
    absent = np.full(count, -1, dtype=np.int64)

    def part(applies: np.ndarray, values) -> np.ndarray:
        return np.where(applies & ~whole, np.asarray(values, dtype=np.int64), absent)

    item = np.where(whole, absent, np.asarray(token_map["item"], dtype=np.int64))
    is_video, is_audio, is_text = names == "video", names == "audio", names == "text"
    tubelet = part(is_video & ("tubelet" in keys), token_map["tubelet"])
    cells = _region_cells(token_map, grid) if "region" in keys else np.full((count, 2), -1, dtype=np.int64)
    visual = np.isin(names, VISUAL) & ("region" in keys)
    windows = np.floor(np.nan_to_num(token_map["t0"]) / seconds + 1e-9).astype(np.int64)
    window = part(is_audio & ("audio_window" in keys), windows)
    text_rows = is_text & ~np.asarray(token_map["special"], dtype=bool)
    if "text_token" in keys:
        token = part(text_rows, np.arange(count))
    elif "word" in keys:
        token = part(text_rows, _word_starts(token_map))
    else:
        token = absent
    columns = np.column_stack(
        [codes, item, tubelet, part(visual, cells[:, 0]), part(visual, cells[:, 1]), window, token]
    )  # (rows, 7)
    _, first, inverse = np.unique(columns, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    clip_frames = _clip_frame_positions(token_map)
    by_unit = np.argsort(inverse, kind="stable")  # rows grouped by unit, ascending within each
    bounds = np.cumsum(np.bincount(inverse, minlength=len(first)))[:-1]
    groups = np.split(by_unit, bounds)
    extents: dict = {}  # (modality, item) -> (width, height), and ("audio", item) -> seconds: once per item
    described = []
    for unit in np.argsort(first, kind="stable"):  # units in order of their first row
        members = groups[unit]
        row = int(members[0])
        values = columns[row]
        name = str(labels[values[0]])
        if whole[row]:
            key: tuple = (name,)
        else:
            key = (name, int(values[1]))
            if values[2] >= 0:
                key += ("tubelet", int(values[2]))
            if values[3] >= 0:
                key += ("region", int(values[3]), int(values[4]))
            if values[5] >= 0:
                key += ("window", int(values[5]))
            if values[6] >= 0:
                key += ("token", int(values[6]))
        mask = np.zeros(count, dtype=bool)
        mask[members] = True
        described.append(_describe(token_map, key, mask, members.tolist(), grid, seconds, clip_frames, extents))
    return described


def _describe(token_map, key: tuple, mask, members: list[int], grid, seconds, clip_frames, extents: dict) -> Unit:
    """The unit of one key (see `_keyed_units`) with its label and facts (`extents` memoises each item's size)."""
    name = key[0]
    if len(key) == 1:
        return Unit(name, mask, name)
    item = key[1]
    facts: dict = {}
    label = f"{name} {item}"
    parts = _key_parts(key)
    first = members[0]
    if "token" in parts:
        rows = np.asarray(members)
        text = "".join(str(token_map["text"][row]) for row in rows)
        return Unit(f"text {first} {text!r}", mask, "text", item)
    if name == "video":
        frames = {int(f) for row in members for f in token_map["frames"][row]}
        facts["frames"] = tuple(sorted(clip_frames[item][f] for f in frames))
    if name in ("video", "audio"):
        t0, t1 = token_map["t0"][members], token_map["t1"][members]
        if np.isfinite(t0).any():
            facts["seconds"] = (float(np.nanmin(t0)), float(np.nanmax(t1)))
    if "tubelet" in parts:
        tubelet = parts["tubelet"]
        label += f" tubelet {tubelet}"
        facts["tubelet"] = tubelet
        facts["seconds"] = (float(token_map["t0"][first]), float(token_map["t1"][first]))
    if "region" in parts:
        cell = parts["region"]
        label += f" region {cell[0]},{cell[1]}"
        if (name, item) not in extents:
            extents[(name, item)] = _extent(token_map, name, item)
        width, height = extents[(name, item)]
        rows, cols = grid
        facts["region"] = cell
        facts["box"] = (
            cell[1] * width / cols,
            cell[0] * height / rows,
            (cell[1] + 1) * width / cols,
            (cell[0] + 1) * height / rows,
        )
    if "window" in parts:
        window = parts["window"]
        if ("audio seconds", item) not in extents:
            extents[("audio seconds", item)] = float(
                np.nanmax(token_map["t1"][token_map.rows(modality="audio", item=item)])
            )
        duration = extents[("audio seconds", item)]
        t0, t1 = min(window * seconds, duration), min((window + 1) * seconds, duration)
        label += f" {t0:.2f}-{t1:.2f} s"
        facts["window"] = window
        facts["seconds"] = (t0, t1)
    return Unit(label, mask, name, item, **facts)


ARITY = {"tubelet": 1, "region": 2, "window": 1, "token": 1}


def _key_parts(key: tuple) -> dict:
    """{key word: value} of a row key `(modality, item, word, value(s), ...)`; a region's value is `(row, col)`."""
    parts, index = {}, 2
    while index < len(key):
        word, arity = key[index], ARITY[key[index]]
        values = key[index + 1 : index + 1 + arity]
        parts[word] = values[0] if arity == 1 else tuple(values)
        index += 1 + arity
    return parts


def _extent(token_map, modality: str, item: int) -> tuple[float, float]:
    """(width, height) in original pixels of one image or video."""
    rows = token_map.rows(modality=modality, item=item)
    return float(np.nanmax(token_map["x1"][rows])), float(np.nanmax(token_map["y1"][rows]))


def _region_cells(token_map, grid: tuple[int, int]) -> np.ndarray:
    """`(rows, 2)` int64 (cell row, cell col) of each image / video row's box centre; -1 elsewhere."""
    cells = np.full((len(token_map), 2), -1, dtype=np.int64)
    modality, item = token_map["modality"], token_map["item"]
    centre_x = (token_map["x0"] + token_map["x1"]) / 2
    centre_y = (token_map["y0"] + token_map["y1"]) / 2
    for name in VISUAL:
        for index in np.unique(item[modality == name]):
            members = (modality == name) & (item == index)
            width, height = _extent(token_map, name, int(index))
            cells[members, 1] = np.clip(np.floor(centre_x[members] / width * grid[1]), 0, grid[1] - 1)
            cells[members, 0] = np.clip(np.floor(centre_y[members] / height * grid[0]), 0, grid[0] - 1)
    return cells


def _clip_frame_positions(token_map) -> dict[int, dict[int, int]]:
    """{video item: {source frame index: its 0-based position within the clip}}."""
    modality, item = token_map["modality"], token_map["item"]
    positions = {}
    for index in np.unique(item[modality == "video"]):
        frames = sorted({int(f) for fs in token_map["frames"][(modality == "video") & (item == index)] for f in fs})
        positions[int(index)] = {frame: position for position, frame in enumerate(frames)}
    return positions


def _word_starts(token_map) -> np.ndarray:
    """`(rows,)` the first row of the word each non-special text row belongs to (-1 elsewhere): a word starts at a
    token with leading whitespace, after whitespace, or after a gap (another kind of row between)."""
    text, modality, special = token_map["text"], token_map["modality"], token_map["special"]
    starts = np.full(len(text), -1, dtype=np.int64)
    current = -1
    for row in range(len(text)):
        if modality[row] != "text" or special[row]:
            current = -1
            continue
        token = str(text[row])
        if current < 0 or token[:1].isspace() or str(text[row - 1]).isspace():
            current = row
        starts[row] = current
    return starts


# ---------------------------------------------------------------------------------------------------- frame units
def _frame_units(token_map) -> list[Unit]:
    """Units of `by="frame"`: every source frame of every video (overlapping: two frames share a tubelet's rows);
    the other rows by item."""
    modality, item = token_map["modality"], token_map["item"]
    clip_frames = _clip_frame_positions(token_map)
    units = [u for u in _keyed_units(token_map, ("item",), (1, 1), 1.0) if u.modality != "video"]
    video_units = []
    for index, positions in clip_frames.items():
        rows = (modality == "video") & (item == index)
        for source, position in positions.items():
            mask = rows & np.array([source in frames for frames in token_map["frames"]], dtype=bool)
            first = int(np.flatnonzero(mask)[0])
            first_frame = token_map["frames"][first][0] == source
            time = float(token_map["t0"][first] if first_frame else token_map["t1"][first])
            tubelet = int(token_map["tubelet"][first])
            video_units.append(
                Unit(
                    f"video {index} frame {position}", mask, "video", index, tubelet, (position,), seconds=(time, time)
                )
            )
    return _in_prompt_order(units + video_units)


def _in_prompt_order(units: list[Unit]) -> list[Unit]:
    """Units sorted by their first row (stable), generated tokens last as they come last in the map."""
    return sorted(units, key=lambda unit: int(np.argmax(unit.rows)) if unit.rows.any() else len(unit.rows))


# ---------------------------------------------------------------------------------------------------- user groups
def _user_groups(token_map, groups: dict) -> list[Unit]:
    units = []
    for name, selector in groups.items():
        if isinstance(selector, dict):
            mask = token_map.rows(**selector)
        else:
            mask = np.asarray(selector)
            generated = int((token_map["modality"] == "generated").sum())
            if mask.dtype == bool and mask.shape == (len(token_map) - generated,):  # the prompt's rows only
                mask = np.concatenate([mask, np.zeros(generated, dtype=bool)])
            if mask.dtype != bool or mask.shape != (len(token_map),):
                raise OmniLabInputError(
                    f"group {name!r}: give a bool mask over the token map's {len(token_map)} rows (or a dict of "
                    f"token_map.rows criteria), got an array of shape {mask.shape} and dtype {mask.dtype}"
                )
        if not mask.any():
            raise OmniLabInputError(f"group {name!r} is empty: it selects no row of the token map")
        modalities = set(token_map["modality"][mask])
        items = set(token_map["item"][mask])
        modality = modalities.pop() if len(modalities) == 1 else "mixed"
        item = int(items.pop()) if len(items) == 1 and modality in MEDIA else -1
        units.append(Unit(str(name), mask.copy(), modality, item))
    return units
