"""One run's hooks: patches (interventions), cached activations, the capturers' listeners and an in-LLM reducer,
installed for the run and removed after it.

The session is hook plumbing only. It counts the language model's forward calls (the prompt is one call, each
generated token one more), so every hook knows which positions its tensor covers; per hook point it applies the
patches first, then caches the value when asked (cache.py), then hands it to the listeners of the capture kinds
(kinds.py: routing_capture.py, residual_capture.py, mass_capture.py, or a kind of the user's), each bound to this run;
a kind owns its state, result and memory estimate.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..errors import OmniLabInputError
from .cache import ActivationCache
from .hooks import Calls, HookSession, expand_names, hook_points
from .interventions import Intervention, PatchContext
from .kinds import normalise
from .results import CaptureResults, LLMDrop


class CaptureSession:
    """Hooks for one run. Use `with session.installed():` around encode, reduce, prefill and decode; call
    `on_reduced` for each media item, `set_token_map` once the reduction is known (before the prefill), and
    `finish()` at the end.

    Args:
        model: transformers' `NemotronH_Omni_Reasoning_V3`.
        prompt: the `Prompt` being run (None for a forward on given embeddings: no `reduce.*` points, no
            capture estimates).
        captures: what `run(capture=...)` takes: names, capture kinds (`ol.capture.routing()`, ...) or a list.
        cache: hook names or glob patterns to store.
        interventions: `Intervention`s to apply.
        cache_device, cache_dtype: where and how cached tensors are kept.
        in_llm: an in-LLM reducer (`FastV`) to install with the other hooks, or None.
        tokenizer: the Lab's tokenizer, handed to the capture kinds (the logit lens reads answers with it).
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
        tokenizer=None,
    ):
        self.model, self.prompt, self.captures, self.in_llm = model, prompt, normalise(captures), in_llm
        self.token_map = None if prompt is None else prompt.token_map
        self.points = hook_points(model, prompt)
        self.activations = ActivationCache(
            expand_names(cache, self.points), self.points, model, cache_device, cache_dtype
        )
        self.calls = Calls()
        self.text_config = model.config.text_config
        self.patches: dict[str, list] = defaultdict(list)
        self.settings: list[Intervention] = []  # interventions that hold a module setting for the run
        for intervention in interventions or []:
            if not isinstance(intervention, Intervention):
                raise OmniLabInputError(f"{intervention!r} is not an intervention; use ol.ablate_tokens/patch/...")
            if intervention.configure is not None:
                self.settings.append(intervention)
            if intervention.point is None:
                continue
            expand_names(intervention.point, self.points)  # raises, with suggestions, for unknown names
            if not self.points[intervention.point].patchable:
                raise OmniLabInputError(f"{intervention.point!r} can be cached but not patched")
            self.patches[intervention.point].append(intervention.function)
        self.capturers = {name: kind.bind(model, self.calls, tokenizer) for name, kind in self.captures.items()}
        self.prompt_modality = np.zeros(0, dtype=object)  # modality of each prompt position after reduction
        self._in_llm_hook = None
        self._listeners: dict[str, list] | None = None

    @property
    def cache_names(self) -> list[str]:
        return self.activations.names

    @property
    def active(self) -> bool:
        """The run needs hooks (captures, cached points, patches, module settings or an in-LLM reducer)."""
        return bool(self.captures or self.cache_names or self.patches or self.settings or self.in_llm is not None)

    def refuse_with_in_llm(self) -> None:
        """Raise `OmniLabInputError` when something asked of this run cannot follow an in-LLM reducer's shrinking
        sequence: cached or patched LLM points and capture kinds that do not declare `follows_drops` (their values
        would index positions that no longer exist after a drop). Nothing to check without an in-LLM reducer."""
        if self.in_llm is None:
            return
        llm_points = [name for name in [*self.cache_names, *self.patches] if name.startswith("llm.")]
        if llm_points:
            raise OmniLabInputError(
                f"{self.in_llm!r} shortens the sequence inside the LLM, and cached or patched LLM points "
                f"({', '.join(llm_points[:3])}) index the full sequence's positions: run them without the in-LLM "
                "reducer (captures such as routing, residual and attention / Mamba mass do follow it)"
            )
        blind = [name for name, kind in self.captures.items() if not kind.follows_drops]
        if blind:
            raise OmniLabInputError(
                f"{self.in_llm!r} shortens the sequence inside the LLM, and capture {blind[0]!r} does not follow "
                "positions that leave mid-model: run it without the in-LLM reducer (a kind of your own can read "
                "self.calls.positions(layer) and set follows_drops = True)"
            )

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
            if hasattr(self._in_llm_hook, "set_token_map"):  # staged reducers budget per item: they need the map
                self._in_llm_hook.set_token_map(token_map)

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
        for setting in self.settings:
            session.hold(setting.configure(self.model))
        session.on_input(self.model.language_model.model, self.calls.count)
        install_point_hooks(session, [self.points[name] for name in self.hooked_names()], self.visit)
        if self.in_llm is not None:
            self._in_llm_hook = self.in_llm.install(session, self.model)
            self._in_llm_hook.set_positions(self.prompt_modality)
            self.calls.drops = self._in_llm_hook.decision  # the kinds follow the shrinking sequence (hooks.Calls)

    def listener_table(self) -> dict[str, list]:
        """{hook name: the capture kinds' and the activation cache's listeners} (asked of the kinds once a run)."""
        if self._listeners is None:
            listeners: dict[str, list] = defaultdict(list)
            for capturer in [*self.capturers.values(), self.activations]:
                for name, listen in capturer.listeners():
                    listeners[name].append(listen)
            self._listeners = dict(listeners)
        return self._listeners

    def hooked_names(self) -> list[str]:
        """Every hook point this run patches, caches or listens to, in model order."""
        wanted = {*self.patches, *self.cache_names, *self.listener_table()}
        return [name for name in self.points if name in wanted]

    def visit(self, point, value):
        """What a hook does with the value at `point`: patch, cache, then tell the listeners; returns the (possibly
        replaced) value."""
        return self._visit(point, value, self.listener_table().get(point.name, ()))

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

    def on_reduced(self, modality: str, index: int, embeddings: torch.Tensor) -> torch.Tensor:
        """The reduction stage's hook point `reduce.{modality}.{index}`: the item's embeddings entering the LLM."""
        return self._visit(self.points[f"reduce.{modality}.{index}"], embeddings, ())

    # ---------------------------------------------------------------------------------------------- results
    def finish(self, token_map) -> CaptureResults:
        """Assemble every result against the final token map (prompt rows plus generated rows)."""
        results = {name: capturer.finish(token_map) for name, capturer in self.capturers.items()}
        return CaptureResults(results, self.activations.finish(), self.llm_drop)


def install_point_hooks(session: HookSession, points: list, visit) -> None:
    """Register one hook per point (those with a module) that hands its value to `visit(point, value)` and puts back
    what `visit` returns when it replaced the value."""
    for point in points:
        if point.module is None:
            continue
        if point.on_input:
            session.on_input(point.module, _input_hook(point, visit))
        else:
            session.on_output(point.module, _output_hook(point, visit))


def _output_hook(point, visit):
    def hook(module, inputs, output):
        value = point.pick(output) if point.pick is not None else output
        patched = visit(point, value)
        return patched if patched is not value else None

    return hook


def _input_hook(point, visit):
    def hook(module, args, kwargs):
        value = args[0]
        patched = visit(point, value)
        return ((patched, *args[1:]), kwargs) if patched is not value else None

    return hook


class BatchSession:
    """Hooks for one forward over B prompts padded on the right (`(B, L, ...)`, or `(B * L, ...)` where transformers
    flattens the tokens, as around the MoE experts). Each hook value is cut to each row's own positions and handed to
    that row's `CaptureSession`, which patches, caches and listens exactly as in a forward of its prompt alone; a
    patched slice is written back into the batch. Right padding keeps every row exact: the LLM is causal (attention,
    the Mamba-2 conv and scan) or per token (norms, MoE), so the padding after a row never reaches it.

    Args:
        sessions: one `CaptureSession` per row, its reduced token map already set.
        lengths: each row's length (its positions are 0 .. length - 1).
    """

    def __init__(self, sessions: list[CaptureSession], lengths: list[int]):
        if len(sessions) != len(lengths):
            raise ValueError(f"{len(sessions)} sessions for {len(lengths)} rows")
        self.sessions, self.lengths = sessions, [int(length) for length in lengths]
        self.padded = max(self.lengths)
        self.hooked = [set(session.hooked_names()) for session in sessions]

    def installed(self) -> HookSession:
        """A `HookSession` with the LLM's hooks of every row registered (each point once); the rows' calls are set to
        one prefill call over their own positions."""
        for session, length in zip(self.sessions, self.lengths, strict=True):
            session.calls.start, session.calls.length, session.calls.seen, session.calls.step = 0, length, length, 0
        points = self.sessions[0].points
        llm_points = [
            point for name, point in points.items() if point.stage == "llm" and any(name in h for h in self.hooked)
        ]
        held = {repr(setting): setting for session in self.sessions for setting in session.settings}
        if any({repr(setting) for setting in session.settings} != set(held) for session in self.sessions):
            raise OmniLabInputError(
                f"module settings ({', '.join(held)}) hold for a whole forward: give every row of a batch the same ones"
            )
        hooks = HookSession()
        try:
            for setting in held.values():
                hooks.hold(setting.configure(self.sessions[0].model))
            install_point_hooks(hooks, llm_points, self.visit)
        except BaseException:
            hooks.__exit__(None, None, None)
            raise
        return hooks

    def visit(self, point, value):
        replaced = None
        for row, (session, length) in enumerate(zip(self.sessions, self.lengths, strict=True)):
            if point.name not in self.hooked[row]:
                continue
            mine = _cut(value, row, length, len(self.sessions), self.padded)
            new = session.visit(point, mine)
            if new is not mine:
                replaced = _clone(value) if replaced is None else replaced
                _put(replaced, new, row, length, len(self.sessions), self.padded)
        return value if replaced is None else replaced


def _rows_view(tensor: torch.Tensor, batch: int, padded: int) -> torch.Tensor:
    """`(B, L, ...)` view of a batched value: itself, or the unflattened `(B * L, ...)` one."""
    if tensor.shape[0] == batch and tensor.dim() >= 2 and tensor.shape[1] == padded:
        return tensor
    if tensor.shape[0] == batch * padded:
        return tensor.view(batch, padded, *tensor.shape[1:])
    raise RuntimeError(f"a hook value of shape {tuple(tensor.shape)} is not laid out as {batch} rows of {padded}")


def _cut(value, row: int, length: int, batch: int, padded: int):
    """Row `row`'s part of a batched value, shaped as in a forward of that row alone."""
    if isinstance(value, tuple):
        return tuple(_cut(part, row, length, batch, padded) for part in value)
    flat = value.shape[0] == batch * padded and not (value.shape[0] == batch and value.dim() >= 2)
    view = _rows_view(value, batch, padded)
    return view[row, :length] if flat else view[row : row + 1, :length]


def _clone(value):
    return tuple(_clone(part) for part in value) if isinstance(value, tuple) else value.clone()


def _put(target, new, row: int, length: int, batch: int, padded: int) -> None:
    """Write a row's replaced value back into the batched `target` (in place)."""
    if isinstance(target, tuple):
        for part, replacement in zip(target, new, strict=True):
            _put(part, replacement, row, length, batch, padded)
        return
    view = _rows_view(target, batch, padded)
    flat = target.shape[0] == batch * padded and not (target.shape[0] == batch and target.dim() >= 2)
    view[row, :length] = new if flat else new[0]
