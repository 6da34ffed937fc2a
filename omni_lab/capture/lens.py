"""The logit lens and direct logit attribution: where in the layers the answer forms, and who writes it.

Nemotron-H's blocks are pre-norm residual blocks (transformers' `NemotronHBlock`: `h + mixer(norm(h))`), so the
residual stream before the final norm is exactly the input embedding plus every layer's mixer output. Two capture
kinds read that stream at the positions that predict answer tokens (the last prompt position, then each generated
position):

- `logit_lens` keeps the residual at every layer boundary (the embedding, after each layer) there. `run.logit_lens(
  target)` reads each boundary through the model's own final norm and LM head: the target's log-probability, its
  rank and the top token, layer by layer in the model's order (the last boundary gives the model's logits).

- `direct_logit` (`ol.studies.direct_logit_attribution` runs it) decomposes the final residual at one position into
  direct writes: the embedding, each Mamba mixer, each attention layer, each routed expert the position chose and
  the shared expert (MoE layers), each MLP; and splits the attention and Mamba writes by source position. With the
  final norm's scale frozen at its value for the run (the convention: the RMS of the final residual, computed once,
  divides every write alike), each write's direct logit is `(W_U[target] * w_norm) . write / rms`, and they sum to the
  target's logit. Splits, all exact recomputations from the layer's own inputs:
    - routed experts: transformers' own experts module run on the position with one chosen expert at a time;
    - attention: `a[h, p, s] = softmax_s(q_p . k_s * scaling)` from the layer's q and k (no positional encoding in
      these layers), each source's write `W_O (a[h, p, s] v_h[s])` summed over heads;
    - Mamba-2: the SSD weights of one query, `a[h, p, s] = (C_p . B_s) exp(sum_{r=s+1..p} dt_r A_h) dt_s` (and D for
      s = p), through the gated RMS norm with its scale at p frozen (the norm is linear in y once its scale is
      fixed), then `out_proj`; tests/test_lens.py checks it against the token-by-token recurrence.

Both follow an in-LLM reducer's shrinking sequence: the predicting positions are text, never dropped, and each layer's
tensors are indexed through `Calls.locate` / `Calls.positions(layer)`, so a source is always named by its LLM position
(a dropped position writes nothing after its drop).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..presets import layers
from .kinds import CaptureKind, register
from .mass_capture import MambaInputs


class BoundaryResiduals:
    """The residual stream at every layer boundary, at a set of positions, with the model's final norm and head.

    Attributes:
        residuals: `(boundaries, positions, D)` float32: boundary 0 is the embedding, boundary i + 1 the stream after
            layer i (the last one is what the final norm sees).
        positions: the LLM positions kept (the first predicts the first answer token).
        layers: the `LayerInfo` of every layer, in model order.
    """

    def __init__(self, residuals, positions, layer_infos, norm, head, tokenizer=None):
        self.residuals, self.positions, self.layers = residuals, list(positions), layer_infos
        self._norm, self._head, self._tokenizer = norm, head, tokenizer

    def token(self, target) -> int:
        """A token id from a target: an id, a list of ids (the first), or a string (its first token)."""
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            return int(target)
        if isinstance(target, str):
            if self._tokenizer is None:
                raise OmniLabInputError("this logit lens holds no tokenizer: give the target as a token id")
            ids = self._tokenizer(target, add_special_tokens=False)["input_ids"]
            if not ids:
                raise OmniLabInputError(f"the target {target!r} has no tokens")
            return int(ids[0])
        if isinstance(target, (list, tuple)) and target:
            return self.token(target[0])
        raise OmniLabInputError(f"target={target!r}: give an answer string or a token id")

    @torch.no_grad()
    def table(self, target, position: int = 0):
        """The target's log-probability, rank and the top token at every boundary.

        Args:
            target: an answer string (its first token) or a token id.
            position: which kept position (0: the last prompt position, predicting the first answer token).
        Returns:
            DataFrame: order (0 = embedding), layer (-1 for the embedding), kind ("embedding", or the layer's
            kind), logprob, rank (0 = top), top_token (id), top_text.
        """
        import pandas as pd

        token = self.token(target)
        head = self._head
        states = self.residuals[:, position].to(head.weight.device, head.weight.dtype)  # (boundaries, D)
        logits = head(self._norm(states)).float()  # (boundaries, vocab)
        log_probs = torch.log_softmax(logits, dim=-1)
        ranks = (logits > logits[:, token : token + 1]).sum(-1)
        top = logits.argmax(-1)
        decode = self._tokenizer.decode if self._tokenizer is not None else str
        kinds = ["embedding", *[info.kind for info in self.layers]]
        return pd.DataFrame(
            {
                "order": np.arange(len(kinds)),
                "layer": [-1, *[info.index for info in self.layers]],
                "kind": kinds,
                "logprob": log_probs[:, token].cpu().numpy(),
                "rank": ranks.cpu().numpy(),
                "top_token": top.cpu().numpy(),
                "top_text": [decode([int(t)]) for t in top.tolist()],
            }
        )


@register
class LogitLensCapture(CaptureKind):
    """`capture=["logit_lens"]`: the residual at every layer boundary, at the last prompt position and at every
    generated position (`run.logit_lens(target)` reads it)."""

    name = "logit_lens"
    follows_drops = True

    def setup(self) -> None:
        self.infos = layers(self.model)
        self.kept: list[list[torch.Tensor]] = []  # per call: the boundary residuals at its predicting position

    def set_token_map(self, token_map) -> None:
        self.prompt_positions = token_map.num_positions

    def listeners(self):
        pairs = [(f"llm.layers.{info.index}.in", partial(self._on_boundary, info.index)) for info in self.infos]
        last = self.infos[-1]
        pairs.append((f"{last.hook_prefix}.out", partial(self._on_last_mixer, last.index)))
        return pairs

    def _position(self, value, layer: int) -> torch.Tensor:
        """The value at the call's predicting position (the last prompt position, or the generated token), at the
        row `layer`'s tensors hold it in."""
        index = self.calls.locate(layer, self.calls.start + self.calls.length - 1)
        return value.reshape(-1, value.shape[-1])[index].detach().float().cpu()

    def _on_boundary(self, layer: int, value):
        if len(self.kept) <= self.calls.step:
            self.kept.append([])
        self.kept[self.calls.step].append(self._position(value, layer))

    def _on_last_mixer(self, layer: int, value):
        boundary = self.kept[self.calls.step]
        boundary.append(boundary[-1] + self._position(value, layer))  # the stream after the last layer

    def finish(self, token_map):
        residuals = torch.stack([torch.stack(call) for call in self.kept], dim=1)  # (boundaries, positions, D)
        positions = [self.prompt_positions - 1 + step for step in range(len(self.kept))]
        language = self.model.language_model
        return BoundaryResiduals(residuals, positions, self.infos, language.model.norm_f, language.lm_head,
                                 getattr(self, "tokenizer", None))  # fmt: skip

    def estimate_bytes(self, prompt, max_new_tokens: int) -> int:
        hidden = self.text_config.hidden_size
        return (len(layers(self.model)) + 1) * (max_new_tokens + 1) * hidden * 4


class DirectLogit:
    """`direct_logit`'s result: the direct writes into the final residual at one position and their logits.

    Attributes:
        token: the target token id; position: the LLM position decomposed.
        components: DataFrame, one row per write: order, layer (-1: embedding), kind, component ("embedding",
            "mamba", "attention", "expert e", "shared expert", "mlp", "routed bias"), logit (its direct logit with
            the final norm's scale frozen).
        sources: DataFrame of the attention and Mamba writes split by source position: layer, kind, component,
            source (LLM position), logit (the per-position writes of the other components are at `position`).
        writes: {(layer, component): `(D,)` the write itself} (embedding: layer -1).
        final_residual: `(D,)` what the final norm saw; rms: its scale; target_logit: the model's logit of `token`.
        lens: `BoundaryResiduals` at the position.
    """

    def __init__(self, token, position, components, sources, writes, final_residual, rms, target_logit, lens):
        self.token, self.position = token, position
        self.components, self.sources, self.writes = components, sources, writes
        self.final_residual, self.rms, self.target_logit, self.lens = final_residual, rms, target_logit, lens

    @property
    def residual_error(self) -> float:
        """max |sum of every write - the final residual| (0 up to float rounding)."""
        total = torch.stack(list(self.writes.values())).sum(0)
        return float((total - self.final_residual).abs().max())

    @property
    def logit_error(self) -> float:
        """|sum of the direct logits - the model's logit of the target| (0 up to float rounding)."""
        return abs(float(self.components.logit.sum()) - self.target_logit)


@register
class DirectLogitCapture(LogitLensCapture):
    """`ol.capture.direct_logit(token)`: the direct logit attribution of `token` at the last prompt position (the
    prediction of the first answer token; see the module header).

    Args:
        token: the target token id.
    """

    name = "direct_logit"

    def __init__(self, token: int):
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or token < 0:
            raise OmniLabInputError(f"direct_logit token={token!r}: give a token id (ol.studies.direct_logit_attribution "
                                    "takes an answer string)")  # fmt: skip
        self.token = int(token)

    def options(self) -> dict:
        return {"token": self.token}

    def setup(self) -> None:
        super().setup()
        language = self.model.language_model
        norm = language.model.norm_f
        # the direction a write's logit is read along (before the frozen 1 / rms): W_U[token] * w_norm
        self.direction = (language.lm_head.weight[self.token].float() * norm.weight.float()).detach()
        self.writes: dict[tuple[int, str], torch.Tensor] = {}
        self.source_rows: list[dict] = []
        self.pending: dict = {}

    def set_token_map(self, token_map) -> None:
        super().set_token_map(token_map)
        self.at = self.prompt_positions - 1

    def listeners(self):
        pairs = super().listeners()
        pairs.append(("llm.embed", self._on_embed))
        for info in self.infos:
            prefix = info.hook_prefix
            pairs.append((f"llm.layers.{info.index}.in", self._keeper(info.index, "in")))
            if info.kind == "attention":
                for part in ("q", "k", "v"):
                    pairs.append((f"{prefix}.{part}", self._keeper(info.index, part)))
                pairs.append((f"{prefix}.out", self._attention(info)))
            elif info.kind == "mamba":
                pairs.append((f"{prefix}.in_proj", self._keeper(info.index, "in_proj")))
                pairs.append((f"{prefix}.ssm", self._keeper(info.index, "ssm")))
                pairs.append((f"{prefix}.out", self._mamba(info)))
            elif info.kind == "moe":
                pairs.append((f"{prefix}.router", self._keeper(info.index, "router")))
                pairs.append((f"{prefix}.shared", self._keeper(info.index, "shared")))
                pairs.append((f"{prefix}.out", self._moe(info)))
            else:
                pairs.append((f"{prefix}.out", self._whole(info, "mlp")))
        return pairs

    # ------------------------------------------------------------------------------------------------ hooks
    def _prefill(self) -> bool:
        return self.calls.step == 0

    def _keeper(self, layer: int, part: str):
        def keep(value):
            if self._prefill():
                self.pending[(layer, part)] = value

        return keep

    def _local(self, layer: int) -> int:
        """The row of position `at` in `layer`'s prefill tensors (earlier rows may have been dropped)."""
        return self.calls.locate(layer, self.at)

    def _row(self, value, layer: int) -> torch.Tensor:
        return value.reshape(-1, value.shape[-1])[self._local(layer)].detach().float()

    def _on_embed(self, value):
        if self._prefill():
            self.writes[(-1, "embedding")] = self._row(value, 0)

    def _whole(self, info, component: str):
        def listen(value):
            if self._prefill():
                self.writes[(info.index, component)] = self._row(value, info.index)

        return listen

    def _attention(self, info):
        mixer = self.mixer(info.index)

        def listen(output):
            if not self._prefill():
                return
            self.writes[(info.index, "attention")] = self._row(output, info.index)
            q, k, v = (self.pending.pop((info.index, part)).detach().float() for part in ("q", "k", "v"))
            text = self.text_config
            heads, kv_heads, width = text.num_attention_heads, text.num_key_value_heads, mixer.head_dim
            at = self._local(info.index)
            q = q.reshape(-1, heads, width)[at]  # (H, d)
            k = k.reshape(-1, kv_heads, width)[: at + 1].repeat_interleave(heads // kv_heads, dim=1)  # (S, H, d)
            v = v.reshape(-1, kv_heads, width)[: at + 1].repeat_interleave(heads // kv_heads, dim=1)
            weights = torch.softmax(torch.einsum("hd,shd->hs", q, k) * mixer.scaling, dim=-1)  # (H, S)
            out = mixer.o_proj.weight.float().reshape(-1, heads, width)  # (D, H, d)
            per_head = torch.einsum("dhe,she->shd", out, v)  # (S, H, D): each source's value through W_O
            writes = torch.einsum("hs,shd->sd", weights, per_head)  # (S, D)
            self._sources(info, "attention", writes @ self.direction)

        return listen

    def _mamba(self, info):
        mixer = self.mixer(info.index)

        def listen(output):
            if not self._prefill():
                return
            self.writes[(info.index, "mamba")] = self._row(output, info.index)
            projected = self.pending.pop((info.index, "in_proj")).detach()
            scan = self.pending.pop((info.index, "ssm")).detach().float()  # (1, L, I): y, what the gated norm gets
            at = self._local(info.index)
            gate = projected[..., : mixer.intermediate_size].float()[0, at]  # (I,)
            conv, dt, B, C = MambaInputs(mixer)(projected)  # conv (1, L, conv_dim), dt (1, L, H), B, C (1, L, G, N)
            x = conv[0, :, : mixer.intermediate_size].float()  # (L, I): the SSM's input
            writes = mamba_source_writes(mixer, x, dt[0], B[0], C[0], scan[0], gate, at)  # (S, D)
            self._sources(info, "mamba", writes @ self.direction)

        return listen

    def _moe(self, info):
        mixer = self.mixer(info.index)

        def listen(output):
            if not self._prefill():
                return
            shared = self._row(self.pending.pop((info.index, "shared")), info.index)
            _, weights, indices = self.pending.pop((info.index, "router"))
            stream = self.pending.pop((info.index, "in"))  # the block's input: norm it as the block does
            layer = self.model.language_model.model.layers[info.index]
            at = self._local(info.index)
            normed = layer.norm(stream.reshape(-1, stream.shape[-1])[at : at + 1].to(layer.norm.weight.dtype))
            latent = mixer.fc1_latent_proj(normed)
            chosen, chosen_weights = indices[at : at + 1], weights[at : at + 1]
            for slot in range(chosen.shape[1]):  # transformers' experts module, one chosen expert at a time
                expert = mixer.experts(latent, chosen[:, slot : slot + 1], chosen_weights[:, slot : slot + 1])
                write = _linear_part(mixer.fc2_latent_proj, expert)[0].detach().float()
                self.writes[(info.index, f"expert {int(chosen[0, slot])}")] = write
            bias = getattr(mixer.fc2_latent_proj, "bias", None)
            if bias is not None:
                self.writes[(info.index, "routed bias")] = bias.detach().float()
            self.writes[(info.index, "shared expert")] = shared

        return listen

    def _sources(self, info, component: str, logits: torch.Tensor) -> None:
        positions = self.calls.positions(info.index)  # source row s of this layer is LLM position positions[s]
        for source, value in zip(positions[: len(logits)].tolist(), logits.tolist(), strict=True):
            self.source_rows.append({"layer": info.index, "kind": info.kind, "component": component,
                                     "source": source, "write": value})  # fmt: skip

    def finish(self, token_map):
        import pandas as pd

        lens = super().finish(token_map)
        final = lens.residuals[-1, 0]  # (D,) the stream the final norm saw at the first kept position
        norm = self.model.language_model.model.norm_f
        rms = float(torch.sqrt(final.pow(2).mean() + norm.variance_epsilon))
        head = self.model.language_model.lm_head
        with torch.no_grad():
            target_logit = float(head(norm(final[None].to(head.weight.dtype)))[0, self.token])
        order = {info.index: position + 1 for position, info in enumerate(self.infos)}
        kinds = {info.index: info.kind for info in self.infos}
        records = [
            {"order": order.get(layer, 0), "layer": layer, "kind": kinds.get(layer, "embedding"),
             "component": component, "logit": float(write @ self.direction) / rms}
            for (layer, component), write in self.writes.items()
        ]  # fmt: skip
        components = pd.DataFrame(records).sort_values(["order", "component"], kind="stable", ignore_index=True)
        sources = pd.DataFrame(self.source_rows, columns=["layer", "kind", "component", "source", "write"])
        sources["logit"] = sources.pop("write") / rms
        return DirectLogit(self.token, self.at, components, sources, dict(self.writes), final, rms, target_logit,
                           lens)  # fmt: skip


def _linear_part(layer, value: torch.Tensor) -> torch.Tensor:
    """A linear layer without its bias (an Identity as it is): what one expert's share goes through."""
    if isinstance(layer, torch.nn.Linear):
        return torch.nn.functional.linear(value, layer.weight)
    return layer(value)


def mamba_source_writes(mixer, x, dt, B, C, scan, gate, at: int) -> torch.Tensor:
    """`(S, D)`: each source position's write into the residual at position `at` through one Mamba-2 mixer, with the
    gated norm's scale frozen at its value at `at`; the writes sum to the mixer's output there.

    Args:
        mixer: transformers' `NemotronHMamba2Mixer`.
        x: `(L, I)` the SSM input (the conv output's x part); dt: `(L, H)` softplus Δ; B, C: `(L, G, N)`.
        scan: `(L, I)` the SSM output y (the gated norm's input), for the norm's scale at `at`.
        gate: `(I,)` the gate z at `at`.
        at: the query position.
    """
    heads, groups = mixer.num_heads, mixer.n_groups
    head_dim = mixer.head_dim
    A = -torch.exp(mixer.A_log.float())  # (H,)
    per_group = heads // groups
    C_at = C[at].float().repeat_interleave(per_group, dim=0)  # (H, N)
    B_h = B[: at + 1].float().repeat_interleave(per_group, dim=1)  # (S, H, N)
    decay = torch.cumsum(dt[: at + 1].float() * A, dim=0)  # (S, H): sum_{r<=s} dt_r A
    weights = torch.einsum("hn,shn->sh", C_at, B_h) * torch.exp(decay[at] - decay) * dt[: at + 1].float()  # (S, H)
    values = x[: at + 1].float().reshape(at + 1, heads, head_dim)  # (S, H, d)
    contributions = weights[..., None] * values  # (S, H, d): each source's share of y_at
    contributions[at] += mixer.D.float()[:, None] * values[at]  # the skip connection belongs to the position itself
    # the gated RMS norm at `at`, its scale frozen: norm(y * silu(z)) = w * (y * silu(z)) / rms_group
    gated = scan[at].float() * torch.nn.functional.silu(gate.float())  # (I,)
    group_size = mixer.norm.group_size
    rms = torch.sqrt(gated.reshape(-1, group_size).pow(2).mean(-1) + mixer.norm.variance_epsilon)  # (groups,)
    scale = (torch.nn.functional.silu(gate.float()).reshape(-1, group_size) / rms[:, None]).reshape(-1)  # (I,)
    scale = scale * mixer.norm.weight.float()
    normed = contributions.reshape(at + 1, -1) * scale  # (S, I)
    return torch.nn.functional.linear(normed, mixer.out_proj.weight.float())  # (S, D); out_proj has no bias here
