"""One run's hooks: patches (interventions), cached activations, the capturers' listeners and an in-LLM reducer,
installed for the run and removed after it.

The session is hook plumbing only. It counts the language model's forward calls (the prompt is one call, each
generated token one more), so every hook knows which positions its tensor covers; per hook point it applies the
patches first, then caches the value when asked (cache.py), then hands it to the listeners of the capturers
(routing_capture.py, residual_capture.py, mass_capture.py), which own their state, result and memory estimate.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..errors import OmniLabInputError
from .cache import ActivationCache
from .hooks import Calls, HookSession, expand_names, hook_points
from .interventions import Intervention, PatchContext
from .mass_capture import AttentionMassCapture, MambaMassCapture
from .residual_capture import ResidualCapture
from .results import CaptureResults, LLMDrop
from .routing_capture import RoutingCapture
from .specs import MassSpec, ResidualSpec, RoutingSpec


def build_capturer(spec, model, calls: Calls):
    """The capturer of one capture spec (`specs.normalise` gives them)."""
    if isinstance(spec, RoutingSpec):
        return RoutingCapture(spec, model, calls)
    if isinstance(spec, ResidualSpec):
        return ResidualCapture(spec, model, calls)
    if isinstance(spec, MassSpec):
        return (AttentionMassCapture if spec.kind == "attention" else MambaMassCapture)(spec, model, calls)
    raise TypeError(f"no capturer for {spec!r}")


class CaptureSession:
    """Hooks for one run. Use `with session.installed():` around encode, reduce, prefill and decode; call
    `on_reduced` for each media item, `set_token_map` once the reduction is known (before the prefill), and
    `finish()` at the end.

    Args:
        model: transformers' `NemotronH_Omni_Reasoning_V3`.
        prompt: the `Prompt` being run (None for a forward on given embeddings: no `reduce.*` points, no
            capture estimates).
        captures: {name: spec} from `specs.normalise`.
        cache: hook names or glob patterns to store.
        interventions: `Intervention`s to apply.
        cache_device, cache_dtype: where and how cached tensors are kept.
        in_llm: an in-LLM reducer (`FastV`) to install with the other hooks, or None.
    """

    def __init__(
        self,
        model,
        prompt,
        captures: dict,
        cache=None,
        interventions=None,
        cache_device="cpu",
        cache_dtype=None,
        in_llm=None,
    ):
        self.model, self.prompt, self.captures, self.in_llm = model, prompt, captures, in_llm
        self.token_map = None if prompt is None else prompt.token_map
        self.points = hook_points(model, prompt)
        self.activations = ActivationCache(
            expand_names(cache, self.points), self.points, model, cache_device, cache_dtype
        )
        self.calls = Calls()
        self.text_config = model.config.text_config
        self.patches: dict[str, list] = defaultdict(list)
        for intervention in interventions or []:
            if not isinstance(intervention, Intervention):
                raise OmniLabInputError(f"{intervention!r} is not an intervention; use ol.ablate_tokens/patch/...")
            expand_names(intervention.point, self.points)  # raises, with suggestions, for unknown names
            if not self.points[intervention.point].patchable:
                raise OmniLabInputError(f"{intervention.point!r} can be cached but not patched")
            self.patches[intervention.point].append(intervention.function)
        self.capturers = {name: build_capturer(spec, model, self.calls) for name, spec in captures.items()}
        self.prompt_modality = np.zeros(0, dtype=object)  # modality of each prompt position after reduction
        self._in_llm_hook = None

    @property
    def cache_names(self) -> list[str]:
        return self.activations.names

    @property
    def active(self) -> bool:
        """The run needs hooks (captures, cached points, patches or an in-LLM reducer)."""
        return bool(self.captures or self.cache_names or self.patches or self.in_llm is not None)

    @property
    def needs_encoders(self) -> bool:
        """The run caches or patches a tower point, so the encoders must run even when their output is known."""
        return any(self.points[name].stage in ("vision", "audio") for name in [*self.cache_names, *self.patches])

    def estimate_bytes(self, max_new_tokens: int) -> dict[str, int]:
        """{part: bytes} the captures and cached points can reach (unreduced prompt plus `max_new_tokens`); an upper
        bound to give `budget.check`."""
        parts = {
            name: capturer.estimate_bytes(self.prompt, max_new_tokens) for name, capturer in self.capturers.items()
        }
        return {**parts, **self.activations.estimate_bytes(self.prompt, max_new_tokens)}

    def set_token_map(self, token_map) -> None:
        """The prompt's token map after reduction: the positions the LLM will see. Call before the prefill."""
        self.token_map = token_map
        self.prompt_modality = token_map.by_position("modality")
        for capturer in self.capturers.values():
            capturer.set_token_map(token_map)
        if self._in_llm_hook is not None:
            self._in_llm_hook.set_positions(self.prompt_modality)

    @property
    def llm_drop(self) -> LLMDrop | None:
        """The in-LLM reducer's decision once the prefill has run (None without one)."""
        return None if self._in_llm_hook is None else self._in_llm_hook.decision()

    # ------------------------------------------------------------------------------------------------ hooks
    def installed(self) -> HookSession:
        """A `HookSession` with every hook this run needs registered; leaving it removes them all."""
        session = HookSession()
        try:
            self._register(session)
        except BaseException:
            session.__exit__(None, None, None)
            raise
        return session

    def _register(self, session: HookSession) -> None:
        session.on_input(self.model.language_model.model, self.calls.count)
        listeners: dict[str, list] = defaultdict(list)
        for capturer in [*self.capturers.values(), self.activations]:
            for name, listen in capturer.listeners():
                listeners[name].append(listen)
        hooked = {*self.patches, *self.cache_names, *listeners}
        for name in hooked:
            point = self.points[name]
            if point.module is None:
                continue
            if point.on_input:
                session.on_input(point.module, self._input_hook(point, listeners[name]))
            else:
                session.on_output(point.module, self._output_hook(point, listeners[name]))
        if self.in_llm is not None:
            self._in_llm_hook = self.in_llm.install(session, self.model)
            self._in_llm_hook.set_positions(self.prompt_modality)

    def _context(self, point) -> PatchContext:
        if point.stage != "llm":
            return PatchContext(point.name, None, None, None, self.token_map, 0, self.text_config)
        start, length = self.calls.start, self.calls.length
        return PatchContext(
            point.name, start, length, self.modalities(start, length), self.token_map, self.calls.step, self.text_config
        )

    def modalities(self, start: int, length: int) -> np.ndarray:
        """Modality of positions `start .. start + length - 1` ("generated" past the prompt)."""
        prompt = self.prompt_modality
        out = np.full(length, "generated", dtype=object)
        inside = max(0, min(len(prompt) - start, length))
        out[:inside] = prompt[start : start + inside]
        return out

    def _visit(self, point, value, listeners):
        """Patch, cache, then tell the listeners; returns the (possibly replaced) value."""
        for function in self.patches.get(point.name, ()):
            new = function(value, self._context(point))
            if isinstance(value, torch.Tensor) and (not isinstance(new, torch.Tensor) or new.shape != value.shape):
                raise OmniLabInputError(f"patch on {point.name!r} must return a tensor of shape {tuple(value.shape)}")
            value = new
        self.activations.store(point.name, value)
        for listen in listeners:
            listen(value)
        return value

    def _output_hook(self, point, listeners):
        def hook(module, inputs, output):
            value = point.pick(output) if point.pick is not None else output
            patched = self._visit(point, value, listeners)
            return patched if patched is not value else None

        return hook

    def _input_hook(self, point, listeners):
        def hook(module, args, kwargs):
            value = args[0]
            patched = self._visit(point, value, listeners)
            return ((patched, *args[1:]), kwargs) if patched is not value else None

        return hook

    def on_reduced(self, modality: str, index: int, embeddings: torch.Tensor) -> torch.Tensor:
        """The reduction stage's hook point `reduce.{modality}.{index}`: the item's embeddings entering the LLM."""
        return self._visit(self.points[f"reduce.{modality}.{index}"], embeddings, ())

    # ---------------------------------------------------------------------------------------------- results
    def finish(self, token_map) -> CaptureResults:
        """Assemble every result against the final token map (prompt rows plus generated rows)."""
        results = {name: capturer.finish(token_map) for name, capturer in self.capturers.items()}
        return CaptureResults(**results, cache=self.activations.finish(), llm_drop=self.llm_drop)
