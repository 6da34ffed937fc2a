"""One run's captures and interventions: hooks installed for the run, removed after it, results assembled.

The session knows which LLM positions each forward call covers (the prompt is one call, each generated token one
more: a pre-hook on the language model counts them), so every hook can say which positions its tensor belongs to.
Per hook point it applies patches first (interventions), then stores the value when cached, then hands it to the
captures listening there. Attention and Mamba mass of the prompt are computed inside the hooks, with the prompt's
segments, so the queries' tensors never pile up; for generated tokens the keys (attention) and Δ, B (Mamba) are
kept and the rows of the generated queries are computed once at the end, from the same kernels, with the query
offset, never re-running the prompt.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import OmniLabInputError
from .hooks import MIXER_KIND, HookSession, expand_names, hook_points, layer_pattern
from .interventions import Intervention, PatchContext
from .results import ModalityMass, Routing
from .segments import query_groups, segment_positions
from .specs import MassSpec


@dataclass
class _Calls:
    """Position bookkeeping: each LLM forward call covers positions start .. start + length - 1."""

    seen: int = 0
    start: int = 0
    length: int = 0
    step: int = -1


@dataclass
class _MassState:
    """Per-layer state of one mass capture."""

    spec: MassSpec
    prompt_segments: object = None
    prompt_groups: np.ndarray | None = None
    prompt_group_names: list = field(default_factory=list)
    generated_group: int | None = None  # the group generated queries join (None: they get no row)
    layers: list = field(default_factory=list)
    prompt_mass: dict = field(default_factory=dict)  # layer -> (H, Qp, Sp)
    history: dict = field(default_factory=lambda: defaultdict(list))  # layer -> [tensors over calls]
    queries: dict = field(default_factory=lambda: defaultdict(list))  # layer -> generated query tensors
    conv_state: dict = field(default_factory=dict)  # Mamba: layer -> last (kernel - 1) xBC rows


class CaptureSession:
    """Hooks for one run. Use `with session.installed():` around encode, reduce, prefill and decode; call `set_token_map` after
    the reduction and `finish()` at the end.

    Args:
        lab: the `Lab`.
        prompt: the `Prompt` being run.
        captures: {name: spec} from `specs.normalise`.
        cache: hook names or glob patterns to store.
        interventions: `Intervention`s to apply.
        cache_device, cache_dtype: where and how cached tensors are kept.
    """

    def __init__(
        self, lab, prompt, captures: dict, cache=None, interventions=None, cache_device="cpu", cache_dtype=None
    ):
        self.lab, self.model, self.prompt = lab, lab.model, prompt
        self.token_map = prompt.token_map
        self.points = hook_points(self.model, prompt)
        self.cache_names = expand_names(cache, self.points)
        self.cache_device, self.cache_dtype = cache_device, cache_dtype
        self.captures = captures
        self.calls = _Calls()
        self.text_config = self.model.config.text_config
        self.patches: dict[str, list] = defaultdict(list)
        for intervention in interventions or []:
            if not isinstance(intervention, Intervention):
                raise OmniLabInputError(f"{intervention!r} is not an intervention; use ol.ablate_tokens/patch/...")
            expand_names(intervention.point, self.points)  # raises, with suggestions, for unknown names
            if not self.points[intervention.point].patchable:
                raise OmniLabInputError(f"{intervention.point!r} can be cached but not patched")
            self.patches[intervention.point].append(intervention.function)
        self.stored: dict[str, list] = defaultdict(list)
        self.prompt_modality = np.zeros(0, dtype=object)
        self.routing_state = defaultdict(lambda: defaultdict(list)) if "routing" in captures else None
        self.residual_state = defaultdict(lambda: defaultdict(list)) if "residual" in captures else None
        self._residual_input: dict[int, torch.Tensor] = {}
        self.mass_states = {
            name: self._mass_state(spec) for name, spec in captures.items() if isinstance(spec, MassSpec)
        }

    @property
    def active(self) -> bool:
        return bool(self.captures or self.cache_names or self.patches)

    @property
    def needs_encoders(self) -> bool:
        """The run caches or patches a tower point, so the encoders must run even when their output is known."""
        towers = ("vision.", "audio.")
        return any(name.startswith(towers) for name in [*self.cache_names, *self.patches])

    def set_token_map(self, token_map) -> None:
        """The prompt's token map after reduction: the positions the LLM will see. Call before the prefill."""
        self.token_map = token_map
        self.prompt_modality = token_map.df[token_map.df.kept].sort_values("position").modality.to_numpy()
        for state in self.mass_states.values():
            spec = state.spec
            state.prompt_segments = segment_positions(token_map, spec.segments, spec.window_seconds, spec.regions)
            state.prompt_groups, state.prompt_group_names, state.generated_group = query_groups(token_map, spec.queries)

    # ------------------------------------------------------------------------------------------------ set-up
    def _mass_state(self, spec: MassSpec) -> _MassState:
        state = _MassState(spec)
        kind = "*" if spec.kind == "attention" else "M"
        available = [i for i, k in enumerate(layer_pattern(self.model)) if k == kind]
        chosen = available if spec.layers is None else list(spec.layers)
        wrong = sorted(set(chosen) - set(available))
        if wrong:
            raise OmniLabInputError(
                f"{spec.kind}_mass layers {wrong} are not {spec.kind} layers; those are {available}"
            )
        state.layers = chosen
        return state

    def _context(self, name: str, on_llm: bool) -> PatchContext:
        if not on_llm:
            return PatchContext(name, None, None, None, self.token_map, 0, self.text_config)
        start, length = self.calls.start, self.calls.length
        return PatchContext(
            name, start, length, self.modalities(start, length), self.token_map, self.calls.step, self.text_config
        )

    def modalities(self, start: int, length: int) -> np.ndarray:
        prompt = self.prompt_modality
        out = np.full(length, "generated", dtype=object)
        inside = max(0, min(len(prompt) - start, length))
        out[:inside] = prompt[start : start + inside]
        return out

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
        language = self.model.language_model
        session.on_input(language.model, self._count_call)
        listeners: dict[str, list] = defaultdict(list)
        pattern = layer_pattern(self.model)
        if self.routing_state is not None:
            for index, kind in enumerate(pattern):
                if kind == "E":
                    listeners[f"llm.layers.{index}.moe.router"].append(self._routing_listener(index))
                    listeners[f"llm.layers.{index}.moe.shared"].append(self._shared_listener(index))
        if self.residual_state is not None:
            for index, kind in enumerate(pattern):
                listeners[f"llm.layers.{index}.in"].append(self._residual_in(index))
                listeners[f"llm.layers.{index}.{MIXER_KIND[kind]}.out"].append(self._residual_out(index))
        for state in self.mass_states.values():
            for index in state.layers:
                if state.spec.kind == "attention":
                    on_query, on_key = self._attention_listeners(state, index)
                    listeners[f"llm.layers.{index}.attn.q"].append(on_query)
                    listeners[f"llm.layers.{index}.attn.k"].append(on_key)
                else:
                    listeners[f"llm.layers.{index}.mamba.in_proj"].append(self._mamba_listener(state, index))
        conv_cached = [name for name in self.cache_names if name.endswith(".mamba.conv")]
        for name in conv_cached:
            layer = int(name.split(".")[2])
            listeners[f"llm.layers.{layer}.mamba.in_proj"].append(self._conv_cache_listener(name, layer))

        names = set(self.patches) | {n for n in self.cache_names if self.points[n].module is not None} | set(listeners)
        for name in names:
            point = self.points[name]
            if point.module is None:
                continue
            on_llm = name.startswith("llm.")
            if point.on_input:
                session.on_input(point.module, self._input_hook(name, on_llm, listeners[name]))
            else:
                session.on_output(point.module, self._output_hook(name, point, on_llm, listeners[name]))

    def _count_call(self, module, args, kwargs):
        value = kwargs.get("inputs_embeds")
        if value is None:
            value = kwargs.get("input_ids", args[0] if args else None)
        self.calls.start = self.calls.seen
        self.calls.length = int(value.shape[1])
        self.calls.seen += self.calls.length
        self.calls.step += 1

    def _apply(self, name: str, value, context: PatchContext):
        for function in self.patches.get(name, ()):
            new = function(value, context)
            if isinstance(value, torch.Tensor) and (not isinstance(new, torch.Tensor) or new.shape != value.shape):
                raise OmniLabInputError(f"patch on {name!r} must return a tensor of shape {tuple(value.shape)}")
            value = new
        return value

    def _store(self, name: str, value) -> None:
        if name not in self.cache_names:
            return
        if isinstance(value, tuple):  # a router returns (logits, weights, indices): cache the logits
            value = value[0]
        value = value.detach().to(self.cache_device)
        if self.cache_dtype is not None and value.is_floating_point():
            value = value.to(self.cache_dtype)
        self.stored[name].append(value)

    def _output_hook(self, name, point, on_llm, listeners):
        def hook(module, inputs, output):
            context = self._context(name, on_llm)
            value = point.pick(output) if point.pick is not None else output
            patched = self._apply(name, value, context)
            self._store(name, patched)
            for listener in listeners:
                listener(patched)
            if patched is not value:
                return patched
            return None

        return hook

    def _input_hook(self, name, on_llm, listeners):
        def hook(module, args, kwargs):
            context = self._context(name, on_llm)
            value = args[0]
            patched = self._apply(name, value, context)
            self._store(name, patched)
            for listener in listeners:
                listener(patched)
            if patched is not value:
                return (patched, *args[1:]), kwargs
            return None

        return hook

    def on_reduced(self, modality: str, index: int, embeddings: torch.Tensor) -> torch.Tensor:
        """The reduction stage's hook point `reduce.{modality}.{index}`: the item's embeddings entering the LLM."""
        name = f"reduce.{modality}.{index}"
        patched = self._apply(name, embeddings, self._context(name, False))
        self._store(name, patched)
        return patched

    # --------------------------------------------------------------------------------------------- listeners
    def _routing_listener(self, layer):
        def listen(router_output):
            logits, weights, indices = router_output
            state = self.routing_state[layer]
            state["experts"].append(indices.detach().cpu())
            state["weights"].append(weights.detach().float().cpu())
            if self.captures["routing"].scores:
                state["scores"].append(logits.detach().float().sigmoid().cpu())

        return listen

    def _shared_listener(self, layer):
        def listen(output):
            self.routing_state[layer]["shared_norm"].append(output.detach().float().norm(dim=-1).reshape(-1).cpu())

        return listen

    def _residual_in(self, layer):
        def listen(hidden):
            self._residual_input[layer] = hidden.detach()

        return listen

    def _residual_out(self, layer):
        def listen(contribution):
            residual = self._residual_input.pop(layer).float()
            contribution = contribution.detach().float()
            state = self.residual_state[layer]
            state["residual_norm"].append(residual.norm(dim=-1).reshape(-1).cpu())
            state["mixer_norm"].append(contribution.norm(dim=-1).reshape(-1).cpu())
            cosine = torch.nn.functional.cosine_similarity(residual, contribution, dim=-1)
            state["cosine"].append(cosine.reshape(-1).cpu())

        return listen

    def _attention_listeners(self, state: _MassState, layer: int):
        """(on q_proj, on k_proj): q_proj runs first in transformers' attention, so a query waits for its keys."""
        mixer = self.model.language_model.model.layers[layer].mixer
        head_dim = mixer.head_dim
        pending: dict = {}

        def heads_first(projected):
            heads = projected.shape[-1] // head_dim
            return projected.detach().reshape(1, -1, heads, head_dim).transpose(1, 2)  # (1, H, L, D)

        def on_query(projected):
            pending["q"] = heads_first(projected)

        def on_key(projected):
            queries, keys = pending.pop("q"), heads_first(projected)
            state.history[layer].append(keys)
            if self.calls.step == 0:
                state.prompt_mass[layer] = self._attention_prompt_mass(state, queries, keys, mixer)
            else:
                state.queries[layer].append(queries)

        return on_query, on_key

    def _attention_prompt_mass(self, state, queries, keys, mixer) -> torch.Tensor:
        from omni_lab import kernels

        if state.prompt_groups is not None and (state.prompt_groups < 0).all():
            return torch.zeros(queries.shape[1], len(state.prompt_group_names), state.prompt_segments.count)

        segments = torch.from_numpy(state.prompt_segments.ids)[None].to(queries.device)
        groups = None if state.prompt_groups is None else torch.from_numpy(state.prompt_groups)[None].to(queries.device)
        mass = kernels.pooled_attention_mass(
            queries,
            keys,
            segments,
            num_segments=state.prompt_segments.count,
            causal=True,
            scale=mixer.scaling,
            query_groups=groups,
            num_query_groups=len(state.prompt_group_names) if groups is not None else None,
        )
        return mass[0].float().cpu()  # (H, Lp or Qp, Sp)

    def _mamba_inputs(self, mixer, projected, layer, conv_state: dict):
        """(x, dt, B, C) of one call from the in_proj output, the conv computed as the model does (with state)."""
        from transformers.models.nemotron_h.modeling_nemotron_h import causal_conv1d_fn

        _, xbc, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
        xbc = xbc.detach()
        previous = conv_state.get(layer)
        window = xbc if previous is None else torch.cat([previous, xbc], dim=1)  # (1, k-1+L, conv_dim)
        conv = causal_conv1d_fn(
            window.transpose(1, 2), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation=mixer.activation
        ).transpose(1, 2)[:, -xbc.shape[1] :]  # (1, L, conv_dim)
        conv_state[layer] = window[:, -(mixer.conv_kernel_size - 1) :]
        groups_size = mixer.n_groups * mixer.ssm_state_size
        x, B, C = conv.split([mixer.intermediate_size, groups_size, groups_size], dim=-1)
        dt = torch.nn.functional.softplus(dt.detach().float() + mixer.dt_bias.float())
        low, high = mixer.time_step_limit
        if (low, high) != (0.0, float("inf")):
            dt = dt.clamp(low, high)
        shape = (1, -1, mixer.n_groups, mixer.ssm_state_size)
        return x, conv, dt, B.reshape(shape), C.reshape(shape)

    def _conv_cache_listener(self, name, layer):
        mixer = self.model.language_model.model.layers[layer].mixer
        conv_state: dict = {}

        def listen(projected):
            _, conv, _, _, _ = self._mamba_inputs(mixer, projected, layer, conv_state)
            self._store(name, conv)

        return listen

    def _mamba_listener(self, state: _MassState, layer: int):
        mixer = self.model.language_model.model.layers[layer].mixer

        def listen(projected):
            _, _, dt, B, C = self._mamba_inputs(mixer, projected, layer, state.conv_state)
            A = -torch.exp(mixer.A_log.float())
            if self.calls.step == 0:
                state.prompt_mass[layer] = self._mamba_prompt_mass(state, dt, A, B, C)
            else:
                state.queries[layer].append(C.float())
            state.history[layer].append((dt, B.float()))

        return listen

    def _mamba_prompt_mass(self, state, dt, A, B, C) -> torch.Tensor:
        from omni_lab import kernels

        if state.prompt_groups is not None and (state.prompt_groups < 0).all():
            return torch.zeros(dt.shape[-1], len(state.prompt_group_names), state.prompt_segments.count)

        segments = torch.from_numpy(state.prompt_segments.ids)[None].to(dt.device)
        groups = None if state.prompt_groups is None else torch.from_numpy(state.prompt_groups)[None].to(dt.device)
        mass = kernels.ssd_pooled_mass(
            dt,
            A,
            B,
            C,
            segments,
            num_segments=state.prompt_segments.count,
            signed=state.spec.signed,
            query_groups=groups,
            num_query_groups=len(state.prompt_group_names) if groups is not None else None,
        )
        return mass[0].float().cpu()

    # ---------------------------------------------------------------------------------------------- results
    def finish(self, token_map) -> dict:
        """Assemble results against the final token map (prompt rows plus generated rows)."""
        results = {"cache": self._cache()}
        if self.routing_state is not None:
            results["routing"] = self._routing(token_map)
        if self.residual_state is not None:
            results["residual"] = self._residual(token_map)
        for name, state in self.mass_states.items():
            results[name] = self._mass(state, token_map)
        return results

    def _cache(self) -> dict:
        cache = {}
        for name in self.cache_names:
            values = self.stored.get(name, [])
            if not values:
                continue
            if name.startswith("llm.") and len(values) > 1:
                cache[name] = torch.cat(values, dim=-2)  # prompt call + one call per generated token
            else:
                cache[name] = values[0] if len(values) == 1 else values
        return cache

    def _routing(self, token_map) -> Routing:
        layers = sorted(self.routing_state)
        stack = lambda key: torch.stack([torch.cat(self.routing_state[i][key]) for i in layers])  # noqa: E731
        scores = stack("scores") if self.captures["routing"].scores else None
        return Routing(
            layers,
            stack("experts"),
            stack("weights"),
            stack("shared_norm"),
            token_map,
            int(self.text_config.n_routed_experts),
            scores,
        )

    def _residual(self, token_map):
        import pandas as pd

        frames = []
        for layer in sorted(self.residual_state):
            state = self.residual_state[layer]
            values = {key: torch.cat(state[key]).numpy() for key in ("residual_norm", "mixer_norm", "cosine")}
            frames.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "kind": layer_pattern(self.model)[layer],
                        "position": np.arange(len(values["cosine"])),
                        **values,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def _mass(self, state: _MassState, token_map) -> ModalityMass:
        spec = state.spec
        final = segment_positions(token_map, spec.segments, spec.window_seconds, spec.regions)
        prompt_positions = len(self.prompt_modality)
        generated = self.calls.seen - prompt_positions
        extra_segments = final.count - state.prompt_segments.count
        grouped = state.prompt_groups is not None
        result = {}
        for layer in state.layers:
            mass = torch.nn.functional.pad(state.prompt_mass[layer], (0, extra_segments))  # (H, Lp or Q, S)
            if generated > 0 and (not grouped or state.generated_group is not None):
                rows = self._generated_mass(state, layer, final, prompt_positions)  # (H, G, S)
                if grouped:
                    mass[:, state.generated_group] += rows.sum(1)
                else:
                    mass = torch.cat([mass, rows], dim=1)
            if grouped:
                counts = np.bincount(
                    state.prompt_groups[state.prompt_groups >= 0], minlength=len(state.prompt_group_names)
                )
                if state.generated_group is not None:
                    counts[state.generated_group] += generated
                mass = mass / torch.from_numpy(np.maximum(counts, 1)).float()[None, :, None]
            result[layer] = mass
        queries = list(state.prompt_group_names) if grouped else list(range(prompt_positions + generated))
        options = {"segments": spec.segments, "queries": spec.queries}
        return ModalityMass(spec.kind, result, final.labels, queries, token_map, options)

    def _generated_mass(self, state: _MassState, layer: int, final, prompt_positions: int) -> torch.Tensor:
        """`(H, G, S)` mass rows of the G generated queries, from the kept keys (attention) or Δ, B (Mamba)."""
        from omni_lab import kernels

        mixer = self.model.language_model.model.layers[layer].mixer
        segments = torch.from_numpy(final.ids[: self.calls.seen])[None]  # the last generated token is never fed
        if state.spec.kind == "attention":
            keys = torch.cat(state.history[layer], dim=2)  # (1, Hkv, L, D)
            queries = torch.cat(state.queries[layer], dim=2)  # (1, Hq, G, D)
            mass = kernels.pooled_attention_mass(
                queries,
                keys,
                segments.to(keys.device),
                num_segments=final.count,
                causal=True,
                scale=mixer.scaling,
                query_start=prompt_positions,
            )
        else:
            dt = torch.cat([entry[0] for entry in state.history[layer]], dim=1)  # (1, L, H)
            B = torch.cat([entry[1] for entry in state.history[layer]], dim=1)  # (1, L, G, N)
            C = torch.cat(state.queries[layer], dim=1)  # (1, G_new, G, N)
            A = -torch.exp(mixer.A_log.float())
            mass = kernels.ssd_pooled_mass(
                dt,
                A,
                B,
                C,
                segments.to(dt.device),
                num_segments=final.count,
                signed=state.spec.signed,
                query_start=prompt_positions,
            )
        return mass[0].float().cpu()
