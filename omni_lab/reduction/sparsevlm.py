"""SparseVLM (Zhang et al., ICML 2025, arXiv 2410.04417): text-guided selection of media tokens inside the LLM, with
the pruned tokens recycled into a few merged ones.

Official code: github.com/Gumpest/SparseVLMs, `LlamaDynamicvitModel.forward` in
`llava/model/language_model/modelling_sparse_llama.py`, `attn_postprocess_topk` in `score.py` and `cluster_and_merge`
in `utils.py`:

1. raters: on the LLM's input embeddings, `softmax_over_text(V @ Tᵀ).mean(over visual)` gives each text token after
   the image its relevance to the visual tokens; the raters are the text tokens above the mean relevance;
2. at the sparsification layers (2, 6, 15 of LLaVA's 32) each visual token is scored by the attention the raters
   give it (softmax over all keys, mean over heads, mean over raters) and the top ones are kept
   (`sparse_token_list_*`: a fixed count per layer);
3. recycling: of the tokens dropped at the layer, the 30 % best scored (+1) are clustered by density peaks (DPC-kNN:
   k = the cluster count nearest distances give a density, the distance to the nearest denser token a separation,
   the centres are the top density x separation, every token joins its nearest centre) into int(R / 10) + 1 clusters,
   and each cluster's mean re-enters the sequence as one token.

On this hybrid model (docs/token_reduction.md §1):

- stages map by relative depth onto the attention layers (the only ones with attention to read): 2/32, 6/32, 15/32
  of the release's 52 layers are 3.3, 9.8, 24.4 -> nearest attention layers **5, 12, 26** (ties to the earlier);
  3 and 8 on the toy twin and `random:small` (deduplicated; `layers=` overrides). The scores are that layer's own
  attention (its `q_proj` / `k_proj` outputs), and the tokens leave after the layer, as in the official code;
- the raters are the text positions after the last media token (the question and the assistant turn's opening),
  chosen once from the LLM's input embeddings exactly as the official rule does;
- the official per-layer counts are for LLaVA's 576 tokens (and keep more than the count: kept + clusters). Here each
  media item keeps a geometric schedule ending at `max(1, floor(N (1 - rate)))` after the last stage, and the clusters
  count inside that budget: `m` top-scored tokens + `c` clusters = the stage's count, with c = int(R / 10) + 1,
  R = int(0.3 x dropped) + 1, so `budget(item)` is exact. The rank-based adaptive count of the paper is not in the
  official code path either (its `rank` is fixed to 0);
- a cluster re-enters at its centre token's position (the official appends them after the kept visual tokens): the
  Mamba layers read order, and the centre keeps its place in the token map; the other members are recorded as merged
  into it. DPC-kNN's random tie-breaking noise is replaced by the lower index, so runs reproduce.
"""

from __future__ import annotations

import numpy as np
import torch

from .in_llm import StagedReducer, attention_flops, attention_from

RECYCLE_SHARE = 0.3  # the official "Top 30%" of the dropped tokens
TOKENS_PER_CLUSTER = 10  # cluster_num = int(R / 10) + 1


def raters(inputs: torch.Tensor, visual: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The text positions whose relevance to the visual tokens is above the mean (SparseVLM's rater selection).

    Args:
        inputs: (1, L, D) the LLM's input embeddings.
        visual: positions of the candidate media tokens; text: positions of the text tokens after the last media.
    Returns:
        the rater positions (a subset of `text`, at least one).
    """
    if len(text) == 0:
        return text
    v = inputs[0, torch.as_tensor(visual, dtype=torch.long)].float()  # (V, D)
    t = inputs[0, torch.as_tensor(text, dtype=torch.long)].float()  # (T, D)
    relevance = torch.softmax(v @ t.T, dim=1).mean(dim=0)  # (T,)
    chosen = text[(relevance > relevance.mean()).cpu().numpy()]
    return chosen if len(chosen) else text[[int(torch.argmax(relevance))]]


def cluster_count(dropped: int) -> tuple[int, int]:
    """(R recycled, c clusters) for `dropped` tokens: R = int(0.3 x dropped) + 1 (at most dropped), c = int(R/10)+1."""
    recycled = min(dropped, int(RECYCLE_SHARE * dropped) + 1)
    return recycled, min(recycled, int(recycled / TOKENS_PER_CLUSTER) + 1)


def density_peak_clusters(features: torch.Tensor, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """DPC-kNN as SparseVLM's `cluster_and_merge` computes it, deterministic.

    Args:
        features: (R, C) the recycled tokens' hidden states.
        clusters: c, the number of clusters (also the k of the nearest-neighbour density).
    Returns:
        centres `(c,)` (indices into R, by decreasing density x separation) and assignment `(R,)` (each token's
        cluster, 0..c-1; a centre is in its own cluster).
    """
    x = features.float()
    count, width = x.shape
    squared = (x * x).sum(dim=1)
    distance = (squared[:, None] + squared[None, :] - 2 * x @ x.T).clamp(min=0).sqrt() / width**0.5  # (R, R)
    nearest = torch.topk(distance, k=min(clusters, count), dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))  # (R,)
    index = torch.arange(count)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (index[None, :] < index[:, None])
    )  # [i, j]: j is denser than i (ties: the lower index is denser)
    separation = torch.where(denser, distance, distance.max()).min(dim=-1).values  # (R,)
    score = (separation * density).cpu().numpy()
    centres = np.argsort(-score, kind="stable")[:clusters]
    assignment = distance[:, torch.from_numpy(centres)].argmin(dim=1).cpu().numpy()  # first centre on ties
    assignment[centres] = np.arange(len(centres))
    return centres, assignment


class SparseVLM(StagedReducer):
    """Text-guided media-token sparsification at attention layers, with recycling of the dropped tokens.

    Args:
        rate: fraction of each media item's tokens gone after the last stage, in [0, 1).
        layers: the attention layers to rank at (default: the paper's 2, 6, 15 of 32 mapped onto the model).
        modalities: which media compete (default image and video).
        recycle: merge the best of the dropped tokens into clusters (the paper's token recycling).
    """

    name = "SparseVLM"
    default_depths = (2 / 32, 6 / 32, 15 / 32)

    def __init__(self, rate: float, layers=None, modalities=("image", "video"), recycle: bool = True):
        super().__init__(rate, layers, modalities)
        self.recycle_tokens = bool(recycle)

    def __repr__(self) -> str:
        base = super().__repr__()
        return base if self.recycle_tokens else base[:-1] + ", recycle=False)"

    def rater_positions(self, hook) -> np.ndarray:
        """Rater positions (indices into the sequence now alive), chosen once from the LLM's input embeddings."""
        if getattr(hook, "_raters", None) is None:
            media = np.flatnonzero(np.isin(hook.position_modality, ("image", "video", "audio")))
            candidates = np.flatnonzero(np.isin(hook.position_modality, self.modalities))
            last_media = media.max() if len(media) else -1
            text = np.arange(last_media + 1, len(hook.position_modality))
            hook._raters = raters(hook.inputs, candidates, text) if len(candidates) else text
            hook.flops += 2.0 * len(candidates) * len(text) * hook.inputs.shape[-1]
        return np.searchsorted(hook.alive, hook._raters)  # text positions are never dropped

    def scores(self, hook, layer, q, k, mixer) -> np.ndarray:
        """(alive,) the raters' attention to every position at `layer`: mean over heads, then over raters."""
        chosen = self.rater_positions(hook)
        hook.flops += attention_flops(q, len(chosen))
        return attention_from(q, k, chosen, mixer.scaling).mean(dim=0).cpu().numpy()

    def recycle(self, hook, layer, hidden, mine, order, target, scores) -> tuple[int, dict]:
        """Keep m top-scored tokens and c cluster centres, m + c = target: c = clusters(R), R recycled of the n - m
        dropped (`cluster_count`); {dropped index: its cluster's centre}."""
        if not self.recycle_tokens or target < 2:
            return target, {}
        kept = target - 1  # m + clusters(n - m) falls by 0 or 1 per step of m: the largest m <= target hits it
        while kept > 1 and kept + cluster_count(len(mine) - kept)[1] > target:
            kept -= 1
        recycled_count, clusters = cluster_count(len(mine) - kept)
        if kept + clusters != target:
            return target, {}
        recycled = order[kept : kept + recycled_count]  # the best scored of the dropped ones
        features = hidden[0, torch.from_numpy(recycled).to(hidden.device)]
        hook.flops += 2.0 * len(recycled) ** 2 * features.shape[-1]  # the pairwise distances
        centres, assignment = density_peak_clusters(features, clusters)
        merges = {int(recycled[i]): int(recycled[centres[assignment[i]]]) for i in range(len(recycled))}
        return kept, {source: into for source, into in merges.items() if source != into} | {
            int(recycled[centre]): int(recycled[centre]) for centre in centres
        }
