"""FastV (arXiv 2403.06764): drop the visual tokens that receive the least attention, inside the LLM.

At attention layer K (the first possible K in this model is 5: only layers 5, 12, 19, 26, 33, 42 attend), every
media token of the chosen modalities is scored by the attention it receives, averaged over heads and over all
queries of the prompt; the lowest `rate` share of them is dropped from the hidden states *after* layer K. Layers
0..K see the whole prompt; every later layer sees the shorter sequence — including the Mamba layers, whose
recurrence then runs over a different sequence than the model was trained on: a real behavioural change to study,
not only a saving (../shared/reference/token_reduction.md §A.4). Decoding continues on the shortened caches.

The scores are exact softmax probabilities computed block by block from the layer's own queries and keys (no L × L
matrix is kept). FastV cannot be combined with captures or LLM-side interventions yet: those index positions of the
full sequence, which no longer exist after layer K.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import OmniLabInputError


def received_attention(q: torch.Tensor, k: torch.Tensor, scale: float, block: int = 256) -> torch.Tensor:
    """Causal attention each key receives, averaged over query heads and queries.

    Args:
        q: (1, Hq, L, D) queries; k: (1, Hkv, L, D) keys (query head h reads kv head h // (Hq // Hkv)).
        scale: score scale.
    Returns:
        (L,) float32: Σ_t P[t, s] / (Hq · L).
    """
    _, q_heads, length, _ = q.shape
    k = k.float().repeat_interleave(q_heads // k.shape[1], dim=1)  # (1, Hq, L, D)
    q = q.float()
    received = q.new_zeros(length)
    keys = torch.arange(length, device=q.device)
    for start in range(0, length, block):
        stop = min(start + block, length)
        scores = q[0, :, start:stop] @ k[0].transpose(-1, -2) * scale  # (Hq, bq, L)
        queries = torch.arange(start, stop, device=q.device)
        scores = scores.masked_fill(keys[None, :] > queries[:, None], -math.inf)
        received += torch.softmax(scores, dim=-1).sum(dim=(0, 1))  # (L,)
    return received / (q_heads * length)


class FastV:
    """Drop the `rate` share of media tokens least attended at attention layer `layer`, for all later layers.

    Args:
        layer: an attention layer of the LLM (5, 12, 19, 26, 33 or 42 on the released model).
        rate: fraction of the chosen media tokens to drop.
        modalities: which media tokens compete (default the visual ones).
    """

    in_llm = True

    def __init__(self, layer: int, rate: float, modalities=("image", "video")):
        if not 0.0 <= float(rate) < 1.0:
            raise OmniLabInputError(f"FastV rate must be in [0, 1), got {rate}")
        unknown = set(modalities) - {"image", "video", "audio"}
        if unknown:
            raise OmniLabInputError(f"FastV modalities {sorted(unknown)}: use image, video, audio")
        self.layer, self.rate, self.modalities = int(layer), float(rate), tuple(modalities)

    def __repr__(self) -> str:
        return f"FastV(layer={self.layer}, rate={self.rate})"

    def budget(self, candidates: int) -> int:
        """Media tokens kept after the layer, of `candidates` competing ones."""
        return max(1, int(candidates * (1 - self.rate))) if candidates else 0

    @contextmanager
    def installed(self, model, position_modality: np.ndarray):
        """Hook layer `layer` for one run; yields a dict that receives `keep` (bool per prompt position) and
        `scores` (float per prompt position, NaN for non-candidates) after the prefill."""
        pattern = model.config.text_config.hybrid_override_pattern
        if not 0 <= self.layer < len(pattern) or pattern[self.layer] != "*":
            attention = [i for i, kind in enumerate(pattern) if kind == "*"]
            raise OmniLabInputError(f"FastV layer {self.layer} is not an attention layer; those are {attention}")
        block = model.language_model.model.layers[self.layer]
        mixer = block.mixer
        record: dict = {}
        projected: dict = {}

        def on_q(module, inputs, output):
            projected["q"] = output

        def on_k(module, inputs, output):
            projected["k"] = output

        def on_block(module, inputs, output):
            if "keep" in record or output.shape[1] != len(position_modality):
                return None  # decoding: the prefill already decided
            head_dim = mixer.head_dim
            q = projected["q"].reshape(1, output.shape[1], -1, head_dim).transpose(1, 2)
            k = projected["k"].reshape(1, output.shape[1], -1, head_dim).transpose(1, 2)
            received = received_attention(q, k, mixer.scaling).cpu().numpy()
            candidates = np.isin(position_modality, self.modalities)
            keep = np.ones(len(position_modality), dtype=bool)
            chosen = np.flatnonzero(candidates)
            order = chosen[np.argsort(-received[chosen], kind="stable")]
            keep[order[self.budget(len(chosen)) :]] = False
            record["keep"], record["scores"] = keep, np.where(candidates, received, np.nan)
            return output[:, torch.from_numpy(keep).to(output.device)]

        handles = [
            mixer.q_proj.register_forward_hook(on_q),
            mixer.k_proj.register_forward_hook(on_k),
            block.register_forward_hook(on_block),
        ]
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()
