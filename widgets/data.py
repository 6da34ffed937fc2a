"""The widgets' pure data layer: plain functions from a Run (or its token map, routing, masses) to tables and arrays.

Nothing here imports plotly or ipywidgets; the figure builders (one module per view) draw what these return, and the
tests check these against the run itself. Everything is aggregated to what a view draws, so a real-model run
(52 layers x 128 experts x 20K positions, a 256-frame video) never ships per-position arrays larger than the view:

    media_panels / panel_tokens / score_grid / status_grid / reduction_counts   TokenReductionMap, AttributionOverlay
    expert_loads / routing_entropy / top_expert_strip / token_routing          ExpertRoutingView
    mass_layers / query_rows / modality_mass / head_mass / segment_mass        ModalityAttentionView
    audio_waveform / audio_mel / audio_tokens / pruned_spans / audio_mass      AudioTimeline
    attribution_scores / text_scores                                          AttributionOverlay

Token status: "kept" (the LLM saw it), "merged" (dropped, its embedding averaged into a kept token: `merged_into`)
or "pruned" (dropped). A token an in-LLM reducer (FastV) dropped is "kept" here (it entered the LLM) and its hover
names the layer after which it left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omni_lab.errors import OmniLabInputError

MEDIA = ("image", "video", "audio")
MODALITY_ORDER = ("text", "image", "video", "audio", "generated")
STATUSES = ("kept", "merged", "pruned")


# ------------------------------------------------------------------------------------------------ token map views
@dataclass(frozen=True)
class MediaPanel:
    """One picture a map draws: an image, or one video tubelet shown on its first frame.

    Attributes:
        modality: "image" or "video".
        item: the item's index within its modality.
        tubelet: the tubelet index (-1 for images).
        frames: source frame indices the tubelet packs (empty for images).
        t0, t1: seconds of the tubelet's first and last frame (NaN when unknown or for images).
        size: (width, height) of the original media in pixels.
        grid: (rows, cols) of the merged token grid.
        rows: token-map rows drawn on this panel, in grid (row-major) order.
    """

    modality: str
    item: int
    tubelet: int
    frames: tuple[int, ...]
    t0: float
    t1: float
    size: tuple[int, int]
    grid: tuple[int, int]
    rows: np.ndarray

    @property
    def label(self) -> str:
        """Short name: "image 0" or "video 0 · frames 4-5 (0.50-0.62 s)"."""
        if self.modality == "image":
            return f"image {self.item}"
        frames = "-".join(str(frame) for frame in (self.frames[0], self.frames[-1])) if self.frames else "?"
        if len(self.frames) == 1:
            frames = str(self.frames[0])
        seconds = "" if np.isnan(self.t0) else f" ({self.t0:.2f}-{self.t1:.2f} s)"
        return f"video {self.item} · frames {frames}{seconds}"

    @property
    def cell(self) -> tuple[float, float]:
        """(width, height) of one token's box in original pixels."""
        return self.size[0] / self.grid[1], self.size[1] / self.grid[0]


def media_panels(token_map) -> list[MediaPanel]:
    """Every image and every video tubelet of a token map, in prompt order.

    Args:
        token_map: a `TokenMap` (prompt rows; pruned rows included).
    Returns:
        list of `MediaPanel`, images first (by item), then each video's tubelets in order.
    """
    modality = np.asarray(token_map["modality"])
    item, tubelet = token_map["item"], token_map["tubelet"]
    panels = []
    for name in ("image", "video"):
        rows_of_modality = np.flatnonzero(modality == name)
        if not len(rows_of_modality):
            continue
        keys = item[rows_of_modality] * 1_000_000 + np.maximum(tubelet[rows_of_modality], 0)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            rows = rows_of_modality[order[start:stop]]
            panels.append(_panel(token_map, name, rows))
    return panels


def _panel(token_map, modality: str, rows: np.ndarray) -> MediaPanel:
    grid_row, grid_col = token_map["row"][rows], token_map["col"][rows]
    rows = rows[np.lexsort((grid_col, grid_row))]
    first = rows[0]
    width = float(np.nanmax(token_map["x1"][rows]))
    height = float(np.nanmax(token_map["y1"][rows]))
    return MediaPanel(
        modality=modality,
        item=int(token_map["item"][first]),
        tubelet=int(token_map["tubelet"][first]) if modality == "video" else -1,
        frames=tuple(int(frame) for frame in token_map["frames"][first]),
        t0=float(token_map["t0"][first]),
        t1=float(token_map["t1"][first]),
        size=(round(width), round(height)),
        grid=(int(token_map["row"][rows].max()) + 1, int(token_map["col"][rows].max()) + 1),
        rows=rows,
    )


def token_status(token_map, rows: np.ndarray | None = None) -> np.ndarray:
    """Per row (or per given row): "kept", "merged" (dropped into a kept token) or "pruned" (dropped)."""
    kept = np.asarray(token_map["kept"], dtype=bool)
    merged_into = np.asarray(token_map["merged_into"])
    if rows is not None:
        kept, merged_into = kept[rows], merged_into[rows]
    labels = np.array(STATUSES, dtype=object)
    return labels[np.where(kept, 0, np.where(merged_into >= 0, 1, 2))]


def panel_tokens(token_map, panel: MediaPanel):
    """The tokens drawn on one panel with their provenance.

    Args:
        token_map: the run's token map (or any map with the same prompt rows, e.g. after another reduction).
        panel: a `MediaPanel` from `media_panels`.
    Returns:
        DataFrame, one row per token in grid order: row (token-map row), grid_row, grid_col, x0, y0, x1, y1, cx, cy
        (box centre), status, kept, score, merged_into, target_cx, target_cy (centre of the token it merged into,
        NaN if none), target_tubelet, t0, t1, frames (text), dropped_at_layer.
    """
    import pandas as pd

    rows = panel.rows
    columns = {name: token_map[name][rows] for name in ("x0", "y0", "x1", "y1", "score", "merged_into", "t0", "t1")}
    merged_into = columns["merged_into"]
    has_target = merged_into >= 0
    target = np.where(has_target, merged_into, 0)
    target_cx = np.where(has_target, (token_map["x0"][target] + token_map["x1"][target]) / 2, np.nan)
    target_cy = np.where(has_target, (token_map["y0"][target] + token_map["y1"][target]) / 2, np.nan)
    status = token_status(token_map, rows)
    return pd.DataFrame(
        {
            "row": rows,
            "grid_row": token_map["row"][rows],
            "grid_col": token_map["col"][rows],
            "x0": columns["x0"],
            "y0": columns["y0"],
            "x1": columns["x1"],
            "y1": columns["y1"],
            "cx": (columns["x0"] + columns["x1"]) / 2,
            "cy": (columns["y0"] + columns["y1"]) / 2,
            "status": status,
            "kept": status == "kept",
            "score": columns["score"],
            "merged_into": merged_into,
            "target_cx": target_cx,
            "target_cy": target_cy,
            "target_tubelet": np.where(has_target, token_map["tubelet"][target], -1),
            "t0": columns["t0"],
            "t1": columns["t1"],
            "frames": ["-".join(map(str, frames)) for frames in token_map["frames"][rows]],
            "dropped_at_layer": token_map["dropped_at_layer"][rows],
        }
    )


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


def status_grid(token_map, panel: MediaPanel) -> np.ndarray:
    """`(grid rows, grid cols)`: NaN for kept tokens, 0 for pruned, 1 for merged (the shading over the pixels)."""
    status = token_status(token_map, panel.rows)
    codes = np.where(status == "kept", np.nan, np.where(status == "merged", 1.0, 0.0))
    grid = np.full(panel.grid, np.nan)
    grid.reshape(-1)[: len(panel.rows)] = codes
    return grid


def reduction_counts(token_map, panels: list[MediaPanel]):
    """Kept, merged and pruned tokens per panel.

    Returns:
        DataFrame: label, modality, item, tubelet, tokens, kept, merged, pruned (one row per panel).
    """
    import pandas as pd

    records = []
    for panel in panels:
        mine = token_status(token_map, panel.rows)
        records.append(
            {
                "label": panel.label,
                "modality": panel.modality,
                "item": panel.item,
                "tubelet": panel.tubelet,
                "tokens": len(panel.rows),
                **{name: int((mine == name).sum()) for name in STATUSES},
            }
        )
    return pd.DataFrame(records, columns=["label", "modality", "item", "tubelet", "tokens", *STATUSES])


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


def media_coverage(token_map) -> np.ndarray:
    """Token-map rows of every media token as the views draw them: each panel's rows, then each audio clip's rows."""
    visual = [panel.rows for panel in media_panels(token_map)]
    modality = np.asarray(token_map["modality"])
    audio = [np.flatnonzero((modality == "audio") & (token_map["item"] == item)) for item in audio_items(token_map)]
    parts = visual + audio
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------------------------------------ positions
def position_rows(token_map) -> np.ndarray:
    """Token-map row of every LLM position, in position order."""
    positions = np.asarray(token_map["position"])
    rows = np.flatnonzero(positions >= 0)
    return rows[np.argsort(positions[rows], kind="stable")]


def position_column(token_map, column: str, count: int | None = None) -> np.ndarray:
    """A token-map column over LLM positions (entry p belongs to position p), cut to `count` positions."""
    values = np.asarray(token_map[column])[position_rows(token_map)]
    return values if count is None else values[:count]


def answer_positions(token_map, limit: int | None = None) -> np.ndarray:
    """LLM positions of the generated tokens (below `limit`, e.g. the positions a capture saw)."""
    positions = np.asarray(token_map["position"])[np.asarray(token_map["modality"]) == "generated"]
    positions = np.sort(positions[positions >= 0])
    return positions if limit is None else positions[positions < limit]


# -------------------------------------------------------------------------------------------------------- routing
def expert_loads(routing) -> tuple[list[int], dict[str, np.ndarray]]:
    """Expert load per MoE layer, overall and per modality, from `routing.load(by="modality")`.

    Returns:
        (MoE layer numbers, {group: `(layers, experts)` int64 top-k pick counts}); group "all" plus each modality
        present, in `MODALITY_ORDER`.
    """
    load = routing.load(by="modality")
    layers = list(routing.layers)
    slot = {layer: index for index, layer in enumerate(layers)}
    loads: dict[str, np.ndarray] = {}
    present = set(load["modality"])
    for name in [m for m in MODALITY_ORDER if m in present] + sorted(present - set(MODALITY_ORDER)):
        part = load[load["modality"] == name]
        matrix = np.zeros((len(layers), routing.num_experts), dtype=np.int64)
        matrix[part["layer"].map(slot).to_numpy(), part["expert"].to_numpy()] = part["count"].to_numpy()
        loads[name] = matrix
    total = sum(loads.values()) if loads else np.zeros((len(layers), routing.num_experts), dtype=np.int64)
    return layers, {"all": total, **loads}


def routing_entropy(routing):
    """Entropy (bits) of the expert load per MoE layer, overall ("all") and per modality.

    Returns:
        DataFrame: layer, group, entropy_bits.
    """
    import pandas as pd

    per_modality = routing.entropy(by="modality").rename(columns={"modality": "group"})
    overall = routing.entropy(by="all")
    return pd.concat([overall, per_modality], ignore_index=True)[["layer", "group", "entropy_bits"]]


@dataclass
class ExpertStrip:
    """Top expert of every position (or bin of positions) at every MoE layer.

    Attributes:
        layers: MoE layer numbers (rows).
        expert: `(layers, columns)` int: the top-weighted expert of the column's position (for a bin, the one most
            positions of the bin chose first).
        share: `(layers, columns)` float: share of the bin's positions whose top expert that is (1 when unbinned).
        start, stop: `(columns,)` first and one-past-last LLM position of each column.
        modality: `(columns,)` modality of the column's positions ("mixed" when a bin spans several).
    """

    layers: list[int]
    expert: np.ndarray
    share: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    modality: np.ndarray

    @property
    def binned(self) -> bool:
        return bool((self.stop - self.start > 1).any())


def top_expert_strip(routing, max_columns: int = 1024) -> ExpertStrip:
    """The token strip of `ExpertRoutingView`: positions coloured by top expert, binned beyond `max_columns`.

    Args:
        routing: a `Routing`.
        max_columns: most columns to return; longer runs pool consecutive positions into equal bins.
    """
    experts = np.asarray(routing.experts)  # (L, P, k)
    weights = np.asarray(routing.weights, dtype=np.float32)
    layers, positions, _ = experts.shape
    top = np.take_along_axis(experts, weights.argmax(-1)[..., None], axis=-1)[..., 0]  # (L, P)
    modality = position_column(routing.token_map, "modality", positions)
    columns = min(positions, max(1, int(max_columns)))
    edges = np.linspace(0, positions, columns + 1).round().astype(np.int64)
    start, stop = edges[:-1], edges[1:]
    if columns == positions:
        return ExpertStrip(list(routing.layers), top, np.ones(top.shape), start, stop, modality.astype(object))
    column_of = np.repeat(np.arange(columns), stop - start)  # (P,)
    expert = np.zeros((layers, columns), dtype=np.int64)
    share = np.zeros((layers, columns))
    sizes = (stop - start).astype(np.float64)
    for slot in range(layers):
        counts = np.bincount(column_of * routing.num_experts + top[slot], minlength=columns * routing.num_experts)
        counts = counts.reshape(columns, routing.num_experts)
        expert[slot] = counts.argmax(1)
        share[slot] = counts.max(1) / sizes
    labels = np.empty(columns, dtype=object)
    for index, (first, last) in enumerate(zip(start, stop, strict=True)):
        kinds = set(modality[first:last].tolist())
        labels[index] = kinds.pop() if len(kinds) == 1 else "mixed"
    return ExpertStrip(list(routing.layers), expert, share, start, stop, labels)


def token_routing(routing, position: int):
    """The experts and weights of one LLM position at every MoE layer (`routing.for_token`).

    Returns:
        DataFrame: layer, rank, expert, weight.
    """
    return routing.for_token(int(position))


def position_label(token_map, position: int) -> str:
    """ "position 12 · video 0 · 'x'" for a hover or a title."""
    rows = position_rows(token_map)
    if not 0 <= position < len(rows):
        return f"position {position}"
    row = rows[position]
    modality = token_map["modality"][row]
    text = str(token_map["text"][row])
    where = modality if modality in ("text", "generated") else f"{modality} {token_map['item'][row]}"
    return f"position {position} · {where}" + (f" · {text!r}" if text and modality in ("text", "generated") else "")


# ---------------------------------------------------------------------------------------------------------- masses
def mass_layers(run) -> list[tuple[int, str, object]]:
    """(layer, kind, ModalityMass) for every captured attention and Mamba layer, in the model's layer order."""
    entries = []
    for mass in (getattr(run, "attention_mass", None), getattr(run, "mamba_mass", None)):
        if mass is not None:
            entries += [(int(layer), mass.kind, mass) for layer in mass.layers]
    return sorted(entries, key=lambda entry: entry[0])


def query_rows(mass, query="answer") -> tuple[np.ndarray, str]:
    """Which rows of a `ModalityMass` a query names.

    Args:
        mass: a `ModalityMass` (rows are LLM positions, or named query groups when captured with `queries=`).
        query: "answer" (the generated tokens: their group, or their positions), "all", a group name, an LLM
            position (int) or a list of positions.
    Returns:
        (row indices into `mass.queries`, a label for titles). "answer" falls back to the last query row when the
        run generated nothing the capture saw.
    Raises:
        OmniLabInputError: a query the mass has no row for.
    """
    queries = list(mass.queries)
    grouped = bool(queries) and isinstance(queries[0], str)
    if isinstance(query, str) and query == "all":
        return np.arange(len(queries)), "all queries"
    if isinstance(query, str) and query == "answer":
        if grouped:
            for name in ("answer", "generated"):
                if name in queries:
                    return np.array([queries.index(name)]), "answer tokens"
            return np.array([len(queries) - 1]), f"query group {queries[-1]!r}"
        generated = set(answer_positions(mass.token_map).tolist())
        rows = np.array([index for index, position in enumerate(queries) if position in generated], dtype=np.int64)
        if len(rows):
            return rows, f"answer tokens ({len(rows)})"
        return np.array([len(queries) - 1]), f"last position ({queries[-1]})"
    if isinstance(query, str):
        if query not in queries:
            raise OmniLabInputError(f"query {query!r}: this capture has query rows {queries[:8]}")
        return np.array([queries.index(query)]), f"query group {query!r}"
    wanted = np.atleast_1d(np.asarray(query, dtype=np.int64))
    if grouped:
        raise OmniLabInputError(
            f"query {query!r}: this mass was captured per query group {queries}; pass a group name, or capture "
            "with queries=None for per-position rows"
        )
    index = {position: row for row, position in enumerate(queries)}
    missing = [int(p) for p in wanted if int(p) not in index]
    if missing:
        raise OmniLabInputError(f"positions {missing} have no query row (rows cover positions 0..{len(queries) - 1})")
    rows = np.array([index[int(p)] for p in wanted])
    return rows, f"position {int(wanted[0])}" if len(wanted) == 1 else f"{len(wanted)} positions"


def mass_modalities(run) -> list[str]:
    """Modalities the captured segments cover, in `MODALITY_ORDER`."""
    seen = set()
    for _, _, mass in mass_layers(run):
        seen.update(mass.modalities)
    return [m for m in MODALITY_ORDER if m in seen] + sorted(seen - set(MODALITY_ORDER))


def modality_mass(run, query="answer"):
    """Mass of a query over modalities at every attention and Mamba layer, in the model's order.

    Args:
        run: a `Run` with `attention_mass` and / or `mamba_mass`.
        query: see `query_rows` (default: the answer's tokens).
    Returns:
        DataFrame: order (0..), layer, kind, modality, mass: mean over heads and over the query rows, so each
        layer's masses sum to 1.
    """
    import pandas as pd

    modalities = mass_modalities(run)
    records = []
    for order, (layer, kind, mass) in enumerate(mass_layers(run)):
        rows, _ = query_rows(mass, query)
        pooled = mass.by_modality()[layer].float().numpy()  # (H, Q, M)
        values = pooled[:, rows].mean(axis=(0, 1))  # (M,)
        own = dict(zip(mass.modalities, values.tolist(), strict=True))
        records += [
            {"order": order, "layer": layer, "kind": kind, "modality": m, "mass": own.get(m, 0.0)} for m in modalities
        ]
    return pd.DataFrame(records, columns=["order", "layer", "kind", "modality", "mass"])


def mass_for_layer(run, layer: int):
    """The `ModalityMass` (attention or Mamba) that holds a layer."""
    for number, _, mass in mass_layers(run):
        if number == int(layer):
            return mass
    captured = [number for number, _, _ in mass_layers(run)]
    raise OmniLabInputError(f"layer {layer} has no captured mass; captured layers: {captured}")


def head_mass(run, layer: int, query="answer") -> tuple[np.ndarray, list[str]]:
    """Per-head mass over modalities at one layer.

    Returns:
        (`(heads, modalities)` mean over the query rows, the modality names).
    """
    mass = mass_for_layer(run, layer)
    rows, _ = query_rows(mass, query)
    pooled = mass.by_modality()[int(layer)].float().numpy()  # (H, Q, M)
    return pooled[:, rows].mean(axis=1), list(mass.modalities)


def segment_mass(run, layer: int, query="answer"):
    """Mass over every segment (media item, text span, frame, audio window, region) at one layer.

    Returns:
        DataFrame: segment, label, modality, mass (mean over heads and query rows; sums to 1).
    """
    mass = mass_for_layer(run, layer)
    rows, _ = query_rows(mass, query)
    values = mass.mass[int(layer)].float().numpy()[:, rows].mean(axis=(0, 1))  # (S,)
    table = mass.segments[["label", "modality"]].copy()
    table.insert(0, "segment", np.arange(len(table)))
    table["mass"] = values
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------- audio
def audio_items(token_map) -> list[int]:
    """Indices of the audio clips a token map holds."""
    modality = np.asarray(token_map["modality"])
    return sorted({int(item) for item in np.asarray(token_map["item"])[modality == "audio"]})


def _audio_clip(prompt, item: int):
    audios = getattr(prompt, "audios", None) or []
    if not 0 <= item < len(audios):
        raise OmniLabInputError(f"audio item {item}: the prompt holds {len(audios)} audio clip(s)")
    return audios[item]


def audio_waveform(prompt, item: int = 0, max_points: int = 2000):
    """Envelope of a clip's 16 kHz waveform: min and max per time bin.

    Returns:
        DataFrame: t (bin start, seconds), low, high (at most `max_points` rows).
    """
    import pandas as pd

    clip = _audio_clip(prompt, item)
    wave = np.asarray(clip.waveform, dtype=np.float32)
    bins = max(1, min(len(wave), int(max_points)))
    edges = np.linspace(0, len(wave), bins + 1).astype(np.int64)
    low = np.minimum.reduceat(wave, edges[:-1]) if len(wave) else np.zeros(0)
    high = np.maximum.reduceat(wave, edges[:-1]) if len(wave) else np.zeros(0)
    return pd.DataFrame({"t": edges[:-1] / clip.sampling_rate, "low": low, "high": high})


def audio_mel(prompt, item: int = 0, max_columns: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The log-mel features the audio encoder received for a clip (the processor's own, 10 ms hop).

    Returns:
        (times `(C,)` seconds of each column's start, values `(mel bins, C)` float32); frames beyond `max_columns`
        are averaged in equal bins.
    """
    _audio_clip(prompt, item)
    features = prompt.inputs["input_features"][item].float().numpy()  # (frames, mel)
    mask = prompt.inputs.get("input_features_mask")
    if mask is not None:
        features = features[mask[item].numpy().astype(bool)]
    frames = features.shape[0]
    columns = max(1, min(frames, int(max_columns)))
    edges = np.linspace(0, frames, columns + 1).astype(np.int64)
    sums = np.add.reduceat(features, edges[:-1], axis=0)
    values = sums / np.diff(edges)[:, None]
    return edges[:-1] * 0.01, values.T.astype(np.float32)


def audio_tokens(token_map, item: int = 0):
    """A clip's 80 ms tokens.

    Returns:
        DataFrame: row, t0, t1, status, kept, score, merged_into, position.
    """
    import pandas as pd

    modality = np.asarray(token_map["modality"])
    rows = np.flatnonzero((modality == "audio") & (np.asarray(token_map["item"]) == item))
    status = token_status(token_map, rows)
    return pd.DataFrame(
        {
            "row": rows,
            "t0": token_map["t0"][rows],
            "t1": token_map["t1"][rows],
            "status": status,
            "kept": status == "kept",
            "score": token_map["score"][rows],
            "merged_into": token_map["merged_into"][rows],
            "position": token_map["position"][rows],
        }
    )


def pruned_spans(tokens) -> list[tuple[float, float]]:
    """Contiguous time spans of dropped (pruned or merged) tokens, from `audio_tokens`' table."""
    spans: list[tuple[float, float]] = []
    for t0, t1, kept in zip(tokens["t0"], tokens["t1"], tokens["kept"], strict=True):
        if kept:
            continue
        if spans and abs(spans[-1][1] - t0) < 1e-9:
            spans[-1] = (spans[-1][0], float(t1))
        else:
            spans.append((float(t0), float(t1)))
    return spans


def audio_mass(run, item: int = 0, query="answer"):
    """Mass the query puts on each segment of one audio clip, per layer kind (mean over layers and heads).

    With `segments="audio_window"` captures each window is a row (mass over time); with the default per-item
    segments the clip is one row spanning it.

    Returns:
        DataFrame: kind, segment, label, t0, t1, mass; empty when nothing was captured.
    """
    import pandas as pd

    records = []
    tokens = audio_tokens(run.token_map, item)
    if tokens.empty:
        return pd.DataFrame(columns=["kind", "segment", "label", "t0", "t1", "mass"])
    clip_end = float(tokens["t1"].max())
    for mass in (getattr(run, "attention_mass", None), getattr(run, "mamba_mass", None)):
        if mass is None:
            continue
        segments = mass.segments
        mine = segments[(segments.modality == "audio") & (segments["item"] == item)]
        if mine.empty:
            continue
        rows, _ = query_rows(mass, query)
        per_segment = np.mean([mass.mass[layer].float().numpy()[:, rows].mean(axis=(0, 1)) for layer in mass.layers], 0)
        kept_t0 = tokens.t0[tokens.kept].to_numpy()
        window = _window_seconds(mass, kept_t0, mine["window"][mine["window"] >= 0].tolist(), clip_end)
        for segment, entry in mine.iterrows():
            if entry["window"] >= 0:
                t0 = min(entry["window"] * window, clip_end)
                t1 = min((entry["window"] + 1) * window, clip_end)
            else:
                t0, t1 = float(tokens["t0"].min()), clip_end
            records.append(
                {
                    "kind": mass.kind,
                    "segment": int(segment),
                    "label": entry["label"],
                    "t0": t0,
                    "t1": t1,
                    "mass": float(per_segment[segment]),
                }
            )
    return pd.DataFrame(records, columns=["kind", "segment", "label", "t0", "t1", "mass"])


ROUND_WINDOWS = (1.0, 0.5, 0.25, 0.2, 0.1, 2.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)


def _window_seconds(mass, kept_t0: np.ndarray, windows: list[int], clip_end: float) -> float:
    """The audio window length a mass was pooled with: as recorded in its options, else the first round length
    that puts the clip's kept tokens (`floor(t0 / length)`) in exactly the captured windows."""
    recorded = mass.options.get("window_seconds")
    if recorded:
        return float(recorded)
    if not windows:
        return 1.0
    wanted = set(int(window) for window in windows)
    for length in ROUND_WINDOWS:
        if set(np.floor(kept_t0 / length + 1e-9).astype(int).tolist()) == wanted:
            return length
    return clip_end / (max(wanted) + 1)


# ----------------------------------------------------------------------------------------------------- attribution
@dataclass
class AttributionScores:
    """Per-row scores on a token map: what `AttributionOverlay` draws.

    Attributes:
        token_map: the map the scores index (one score per row).
        scores: `(rows,)` float64, NaN where a row was not scored.
        method, target: optional descriptions for titles.
        media: a `Prompt` (or `Run`) holding the pixels, when the result carries one.
    """

    token_map: object
    scores: np.ndarray
    method: str = ""
    target: str = ""
    media: object = None


def attribution_scores(result, media=None) -> AttributionScores:
    """Read per-row scores from an attribution-like result.

    Args:
        result: an object with `.token_map` (a TokenMap) and `.scores` (one float per token-map row, NaN where not
            scored), optionally `.method`, `.target` and `.prompt` / `.run`; or a `(token_map, scores)` pair.
        media: a `Prompt` or `Run` to take pixels from (default: the result's own `.prompt` / `.run`, if any).
    Raises:
        OmniLabInputError: the result carries no token map or scores, or their lengths differ.
    """
    if isinstance(result, (tuple, list)) and len(result) == 2:
        token_map, scores = result
        method, target, own_media = "", "", None
    else:
        token_map, scores = getattr(result, "token_map", None), getattr(result, "scores", None)
        method, target = str(getattr(result, "method", "") or ""), str(getattr(result, "target", "") or "")
        own_media = getattr(result, "prompt", None) or getattr(result, "run", None)
    if token_map is None or scores is None or not hasattr(token_map, "rows"):
        raise OmniLabInputError(
            f"AttributionOverlay needs a result with .token_map (a TokenMap) and .scores (one float per row), or a "
            f"(token_map, scores) pair; got {type(result).__name__}"
        )
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != (len(token_map),):
        raise OmniLabInputError(
            f"attribution scores have {scores.size} entries but the token map has {len(token_map)} rows: give one "
            "score per token-map row (NaN where a row was not scored)"
        )
    return AttributionScores(token_map, scores, method, target, media if media is not None else own_media)


def text_scores(token_map, scores: np.ndarray):
    """Scores of the text and generated rows, in row order.

    Returns:
        DataFrame: row, modality, text, score (NaN where unscored).
    """
    import pandas as pd

    modality = np.asarray(token_map["modality"])
    rows = np.flatnonzero(np.isin(modality, ["text", "generated"]))
    return pd.DataFrame(
        {"row": rows, "modality": modality[rows], "text": token_map["text"][rows], "score": np.asarray(scores)[rows]}
    )
