"""What `AudioTimeline` draws, as plain tables: a clip's waveform envelope and log-mel features, its 80 ms tokens
with their status, the spans of dropped tokens, and the mass a query puts on the clip's segments. No plotly.

Token status is `TokenMap.status`; a mass segment's seconds are its own (`ModalityMass.segments` t0 / t1: an audio
window's bounds, or the whole clip for per-item segments); query rows are `ModalityMass.query_rows`.
"""

from __future__ import annotations

import numpy as np

from omni_lab.errors import OmniLabInputError

MASS_COLUMNS = ["kind", "segment", "label", "t0", "t1", "mass"]


def audio_items(token_map) -> list[int]:
    """Indices of the audio clips a token map holds."""
    return sorted({int(item) for item in token_map["item"][token_map.rows(modality="audio")]})


def _audio_clip(prompt, item: int):
    audios = getattr(prompt, "audios", None) or []
    if not 0 <= item < len(audios):
        raise OmniLabInputError(f"audio item {item}: the prompt holds {len(audios)} audio clip(s)")
    return audios[item]


def audio_waveform(prompt, item: int = 0, max_points: int = 2000):
    """Envelope of a clip's 16 kHz waveform: min and max per time bin.

    Returns:
        DataFrame: t (bin start, seconds from the clip's start on its video's clock, 0 for a clip of its own), low,
            high (at most `max_points` rows).
    """
    import pandas as pd

    clip = _audio_clip(prompt, item)
    wave = np.asarray(clip.waveform, dtype=np.float32)
    bins = max(1, min(len(wave), int(max_points)))
    edges = np.linspace(0, len(wave), bins + 1).astype(np.int64)
    low = np.minimum.reduceat(wave, edges[:-1]) if len(wave) else np.zeros(0)
    high = np.maximum.reduceat(wave, edges[:-1]) if len(wave) else np.zeros(0)
    start = getattr(clip, "start", 0.0)  # a video's sound track counts on the video's clock, as its tokens do
    return pd.DataFrame({"t": start + edges[:-1] / clip.sampling_rate, "low": low, "high": high})


def audio_mel(prompt, item: int = 0, max_columns: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The log-mel features the audio encoder received for a clip (the processor's own, 10 ms hop).

    Returns:
        (times `(C,)` seconds of each column's start, values `(mel bins, C)` float32); frames beyond `max_columns`
        are averaged in equal bins.
    """
    start = getattr(_audio_clip(prompt, item), "start", 0.0)
    features = prompt.inputs["input_features"][item].float().numpy()  # (frames, mel)
    mask = prompt.inputs.get("input_features_mask")
    if mask is not None:
        features = features[mask[item].numpy().astype(bool)]
    frames = features.shape[0]
    columns = max(1, min(frames, int(max_columns)))
    edges = np.linspace(0, frames, columns + 1).astype(np.int64)
    sums = np.add.reduceat(features, edges[:-1], axis=0)
    values = sums / np.diff(edges)[:, None]
    return start + edges[:-1] * 0.01, values.T.astype(np.float32)


def audio_tokens(token_map, item: int = 0):
    """A clip's 80 ms tokens.

    Returns:
        DataFrame: row, t0, t1, status, kept, score, merged_into, position.
    """
    import pandas as pd

    rows = np.flatnonzero(token_map.rows(modality="audio", item=item))
    status = token_map.status(rows)
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

    With `segments="audio_window"` captures each window is a row (mass over time); with per-item segments the clip
    is one row spanning it.

    Returns:
        DataFrame: kind, segment, label, t0, t1, mass; empty when nothing was captured.
    """
    import pandas as pd

    records = []
    for mass in (run.attention_mass, run.mamba_mass):
        if mass is None:
            continue
        segments = mass.segments
        mine = segments[(segments.modality == "audio") & (segments["item"] == item)]
        if mine.empty:
            continue
        rows, _ = mass.query_rows(query)
        per_segment = np.mean([mass.mass[layer].float().numpy()[:, rows].mean(axis=(0, 1)) for layer in mass.layers], 0)
        records += [
            {
                "kind": mass.kind,
                "segment": int(segment),
                "label": entry["label"],
                "t0": float(entry["t0"]),
                "t1": float(entry["t1"]),
                "mass": float(per_segment[segment]),
            }
            for segment, entry in mine.iterrows()
        ]
    return pd.DataFrame(records, columns=MASS_COLUMNS)
