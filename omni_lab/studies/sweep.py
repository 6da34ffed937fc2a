"""`sweep`: what token reduction costs, reducer by reducer and rate by rate, against a random control.

For every prompt the media are encoded once; the unreduced run is the reference. Each (reducer, rate) run reports
the tokens kept, the encode / reduce / prefill seconds, the answer (and whether it matches the prompt's reference),
and how far the first answer token's distribution moved from the unreduced run (KL divergence, top-1 agreement).
Every reducer is paired with a `RandomDrop` at exactly its budget (UniPruneBench, arXiv 2511.02650: random pruning
is a strong baseline; any claim about a reducer needs it; docs/token_reduction.md §3).
"""

from __future__ import annotations

import inspect

from ..errors import OmniLabInputError
from ..reduction import Reducer
from .common import as_prompts, is_correct, kept_counts, kl_divergence, progress, write_rows

COLUMNS = [
    "prompt",
    "reducer",
    "rate",
    "control_for",
    "kept_tokens",
    "prompt_tokens",
    "kept_image",
    "kept_video",
    "kept_audio",
    "encode_s",
    "reduce_s",
    "prefill_s",
    "answer",
    "reference",
    "correct",
    "kl_first_token",
    "top1_agreement",
]


def sweep_row(lab, prompt, encoded, reducer, baseline, max_new_tokens: int) -> dict:
    """One unit of work: run `prompt` with `reducer` (media already encoded) and compare with `baseline`."""
    run = lab.run(prompt, max_new_tokens=max_new_tokens, reducer=reducer, return_logits=True, encoded=encoded)
    return describe(run, reducer, baseline)


def describe(run, reducer, baseline) -> dict:
    """The sweep columns of one run, compared with the unreduced `baseline` run of the same prompt."""
    first, reference_first = run.logits[0], baseline.logits[0]
    return {
        "reducer": repr(reducer) if reducer is not None else "none",
        **kept_counts(run.token_map),
        "encode_s": run.timings.get("encode_s", 0.0),
        "reduce_s": run.timings.get("reduce_s", 0.0),
        "prefill_s": run.timings.get("prefill_s", 0.0),
        "answer": run.answer,
        "reference": run.prompt.reference,
        "correct": is_correct(run.answer, run.prompt.reference),
        "kl_first_token": kl_divergence(reference_first, first),
        "top1_agreement": bool(int(first.argmax()) == int(reference_first.argmax())),
    }


def _make(factory, rate: float):
    """The reducer `factory` builds for `rate`: `factory(rate=rate)` when its signature takes a `rate` keyword,
    else `factory(rate)`. Decided from the signature, so an error raised inside the factory surfaces as it is.

    Args:
        factory: a reducer class (e.g. `ol.reducers.EVS`) or a callable `rate -> reducer`.
        rate: the fraction of tokens to drop.
    Returns:
        the reducer.
    """
    if not isinstance(factory, type) and isinstance(factory, Reducer):
        raise OmniLabInputError(
            f"sweep takes reducer classes or callables rate -> reducer, got the reducer {factory!r}; pass its class "
            f"(e.g. ol.reducers.{type(factory).__name__}) or a lambda rate: ..."
        )
    if not callable(factory):
        raise OmniLabInputError(
            f"sweep's reducers must be reducer classes or callables rate -> reducer, got {factory!r}"
        )
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have no signature: call positionally
        return factory(rate)
    parameters = signature.parameters
    kinds = {parameter.kind for parameter in parameters.values()}
    takes_keyword = (
        "rate" in parameters
        and parameters["rate"].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ) or (
        inspect.Parameter.VAR_KEYWORD in kinds
        and not kinds & {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}
    )
    arguments = ((), {"rate": rate}) if takes_keyword else ((rate,), {})
    try:
        signature.bind(*arguments[0], **arguments[1])
    except TypeError as error:
        raise OmniLabInputError(
            f"sweep cannot call the reducer factory {factory!r} with a rate ({error}); give a reducer class taking "
            "`rate` or a callable rate -> reducer"
        ) from None
    return factory(*arguments[0], **arguments[1])


def sweep(
    lab,
    prompts,
    reducers,
    rates=(0.25, 0.5, 0.75),
    *,
    max_new_tokens: int = 8,
    seed: int = 0,
    progress_bar: bool = True,
    out=None,
):
    """Run every prompt with every reducer at every rate, plus an equal-budget random control and no reduction.

    Args:
        lab: the `Lab`.
        prompts: `Prompt`s (with `reference=` for accuracy), strings, or (prompt, reference) pairs.
        reducers: reducer classes taking `rate` (e.g. `ol.reducers.EVS`) or callables `rate -> reducer` (called
            `factory(rate=rate)` when their signature has a `rate` keyword, else `factory(rate)`).
        rates: fractions of tokens to drop.
        max_new_tokens: answer length.
        seed: seed of the RandomDrop controls.
        progress_bar: show a progress bar.
        out: append the rows to SQLite (.sqlite/.db) or write Parquet (.parquet).
    Returns:
        DataFrame with `COLUMNS`: one row per (prompt, reducer, rate), the control rows (`control_for` names the
        reducer they match) and one unreduced row per prompt (reducer "none", rate 0).
    """
    import pandas as pd

    from ..reduction import RandomDrop

    prompts = as_prompts(lab, prompts)
    if not reducers:
        raise OmniLabInputError("sweep needs at least one reducer")
    rates = [float(rate) for rate in rates]
    made = [[_make(factory, rate) for rate in rates] for factory in reducers]  # every factory error before any run
    rows = []
    bar = progress(len(prompts) * (1 + 2 * len(reducers) * len(rates)), "sweep", progress_bar)
    for index, prompt in enumerate(prompts):
        encoded = lab.encode(prompt)
        baseline = lab.run(prompt, max_new_tokens=max_new_tokens, reducer=None, return_logits=True, encoded=encoded)
        rows.append({"prompt": index, "rate": 0.0, "control_for": None, **describe(baseline, None, baseline)})
        bar.update()
        for row_of_reducers in made:
            for rate, reducer in zip(rates, row_of_reducers, strict=True):
                rows.append(
                    {
                        "prompt": index,
                        "rate": rate,
                        "control_for": None,
                        **sweep_row(lab, prompt, encoded, reducer, baseline, max_new_tokens),
                    }
                )
                bar.update()
                control = RandomDrop.matching(reducer, seed=seed)
                rows.append(
                    {
                        "prompt": index,
                        "rate": rate,
                        "control_for": repr(reducer),
                        **sweep_row(lab, prompt, encoded, control, baseline, max_new_tokens),
                    }
                )
                bar.update()
    bar.close()
    frame = pd.DataFrame(rows)[COLUMNS]
    write_rows(frame, out, "sweep")
    return frame
