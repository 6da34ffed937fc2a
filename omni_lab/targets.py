"""Targets: what number about the model's answer an attribution, a gradient capture or a logit lens explains.

    Target()                                   log p(the model's own greedy answer), teacher-forced over all its tokens
    Target("low, purple")                      log p(that answer), all tokens
    Target("low, purple", tokens="first")      log p(its first token) at the last prompt position
    Target("low, purple", alternative="high, purple")   log p(answer) - log p(alternative) (a contrast)

A string passed where a target is expected means `Target(that string)`; None means `Target()`.

Teacher forcing appends the answer's token embeddings (`model.get_input_embeddings()` of its ids) after the
prompt's merged embeddings, runs the language model once, and sums `log_softmax(logits)[answer id]` at the positions
that predict each answer token (position L-1 predicts the first one). Answers are tokenised on their own
(`tokenizer(answer, add_special_tokens=False)`), as the model writes them after the prompt's `<think></think>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import validate
from .errors import OmniLabInputError

TOKENS = ("all", "first")
MAX_ANSWER_TOKENS = 32  # greedy answer length when the target names no answer


@dataclass(frozen=True)
class Target:
    """What to attribute.

    Attributes:
        answer: the answer text or its token ids; None for the model's own greedy answer to the prompt.
        alternative: a second answer (text or ids): the target becomes log p(answer) - log p(alternative).
        tokens: "all" (teacher-forced sum over every answer token) or "first" (the first token only).
    """

    answer: str | tuple[int, ...] | list[int] | None = None
    alternative: str | tuple[int, ...] | list[int] | None = None
    tokens: str = "all"


@dataclass(frozen=True)
class ResolvedTarget:
    """A target with its token ids.

    Attributes:
        answer_ids: ids scored with sign +1.
        alternative_ids: ids scored with sign -1, or None.
        tokens: "all" or "first" (ids are already cut to one token for "first").
        answer_text, alternative_text: decoded for display.
    """

    answer_ids: tuple[int, ...]
    alternative_ids: tuple[int, ...] | None
    tokens: str
    answer_text: str
    alternative_text: str | None = None

    @property
    def sequences(self) -> list[tuple[tuple[int, ...], float]]:
        """(ids, sign) of each teacher-forced continuation the target needs (one, or two for a contrast)."""
        pairs = [(self.answer_ids, 1.0)]
        if self.alternative_ids is not None:
            pairs.append((self.alternative_ids, -1.0))
        return pairs

    @property
    def passes(self) -> int:
        """Forward passes per prompt sequence: one per distinct appended prefix (all answer tokens but the last), so
        a contrast of two one-token answers, or any first-token target, needs one."""
        return len({ids[:-1] for ids, _ in self.sequences})

    def describe(self) -> str:
        what = "first token of " if self.tokens == "first" else ""
        text = f"log p({what}{self.answer_text!r})"
        if self.alternative_text is not None:
            text += f" - log p({what}{self.alternative_text!r})"
        return text


def as_target(target) -> Target:
    """`Target` from a Target, an answer string / id list, or None."""
    if target is None:
        return Target()
    if isinstance(target, Target):
        return target
    if isinstance(target, (str, list, tuple)):
        return Target(target)
    raise OmniLabInputError(
        f"target={target!r}: give an answer string, its token ids, None (the model's own answer) or "
        "ol.attribution.Target(answer, alternative=..., tokens='all'|'first')"
    )


def resolve_target(lab, prompt, target, reducer=None) -> ResolvedTarget:
    """Token ids of the target's answer (and alternative), checked against the model's vocabulary.

    Args:
        lab: the `Lab`.
        prompt: the `Prompt` (only used to generate the model's own answer when the target names none).
        target: anything `as_target` takes.
        reducer: the reducer the greedy answer is generated with (when needed).
    Raises:
        OmniLabInputError: an unknown `tokens` mode, an answer that tokenises to nothing or holds ids outside the
            vocabulary, an alternative equal to the answer, a prompt the model answers with nothing.
    """
    target = as_target(target)
    if target.tokens not in TOKENS:
        raise OmniLabInputError(f"target tokens={target.tokens!r}: choose 'all' (every answer token) or 'first'")
    if target.answer is None:
        run = lab.run(prompt, max_new_tokens=MAX_ANSWER_TOKENS, reducer=reducer)
        answer_ids = [token for token in run.generated_ids if token not in lab.eos_token_ids]
        if not answer_ids:
            raise OmniLabInputError(
                "the model answered this prompt with nothing to score; name the answer: target='...'"
            )
    else:
        answer_ids = _ids(lab, target.answer, "answer")
    alternative_ids = None if target.alternative is None else _ids(lab, target.alternative, "alternative")
    if target.tokens == "first":
        answer_ids = answer_ids[:1]
        alternative_ids = None if alternative_ids is None else alternative_ids[:1]
    if alternative_ids is not None and alternative_ids == answer_ids:
        what = "first token" if target.tokens == "first" else "tokens"
        raise OmniLabInputError(
            f"the alternative {target.alternative!r} has the same {what} as the answer {target.answer!r}: the "
            "contrast would be 0 everywhere; name a different alternative"
        )
    decode = lab.tokenizer.decode
    return ResolvedTarget(
        tuple(answer_ids),
        None if alternative_ids is None else tuple(alternative_ids),
        target.tokens,
        decode(answer_ids),
        None if alternative_ids is None else decode(alternative_ids),
    )


def _ids(lab, answer, what: str) -> list[int]:
    if isinstance(answer, str):
        ids = lab.tokenizer(validate.text(what, answer), add_special_tokens=False)["input_ids"]
    elif isinstance(answer, (list, tuple)) or getattr(answer, "ndim", None) == 1:
        ids = [validate.number(f"{what} token id", i, integer=True) for i in answer]
    else:
        raise OmniLabInputError(f"the {what} {answer!r}: pass its text or a list of token ids")
    vocabulary = int(lab.model.get_input_embeddings().weight.shape[0])
    if not ids:
        raise OmniLabInputError(f"the {what} {answer!r} has no tokens: the model cannot score an empty answer")
    bad = [i for i in ids if not 0 <= i < vocabulary]
    if bad:
        raise OmniLabInputError(f"the {what} {answer!r} holds token ids {bad} outside this model's {vocabulary} ids")
    unknown = lab.tokenizer.unk_token_id
    if isinstance(answer, str) and unknown is not None and unknown in ids:
        raise OmniLabInputError(
            f"the {what} {answer!r} contains text this model's tokenizer cannot write (it becomes <unk>): the model "
            "cannot score it; use words it can produce"
        )
    return ids


def answer_log_prob(logits: torch.Tensor, prompt_length: int, ids: torch.Tensor) -> torch.Tensor:
    """Teacher-forced log-probability of `ids` after a prompt.

    Args:
        logits: `(B, prompt_length + len(ids) - 1, vocab)` logits of prompt + all answer tokens but the last.
        prompt_length: L, the prompt's length in this batch (positions L-1 .. L+A-2 predict the answer).
        ids: `(A,)` answer ids.
    Returns:
        `(B,)` sum over the answer tokens of log p(token | prompt, earlier answer tokens).
    """
    count = ids.shape[0]
    predicting = logits[:, prompt_length - 1 : prompt_length - 1 + count]  # (B, A, vocab)
    log_probs = torch.log_softmax(predicting if predicting.dtype == torch.float64 else predicting.float(), dim=-1)
    chosen = log_probs.gather(-1, ids.to(log_probs.device)[None, :, None].expand(logits.shape[0], count, 1))
    return chosen[..., 0].sum(dim=-1)
