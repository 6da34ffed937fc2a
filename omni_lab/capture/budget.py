"""The memory budget of a run's captures: refuse, with the estimate and cheaper alternatives, past it.

Each capturer and the activation cache estimate what they keep (`CaptureSession.estimate_bytes`: results, kept keys
or Δ, B for generated queries, cached activations, the largest transient block a kernel needs) for the longest
sequence the run can reach (the unreduced prompt plus `max_new_tokens`). It is an upper bound, not a measurement.
"""

from __future__ import annotations

from .. import validate
from ..errors import OmniLabInputError

BUDGET_BYTES = 8 * 2**30  # change with omni_lab.capture.budget.BUDGET_BYTES or run(..., capture_budget=...)


def check(parts: dict, budget: int | None) -> None:
    """Refuse, with the estimate and cheaper alternatives, when the parts add up to more than the budget.

    Args:
        parts: {part: bytes}, e.g. `CaptureSession.estimate_bytes(max_new_tokens)`.
        budget: bytes allowed; None means `BUDGET_BYTES`.
    Raises:
        OmniLabInputError: the total is over the budget (the message lists the largest parts and cheaper options).
    """
    budget = BUDGET_BYTES if budget is None else validate.number("capture_budget", budget, low=1, integer=True)
    total = sum(parts.values())
    if total <= budget:
        return
    largest = sorted(parts.items(), key=lambda item: -item[1])[:4]
    listing = ", ".join(f"{name} {size / 2**30:.2f} GiB" for name, size in largest)
    raise OmniLabInputError(
        f"the requested captures need about {total / 2**30:.2f} GiB (budget {budget / 2**30:.2f} GiB): {listing}. "
        "Cheaper: group the queries (attention_mass(queries='answer' or 'modality')), coarser segments "
        "(segments='modality'), fewer layers (layers=[...]), routing without scores, cache_dtype=torch.float16 or "
        "fewer cached hook names; or raise the budget with run(..., capture_budget=bytes)."
    )


__all__ = ["BUDGET_BYTES", "check"]
