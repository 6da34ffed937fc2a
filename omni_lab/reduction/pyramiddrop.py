"""PyramidDrop (Xing et al., CVPR 2025, arXiv 2410.17247): drop media tokens in stages inside the LLM, ranked by the
last instruction token's attention.

Official code: github.com/Cooperx521/PyramidDrop, `pdrop_rank_drop` in `llava/model/modeling_llama_pdrop.py`. There
the LLM is split into stages at layers `layer_list = [8, 16, 24]` of LLaVA's 32; at each boundary the image tokens
are ranked by the softmax attention of the last instruction token (the prompt's last position) over all keys,
averaged over heads, computed with the next layer's own query / key projections, and the top `int(N x ratio)` are
kept, `ratio` halving at every stage (lambda = 0.5: 100 % -> 50 % -> 25 % -> 12.5 %).

On this hybrid model (docs/token_reduction.md §1): only the attention layers (5, 12, 19, 26, 33, 42 of the release's
52) have queries and keys to rank with, so

- stages map onto the pattern by relative depth: each of the paper's boundaries (8/32, 16/32, 24/32 = quarter
  depths: layers 13, 26, 39 of 52) goes to the nearest attention layer, ties to the earlier: **12, 26, 42** on the
  release (3 stages, as the paper); 3 and 8 on the toy twin and `random:small` (`layers=` overrides);
- the ranking attention is the stage layer's own (its `q_proj` / `k_proj` outputs, as FastV reads them), and the
  tokens leave right *after* that layer instead of before it: on this model the layer that can rank is an attention
  layer, and reusing its projections adds only the one-query softmax (2·H·L·d_h FLOPs) instead of recomputing keys;
- `PyramidDrop(rate)` keeps `max(1, floor(N (1 - rate)))` of each media item's N tokens after the last stage, with a
  geometric schedule in between (lambda = (1 - rate)^(1/S) per stage, S stages): `PyramidDrop(0.875)` on three
  stages is the paper's lambda = 0.5. Each media item keeps its own share (the paper has one image);
- the query is the last prompt position (the assistant turn's opening, the position whose logits give the first
  answer token): the official `prompt_total_len - 1`.
"""

from __future__ import annotations

import numpy as np

from .in_llm import StagedReducer, attention_flops, attention_from


class PyramidDrop(StagedReducer):
    """Drop media tokens at several attention layers, ranked by the last prompt token's attention.

    Args:
        rate: fraction of each media item's tokens gone after the last stage, in [0, 1).
        layers: the attention layers to rank at (default: the paper's quarter depths mapped onto the model).
        modalities: which media compete (default image and video).
    """

    name = "PyramidDrop"
    default_depths = (8 / 32, 16 / 32, 24 / 32)

    def scores(self, hook, layer, q, k, mixer) -> np.ndarray:
        """(alive,) the last position's attention to every position of the sequence at `layer`, mean over heads."""
        last = q.shape[2] - 1
        hook.flops += attention_flops(q, 1)
        return attention_from(q, k, np.array([last]), mixer.scaling)[0].cpu().numpy()
