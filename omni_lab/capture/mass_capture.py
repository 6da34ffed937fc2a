"""Attention mass and Mamba mass: the share of each query's attention (or Mamba-2 weight) that falls into each segment.

The prompt's mass is computed inside the hooks, with the prompt's segments and query groups, so the queries' tensors
never pile up. For generated tokens the keys (attention) or Δ, B (Mamba) are kept and the rows of the generated
queries are computed once at the end, from the same kernels (omni_lab.kernels: `pooled_attention_mass`,
`ssd_pooled_mass`) with the query offset, never re-running the prompt. The Mamba weights come from the SSD form
`y_t = Σ_s C_t·B_s · exp(Σ_{r=s+1..t} Δ_r A) · Δ_s · x_s`, with Δ, B, C rebuilt from the layer's `in_proj` output
as transformers computes them (depthwise causal conv + SiLU with the conv state carried across calls, softplus Δ).

After an in-LLM reducer dropped prompt positions, a later layer's queries and keys are the surviving positions only
(`Calls.positions(layer)`): their segments and query groups are read at those positions, a dropped query's row is NaN
at that layer (a group's row averages its surviving queries; NaN when none survives), and a dropped key gets no mass.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

import numpy as np
import torch

from .. import validate
from ..errors import OmniLabInputError
from ..partition import GroupBy
from .kinds import FLOAT_BYTES, CaptureKind, register
from .results import ModalityMass
from .segments import query_groups, segment_positions


class MambaInputs:
    """A Mamba-2 layer's `(conv, dt, B, C)` per forward call, from its `in_proj` output, as the model computes them.

    Keeps the last `conv_kernel - 1` conv inputs between calls (the model's conv state), so a generated token's
    conv sees the tokens before it.
    """

    def __init__(self, mixer):
        self.mixer = mixer
        self.window = None  # (1, k - 1, conv_dim) conv inputs of the previous call(s)

    def __call__(self, projected: torch.Tensor):
        """Returns `conv` `(1, L, conv_dim)`, `dt` `(1, L, H)` float32, `B`, `C` `(1, L, G, N)`."""
        from transformers.models.nemotron_h.modeling_nemotron_h import causal_conv1d_fn

        mixer = self.mixer
        _, xbc, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
        xbc = xbc.detach()
        window = xbc if self.window is None else torch.cat([self.window, xbc], dim=1)  # (1, k-1+L, conv_dim)
        conv = causal_conv1d_fn(
            window.transpose(1, 2), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation=mixer.activation
        ).transpose(1, 2)[:, -xbc.shape[1] :]  # (1, L, conv_dim)
        self.window = window[:, -(mixer.conv_kernel_size - 1) :]
        size = mixer.n_groups * mixer.ssm_state_size
        _, B, C = conv.split([mixer.intermediate_size, size, size], dim=-1)
        dt = torch.nn.functional.softplus(dt.detach().float() + mixer.dt_bias.float())
        low, high = mixer.time_step_limit
        if (low, high) != (0.0, float("inf")):
            dt = dt.clamp(low, high)
        shape = (1, -1, mixer.n_groups, mixer.ssm_state_size)
        return conv, dt, B.reshape(shape), C.reshape(shape)


class MassCapture(CaptureKind):
    """Shared part of the attention and Mamba mass kinds: options, segments, query groups, assembling prompt and
    generated rows, the memory estimate.

    Args:
        segments: how key positions pool: a grouping of the one partition (`omni_lab.partition`): "item" (each media
            item, each text span; the default), "modality", "tubelet", "region", "audio_window", a tuple such as
            ("tubelet", "region"), {name: mask over the prompt's rows}, or a `GroupBy`. Units must share no token
            ("frame" overlaps: use "tubelet").
        queries: None/"all" (each position), "answer", "text", "modality", a mask over prompt positions, or
            {name: mask}; grouped rows are means over the group's queries.
        layers: restrict to these LLM layers (default: every layer of the kind).
        grid, seconds: the region grid and the audio window of `segments` (default (2, 2) and 1.0 s).
    """

    kind: ClassVar[str] = ""
    follows_drops = True
    block = 128  # query block of the kernel's transient buffers

    def __init__(self, segments="item", queries=None, layers=None, grid=None, seconds=None):
        self.grouping = GroupBy.of(segments, grid=grid, seconds=seconds)
        if self.grouping.keys == ("frame",):
            raise OmniLabInputError(
                "segments='frame': two frames share each tubelet's tokens, so frame units overlap and mass cannot pool "
                "over them; use segments='tubelet'"
            )
        self.queries_option = queries
        self.layers_option = None if layers is None else tuple(int(layer) for layer in layers)

    def options(self) -> dict:
        return {
            "segments": self.grouping.name,
            "grid": self.grouping.grid,
            "seconds": self.grouping.seconds,
            "queries": self.queries_option
            if self.queries_option is None or isinstance(self.queries_option, str)
            else "masks",
            "layers": self.layers_option,
        }

    def setup(self) -> None:
        available = self.layers_of_kind(self.kind)
        chosen = available if self.layers_option is None else list(self.layers_option)
        wrong = sorted(set(chosen) - set(available))
        if wrong:
            raise OmniLabInputError(f"{self.name} layers {wrong} are not {self.kind} layers; those are {available}")
        self.layers = chosen
        self.segments = None  # the prompt's Segmentation
        self.groups: np.ndarray | None = None  # query group of each prompt position (-1: none), None: no grouping
        self.group_names: list[str] = []
        self.generated_group: int | None = None  # the group generated queries join (None: they get no row)
        self.prompt_positions = 0
        self.prompt_mass: dict[int, torch.Tensor] = {}  # layer -> (H, Lp or groups, Sp)
        self.covered: dict[int, np.ndarray] = {}  # layer -> the prompt positions its prefill saw (Calls.positions)
        self.history: dict[int, list] = defaultdict(list)  # layer -> per call: keys (attention) or (Δ, B) (Mamba)
        self.queries: dict[int, list] = defaultdict(list)  # layer -> generated queries (q or C)

    @property
    def heads(self) -> int:
        raise NotImplementedError

    def set_token_map(self, token_map) -> None:
        self.segments = segment_positions(token_map, self.grouping)
        self.groups, self.group_names, self.generated_group = query_groups(token_map, self.queries_option)
        self.prompt_positions = token_map.num_positions

    def _prefill_positions(self, layer: int) -> np.ndarray:
        """The prompt positions the prefill's tensors cover at `layer` (all of them unless an in-LLM reducer dropped
        some before it), kept for the generated rows."""
        self.covered[layer] = self.calls.positions(layer)
        return self.covered[layer]

    def _pooling(self, device, positions: np.ndarray) -> dict:
        """Kernel arguments of the prompt's pooling at `positions`: segment ids and (when grouped) query groups."""
        groups = None if self.groups is None else self.groups[positions]
        return {
            "segment_ids": torch.from_numpy(self.segments.ids[positions])[None].to(device),
            "num_segments": self.segments.count,
            "query_groups": None if groups is None else torch.from_numpy(groups)[None].to(device),
            "num_query_groups": None if groups is None else len(self.group_names),
        }

    def _no_prompt_queries(self, heads: int, positions: np.ndarray) -> torch.Tensor | None:
        """Zero rows when grouping left no prompt position (of `positions`) as a query, else None."""
        if self.groups is not None and (self.groups[positions] < 0).all():
            return torch.zeros(heads, len(self.group_names), self.segments.count)
        return None

    def _on_prompt_positions(self, mass: torch.Tensor, layer: int) -> torch.Tensor:
        """`(H, Lp or groups, S)`: per-position rows put back on the prompt's positions (NaN where a query was
        dropped before `layer`); grouped rows as they are."""
        if self.groups is not None:
            return mass
        return self.calls.spread(mass.transpose(0, 1), layer, float("nan")).transpose(0, 1)

    def _generated_rows(self, layer: int, segment_ids: torch.Tensor, num_segments: int, offset: int) -> torch.Tensor:
        """`(H, G, S)` mass rows of the G generated queries; `segment_ids` `(1, keys)` of the layer's keys, the first
        generated query at key index `offset` (the prompt positions the layer's prefill saw)."""
        raise NotImplementedError

    def finish(self, token_map) -> ModalityMass:
        final = segment_positions(token_map, self.grouping)
        generated = self.calls.seen - self.prompt_positions
        extra_segments = final.count - self.segments.count
        grouped = self.groups is not None
        fed = np.arange(self.prompt_positions, self.calls.seen)  # generated positions (the last token is never fed)
        result = {}
        for layer in self.layers:
            mass = torch.nn.functional.pad(self.prompt_mass[layer], (0, extra_segments))  # (H, Lp or Q, S)
            if not grouped:  # the generated tokens' segments are absent from a dropped query's row too
                mass[:, np.setdiff1d(np.arange(self.prompt_positions), self.covered[layer])] = float("nan")
            keys = np.concatenate([self.covered[layer], fed])  # the positions this layer's keys are at
            if generated > 0 and (not grouped or self.generated_group is not None):
                segment_ids = torch.from_numpy(final.ids[keys])[None]
                rows = self._generated_rows(layer, segment_ids, final.count, len(self.covered[layer]))  # (H, G, S)
                if grouped:
                    mass[:, self.generated_group] += rows.sum(1)
                else:
                    mass = torch.cat([mass, rows], dim=1)
            if grouped:
                members = self.groups[self.covered[layer]]
                counts = np.bincount(members[members >= 0], minlength=len(self.group_names))
                everyone = np.bincount(self.groups[self.groups >= 0], minlength=len(self.group_names))
                if self.generated_group is not None:
                    counts[self.generated_group] += generated
                    everyone[self.generated_group] += generated
                divisor = np.where((counts == 0) & (everyone > 0), np.nan, np.maximum(counts, 1))  # NaN: all dropped
                mass = mass / torch.from_numpy(divisor).float()[None, :, None]
            result[layer] = mass
        queries = list(self.group_names) if grouped else list(range(self.prompt_positions + generated))
        return ModalityMass(self.kind, result, final.labels, queries, token_map, self.options())

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        token_map, queries = prompt.token_map, self.queries_option
        positions = len(token_map) + max_new_tokens
        segments = segment_positions(token_map, self.grouping).count + 1
        if queries is None or isinstance(queries, str):
            groups, names, _ = query_groups(token_map, queries)
            rows = positions if groups is None else len(names)
        else:  # masks are checked against the reduced prompt when the run starts
            rows = len(queries) if isinstance(queries, dict) else 1
        kept = self.heads * rows * segments + self._history_elements(positions, max_new_tokens)
        return (len(self.layers) * kept + self._transient_elements(segments)) * FLOAT_BYTES

    def _history_elements(self, positions: int, generated: int) -> int:
        raise NotImplementedError

    def _transient_elements(self, segments: int) -> int:
        raise NotImplementedError


@register
class AttentionMassCapture(MassCapture):
    """`capture=["attention_mass"]` or `ol.capture.attention_mass(...)`: a `ModalityMass` of every attention layer
    (listens to `attn.q` and `attn.k`)."""

    name = "attention_mass"
    kind = "attention"
    block = 256

    @property
    def heads(self) -> int:
        return self.text_config.num_attention_heads

    def listeners(self):
        pairs = []
        for layer in self.layers:
            on_query, on_key = self._listeners(layer)
            pairs += [(f"llm.layers.{layer}.attn.q", on_query), (f"llm.layers.{layer}.attn.k", on_key)]
        return pairs

    def _listeners(self, layer: int):
        """(on q_proj, on k_proj): q_proj runs first in transformers' attention, so a query waits for its keys."""
        mixer = self.mixer(layer)
        pending: dict = {}

        def heads_first(projected):
            heads = projected.shape[-1] // mixer.head_dim
            return projected.detach().reshape(1, -1, heads, mixer.head_dim).transpose(1, 2)  # (1, H, L, D)

        def on_query(projected):
            pending["q"] = heads_first(projected)

        def on_key(projected):
            queries, keys = pending.pop("q"), heads_first(projected)
            self.history[layer].append(keys)
            if self.calls.step == 0:
                positions = self._prefill_positions(layer)
                self.prompt_mass[layer] = self._on_prompt_positions(
                    self._prompt_mass(queries, keys, mixer, positions), layer
                )
            else:
                self.queries[layer].append(queries)

        return on_query, on_key

    def _prompt_mass(self, queries, keys, mixer, positions) -> torch.Tensor:
        from omni_lab import kernels

        empty = self._no_prompt_queries(queries.shape[1], positions)
        if empty is not None:
            return empty
        mass = kernels.pooled_attention_mass(
            queries, keys, causal=True, scale=mixer.scaling, **self._pooling(queries.device, positions)
        )
        return mass[0].float().cpu()  # (H, Lp or Qp, Sp)

    def _generated_rows(self, layer, segment_ids, num_segments, offset):
        from omni_lab import kernels

        keys = torch.cat(self.history[layer], dim=2)  # (1, Hkv, L, D)
        queries = torch.cat(self.queries[layer], dim=2)  # (1, Hq, G, D)
        mass = kernels.pooled_attention_mass(
            queries,
            keys,
            segment_ids.to(keys.device),
            num_segments=num_segments,
            causal=True,
            scale=self.mixer(layer).scaling,
            query_start=offset,
        )
        return mass[0].float().cpu()

    def _history_elements(self, positions, generated):
        text = self.text_config
        return (positions * text.num_key_value_heads + generated * self.heads) * text.head_dim if generated else 0

    def _transient_elements(self, segments):
        return self.heads * self.block * self.block * 2 + self.block * segments


@register
class MambaMassCapture(MassCapture):
    """`capture=["mamba_mass"]` or `ol.capture.mamba_mass(...)`: a `ModalityMass` of every Mamba-2 layer (listens to
    `mamba.in_proj`).

    Args:
        signed: pool the signed α instead of |α| (the other arguments as `MassCapture`).
    """

    name = "mamba_mass"
    kind = "mamba"

    def __init__(self, segments="item", queries=None, layers=None, grid=None, seconds=None, signed: bool = False):
        super().__init__(segments, queries, layers, grid, seconds)
        self.signed = validate.flag("signed", signed)

    def options(self) -> dict:
        return {**super().options(), "signed": self.signed}

    @property
    def heads(self) -> int:
        return self.text_config.mamba_num_heads

    def listeners(self):
        return [(f"llm.layers.{layer}.mamba.in_proj", self._listener(layer)) for layer in self.layers]

    def _listener(self, layer: int):
        mixer = self.mixer(layer)
        inputs = MambaInputs(mixer)

        def listen(projected):
            _, dt, B, C = inputs(projected)
            if self.calls.step == 0:
                positions = self._prefill_positions(layer)
                mass = self._prompt_mass(dt, -torch.exp(mixer.A_log.float()), B, C, positions)
                self.prompt_mass[layer] = self._on_prompt_positions(mass, layer)
            else:
                self.queries[layer].append(C.float())
            self.history[layer].append((dt, B.float()))

        return listen

    def _prompt_mass(self, dt, A, B, C, positions) -> torch.Tensor:
        from omni_lab import kernels

        empty = self._no_prompt_queries(dt.shape[-1], positions)
        if empty is not None:
            return empty
        mass = kernels.ssd_pooled_mass(dt, A, B, C, signed=self.signed, **self._pooling(dt.device, positions))
        return mass[0].float().cpu()  # (H, Lp or Qp, Sp)

    def _generated_rows(self, layer, segment_ids, num_segments, offset):
        from omni_lab import kernels

        dt = torch.cat([entry[0] for entry in self.history[layer]], dim=1)  # (1, L, H)
        B = torch.cat([entry[1] for entry in self.history[layer]], dim=1)  # (1, L, G, N)
        C = torch.cat(self.queries[layer], dim=1)  # (1, G_new, G, N)
        mass = kernels.ssd_pooled_mass(
            dt,
            -torch.exp(self.mixer(layer).A_log.float()),
            B,
            C,
            segment_ids.to(dt.device),
            num_segments=num_segments,
            signed=self.signed,
            query_start=offset,
        )
        return mass[0].float().cpu()

    def _history_elements(self, positions, generated):
        state = self.text_config.n_groups * self.text_config.ssm_state_size
        return positions * (self.heads + state) + generated * state if generated else 0

    def _transient_elements(self, segments):
        return self.heads * self.block * self.block * 3
