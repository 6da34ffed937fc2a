"""TokenMap: where every position the LLM sees came from.

One row per token of the prompt *before* any reducer (a pruned token keeps its row with `kept=False` and
`position=-1`), then one row per generated token. Columns:

    position     index in the sequence the LLM saw, or -1 if pruned
    modality     text | image | video | audio | generated
    item         which image / video / audio clip (0-based within its modality); for text, which text span
    text         token string
    token_id     the input id (media positions hold their placeholder id)
    special      the token is a control token (<img>, <so_start>, <|im_start|>, ...)
    row, col     cell of the 2x2-merged grid (images, video)
    x0,y0,x1,y1  pixel box in the original media (images, video)
    tubelet      tubelet index within the video
    frames       source frame indices the tubelet packs (tuple)
    t0, t1       seconds: the tubelet's first and last frame times (video); [start, end) of the 80 ms window (audio)
                 (from the clip's start: a video's own sound track counts on the video's clock)
    kept         the LLM saw this token
    score        the reducer's score for it (NaN when no reducer scored it)
    merged_into  row it was merged into by a merging reducer (-1 otherwise)
    dropped_at_layer  LLM layer after which an in-LLM reducer (FastV) dropped it (-1 otherwise)
    turn         the conversation turn (0-based) the row belongs to: turn k is the k-th user message and the assistant
                 reply that follows it (`lab.chat`); a system message belongs to turn 0, the answer being generated
                 to the last turn. A single-turn prompt (`lab.prompt`) is turn 0 throughout.

The map is plain data (numpy columns; `.df` builds a pandas DataFrame on demand) and knows nothing of the model.
`build_token_map` lays the rows out from the input ids and a geometric description of each media item.
Projections the captures, studies and views share live here: `by_position(column)` (a column in LLM position order),
`position_rows()`, `answer_positions()`, `status()` (kept, merged or pruned), `box_overlap(box)`, and
`partition(by=...)`, the one grouping of rows into units (`omni_lab/partition.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .modalities import MODALITIES

STATUSES = ("kept", "merged", "pruned")
_INT_COLUMNS = ("position", "item", "token_id", "row", "col", "tubelet", "merged_into", "dropped_at_layer", "turn")
_FLOAT_COLUMNS = ("x0", "y0", "x1", "y1", "t0", "t1", "score")
COLUMNS = (
    "position",
    "modality",
    "item",
    "text",
    "token_id",
    "special",
    "row",
    "col",
    "x0",
    "y0",
    "x1",
    "y1",
    "tubelet",
    "frames",
    "t0",
    "t1",
    "kept",
    "score",
    "merged_into",
    "dropped_at_layer",
    "turn",
)
AUDIO_SECONDS_PER_TOKEN = 0.08  # 10 ms mel hop x 8x subsampling


@dataclass(frozen=True)
class ImageLayout:
    """One image as the processor prepared it: merged grid `(rows, cols)`, original and resized `(width, height)`."""

    rows: int
    cols: int
    original_size: tuple[int, int]
    resized_size: tuple[int, int]


@dataclass(frozen=True)
class VideoLayout:
    """One video: tubelets of `frames_per_tubelet` frames, each a merged grid `(rows, cols)`.

    `frame_indices` and `frame_times` are per real (unpadded) frame; the last tubelet of an odd-length video packs
    the last frame twice, and only names it once.
    """

    tubelets: int
    rows: int
    cols: int
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    frame_indices: tuple[int, ...]
    frame_times: tuple[float | None, ...]
    frames_per_tubelet: int = 2


@dataclass(frozen=True)
class AudioLayout:
    """One audio clip: its token count, duration in seconds and where it starts (seconds on the clock of the video
    whose sound track it is; 0 for a clip of its own)."""

    tokens: int
    seconds: float
    start: float = 0.0


class TokenMap:
    """The provenance table of one prompt (and its run). Build with `build_token_map`; read with `.df`/`.select`."""

    def __init__(self, columns: dict[str, np.ndarray]):
        missing = set(COLUMNS) - set(columns)
        if missing:
            raise ValueError(f"TokenMap needs columns {sorted(missing)}")
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"TokenMap columns differ in length: {lengths}")
        self._columns = {name: columns[name] for name in COLUMNS}
        self._df = None
        self._position_rows = None
        self._cache: dict = {}  # `cached`

    # ------------------------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._columns["position"])

    def __getitem__(self, column: str) -> np.ndarray:
        """A column as a numpy array (read-only view)."""
        values = self._columns[column].view()
        values.flags.writeable = False
        return values

    @property
    def num_positions(self) -> int:
        """Length of the sequence the LLM saw (kept prompt tokens plus generated tokens)."""
        return int((self._columns["position"] >= 0).sum())

    @property
    def df(self):
        """All rows as a pandas DataFrame (built once)."""
        if self._df is None:
            import pandas as pd

            self._df = pd.DataFrame({name: self[name] for name in COLUMNS})
        return self._df

    def rows(self, modality=None, item=None, frame=None, kept=None) -> np.ndarray:
        """Boolean mask over rows (pruned rows included) matching every given criterion.

        Args:
            modality: a modality name or a collection of them.
            item: item index (or collection) within the modality.
            frame: a source frame index: video rows whose tubelet packs that frame.
            kept: True for tokens the LLM saw, False for pruned ones.
        """
        mask = np.ones(len(self), dtype=bool)
        if modality is not None:
            names = (modality,) if isinstance(modality, str) else tuple(modality)
            unknown = set(names) - set(MODALITIES)
            if unknown:
                from .errors import OmniLabInputError

                raise OmniLabInputError(f"unknown modality {sorted(unknown)}; choose from {MODALITIES}")
            mask &= np.isin(self._columns["modality"], names)
        if item is not None:
            items = np.atleast_1d(np.asarray(item))
            mask &= np.isin(self._columns["item"], items)
        if frame is not None:
            mask &= np.array([frame in frames for frames in self._columns["frames"]], dtype=bool)
        if kept is not None:
            mask &= self._columns["kept"] == bool(kept)
        return mask

    def select(self, modality=None, item=None, frame=None, kept=None) -> np.ndarray:
        """Boolean mask over LLM positions (length `num_positions`) of the tokens matching the criteria.

        Pruned tokens have no position, so `kept=False` selects nothing here; use `.rows(kept=False)` for them.
        """
        mask = self.rows(modality=modality, item=item, frame=frame, kept=kept)
        positions = self._columns["position"]
        selected = np.zeros(self.num_positions, dtype=bool)
        selected[positions[mask & (positions >= 0)]] = True
        return selected

    def position_rows(self) -> np.ndarray:
        """Row index of every LLM position, in position order (`num_positions` long; pruned rows have none)."""
        if self._position_rows is None:
            positions = self._columns["position"]
            rows = np.flatnonzero(positions >= 0)
            self._position_rows = rows[np.argsort(positions[rows], kind="stable")]
            self._position_rows.flags.writeable = False
        return self._position_rows

    def by_position(self, column: str) -> np.ndarray:
        """A column's values over the positions the LLM saw, in position order: entry p belongs to position p.

        Args:
            column: a column name (`modality`, `item`, `tubelet`, `t0`, ...).
        Returns:
            `(num_positions,)` array (a copy).
        """
        return self._columns[column][self.position_rows()]

    def partition(self, by="item", *, grid=None, seconds=None):
        """Group the rows into named units (modality, item, tubelet, frame, region, audio window, text token, word,
        or {name: mask}): `omni_lab.partition`, the one grouping every capture, study, attribution and view takes.

        Args:
            by: a key, a tuple of keys such as ("tubelet", "region"), {name: mask} groups, or a `GroupBy`.
            grid: `(rows, cols)` of the region grid, or one int (default (2, 2)).
            seconds: audio window length (default 1.0).
        Returns:
            `Partition`.
        """
        from .partition import partition

        return partition(self, by, grid=grid, seconds=seconds)

    def cached(self, key, compute):
        """`compute()`, kept on this map under `key` (a token map does not change): what several views and captures
        derive from the same map, such as a partition (`GroupBy.apply`), is computed once."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def status(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Per row (or per given row): "kept" (the LLM saw it), "merged" (dropped, its embedding averaged into a kept
        token: `merged_into`) or "pruned" (dropped). A token an in-LLM reducer (FastV) dropped is "kept" (it entered
        the LLM; `dropped_at_layer` says after which layer it left).

        Args:
            rows: row indices or a bool mask; None for every row.
        Returns:
            object array of `STATUSES` names.
        """
        kept, merged_into = self._columns["kept"], self._columns["merged_into"]
        if rows is not None:
            kept, merged_into = kept[rows], merged_into[rows]
        labels = np.array(STATUSES, dtype=object)
        return labels[np.where(kept, 0, np.where(merged_into >= 0, 1, 2))]

    def answer_positions(self, limit: int | None = None) -> np.ndarray:
        """LLM positions of the generated tokens, ascending (below `limit`, e.g. the positions a capture saw)."""
        positions = self._columns["position"][self._columns["modality"] == "generated"]
        positions = np.sort(positions[positions >= 0])
        return positions if limit is None else positions[positions < limit]

    def box_overlap(self, box) -> np.ndarray:
        """Pixels each row's box shares with `box` `(x0, y0, x1, y1)` in the media's original coordinates.

        Returns:
            `(rows,)` float array; 0 where the boxes do not meet and for rows without a pixel box (text, audio).
            `box_overlap(box) > 0` selects the tokens that show any part of a region.
        """
        x0, y0, x1, y1 = (self._columns[name] for name in ("x0", "y0", "x1", "y1"))
        width = np.minimum(x1, box[2]) - np.maximum(x0, box[0])
        height = np.minimum(y1, box[3]) - np.maximum(y0, box[1])
        area = np.clip(width, 0, None) * np.clip(height, 0, None)
        return np.nan_to_num(area, nan=0.0)

    def counts(self, kept: bool | None = None) -> dict[str, int]:
        """Rows per modality (optionally only kept / pruned ones)."""
        modality = self._columns["modality"]
        if kept is not None:
            modality = modality[self._columns["kept"] == kept]
        names, counts = np.unique(modality, return_counts=True)
        return {str(name): int(count) for name, count in zip(names, counts, strict=True)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={count}" for name, count in self.counts().items())
        pruned = int((~self._columns["kept"]).sum())
        return f"TokenMap({len(self)} rows, {self.num_positions} positions, {pruned} pruned; {counts})"

    # ---------------------------------------------------------------------------------------------- deriving
    def with_reduction(
        self, keep: np.ndarray, scores: np.ndarray | None = None, merged_into: np.ndarray | None = None
    ) -> TokenMap:
        """A copy where only rows with `keep` reach the LLM; positions are renumbered in order.

        Args:
            keep: bool per row.
            scores: float per row (NaN where unscored), optional.
            merged_into: row index each pruned row was merged into (-1 if none), optional.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep mask has shape {keep.shape}, expected ({len(self)},)")
        columns = {name: values.copy() for name, values in self._columns.items()}
        columns["kept"] = keep & self._columns["kept"]
        positions = np.full(len(self), -1, dtype=np.int64)
        positions[columns["kept"]] = np.arange(int(columns["kept"].sum()))
        columns["position"] = positions
        if scores is not None:
            columns["score"] = np.asarray(scores, dtype=np.float64)
        if merged_into is not None:
            columns["merged_into"] = np.asarray(merged_into, dtype=np.int64)
        return TokenMap(columns)

    def with_llm_drop(self, layer: int, keep_positions: np.ndarray, scores: np.ndarray) -> TokenMap:
        """A copy recording that the prompt positions with `keep_positions` False left the sequence after `layer`.

        Args:
            layer: the LLM layer after which they were dropped.
            keep_positions: bool per prompt position (the LLM's input sequence).
            scores: the in-LLM reducer's score per prompt position (NaN where it scored nothing); written to
                `score` for rows no earlier reducer scored.
        """
        keep_positions = np.asarray(keep_positions, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        rows = self.position_rows()
        rows = rows[self._columns["modality"][rows] != "generated"]  # generated rows may already be there
        if keep_positions.shape != rows.shape or scores.shape != rows.shape:
            raise ValueError(
                f"keep_positions {keep_positions.shape} and scores {scores.shape} need one entry per prompt "
                f"position ({len(rows)})"
            )
        columns = {name: values.copy() for name, values in self._columns.items()}
        columns["dropped_at_layer"][rows[~keep_positions]] = layer
        unscored = np.isnan(columns["score"][rows])
        columns["score"][rows[unscored]] = scores[unscored]
        return TokenMap(columns)

    def with_generated(self, token_ids, texts) -> TokenMap:
        """A copy with one `generated` row per new token, placed after the last position."""
        count = len(token_ids)
        start = self.num_positions
        added = _empty_columns(count)
        added["position"][:] = np.arange(start, start + count)
        added["modality"][:] = "generated"
        added["item"][:] = 0
        added["turn"][:] = int(self._columns["turn"].max()) if len(self) else 0  # the answer to the last turn
        added["token_id"][:] = np.asarray(token_ids, dtype=np.int64)
        added["text"][:] = list(texts)
        columns = {name: np.concatenate([self._columns[name], added[name]]) for name in COLUMNS}
        return TokenMap(columns)


def _empty_columns(count: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name in _INT_COLUMNS:
        columns[name] = np.full(count, -1, dtype=np.int64)
    for name in _FLOAT_COLUMNS:
        columns[name] = np.full(count, np.nan, dtype=np.float64)
    columns["modality"] = np.full(count, "text", dtype=object)
    columns["text"] = np.full(count, "", dtype=object)
    columns["frames"] = np.empty(count, dtype=object)
    columns["frames"][:] = [()] * count
    columns["special"] = np.zeros(count, dtype=bool)
    columns["kept"] = np.ones(count, dtype=bool)
    columns["turn"][:] = 0  # one turn unless the rows say otherwise
    return columns


def _boxes(rows: int, cols: int, original: tuple[int, int], resized: tuple[int, int]) -> np.ndarray:
    """Pixel boxes `(rows*cols, 4)` of merged-grid cells in original-image coordinates, row-major."""
    scale_x = original[0] / resized[0]
    scale_y = original[1] / resized[1]
    cell_w, cell_h = resized[0] / cols, resized[1] / rows
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack(
        [c * cell_w * scale_x, r * cell_h * scale_y, (c + 1) * cell_w * scale_x, (r + 1) * cell_h * scale_y], axis=1
    )


def build_token_map(
    input_ids: np.ndarray,
    token_texts: list[str],
    special_ids: set[int],
    media_token_ids: dict[str, int],
    images: list[ImageLayout],
    videos: list[VideoLayout],
    audios: list[AudioLayout],
    order: list[tuple[str, int]] | None = None,
    turns: np.ndarray | None = None,
) -> TokenMap:
    """Lay out the rows of a prompt.

    Each image is one run of `image` placeholder ids, each video one run per tubelet (the same id), each audio clip
    one run of `audio` ids. Runs are consumed in the media's prompt order (`order`; by default images, then videos,
    then audios, the order of one `lab.prompt` turn), so with the default the i-th image run is image i and the next
    `tubelets` runs are video 0's tubelets.

    Args:
        input_ids: `(L,)` ids of the prompt.
        token_texts: token string per id.
        special_ids: ids of control tokens.
        media_token_ids: {"image": id, "audio": id} of the placeholders (video uses the image id).
        images, videos, audios: the geometry of each item, in prompt order.
        order: `(modality, item)` of every media item in the order the prompt holds them (a conversation interleaves
            images and videos across turns); default images, videos, audios.
        turns: the conversation turn of each row (`L` ints); default 0 for every row.
    Returns:
        `TokenMap` with one row per prompt token, all kept, positions 0..L-1.
    Raises:
        ValueError: when the runs in `input_ids` do not match the described media (a bug, not a user error).
    """
    input_ids = np.asarray(input_ids, dtype=np.int64)
    count = len(input_ids)
    columns = _empty_columns(count)
    columns["position"][:] = np.arange(count)
    columns["token_id"][:] = input_ids
    columns["text"][:] = token_texts
    columns["special"][:] = np.isin(input_ids, list(special_ids))

    visual_runs = _runs(input_ids == media_token_ids["image"])
    audio_runs = _runs(input_ids == media_token_ids["audio"])
    expected_visual = len(images) + sum(video.tubelets for video in videos)
    if len(visual_runs) != expected_visual or len(audio_runs) != len(audios):
        raise ValueError(
            f"prompt has {len(visual_runs)} visual and {len(audio_runs)} audio placeholder runs, but the media "
            f"describe {expected_visual} and {len(audios)}"
        )
    if turns is not None:
        columns["turn"][:] = np.asarray(turns, dtype=np.int64)
    first_run = _first_visual_runs(order, images, videos)
    for item, image in enumerate(images):
        start, stop = visual_runs[first_run[("image", item)]]
        _check_run(stop - start, image.rows * image.cols, f"image {item}")
        _fill_grid(
            columns, slice(start, stop), "image", item, image.rows, image.cols, image.original_size, image.resized_size
        )
    for item, video in enumerate(videos):
        real_frames = len(video.frame_indices)
        for tubelet in range(video.tubelets):
            start, stop = visual_runs[first_run[("video", item)] + tubelet]
            _check_run(stop - start, video.rows * video.cols, f"video {item} tubelet {tubelet}")
            span = slice(start, stop)
            _fill_grid(columns, span, "video", item, video.rows, video.cols, video.original_size, video.resized_size)
            first = tubelet * video.frames_per_tubelet
            members = [i for i in range(first, first + video.frames_per_tubelet) if i < real_frames]
            columns["tubelet"][span] = tubelet
            frames = tuple(video.frame_indices[i] for i in members)
            columns["frames"][span] = [frames] * (stop - start)
            times = [video.frame_times[i] for i in members]
            if times and times[0] is not None:
                columns["t0"][span] = times[0]
                columns["t1"][span] = times[-1]
    for item, (audio, (start, stop)) in enumerate(zip(audios, audio_runs, strict=True)):
        _check_run(stop - start, audio.tokens, f"audio {item}")
        span = slice(start, stop)
        columns["modality"][span] = "audio"
        columns["item"][span] = item
        offsets = np.arange(stop - start) * AUDIO_SECONDS_PER_TOKEN
        columns["t0"][span] = audio.start + np.minimum(offsets, audio.seconds)
        columns["t1"][span] = audio.start + np.minimum(offsets + AUDIO_SECONDS_PER_TOKEN, audio.seconds)

    text = columns["modality"] == "text"
    span_index = np.cumsum(text & ~np.concatenate([[False], text[:-1]])) - 1  # count of text-run starts so far
    columns["item"][text] = span_index[text]
    return TokenMap(columns)


def _first_visual_runs(order, images, videos) -> dict[tuple[str, int], int]:
    """{(modality, item): index of its first `image`-id run} for the images and videos in prompt order."""
    visual = [("image", i) for i in range(len(images))] + [("video", i) for i in range(len(videos))]
    if order is None:
        order = visual
    order = [(modality, int(item)) for modality, item in order if modality != "audio"]
    if sorted(order) != sorted(visual):
        raise ValueError(f"order {order} does not list each of the {len(images)} images and {len(videos)} videos once")
    first, run = {}, 0
    for modality, item in order:
        first[(modality, item)] = run
        run += 1 if modality == "image" else videos[item].tubelets
    return first


def _fill_grid(columns, span, modality, item, rows, cols, original, resized):
    columns["modality"][span] = modality
    columns["item"][span] = item
    cells = np.arange(rows * cols)
    columns["row"][span], columns["col"][span] = np.divmod(cells, cols)
    boxes = _boxes(rows, cols, original, resized)
    for index, name in enumerate(("x0", "y0", "x1", "y1")):
        columns[name][span] = boxes[:, index]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each maximal run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _check_run(found: int, expected: int, what: str) -> None:
    if found != expected:
        raise ValueError(f"{what}: {found} placeholder tokens in the prompt, {expected} expected from its geometry")
