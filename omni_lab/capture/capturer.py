"""What the capture session expects of one capture kind (routing, residual, attention mass, Mamba mass).

A capturer names the hook points it listens to (`listeners`), learns the prompt's token map once the reduction is
known (`set_token_map`), turns what it heard into its result (`finish`) and says, before the run, how much memory
that takes (`estimate_bytes`). The session (session.py) owns the hooks; a capturer owns its state.
"""

from __future__ import annotations

from collections.abc import Callable

FLOAT_BYTES = 4


class Capturer:
    """Base of the per-kind capturers.

    Args:
        spec: the capture's options (`specs.RoutingSpec`, `MassSpec`, `ResidualSpec`).
        model: transformers' `NemotronH_Omni_Reasoning_V3`.
        calls: the session's `hooks.Calls` (which positions the current forward call covers).
    """

    def __init__(self, spec, model, calls):
        self.spec, self.model, self.calls = spec, model, calls
        self.text_config = model.config.text_config

    def mixer(self, layer: int):
        """The mixer module (Mamba, MoE, attention or MLP) of LLM layer `layer`."""
        return self.model.language_model.model.layers[layer].mixer

    def listeners(self) -> list[tuple[str, Callable]]:
        """(hook name, `listen(value)`) pairs; each listener sees the value after any patch."""
        raise NotImplementedError

    def set_token_map(self, token_map) -> None:
        """The prompt's token map after reduction (the positions the prefill will see)."""

    def finish(self, token_map):
        """The capture's result, against the final token map (prompt rows plus generated rows)."""
        raise NotImplementedError

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        """An upper bound of the bytes the capture keeps for `prompt` (unreduced) plus `max_new_tokens`."""
        raise NotImplementedError
