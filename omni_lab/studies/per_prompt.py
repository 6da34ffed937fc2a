"""Per-prompt studies over many prompts: `reinsertion`, `pruned_contribution`, `routing_shift` and
`expert_specialization` given a `Dataset` (or a list of prompts), here or on Ray workers (`cluster=`).

The unit of work is one prompt (a `PromptCell`). A study's cell function, `cells(lab, prompt_of, cells, **options)`,
is the one computation both here and in a Ray `StudyWorker` (`omni_lab.cluster.ray.STUDIES` names it): it returns
each prompt's rows (at least one a prompt) tagged with the prompt's index and dataset key. The driver alone stores
rows, a prompt's rows together, keyed by `prompt_key`: a rerun with the same `out` skips the prompts already there,
and a chunk that Ray retries is not stored twice. Also here: what `sweep` shares with these studies (the check of
`lab` and `cluster=`, and turning a study's inputs into keys, local prompts and a `Dataset`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from ..errors import OmniLabInputError
from .common import RowStore, as_prompts, progress
from .dataset import Dataset, build_prompt

log = logging.getLogger("omni_lab.studies")


@dataclass(frozen=True)
class PromptCell:
    """One prompt of a per-prompt study: its index in the study's inputs and its dataset key."""

    prompt: int
    key: str


def check_lab_and_cluster(study: str, lab, cluster) -> None:
    """OmniLabInputError unless `lab` is a Lab (or, with `cluster=`, a source string) and `cluster` is None or Ray."""
    from ..lab import Lab

    if cluster is None and not isinstance(lab, Lab):
        raise OmniLabInputError(
            f"{study} needs a Lab (ol.load(...)), got {type(lab).__name__}; a source string works with cluster= only"
        )
    if cluster is not None:
        from ..cluster.ray import Ray  # the options only: ray itself is imported when the study starts

        if not isinstance(cluster, Ray):
            raise OmniLabInputError(f"cluster={cluster!r}: give None (run here) or ol.cluster.Ray(workers=..., ...)")
        if not isinstance(lab, (Lab, str)):
            raise OmniLabInputError(
                f"{study} with cluster= needs a Lab or a model source string (e.g. 'toy'), got {type(lab).__name__}"
            )


def is_many(prompts) -> bool:
    """Whether a per-prompt study's `prompt` argument holds many prompts (a `Dataset` or a list)."""
    return isinstance(prompts, (Dataset, list))


def study_inputs(lab, prompts, cluster):
    """(prompt keys, prompt index -> Prompt on this process or None, Dataset or None) for a study's inputs.

    A `Dataset` keeps its keys; a list's keys are its indices. With `cluster=`, inputs must be data (a Dataset,
    strings or (string, reference) pairs), which become a Dataset the workers build their prompts from.
    """
    from ..prompt import Prompt

    if isinstance(prompts, Dataset):
        dataset = prompts
    elif cluster is not None:
        entries = [prompts] if isinstance(prompts, (str, Prompt)) else list(prompts)
        records = []
        for entry in entries:
            text, reference = entry if isinstance(entry, tuple) and len(entry) == 2 else (entry, None)
            if not isinstance(text, str):
                raise OmniLabInputError(
                    "with cluster=, give the prompts as data: an ol.studies.Dataset (texts, media paths or ShapesWorld "
                    f"seeds) or strings, not {type(text).__name__} objects (a Prompt carries tensors; workers build "
                    "their own prompts from the dataset's rows)"
                )
            records.append({"text": text, "reference": reference})
        if not records:
            raise OmniLabInputError("a study needs at least one prompt")
        dataset = Dataset.from_records(records)
    else:
        built = as_prompts(lab, prompts)
        return [str(index) for index in range(len(built))], built.__getitem__, None
    local = None if cluster is not None else (lambda index: build_prompt(lab, dataset.rows[index]))
    return dataset.keys, local, dataset


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
    progress_bar: bool,
    cluster,
):
    """Run a per-prompt study over many prompts, here or on Ray; store and return every prompt's rows.

    Args:
        study: the study's name (a key of `omni_lab.cluster.ray.STUDIES`; the progress bar's and the log's label).
        cells_function: the study's cell function, `(lab, prompt_of, cells, **options) -> rows`, called here when
            `cluster` is None (the workers call the same function through `STUDIES`).
        lab: the `Lab` (with `cluster=`, also a model source string).
        prompts: an `ol.studies.Dataset`, or prompts, strings or (prompt, reference) pairs (as `sweep` takes them).
        options: the cell function's keyword options (plain data; with `cluster=` they must pickle).
        columns: the stored and returned columns, `prompt` and `prompt_key` first.
        dtypes: the columns' dtypes (`with_dtypes`), applied to rows computed now and to rows read back.
        out: None, SQLite (.sqlite/.db: rows appended to `table`) or Parquet (.parquet); a rerun skips the prompts
            whose rows are already there (keyed by `prompt_key`).
        table: the SQLite table.
        progress_bar: show one progress bar over all prompts (all workers).
        cluster: None or `ol.cluster.Ray(...)`: chunks of `cluster.chunk_size` prompts (at most an even share of
            the pending prompts per worker) run on Ray actors.
    Returns:
        DataFrame with `columns`: every prompt's rows, prompts in input order, a prompt's rows in the order its
        study gives them.
    """
    import pandas as pd

    check_lab_and_cluster(study, lab, cluster)
    keys, prompt_of, dataset = study_inputs(lab, prompts, cluster)
    cells = [PromptCell(index, key) for index, key in enumerate(keys)]
    index_of = {key: index for index, key in enumerate(keys)}
    store = RowStore(out, table, ("prompt_key",))
    stored = store.existing()
    rows = []
    if len(stored):
        stored = stored[stored.prompt_key.astype(str).isin(index_of)]
        rows = [{**row, "prompt": index_of[str(row["prompt_key"])]} for row in stored[columns].to_dict("records")]
    done = {str(row["prompt_key"]) for row in rows}
    pending = [cell for cell in cells if cell.key not in done]
    if done:
        log.info("%s: %d of %d prompts already in %s; computing %d", study, len(done), len(cells), out, len(pending))
    bar = progress(len(cells), study, progress_bar)
    bar.update(len(done))

    def emit(chunk_rows: list[dict]) -> int:
        """Store a chunk's rows, each prompt's once (the driver is the only writer); returns the new prompts."""
        fresh = [row for row in chunk_rows if row["prompt_key"] not in done]
        new_keys = dict.fromkeys(row["prompt_key"] for row in fresh)
        done.update(new_keys)
        if fresh:
            store.append(with_dtypes(pd.DataFrame(fresh)[columns], dtypes))
            rows.extend(fresh)
        bar.update(len(new_keys))
        return len(new_keys)

    computed = 0
    try:
        if cluster is None:
            for cell in pending:  # one prompt a chunk: each is stored as soon as it is done
                computed += emit(cells_function(lab, prompt_of, [cell], **options))
        elif pending:
            from ..cluster.ray import run_chunks

            size = min(cluster.chunk_size, max(1, math.ceil(len(pending) / cluster.workers)))
            chunks = [pending[start : start + size] for start in range(0, len(pending), size)]
            computed = run_chunks(cluster, lab, study, dataset, chunks, options, emit)
    finally:
        bar.close()
    log.info("%s: computed %d prompts", study, computed)
    frame = pd.DataFrame(rows, columns=columns).sort_values("prompt", kind="stable").reset_index(drop=True)
    frame = with_dtypes(frame, dtypes)
    store.finish(frame)
    return frame
