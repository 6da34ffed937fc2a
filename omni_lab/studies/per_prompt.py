"""Per-prompt studies over many prompts: `reinsertion`, `pruned_contribution`, `routing_shift` and
`expert_specialization` given a `Dataset` (or a list of prompts), on any executor (`cluster=`).

The unit of work is one prompt (a `PromptCell`). A study's cell function, `cells(lab, prompt_of, cells, **options)`,
is the one computation wherever it runs: it returns each prompt's rows (at least one a prompt) tagged with the
prompt's index and dataset key. The study driver (`execution.run_cells`) stores a prompt's rows together, keyed by
`prompt_key`: a rerun with the same `out` skips the prompts already there, and a chunk that Ray retries is not stored
twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OmniLabInputError
from .common import RowStore
from .dataset import Dataset
from .execution import resolve, run_cells


@dataclass(frozen=True)
class PromptCell:
    """One prompt of a per-prompt study: its index in the study's inputs and its dataset key."""

    prompt: int
    key: str


def is_many(prompts) -> bool:
    """Whether a per-prompt study's `prompt` argument holds many prompts (a `Dataset` or a list)."""
    return isinstance(prompts, (Dataset, list))


def one_prompt_only(study: str, cluster) -> None:
    """OmniLabInputError for `cluster=` given with a single prompt (the cluster form runs many)."""
    if cluster is not None:
        raise OmniLabInputError(
            f"{study}(..., cluster=...) runs the study over many prompts: give an ol.studies.Dataset (or a list of "
            "prompt strings) instead of one prompt, or drop cluster= to run this prompt here"
        )


def with_dtypes(frame, dtypes: dict):
    """A copy of `frame` with each named column cast, whether computed now or read back from SQLite / Parquet.

    Args:
        frame: the rows.
        dtypes: {column: a numpy / pandas dtype name ("bool" and "boolean", True / False however stored: 1, 1.0,
            "True"; "boolean" keeps missing values), or "str?" (strings, None where missing)}.
    """
    truth = {True: True, False: False, "True": True, "False": False, "1": True, "0": False}  # 1 and 0 hash as bools
    frame = frame.copy()
    for column, kind in dtypes.items():
        if kind in ("bool", "boolean"):
            present = frame[column].notna()
            frame[column] = frame[column].where(present, None).map(lambda value: truth.get(value)).astype(kind)
        elif kind == "str?":
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        else:
            frame[column] = frame[column].astype(kind)
    return frame


def run_per_prompt(
    study: str,
    cells_function,
    lab,
    prompts,
    options: dict,
    *,
    columns: list[str],
    dtypes: dict,
    out,
    table: str,
    progress: bool,
    cluster,
):
    """Run a per-prompt study over many prompts on an executor; store and return every prompt's rows.

    Args:
        study: the study's name (the progress bar's and the log's label).
        cells_function: the study's cell function, `(lab, prompt_of, cells, **options) -> rows` (module-level: it
            travels to other processes by reference).
        lab: the `Lab` (with an executor that loads its own models, also a model source string).
        prompts: an `ol.studies.Dataset`, or prompts, strings or (prompt, reference) pairs (as `sweep` takes them).
        options: the cell function's keyword options (plain data; with Ray they must pickle).
        columns: the stored and returned columns, `prompt` and `prompt_key` first.
        dtypes: the columns' dtypes (`with_dtypes`), applied to rows computed now and to rows read back.
        out: None, SQLite (.sqlite/.db: rows appended to `table`) or Parquet (.parquet); a rerun skips the prompts
            whose rows are already there (keyed by `prompt_key`).
        table: the SQLite table.
        progress: show one progress bar over all prompts (all workers).
        cluster: None (here), `ol.cluster.Ray(...)`, `ol.executors.Threads(labs)` or another executor; chunks hold
            at most an even share of the pending prompts per Ray worker.
    Returns:
        DataFrame with `columns`: every prompt's rows, prompts in input order, a prompt's rows in the order its
        study gives them.
    """
    import pandas as pd

    executor, inputs = resolve(study, lab, prompts, cluster)
    cells = [PromptCell(index, key) for index, key in enumerate(inputs.keys)]
    index_of = {key: index for index, key in enumerate(inputs.keys)}
    workers = getattr(executor, "workers", 1)

    def chunk(pending: list, size: int) -> list[list]:
        size = min(size, max(1, math.ceil(len(pending) / workers)))
        return [pending[start : start + size] for start in range(0, len(pending), size)]

    def adopt(row: dict) -> dict | None:
        key = str(row["prompt_key"])
        return {**row, "prompt": index_of[key]} if key in index_of else None

    rows = run_cells(
        inputs.work(study, cells_function, options),
        lab,
        cells,
        executor=executor,
        chunk=chunk,
        row_key=lambda row: str(row["prompt_key"]),
        adopt=adopt,
        frame=lambda fresh: with_dtypes(pd.DataFrame(fresh)[columns], dtypes),
        store=(store := RowStore(out, table, ("prompt_key",))),
        progress=progress,
    )
    frame = pd.DataFrame(rows, columns=columns)  # a row may leave columns out (expert_specialization's parts)
    frame = with_dtypes(frame.sort_values("prompt", kind="stable").reset_index(drop=True), dtypes)
    store.finish(frame)
    return frame
