"""The three panels beside each answer: token reduction, expert routing, modality attention.

One seam, `figures(run)`, so the app and the `/ask` endpoint stay the same whatever draws the panels. The panels are
the notebook widgets' own figure builders (`omni_lab.widgets`), so the playground and a notebook show a run alike:

- token reduction: `TokenReductionMap` (kept, merged and pruned tokens over the pixels they came from) when the
  prompt has an image or a video; `AudioTimeline` (waveform, mel features and the 80 ms tokens, kept or pruned) when
  it has audio only; for text alone, the prompt's tokens per modality (`token_counts_figure`);
- expert routing: `ExpertRoutingView` (layer x expert load by modality, entropy, top expert per token);
- modality attention: `ModalityAttentionView` (attention and Mamba mass of the answer over modalities, per layer).
"""

from __future__ import annotations

STATUS_COLOURS = {"kept": "#1f77b4", "merged": "#2ca02c", "pruned": "#d62728"}


def token_counts_figure(run):
    """Stacked bars: the prompt's tokens per modality that reached the LLM (kept, merged into another) or were pruned.

    Args:
        run: a `Run`.
    Returns:
        `plotly.graph_objects.Figure`.
    """
    import numpy as np
    import plotly.graph_objects as go

    token_map = run.token_map
    modality = np.asarray(token_map["modality"])
    prompt_rows = modality != "generated"
    kept = np.asarray(token_map["kept"], dtype=bool)
    merged = np.asarray(token_map["merged_into"]) >= 0
    status = np.where(kept, "kept", np.where(merged, "merged", "pruned"))
    names = [name for name in ("text", "image", "video", "audio") if (modality[prompt_rows] == name).any()]
    figure = go.Figure()
    for label, colour in STATUS_COLOURS.items():
        counts = [int(((modality == name) & (status == label) & prompt_rows).sum()) for name in names]
        figure.add_bar(name=label, x=names, y=counts, marker_color=colour, text=counts, textposition="inside")
    figure.update_layout(
        barmode="stack",
        title="Prompt tokens per modality (no image, video or audio to map)",
        xaxis_title="modality",
        yaxis_title="tokens",
        legend_title="status",
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return figure


def reduction_figure(run):
    """The token-reduction panel: `TokenReductionMap` for pictures, `AudioTimeline` for audio alone, else the counts."""
    if run.token_map.rows(modality=("image", "video")).any():
        from omni_lab.widgets import TokenReductionMap

        return TokenReductionMap(run).figure()
    if run.token_map.rows(modality="audio").any():
        from omni_lab.widgets import AudioTimeline

        return AudioTimeline(run).figure()
    return token_counts_figure(run)


def figures(run) -> tuple:
    """(token reduction, expert routing, modality attention) plotly figures of one run.

    Args:
        run: a `Run` that captured "routing", attention mass and Mamba mass (see `handlers.captures`).
    Returns:
        three `plotly.graph_objects.Figure`.
    """
    from omni_lab.widgets import ExpertRoutingView, ModalityAttentionView

    return reduction_figure(run), ExpertRoutingView(run).figure(), ModalityAttentionView(run).figure()
