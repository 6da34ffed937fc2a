"""FastV (arXiv 2403.06764): drop the visual tokens that receive the least attention, inside the LLM.

At attention layer K (the first possible K in this model is 5: only layers 5, 12, 19, 26, 33, 42 attend), every
media token of the chosen modalities is scored by the attention it receives, averaged over heads and over all
queries of the prompt; the lowest `rate` share of them is dropped from the hidden states *after* layer K. Layers
0..K see the whole prompt; every later layer sees the shorter sequence — including the Mamba layers, whose
recurrence then runs over a different sequence than the model was trained on: a real behavioural change to study,
not only a saving (docs/token_reduction.md §3). Decoding continues on the shortened caches.

The scores are exact softmax probabilities computed block by block from the layer's own queries and keys (no L × L
matrix is kept). FastV installs its hooks through the run's `HookSession` (`FastV.install`, called by the capture
session) and hands back its decision as a value (`LLMDrop`). Captures follow the shorter sequence (the session's
`Calls.positions(layer)`: a dropped position is absent from the layers after K); cached or patched LLM points and
LLM-side interventions are refused: they index positions of the full sequence, which no longer exist after K.
Recomputing the probabilities costs another 2·H·L²·d_h FLOPs at the layer (`scoring_flops`, in the run's ledger):
SDPA and flash kernels return none, and FastV needs them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import validate
from ..capture.results import LLMDrop
from ..errors import OmniLabInputError
from ..modalities import MEDIA, VISUAL
from ..presets import layers
from .base import check_rate


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

    def __init__(self, layer: int, rate: float, modalities=VISUAL):
        rate = check_rate("FastV", rate)
        layer = validate.number("FastV layer", layer, low=0, integer=True)
        if isinstance(modalities, str):
            modalities = (modalities,)
        unknown = set(modalities) - set(MEDIA)
        if unknown:
            raise OmniLabInputError(f"FastV modalities {sorted(unknown)}: use image, video, audio")
        self.layer, self.rate, self.modalities = int(layer), float(rate), tuple(modalities)

    def __repr__(self) -> str:
        return f"FastV(layer={self.layer}, rate={self.rate})"

    def budget(self, candidates) -> int:
        """Media tokens kept after the layer, of `candidates` competing ones (a count, or a `ReductionItem`: what
        an equal-budget control keeps of that item; FastV itself ranks all candidates of the prompt together)."""
        candidates = getattr(candidates, "num_tokens", candidates)
        return max(1, int(candidates * (1 - self.rate))) if candidates else 0

    def scoring_flops(self, text_config, lengths: dict) -> float:
        """The attention probabilities FastV recomputes at its layer (every query, every key): 2 · H · L² · d_h.

        Args:
            text_config: the LLM's config; lengths: {layer: sequence length there}.
        """
        heads, head_dim = text_config.num_attention_heads, text_config.head_dim
        return float(sum(2 * heads * length**2 * head_dim for length in lengths.values()))

    def install(self, hooks, model) -> FastVHook:
        """Register FastV's hooks on `hooks` (a `capture.hooks.HookSession`) for one run.

        Args:
            hooks: the run's `HookSession`; leaving it removes FastV's hooks with the others.
            model: transformers' `NemotronH_Omni_Reasoning_V3`.
        Returns:
            `FastVHook`: give it the prompt positions' modalities (`set_positions`) before the prefill; its
            `decision()` is the `LLMDrop` once the prefill has run.
        Raises:
            OmniLabInputError: `layer` is not an attention layer of this model.
        """
        from .in_llm import check_attention_implementation

        check_attention_implementation(self, model)
        attention = [info.index for info in layers(model) if info.kind == "attention"]
        if self.layer not in attention:
            raise OmniLabInputError(f"FastV layer {self.layer} is not an attention layer; those are {attention}")
        return FastVHook(self, model.language_model.model.layers[self.layer], hooks)


class FastVHook:
    """FastV's hooks for one run: read the layer's queries and keys, cut the sequence after the layer at the
    prefill, and keep the decision.

    Args:
        reducer: the `FastV`.
        block: the decoder layer `reducer.layer` (its mixer is an attention mixer).
        hooks: the `HookSession` to register on.
    """

    def __init__(self, reducer: FastV, block, hooks):
        self.reducer, self.block = reducer, block
        self.position_modality: np.ndarray | None = None
        self._projected: dict = {}
        self._decision: LLMDrop | None = None
        hooks.on_output(block.mixer.q_proj, self._on_projection("q"))
        hooks.on_output(block.mixer.k_proj, self._on_projection("k"))
        hooks.on_output(block, self._on_block)

    def set_positions(self, position_modality: np.ndarray) -> None:
        """The modality of each prompt position the LLM will see (the token map's kept rows in position order)."""
        self.position_modality = np.asarray(position_modality)

    def decision(self) -> LLMDrop | None:
        """Which prompt positions stay after the layer, and their scores; None before the prefill."""
        return self._decision

    def _on_projection(self, key: str):
        def hook(module, inputs, output):
            self._projected[key] = output

        return hook

    def _on_block(self, module, inputs, output):
        modality = self.position_modality
        if self._decision is not None or modality is None or output.shape[1] != len(modality):
            return None  # decoding: the prefill already decided
        reducer, mixer = self.reducer, self.block.mixer
        q = self._projected.pop("q").reshape(1, output.shape[1], -1, mixer.head_dim).transpose(1, 2)
        k = self._projected.pop("k").reshape(1, output.shape[1], -1, mixer.head_dim).transpose(1, 2)
        received = received_attention(q, k, mixer.scaling).cpu().numpy()  # (L,)
        candidates = np.isin(modality, reducer.modalities)
        keep = np.ones(len(modality), dtype=bool)
        chosen = np.flatnonzero(candidates)
        order = chosen[np.argsort(-received[chosen], kind="stable")]
        keep[order[reducer.budget(len(chosen)) :]] = False
        self._decision = LLMDrop(reducer.layer, keep, np.where(candidates, received, np.nan))
        return output[:, torch.from_numpy(keep).to(output.device)]
