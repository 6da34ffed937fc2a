"""The widgets' data layer in one namespace: plain functions (no plotly, no ipywidgets) that shape a Run into what one
view draws, each view's in a module beside it. Every fact comes from the domain objects (`TokenMap.status`,
`position_rows` / `by_position`, `answer_positions`, `partition`; `ModalityMass.query_rows`;
`combine_in_layer_order`; `Routing.load` / `entropy` / `for_token`; a reducer's own `modalities` and `rate`); these
modules only aggregate it to the size of the picture, so a real-model run (52 layers x 128 experts x 20K positions, a
256-frame video) never ships per-position arrays larger than the view.

    panels.py                media_panels / MediaPanel / panel_pixels / score_grid / media_coverage   maps, overlays
    token_reduction_data.py  panel_tokens / token_arrays / status_grid / reduction_counts            TokenReductionMap
    routing_data.py          expert_loads / routing_entropy / top_expert_strip / token_choices       ExpertRoutingView
    attention_data.py        modality_mass / head_mass / segment_mass / query_choices            ModalityAttentionView
    audio_data.py            audio_waveform / audio_mel / audio_tokens / pruned_spans / audio_mass     AudioTimeline
    attribution_data.py      attribution_scores / text_scores                                   AttributionOverlay
"""

from __future__ import annotations

from .attention_data import head_mass, mass_for_layer, mass_modalities, modality_mass, query_choices, segment_mass
from .attribution_data import AttributionScores, attribution_scores, text_scores
from .audio_data import audio_items, audio_mass, audio_mel, audio_tokens, audio_waveform, pruned_spans
from .panels import MediaPanel, media_coverage, media_panels, panel_pixels, score_grid, shrink
from .routing_data import ExpertStrip, expert_loads, position_label, routing_entropy, token_choices, top_expert_strip
from .token_reduction_data import (
    RATE_REDUCERS,
    make_reducer,
    panel_tokens,
    reducer_choices,
    reduction_counts,
    slider_setting,
    status_grid,
    token_arrays,
)

__all__ = [
    "RATE_REDUCERS",
    "AttributionScores",
    "ExpertStrip",
    "MediaPanel",
    "attribution_scores",
    "audio_items",
    "audio_mass",
    "audio_mel",
    "audio_tokens",
    "audio_waveform",
    "expert_loads",
    "head_mass",
    "make_reducer",
    "mass_for_layer",
    "mass_modalities",
    "media_coverage",
    "media_panels",
    "modality_mass",
    "panel_pixels",
    "panel_tokens",
    "position_label",
    "pruned_spans",
    "query_choices",
    "reducer_choices",
    "reduction_counts",
    "routing_entropy",
    "score_grid",
    "segment_mass",
    "shrink",
    "slider_setting",
    "status_grid",
    "token_arrays",
    "text_scores",
    "token_choices",
    "top_expert_strip",
]
