"""Captures of your own without a class, and captures of gradients.

    run = lab.run(p, capture={"llm.layers.3.attn.out": lambda value: value.norm(dim=-1)})
    run.captures["llm.layers.3.attn.out"]          # what the function returned, one entry per forward call (step)

    result = lab.grad(p, target="left", capture=["grad:llm.layers.*.out", "routing"])
    result.captures["grad:llm.layers.*.out"]["llm.layers.3.attn.out"]   # d target / d activation, (positions, width)

A function capture is a `FunctionCapture` (a registered-kind instance like any other): `capture={key: fn}` with `key`
a hook name or a glob pattern (`lab.hook_names()`); `fn(value)` sees the value after any patch and its return value
is saved for each forward call (the prompt is step 0, each generated token one more step); with a pattern the result
is {hook name: [per step]}. A gradient capture records, on the gradient path (`Lab.grad`), the gradient of the
target with respect to the activations at the named points, as autograd computes it: a tensor hook on each
activation stores its gradient when the target is backpropagated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from ..errors import OmniLabInputError
from .kinds import CaptureKind

GRAD_PREFIX = "grad:"


class FunctionCapture(CaptureKind):
    """`capture={hook_or_pattern: fn}`: `fn(value)` at every matching hook point, saved per forward call.

    Args:
        key: a hook name or a glob pattern; also the capture's name in `run.captures`.
        function: `value -> anything` (a router point's value is `(logits, weights, indices)`).
    """

    def __init__(self, key: str, function: Callable):
        if not isinstance(key, str) or not callable(function):
            raise OmniLabInputError(
                f"capture={{{key!r}: {function!r}}}: give {{hook name or pattern: function(value)}}, e.g. "
                "{'llm.layers.3.attn.out': lambda value: value.norm(dim=-1)}"
            )
        self.key, self.function = key, function
        self.name = key

    def options(self) -> dict:
        return {"key": self.key, "function": getattr(self.function, "__name__", repr(self.function))}

    def setup(self) -> None:
        from .hooks import expand_names, hook_points

        self.hooks = expand_names(self.key, hook_points(self.model))
        self.saved: dict[str, list] = defaultdict(list)

    def listeners(self):
        return [(hook, self._listener(hook)) for hook in self.hooks]

    def _listener(self, hook: str):
        def listen(value):
            self.saved[hook].append(self.function(value))

        return listen

    def finish(self, token_map):
        if len(self.hooks) == 1 and self.hooks[0] == self.key:
            return list(self.saved.get(self.key, []))
        return {hook: list(self.saved.get(hook, [])) for hook in self.hooks}


class GradientCapture(CaptureKind):
    """`capture=["grad:llm.layers.*.out"]`: the gradient of the target with respect to the activations at those hook
    points (`Lab.grad` only: runs are under inference mode and have no target).

    Result: {hook name: `(positions, width)` float32 gradient} (a router point: the gradient of its logits).
    """

    def __init__(self, pattern: str):
        if not isinstance(pattern, str) or not pattern:
            raise OmniLabInputError(f"capture 'grad:{pattern}': name hook points after 'grad:', e.g. 'grad:llm.embed'")
        self.pattern = pattern
        self.name = GRAD_PREFIX + pattern

    def options(self) -> dict:
        return {"pattern": self.pattern}

    def setup(self) -> None:
        from .hooks import expand_names, hook_points

        points = hook_points(self.model)
        self.hooks = expand_names(self.pattern, points)
        not_llm = [hook for hook in self.hooks if points[hook].stage != "llm"]
        if not_llm:
            raise OmniLabInputError(
                f"capture 'grad:{self.pattern}' matches {not_llm[:3]}: gradient captures take LLM hook points "
                "(llm.embed, llm.layers.*, llm.norm, llm.logits)"
            )
        self.gradients: dict[str, list] = defaultdict(list)

    def listeners(self):
        return [(hook, self._listener(hook)) for hook in self.hooks]

    def _listener(self, hook: str):
        def listen(value):
            tensor = value[0] if isinstance(value, tuple) else value
            if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad:
                raise OmniLabInputError(
                    f"capture 'grad:{self.pattern}' needs autograd at {hook}: gradient captures work on the gradient "
                    "path, lab.grad(prompt, target, capture=[...]), not in lab.run"
                )
            slot = len(self.gradients[hook])
            self.gradients[hook].append(None)

            def store(gradient):
                self.gradients[hook][slot] = gradient.detach().float().cpu()

            tensor.register_hook(store)

        return listen

    def finish(self, token_map):
        out = {}
        for hook in self.hooks:
            parts = [part for part in self.gradients.get(hook, []) if part is not None]
            if not parts:
                continue
            joined = torch.cat([part.reshape(-1, part.shape[-1]) for part in parts])  # (positions, width)
            out[hook] = joined
        return out
