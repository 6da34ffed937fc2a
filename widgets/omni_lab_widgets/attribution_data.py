"""What `AttributionOverlay` draws, as plain data: per-row scores read from any attribution-like result, and the
scores of the text and answer tokens. Its pictures are the media panels (`panels.py`); no plotly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omni_lab.errors import OmniLabInputError
from omni_lab.modalities import MEDIA, MODALITIES

WORD_MODALITIES = tuple(m for m in MODALITIES if m not in MEDIA)  # rows drawn as words: the prompt's and the answer's


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

    rows = np.flatnonzero(token_map.rows(modality=WORD_MODALITIES))
    return pd.DataFrame(
        {
            "row": rows,
            "modality": token_map["modality"][rows],
            "text": token_map["text"][rows],
            "score": np.asarray(scores)[rows],
        }
    )
