"""Routing capture: the experts every MoE layer chose for every position, their weights, the shared expert's norm.

Listens to `llm.layers.{i}.moe.router` (transformers' router returns `(logits, weights, indices)`: the top-k chosen
with the correction bias, weighted by the unbiased sigmoid scores normalised and scaled) and
`llm.layers.{i}.moe.shared`, call by call, so generated tokens append to the prompt's rows. After an in-LLM
reducer dropped prompt positions, a later layer's values are spread back onto the prompt's positions
(`Calls.spread`): a dropped position has expert -1 and NaN weights, scores and shared norm there.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .. import validate
from ..presets import layers
from .kinds import FLOAT_BYTES, CaptureKind, register
from .results import Routing

_INDEX_BYTES = 8


@register
class RoutingCapture(CaptureKind):
    """`capture=["routing"]` or `ol.capture.routing(scores=True)`: a `Routing` of every MoE layer.

    Args:
        scores: also keep every router's sigmoid scores `(positions, experts)`.
    """

    name = "routing"
    follows_drops = True

    def __init__(self, scores: bool = False):
        self.scores = validate.flag("scores", scores)

    def options(self) -> dict:
        return {"scores": self.scores}

    def setup(self) -> None:
        self.layers = [info for info in layers(self.model) if info.kind == "moe"]
        self.state = {info.index: defaultdict(list) for info in self.layers}

    def listeners(self):
        pairs = []
        for info in self.layers:
            pairs.append((f"{info.hook_prefix}.router", self._on_router(info.index)))
            pairs.append((f"{info.hook_prefix}.shared", self._on_shared(info.index)))
        return pairs

    def _on_router(self, layer: int):
        state = self.state[layer]

        def listen(router_output):
            logits, weights, indices = router_output
            spread = self.calls.spread
            state["experts"].append(spread(indices.detach().cpu(), layer, -1))
            state["weights"].append(spread(weights.detach().float().cpu(), layer, float("nan")))
            if self.scores:
                state["scores"].append(spread(logits.detach().float().sigmoid().cpu(), layer, float("nan")))

        return listen

    def _on_shared(self, layer: int):
        state = self.state[layer]

        def listen(output):
            norms = output.detach().float().norm(dim=-1).reshape(-1).cpu()
            state["shared_norm"].append(self.calls.spread(norms, layer, float("nan")))

        return listen

    def finish(self, token_map) -> Routing:
        order = [info.index for info in self.layers]

        def stack(key):
            return torch.stack([torch.cat(self.state[layer][key]) for layer in order])

        return Routing(
            order,
            stack("experts"),  # (layers, positions, k)
            stack("weights"),
            stack("shared_norm"),  # (layers, positions)
            token_map,
            int(self.text_config.n_routed_experts),
            stack("scores") if self.scores else None,  # (layers, positions, experts)
        )

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        text = self.text_config
        moe_layers = len(self.layers_of_kind("moe"))
        per_position = text.num_experts_per_tok * (_INDEX_BYTES + FLOAT_BYTES) + FLOAT_BYTES
        if self.scores:
            per_position += text.n_routed_experts * FLOAT_BYTES
        return moe_layers * (len(prompt.token_map) + max_new_tokens) * per_position
