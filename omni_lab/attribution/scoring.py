"""The target on batches of merged-embedding sequences, the forward-pass estimate, and the refusal past a budget.

`Scorer` is the one place attributions run the language model: it appends each target continuation's embeddings
(all answer tokens but the last) to a batch of prompt sequences `(B, L, D)`, calls `lab.logits_from_embeds` (the
gradient path; autograd follows the caller's mode, so perturbation methods run it under `torch.inference_mode()`),
and reads the teacher-forced log-probability (`targets.answer_log_prob`). It counts forward passes (one per
sequence per continuation) and advances a tqdm bar.

Every method estimates its forward passes before it runs (`estimate`) and `check_budget` refuses past
`BUDGET_FORWARD_PASSES` (or the call's `budget=`), naming the estimate and a cheaper choice, as captures refuse past
their memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OmniLabInputError
from ..targets import ResolvedTarget, answer_log_prob

BUDGET_FORWARD_PASSES = 4096  # change with omni_lab.attribution.scoring.BUDGET_FORWARD_PASSES or budget=...


@dataclass(frozen=True)
class Cost:
    """Work one attribution needs.

    Attributes:
        forward_passes: language-model forward passes (one per perturbed sequence and target continuation).
        backward_passes: language-model backward passes (integrated gradients).
        encoder_passes: media-encoder runs (input occlusion re-encodes each perturbed item; IG at the projector
            runs the encoders once per step).
        captum_evaluations: calls of the forward function captum makes (exact Shapley: n * n! orderings, served
            from the 2^n distinct coalitions).
    """

    forward_passes: int
    backward_passes: int = 0
    encoder_passes: int = 0
    captum_evaluations: int = 0


def estimate(method: str, units: int, *, continuations: int = 1, answer_tokens: int = 1, n_steps: int = 0) -> Cost:
    """Forward / backward / encoder passes of one attribution.

    Args:
        method: "occlusion", "input_occlusion", "modality_shapley", "integrated_gradients",
            "integrated_gradients_projector" or "text_attribution".
        units: number of units (groups for Shapley; ignored by integrated gradients).
        continuations: forward passes per sequence (`ResolvedTarget.passes`: 1, or 2 for a contrast of answers
            that differ before their last token).
        answer_tokens: target tokens (captum's uncached LLMAttribution runs one forward per target token).
        n_steps: integration steps (integrated gradients).
    Returns:
        `Cost`.
    """
    if method == "occlusion":
        return Cost((units + 1) * continuations, captum_evaluations=units + 1)
    if method == "input_occlusion":
        return Cost((units + 1) * continuations, encoder_passes=units + 1, captum_evaluations=units + 1)
    if method == "modality_shapley":
        import math

        return Cost(2**units * continuations, captum_evaluations=units * math.factorial(units) + 1)
    if method == "integrated_gradients":
        return Cost((n_steps + 4) * continuations, backward_passes=n_steps * continuations)
    if method == "integrated_gradients_projector":
        return Cost((n_steps + 4) * continuations, n_steps * continuations, encoder_passes=n_steps + 4)
    if method == "text_attribution":
        return Cost((units + 1) * answer_tokens, captum_evaluations=units + 1)
    raise ValueError(f"unknown method {method!r}")


def check_budget(cost: Cost, budget: int | None, what: str, cheaper: str) -> None:
    """OmniLabInputError when `cost` needs more forward passes than `budget` (default `BUDGET_FORWARD_PASSES`)."""
    limit = BUDGET_FORWARD_PASSES if budget is None else budget
    if not isinstance(limit, int) or limit < 1:
        raise OmniLabInputError(f"budget={budget!r}: give a positive number of forward passes")
    total = cost.forward_passes + cost.backward_passes
    if total > limit:
        backward = f" + {cost.backward_passes} backward" if cost.backward_passes else ""
        raise OmniLabInputError(
            f"{what} needs {cost.forward_passes} forward{backward} passes, over the budget of {limit}. Cheaper: "
            f"{cheaper}; or raise budget= (or omni_lab.attribution.scoring.BUDGET_FORWARD_PASSES)"
        )


def check_batch_size(batch_size) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise OmniLabInputError(f"batch_size={batch_size!r}: give a positive int (sequences per forward pass)")
    return batch_size


class Scorer:
    """The target's value for batches of prompt sequences, through `lab.logits_from_embeds`.

    Args:
        lab: the `Lab`.
        target: the `ResolvedTarget`.
        batch_size: sequences per `logits_from_embeds` call.
        progress: show a tqdm bar over forward passes.
        total: the bar's total (the estimate).
        description: the bar's label.
    """

    def __init__(self, lab, target: ResolvedTarget, batch_size: int, progress: bool, total: int, description: str):
        from tqdm.auto import tqdm

        self.lab = lab
        self.batch_size = batch_size
        self.forward_passes = 0
        embedding = lab.model.get_input_embeddings()
        device = embedding.weight.device
        self._prefixes: dict[tuple[int, ...], torch.Tensor] = {}  # appended ids -> their embeddings
        self._continuations = []  # (appended ids, all ids, sign)
        with torch.no_grad():
            for ids, sign in target.sequences:
                prefix = tuple(ids[:-1])  # the last answer token predicts nothing the target needs
                if prefix not in self._prefixes:
                    self._prefixes[prefix] = embedding(torch.tensor(prefix, dtype=torch.long, device=device))
                self._continuations.append((prefix, torch.tensor(ids, dtype=torch.long, device=device), sign))
        self._bar = tqdm(total=total, desc=description, unit="fwd", disable=not progress, mininterval=1.0)

    def __call__(self, embeds: torch.Tensor, token_map) -> torch.Tensor:
        """`(B,)` target values for `(B, L, D)` prompt embeddings laid out like `token_map`'s kept positions.

        Continuations that append the same tokens (a contrast of two one-token answers, first-token targets)
        share one forward pass.
        """
        total = torch.zeros(embeds.shape[0], dtype=torch.float64, device=embeds.device)
        for prefix, appended in self._prefixes.items():
            parts: dict[int, list[torch.Tensor]] = {index: [] for index in range(len(self._continuations))}
            for start in range(0, embeds.shape[0], self.batch_size):
                chunk = embeds[start : start + self.batch_size]
                if appended.shape[0]:
                    tail = appended.to(chunk.device, chunk.dtype).expand(chunk.shape[0], -1, -1)
                    chunk = torch.cat([chunk, tail], dim=1)  # (b, L + A - 1, D)
                # only the positions that predict the answer: the prompt's last one and the appended ones
                logits = self.lab.logits_from_embeds(chunk, token_map, logits_to_keep=appended.shape[0] + 1)
                for index, (owner, ids, _) in enumerate(self._continuations):
                    if owner == prefix:
                        parts[index].append(answer_log_prob(logits, 1, ids))
                self.forward_passes += chunk.shape[0]
                self._bar.update(chunk.shape[0])
            for index, (owner, _, sign) in enumerate(self._continuations):
                if owner == prefix:
                    total = total + sign * torch.cat(parts[index]).double()
        return total

    def close(self) -> None:
        self._bar.close()
