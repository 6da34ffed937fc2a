"""Activations cached by hook name (`run(cache=["llm.layers.*.attn.out"])`): stored as the hooks see them (after any
patch), moved to `cache_device` and optionally cast, one tensor per forward call, joined along the positions at the
end. `llm.layers.{i}.mamba.conv` is derived (transformers computes the conv with a function, not a module): it is
rebuilt from the layer's `in_proj` output with the conv state carried across calls.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from .kinds import FLOAT_BYTES
from .mass_capture import MambaInputs


class ActivationCache:
    """The cached hook points of one run.

    Args:
        names: hook names to keep (already expanded from patterns).
        points: {name: `HookPoint`} of the model and prompt.
        model: transformers' model (for the derived Mamba conv).
        device, dtype: where cached tensors go and their dtype (None keeps it).
    """

    def __init__(self, names: list[str], points: dict, model, device="cpu", dtype=None):
        self.names, self.points, self.model = list(names), points, model
        self.device, self.dtype = device, dtype
        self.stored: dict[str, list] = defaultdict(list)

    def store(self, name: str, value) -> None:
        """Keep `value` when `name` is cached (a router's `(logits, weights, indices)` keeps the logits)."""
        if name not in self.names:
            return
        if isinstance(value, tuple):
            value = value[0]
        value = value.detach().to(self.device)
        if self.dtype is not None and value.is_floating_point():
            value = value.to(self.dtype)
        self.stored[name].append(value)

    def listeners(self):
        """(hook name, listener) pairs that rebuild the derived `mamba.conv` points from `mamba.in_proj`."""
        pairs = []
        for name in self.names:
            if name.endswith(".mamba.conv"):
                layer = self.points[name].layer
                pairs.append((f"llm.layers.{layer}.mamba.in_proj", self._conv_listener(name, layer)))
        return pairs

    def _conv_listener(self, name: str, layer: int):
        inputs = MambaInputs(self.model.language_model.model.layers[layer].mixer)

        def listen(projected):
            conv, _, _, _ = inputs(projected)
            self.store(name, conv)

        return listen

    def finish(self) -> dict:
        """{name: tensor}: LLM points joined over calls along the positions; others as stored."""
        cache = {}
        for name in self.names:
            values = self.stored.get(name, [])
            if not values:
                continue
            if self.points[name].stage == "llm" and len(values) > 1:
                cache[name] = torch.cat(values, dim=-2)  # prompt call + one call per generated token
            else:
                cache[name] = values[0] if len(values) == 1 else values
        return cache

    def estimate_bytes(self, prompt, max_new_tokens: int) -> dict[str, int]:
        """{"cache {name}": bytes}: width per token (or patch, audio frame) times how many the run can reach."""
        item_bytes = 2 if self.dtype is not None and str(self.dtype).endswith("16") else FLOAT_BYTES
        tokens = {
            "llm": len(prompt.token_map) + max_new_tokens,
            "reduce": len(prompt.token_map),
            "vision": _patches(prompt.inputs),
            "audio": int(prompt.inputs["input_features"].shape[:2].numel()) if "input_features" in prompt.inputs else 0,
        }
        return {
            f"cache {name}": self.points[name].width * tokens[self.points[name].stage] * item_bytes
            for name in self.names
        }


def _patches(inputs) -> int:
    """16-px patches the vision tower sees for the prompt's images and video frames."""
    patches = int(inputs["image_grid_hw"].prod(-1).sum()) if "image_grid_hw" in inputs else 0
    if "pixel_values_videos" in inputs:
        videos = inputs["pixel_values_videos"]
        patches += int(np.prod(videos.shape[:2])) * (videos.shape[-2] // 16) * (videos.shape[-1] // 16)
    return patches
