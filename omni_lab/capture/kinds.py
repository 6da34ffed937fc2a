"""Capture kinds: one class per kind, registered by name, owning its options, its hooks, its memory estimate and its
result. Nothing else lists the kinds: `run(capture=[...])` looks names up here, the session binds each kind to the
run's model and hands it the hook values it listens to, and `run.captures[name]` holds what `finish` returns.

    run = lab.run(p, capture=["routing", ol.capture.attention_mass(segments="tubelet")])
    run.captures["routing"] is run.routing

A kind of your own (the README shows one):

    @ol.capture.register
    class ExpertOutputNorm(ol.capture.CaptureKind):
        name = "expert_output_norm"

        def setup(self):                       # per-run state
            self.norms = defaultdict(list)

        def listeners(self):                   # (hook name, listen(value)) pairs; values arrive after any patch
            return [(f"llm.layers.{i}.moe.routed", partial(self.listen, i)) for i in self.layers_of_kind("moe")]

        def listen(self, layer, output):
            self.norms[layer].append(output.detach().float().norm(dim=-1).reshape(-1).cpu())

        def finish(self, token_map):           # the result, against the final token map
            return {layer: torch.cat(values) for layer, values in self.norms.items()}

A kind instance made by the user (`ol.capture.routing(scores=True)`) holds options only; each run binds a fresh copy
(`bind`), so one instance serves many runs and threads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

from ..errors import OmniLabInputError

FLOAT_BYTES = 4
KINDS: dict[str, type[CaptureKind]] = {}


class CaptureKind:
    """Base of every capture kind.

    Class attributes:
        name: the registry name, `run(capture=[name])` and the key in `run.captures`.
        follows_drops: the kind maps its per-position values through `self.calls.positions(layer)` /
            `self.calls.spread(...)` (hooks.Calls), so it may run with an in-LLM reducer whose sequence shrinks
            mid-model; a kind that does not is refused in such a run.

    A subclass takes its options in `__init__` (check them there, raising `OmniLabInputError`), records per-run state
    from `setup`, and implements `listeners` and `finish`; `set_token_map` and `estimate_bytes` are optional.
    After `bind`, `self.model` (transformers' model), `self.calls` (which LLM positions the current forward call
    covers: `calls.start`, `calls.length`, `calls.step`), `self.text_config` and `self.tokenizer` (the Lab's, or
    None) are set.
    """

    name: ClassVar[str] = ""
    follows_drops: ClassVar[bool] = False

    def options(self) -> dict:
        """The kind's options (JSON-able where possible): shown in `repr` and `Run.to_dict()`."""
        return {}

    def bind(self, model, calls, tokenizer=None) -> CaptureKind:
        """A fresh copy of this kind for one run of `model` (and the Lab's tokenizer), its state set up."""
        bound = copy.copy(self)
        bound.model, bound.calls, bound.tokenizer = model, calls, tokenizer
        bound.text_config = model.config.text_config
        bound.setup()
        return bound

    def setup(self) -> None:
        """Create the per-run state (called by `bind`)."""

    def listeners(self) -> list[tuple[str, Callable]]:
        """(hook name, `listen(value)`) pairs; each listener sees the value after any patch."""
        raise NotImplementedError(f"{type(self).__name__} must say which hook points it listens to")

    def set_token_map(self, token_map) -> None:
        """The prompt's token map after reduction (the positions the prefill will see), before the prefill."""

    def finish(self, token_map):
        """The capture's result, against the final token map (prompt rows plus generated rows)."""
        raise NotImplementedError(f"{type(self).__name__} must turn what it heard into a result")

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        """An upper bound of the bytes the capture keeps for `prompt` (unreduced) plus `max_new_tokens`; the run is
        refused past the capture budget. Default 0: override for a capture that keeps much."""
        return 0

    # -------------------------------------------------------------------------------------------- conveniences
    def mixer(self, layer: int):
        """The mixer module (Mamba, MoE, attention or MLP) of LLM layer `layer`."""
        return self.model.language_model.model.layers[layer].mixer

    def layers_of_kind(self, kind: str) -> list[int]:
        """LLM layer numbers of one kind ("mamba", "moe", "attention", "mlp"), in model order."""
        from ..presets import layers

        return [info.index for info in layers(self.model) if info.kind == kind]

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.options() == self.options()

    def __hash__(self) -> int:
        return hash((type(self), repr(self.options())))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{self.name}({options})"


def register(kind: type[CaptureKind]) -> type[CaptureKind]:
    """Class decorator: make a `CaptureKind` subclass available by its `name` (`run(capture=[name])`).

    Raises:
        OmniLabInputError: not a CaptureKind subclass, no name, or a name another kind already holds.
    """
    if not (isinstance(kind, type) and issubclass(kind, CaptureKind)):
        raise OmniLabInputError(f"register takes a CaptureKind subclass, got {kind!r}")
    name = kind.name
    if not isinstance(name, str) or not name.isidentifier():
        raise OmniLabInputError(f"{kind.__name__}.name={name!r}: a capture kind needs a name that is an identifier")
    if name in KINDS and KINDS[name] is not kind:
        raise OmniLabInputError(f"capture kind {name!r} is already registered ({KINDS[name].__name__})")
    KINDS[name] = kind
    return kind


def normalise(capture) -> dict[str, CaptureKind]:
    """{name: kind instance} from `run(capture=...)`: a name, a kind instance, "grad:<hook pattern>",
    {hook name or pattern: function(value)}, or a list of them (a dict entry among them too)."""
    from .functions import GRAD_PREFIX, FunctionCapture, GradientCapture

    if capture is None or (isinstance(capture, (dict, list, tuple, set)) and not capture):
        return {}
    if isinstance(capture, (str, CaptureKind, dict)):
        capture = [capture]
    if not isinstance(capture, (list, tuple, set)):
        raise OmniLabInputError(
            f"capture={capture!r}: pass a name, a kind such as ol.capture.routing(), {{hook: function}}, or a list"
        )
    entries = []
    for entry in capture:
        entries += [FunctionCapture(key, fn) for key, fn in entry.items()] if isinstance(entry, dict) else [entry]
    kinds: dict[str, CaptureKind] = {}
    for entry in entries:
        if isinstance(entry, str) and entry.startswith(GRAD_PREFIX):
            entry = GradientCapture(entry[len(GRAD_PREFIX) :])
        if isinstance(entry, str):
            if entry not in KINDS:
                raise OmniLabInputError(
                    f"capture {entry!r} is not one of {sorted(KINDS)} (ol.capture.register adds one)"
                )
            entry = KINDS[entry]()
        if isinstance(entry, type) and issubclass(entry, CaptureKind):
            entry = entry()
        if not isinstance(entry, CaptureKind):
            raise OmniLabInputError(
                f"capture entry {entry!r}: use a name, ol.capture.routing()/attention_mass()/..., or a CaptureKind"
            )
        if entry.name in kinds:
            raise OmniLabInputError(
                f"capture {entry.name!r} is asked for twice; give it once with the options you need"
            )
        kinds[entry.name] = entry
    return kinds
