"""Run: what one `Lab.run` produced, its captures and its JSON form; StreamToken: one token of `Lab.stream`.

run = lab.run(p, max_new_tokens=16, capture=["routing"])
run.answer, run.token_map.df, run.timings, run.captures["routing"], run.routing
run.to_dict()                       # JSON-able summary, with the options that reproduce it
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .options import RunOptions
from .token_map import TokenMap


@dataclass(frozen=True)
class StreamToken:
    """One token of a streamed answer (`Lab.stream`).

    Attributes:
        index: 0 for the first generated token.
        id: the token id.
        token: the token's own text (special tokens included, e.g. "</think>").
        text: what the token adds to the decoded text (special tokens skipped): append it to show the answer.
        logits: `(vocab,)` float32 logits it was chosen from, when `return_logits=True`.
    """

    index: int
    id: int
    token: str
    text: str
    logits: torch.Tensor | None = None


class Captures(dict):
    """{capture name: result} of one run, with attribute access (`captures.routing` is `captures["routing"]`)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no capture {name!r} in this run; captured: {sorted(self)}") from None


@dataclass
class Run:
    """What one `Lab.run` produced.

    Attributes:
        prompt: the `Prompt` that was run.
        answer: the generated text (after `</think>` when thinking; special tokens removed).
        reasoning: the text between `<think>` and `</think>` when the model reasoned, else None.
        token_ids: `(positions,)` ids of the sequence the LLM saw (media positions hold placeholder ids) followed by
            the generated ids.
        generated_ids: the generated ids alone.
        token_map: the prompt's rows (pruned ones `kept=False`) plus one `generated` row per new token.
        timings: seconds for "encode_s", "reduce_s", "prefill_s", "decode_s" (and "total_s").
        logits: `(steps, vocab)` float32 logits each generated token was chosen from, when asked for.
        stop_reason: "eos" or "max_new_tokens".
        reducers: {modality: reducer} that acted.
        captures: {name: result} of every capture asked for (`Captures`); the built-in ones are also attributes:
            `routing` (`Routing`), `attention_mass` and `mamba_mass` (`ModalityMass`), `residual` (DataFrame: layer,
            kind, position, residual_norm, mixer_norm, cosine); None when not captured.
        cache: {hook name: tensor} of the activations asked for with `cache=[...]`.
        interventions: the interventions that acted.
        ledger: `ReductionLedger`: every reduction stage of every media item, and the tokens each dropped (built on
            first access: a run that never reads it does not pay for it).
        options: the `RunOptions` it ran with.
        build_ledger: the function that builds `ledger` (`Lab.run` passes it; None: no ledger).
    """

    prompt: object
    answer: str
    reasoning: str | None
    token_ids: torch.Tensor
    generated_ids: list[int]
    token_map: TokenMap
    timings: dict
    logits: torch.Tensor | None = None
    stop_reason: str = "max_new_tokens"
    reducers: dict = field(default_factory=dict)
    captures: Captures = field(default_factory=Captures)
    cache: dict = field(default_factory=dict)
    interventions: list = field(default_factory=list)
    options: RunOptions | None = None
    build_ledger: object = field(default=None, repr=False)  # a function building `ledger` (on first access)

    @functools.cached_property
    def ledger(self):
        return None if self.build_ledger is None else self.build_ledger()

    @property
    def routing(self):
        return self.captures.get("routing")

    @property
    def attention_mass(self):
        return self.captures.get("attention_mass")

    @property
    def mamba_mass(self):
        return self.captures.get("mamba_mass")

    @property
    def residual(self):
        return self.captures.get("residual")

    def logit_lens(self, target=None, position: int = 0):
        """The target's log-probability, rank and the top token read through the final norm and the LM head at every
        layer boundary, in the model's order (the run needs `capture=["logit_lens"]`).

        Args:
            target: an answer string (its first token) or a token id; default the token generated at `position`.
            position: 0 for the prediction of the first answer token (the last prompt position), i for the i-th
                generated token's prediction of the next.
        Returns:
            DataFrame: order, layer (-1: the embedding), kind, logprob, rank, top_token, top_text.
        """
        from .errors import OmniLabInputError

        lens = self.captures.get("logit_lens")
        if lens is None and self.captures.get("direct_logit") is not None:
            lens = self.captures["direct_logit"].lens
        if lens is None:
            raise OmniLabInputError('run.logit_lens needs the residual stream: run with capture=["logit_lens"]')
        if not 0 <= position < len(lens.positions):
            raise OmniLabInputError(f"position={position}: this run kept {len(lens.positions)} predicting positions")
        if target is None:
            if position >= len(self.generated_ids):
                raise OmniLabInputError("the run generated nothing at that position: name the target")
            target = int(self.generated_ids[position])
        return lens.table(target, position)

    def to_dict(self) -> dict:
        """A JSON-able summary: the answer, tokens per modality before and after reduction, timings, speed, what
        acted, what was captured, the options that reproduce the run (tensors are left out) and "flops": the
        ledger's estimated FLOPs, saving and equivalent tokens (`ReductionLedger.flops_summary`)."""
        before = self.prompt.token_map.counts()
        after = self.token_map.counts(kept=True)
        after.pop("generated", None)
        decode_s = self.timings.get("decode_s", 0.0)
        steps = max(0, len(self.generated_ids) - 1)  # the first token comes from the prefill
        return {
            "answer": self.answer,
            "reasoning": self.reasoning,
            "stop_reason": self.stop_reason,
            "generated_ids": [int(i) for i in self.generated_ids],
            "prompt": {
                "text": self.prompt.text,
                "images": len(self.prompt.images),
                "videos": len(self.prompt.videos),
                "audios": len(self.prompt.audios),
                "thinking": self.prompt.thinking,
            },
            "tokens_before": before,
            "tokens_after": after,
            "tokens_total": {"before": sum(before.values()), "after": sum(after.values())},
            "timings": {key: round(float(value), 6) for key, value in self.timings.items()},
            "tokens_per_second": round(steps / decode_s, 3) if steps and decode_s > 0 else None,
            "reducers": {modality: repr(reducer) for modality, reducer in self.reducers.items()},
            "interventions": [repr(intervention) for intervention in self.interventions],
            "captures": sorted(self.captures),
            "cache": sorted(self.cache),
            "options": None if self.options is None else self.options.to_dict(),
            "flops": self.ledger.flops_summary() if hasattr(self.ledger, "flops_summary") else {},
        }

    def __repr__(self) -> str:
        kept = self.token_map.num_positions - len(self.generated_ids)
        return (
            f"Run(answer={self.answer!r}, {kept} prompt positions of {len(self.prompt)}, "
            f"{len(self.generated_ids)} generated, stop={self.stop_reason})"
        )


@dataclass
class Prefill:
    """One row of `Lab.prefill`: a prompt's forward through the LLM, run in a batch yet equal to the prompt alone.

    Attributes:
        prompt: the `Prompt`.
        token_map: its reduced token map (no generated rows).
        logits: `(positions, vocab)` float32 logits at every position it fed the LLM.
        captures: {name: result} of the captures asked for (`Captures`).
        cache: {hook name: tensor} of the activations asked for.
        reducers: {modality: reducer} that acted.
        timings: "encode_s", "reduce_s" of this prompt; "prefill_s" of the whole batch's forward and "batch_rows".
    """

    prompt: object
    token_map: TokenMap
    logits: torch.Tensor
    captures: Captures = field(default_factory=Captures)
    cache: dict = field(default_factory=dict)
    reducers: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def routing(self):
        return self.captures.get("routing")

    @property
    def next_token_logits(self) -> torch.Tensor:
        """`(vocab,)` the logits the prompt's first answer token is chosen from (its last position)."""
        return self.logits[-1]


@dataclass
class Gradients:
    """What `Lab.grad` produced: the target's value on the gradient path and the captures along it.

    Attributes:
        value: the target's value (the answer's teacher-forced log-probability, or a first-token contrast).
        target: the resolved target (`omni_lab.targets.ResolvedTarget`): its token ids and texts.
        token_map: the prompt's reduced rows plus one `generated` row per teacher-forced answer token fed.
        captures: {name: result}: "grad:<pattern>" captures hold {hook name: `(positions, width)` gradient of the
            value}; other kinds (routing, masses, functions) what they saw on this forward.
        prompt: the `Prompt`.
    """

    value: float
    target: object
    token_map: TokenMap
    captures: Captures = field(default_factory=Captures)
    prompt: object = None


def split_answer(tokenizer, tokens: list[int], thinking: bool) -> tuple[str, str | None]:
    """(answer, reasoning) from generated ids: reasoning is what precedes `</think>`; special tokens dropped."""
    end_think = tokenizer.convert_tokens_to_ids("</think>")

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    if end_think is not None and end_think in tokens:
        cut = tokens.index(end_think)
        return decode(tokens[cut + 1 :]), decode(tokens[:cut])
    if thinking:  # reasoning never closed: everything so far is reasoning
        return "", decode(tokens)
    return decode(tokens), None
