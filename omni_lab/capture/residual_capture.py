"""Residual capture: per layer and position, the norm of the residual stream entering the layer, the norm of the
mixer's contribution to it, and the cosine between the two.

Listens to `llm.layers.{i}.in` (the stream before the layer's norm) and `llm.layers.{i}.{mixer}.out` (what the mixer
adds back), call by call. After an in-LLM reducer dropped prompt positions, a later layer's values are spread back
onto the prompt's positions (`Calls.spread`): NaN at a dropped position.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..presets import layers
from .kinds import FLOAT_BYTES, CaptureKind, register

_VALUES = ("residual_norm", "mixer_norm", "cosine")


@register
class ResidualCapture(CaptureKind):
    """`capture=["residual"]`: a DataFrame of residual and mixer norms (and their cosine) per layer and position."""

    name = "residual"
    follows_drops = True

    def setup(self) -> None:
        self.layers = layers(self.model)
        self.state = {info.index: defaultdict(list) for info in self.layers}
        self._entering: dict[int, torch.Tensor] = {}

    def listeners(self):
        pairs = []
        for info in self.layers:
            pairs.append((f"llm.layers.{info.index}.in", self._on_input(info.index)))
            pairs.append((f"{info.hook_prefix}.out", self._on_mixer_out(info.index)))
        return pairs

    def _on_input(self, layer: int):
        def listen(hidden):
            self._entering[layer] = hidden.detach()

        return listen

    def _on_mixer_out(self, layer: int):
        state = self.state[layer]

        def listen(contribution):
            residual = self._entering.pop(layer).float()
            contribution = contribution.detach().float()
            cosine = torch.nn.functional.cosine_similarity(residual, contribution, dim=-1)
            values = {
                "residual_norm": residual.norm(dim=-1),
                "mixer_norm": contribution.norm(dim=-1),
                "cosine": cosine,
            }
            for key, value in values.items():
                state[key].append(self.calls.spread(value.reshape(-1).cpu(), layer, float("nan")))

        return listen

    def finish(self, token_map):
        """DataFrame: layer, kind (the release's letter: M, E, *, -), position, residual_norm, mixer_norm, cosine."""
        import pandas as pd

        frames = []
        for info in self.layers:
            values = {key: torch.cat(self.state[info.index][key]).numpy() for key in _VALUES}
            positions = np.arange(len(values["cosine"]))
            frames.append(pd.DataFrame({"layer": info.index, "kind": info.letter, "position": positions, **values}))
        return pd.concat(frames, ignore_index=True)

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        return len(layers(self.model)) * (len(prompt.token_map) + max_new_tokens) * len(_VALUES) * FLOAT_BYTES
