"""`sweep`: what token reduction costs, reducer by reducer and rate by rate, against a random control.

For every prompt the media are encoded once; the unreduced run is the reference. Each (reducer, rate) run reports
the tokens kept, the encode / reduce / prefill seconds, the answer (and whether it matches the prompt's reference),
its agreement with the unreduced run of the same prompt (the same answer; KL divergence and top-1 agreement of the
first answer token's distribution; the change of the first answer token's margin, log p(target) - max other log p,
the target being the reference's first token or else the unreduced answer's: EffiVLM-Bench's "loyalty", usable where
no reference answer exists), and the run's estimated FLOPs (`ReductionLedger.flops_summary`: prefill FLOPs, FLOPs
saved against the unreduced prompt, equivalent tokens). Every reducer is paired with a `RandomDrop` at exactly its
budget (UniPruneBench, arXiv 2511.02650: random pruning is a strong baseline; any claim about a reducer needs it;
docs/token_reduction.md §3), and with `controls=("random", "downsample")` also with a `Downsample` keeping at most its
budget (smaller images, fewer frames: VTC-Bench finds plain downsampling beats many methods).

The unit of work is a cell, one row: (prompt, reducer, rate) or its control, or a prompt's unreduced run. Cells are
computed in chunks that keep a prompt's cells together (its media encoded and its unreduced run done once per
chunk) on any executor (`cluster=`: here, `ol.executors.Threads`, `ol.cluster.Ray(...)`); either way the study alone
writes the rows (`execution.run_cells`), keyed by (prompt_key, reducer, rate, control_for), so a rerun with the same
`out` skips the cells already written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from .. import validate
from ..errors import OmniLabInputError
from ..executors import Local
from ..reduction import Reducer
from .common import RowStore, first_token_target, is_correct, kept_counts, kl_divergence, margin, normalise_answer
from .execution import resolve, run_cells

COLUMNS = [
    "prompt",
    "prompt_key",
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
    "llm_reduce_s",
    "prefill_s",
    "answer",
    "reference",
    "correct",
    "kl_first_token",
    "top1_agreement",
    "same_answer",
    "margin_change",
    "prefill_flops",
    "saved_flops",
    "equivalent_tokens",
]
CONTROLS = ("random", "downsample")


def sweep_row(lab, prompt, encoded, reducer, baseline, max_new_tokens: int, target: int | None = None) -> dict:
    """One unit of work: run `prompt` with `reducer` (media already encoded) and compare with `baseline`."""
    run = lab.run(prompt, max_new_tokens=max_new_tokens, reducer=reducer, return_logits=True, encoded=encoded)
    return describe(run, reducer, baseline, target)


def describe(run, reducer, baseline, target: int | None = None) -> dict:
    """The sweep columns of one run, compared with the unreduced `baseline` run of the same prompt.

    Args:
        target: the token whose margin is followed (`common.first_token_target`); None leaves margin_change NaN.
    """
    first, reference_first = run.logits[0], baseline.logits[0]
    flops = run.ledger.flops_summary() if run.ledger is not None else {}
    return {
        "reducer": repr(reducer) if reducer is not None else "none",
        **kept_counts(run.token_map),
        "encode_s": run.timings.get("encode_s", 0.0),
        "reduce_s": run.timings.get("reduce_s", 0.0),
        "llm_reduce_s": run.timings.get("llm_reduce_s", 0.0),
        "prefill_s": run.timings.get("prefill_s", 0.0),
        "answer": run.answer,
        "reference": run.prompt.reference,
        "correct": is_correct(run.answer, run.prompt.reference),
        "kl_first_token": kl_divergence(reference_first, first),
        "top1_agreement": bool(int(first.argmax()) == int(reference_first.argmax())),
        "same_answer": normalise_answer(run.answer) == normalise_answer(baseline.answer),
        "margin_change": float("nan") if target is None else margin(first, target) - margin(reference_first, target),
        "prefill_flops": float(flops.get("prefill_flops", float("nan"))),
        "saved_flops": float(flops.get("saved_flops", float("nan"))),
        "equivalent_tokens": float(flops.get("equivalent_tokens", float("nan"))),
    }


def make_control(name: str, reducer, seed: int):
    """The equal-budget control `name` ("random" or "downsample") for `reducer`."""
    from ..reduction import Downsample, RandomDrop

    if name == "random":
        return RandomDrop.matching(reducer, seed=seed)
    if name == "downsample":
        return Downsample.matching(reducer)
    raise OmniLabInputError(f"sweep control {name!r}: use {' or '.join(CONTROLS)}")


def _make(factory, rate: float):
    """The reducer `factory` builds for `rate`: `factory(rate=rate)` when its signature takes a `rate` keyword,
    else `factory(rate)`. Decided from the signature, so an error raised inside the factory surfaces as it is.

    Args:
        factory: a reducer class (e.g. `ol.reducers.EVS`), a reducer name ("evs": `reduction.names.at_rate`)
            or a callable `rate -> reducer`.
        rate: the fraction of tokens to drop.
    Returns:
        the reducer.
    """
    if isinstance(factory, str):  # a name travels as data: ("evs", 0.5) -> EVS(0.5), through the one name mapping
        from ..reduction.names import at_rate

        return at_rate(factory, rate)
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


@dataclass(frozen=True)
class Cell:
    """One sweep row to compute: a prompt's unreduced run ("none"), a reducer at a rate, or its random control.

    Attributes:
        order: the row's position in the full table.
        prompt: index of the prompt in the study's inputs.
        kind: "none", "reducer" or "control".
        reducer: the reducer (a small picklable object); for a control, the reducer it matches; None for "none".
        rate: the rate (0.0 for "none").
        key: (prompt_key, reducer label, rate, control_for): what the stored row is found by.
        control: for a control, which one ("random" or "downsample").
    """

    order: int
    prompt: int
    kind: str
    reducer: object
    rate: float
    key: tuple
    control: str = "random"


KEY_COLUMNS = ("prompt_key", "reducer", "rate", "control_for")


def plan_cells(
    prompt_keys: list[str], made: list[list], rates: list[float], seed: int, controls=("random",)
) -> list[Cell]:
    """Every cell of a sweep, in the table's row order (a control that cannot act on a reducer's modalities, e.g.
    Downsample for an audio reducer, is left out)."""
    cells = []
    for index, prompt_key in enumerate(prompt_keys):
        cells.append(Cell(len(cells), index, "none", None, 0.0, (prompt_key, "none", 0.0, None)))
        for row_of_reducers in made:
            for rate, reducer in zip(rates, row_of_reducers, strict=True):
                label = repr(reducer)
                cells.append(Cell(len(cells), index, "reducer", reducer, rate, (prompt_key, label, rate, None)))
                for name in controls:
                    try:
                        control = repr(make_control(name, reducer, seed))
                    except OmniLabInputError:
                        if name == "random":
                            raise
                        continue
                    key = (prompt_key, control, rate, label)
                    cells.append(Cell(len(cells), index, "control", reducer, rate, key, name))
    return cells


def compute_cells(lab, prompt_of, cells: list[Cell], *, max_new_tokens: int, seed: int) -> list[dict]:
    """The rows of `cells` (a pure function of its inputs): each prompt encoded and run unreduced once.

    Args:
        lab: the `Lab`.
        prompt_of: prompt index -> `Prompt` (built on the calling process).
        cells: the cells, a prompt's cells next to each other.
        max_new_tokens, seed: as in `sweep`.
    Returns:
        one row dict per cell, with its `order` and `COLUMNS`.
    """
    rows, current, prompt, encoded, baseline, target = [], None, None, None, None, None
    for cell in cells:
        if cell.prompt != current:
            current, prompt = cell.prompt, prompt_of(cell.prompt)
            encoded = lab.encode(prompt)
            baseline = lab.run(prompt, max_new_tokens=max_new_tokens, reducer=None, return_logits=True, encoded=encoded)
            target = first_token_target(lab, prompt, baseline.generated_ids) if baseline.generated_ids else None
        if cell.kind == "none":
            described = describe(baseline, None, baseline, target)
        else:
            control = getattr(cell, "control", "random")
            reducer = cell.reducer if cell.kind == "reducer" else make_control(control, cell.reducer, seed)
            described = sweep_row(lab, prompt, encoded, reducer, baseline, max_new_tokens, target)
        rows.append(
            {
                "order": cell.order,
                "prompt": cell.prompt,
                "prompt_key": cell.key[0],
                "rate": cell.rate,
                "control_for": cell.key[3],
                **described,
            }
        )
    return rows


def chunk_cells(cells: list[Cell], chunk_size: int) -> list[list[Cell]]:
    """Cells packed into chunks of about `chunk_size`, a prompt's cells never split (its media encoded once)."""
    chunks, chunk = [], []
    for cell in cells:
        if chunk and cell.prompt != chunk[-1].prompt and len(chunk) >= chunk_size:
            chunks.append(chunk)
            chunk = []
        chunk.append(cell)
    if chunk:
        chunks.append(chunk)
    return chunks


def typed(frame):
    """Sweep rows with their documented dtypes, whether computed now or read back from SQLite / Parquet."""
    frame = frame.copy()
    for column in ("prompt", "kept_tokens", "prompt_tokens", "kept_image", "kept_video", "kept_audio"):
        frame[column] = frame[column].astype("int64")
    floats = ("rate", "encode_s", "reduce_s", "llm_reduce_s", "prefill_s", "kl_first_token", "margin_change")
    floats += ("prefill_flops",)
    for column in (*floats, "saved_flops", "equivalent_tokens"):
        frame[column] = frame[column].astype("float64")
    truth = {True: True, False: False, "True": True, "False": False, "1": True, "0": False}  # 1 and 0 hash as bools
    frame["top1_agreement"] = frame["top1_agreement"].map(truth).astype(bool)
    frame["same_answer"] = frame["same_answer"].map(truth).astype(bool)
    frame["correct"] = frame["correct"].map(lambda value: truth.get(value) if value is not None else None)
    frame["correct"] = frame["correct"].astype(object).where(frame["correct"].notna(), None)
    for column in ("prompt_key", "reducer", "answer"):
        frame[column] = frame[column].astype(str)
    for column in ("control_for", "reference"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _row_key(row) -> tuple:
    control = row["control_for"]
    missing = control is None or (isinstance(control, float) and control != control)  # None, or NaN once stored
    return (str(row["prompt_key"]), str(row["reducer"]), float(row["rate"]), None if missing else str(control))


def sweep(
    lab,
    prompts,
    reducers,
    rates=(0.25, 0.5, 0.75),
    *,
    max_new_tokens: int = 8,
    seed: int = 0,
    progress: bool = True,
    out=None,
    cluster=None,
    chunk_size: int = 32,
    controls=("random",),
):
    """Run every prompt with every reducer at every rate, plus equal-budget controls and no reduction.

    Args:
        lab: the `Lab` (with `cluster=`, also a model source string such as "toy": the workers load it and this
            process loads nothing).
        prompts: an `ol.studies.Dataset`, or `Prompt`s (with `reference=` for accuracy), strings, or
            (prompt, reference) pairs. With `cluster=`, a Dataset or strings: inputs travel as data.
        reducers: reducer classes taking `rate` (e.g. `ol.reducers.EVS`), their names ("evs") or callables
            `rate -> reducer` (called `factory(rate=rate)` when their signature has a `rate` keyword, else
            `factory(rate)`); with `cluster=`, the reducers they make must pickle (the built-in ones do).
        rates: fractions of tokens to drop.
        max_new_tokens: answer length.
        seed: seed of the RandomDrop controls.
        progress: show a progress bar (over all cells, all workers).
        out: SQLite (.sqlite/.db: rows appended to table "sweep") or Parquet (.parquet). Written chunk by chunk;
            a rerun with the same `out` skips the cells already there (rows keyed by prompt_key, reducer, rate,
            control_for; a Dataset's keys are stable, a list's are its indices).
        cluster: where the cells run: None (here), `ol.executors.Threads(labs)` (several labs in this process) or
            `ol.cluster.Ray(...)` (Ray actors that each load the model once); the rows come back here, into the
            same table and `out`.
        chunk_size: cells per chunk here (an executor's own `chunk_size` elsewhere); a prompt's cells stay in one
            chunk.
        controls: the equal-budget controls beside each reducer: "random" (`RandomDrop.matching`, always first)
            and "downsample" (`Downsample.matching`: smaller images, fewer frames, at most the reducer's budget;
            left out for reducers acting on no image or video; on a prompt without images or video it changes
            nothing).
    Returns:
        DataFrame with `COLUMNS`: one row per (prompt, reducer, rate), the control rows (`control_for` names the
        reducer they match) and one unreduced row per prompt (reducer "none", rate 0); `prompt` is the prompt's
        index, `prompt_key` its dataset key. Agreement with the unreduced run: `same_answer`, `kl_first_token`,
        `top1_agreement`, `margin_change`; estimated FLOPs: `prefill_flops`, `saved_flops`, `equivalent_tokens`.
    """
    import pandas as pd

    chunk_size = validate.number("chunk_size", chunk_size, low=1, integer=True)
    executor, inputs = resolve("sweep", lab, prompts, Local(chunk_size) if cluster is None else cluster)
    if not reducers:
        raise OmniLabInputError("sweep needs at least one reducer")
    if isinstance(rates, (str, bytes)) or not hasattr(rates, "__iter__"):
        raise OmniLabInputError(f"rates={rates!r}: pass a list of rates in [0, 1), e.g. rates=[0.25, 0.5, 0.75]")
    rates = [validate.number(f"rates[{i}]", rate, low=0, high=1) for i, rate in enumerate(rates)]
    max_new_tokens = validate.number("max_new_tokens", max_new_tokens, low=1, integer=True)
    seed = validate.number("seed", seed, low=0, integer=True)
    controls = tuple([controls] if isinstance(controls, str) else controls)
    if "random" not in controls or set(controls) - set(CONTROLS):
        raise OmniLabInputError(f"sweep controls={controls!r}: 'random' and optionally 'downsample'")
    made = [[_make(factory, rate) for rate in rates] for factory in reducers]  # every factory error before any run
    cells = plan_cells(inputs.keys, made, rates, seed, controls)
    order_of = {cell.key: cell for cell in cells}
    adopted: set = set()

    def adopt(row: dict) -> dict | None:
        key = _row_key(row)
        if key not in order_of or key in adopted:
            return None
        adopted.add(key)
        return {**row, "order": order_of[key].order, "prompt": order_of[key].prompt}

    store = RowStore(out, "sweep", KEY_COLUMNS)
    rows = run_cells(
        inputs.work("sweep", compute_cells, {"max_new_tokens": max_new_tokens, "seed": seed}),
        lab,
        cells,
        executor=executor,
        chunk=chunk_cells,
        row_key=_row_key,
        adopt=adopt,
        frame=lambda fresh: pd.DataFrame(fresh)[COLUMNS],
        store=store,
        progress=progress,
    )
    frame = typed(pd.DataFrame(rows).sort_values("order", kind="stable")[COLUMNS].reset_index(drop=True))
    store.finish(frame)
    return frame
