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

from ..modalities import PROMPT, VISUAL


def token_counts_figure(run):
    """Stacked bars: the prompt's tokens per modality by status (`TokenMap.status`): kept (reached the LLM), merged
    into a kept token, or pruned; coloured from the widgets' palette (`omni_lab.widgets.palette`).

    Args:
        run: a `Run`.
    Returns:
        `plotly.graph_objects.Figure`.
    """
    import plotly.graph_objects as go

    from omni_lab.widgets.palette import STATUS_COLOURS

    token_map = run.token_map
    modality = token_map["modality"]
    status = token_map.status()
    names = [name for name in PROMPT if (modality == name).any()]
    figure = go.Figure()
    for label, colour in STATUS_COLOURS.items():
        counts = [int(((modality == name) & (status == label)).sum()) for name in names]
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
    if run.token_map.rows(modality=VISUAL).any():
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


def message_figure(title: str, message: str):
    """An empty panel that says why it is empty."""
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", width=420)
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return figure
