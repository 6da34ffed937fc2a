"""The one study driver: plan cells, skip those `out=` already holds, run the rest on an executor, store each chunk's
rows once as they arrive. `sweep` (a row per cell) and the per-prompt studies (a prompt's rows per cell) both run
through `run_cells`; where the cells run is the executor's business (`omni_lab/executors.py`: here, threads over
several labs, or Ray actors), and the executor knows nothing of the study.

A study's inputs (`study_inputs`): a `Dataset` travels as data (each prompt built where it runs, from its row); a list
of `Prompt`s, strings or (prompt, reference) pairs stays here (local executors only; with a remote executor strings
become a Dataset).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import OmniLabInputError
from ..executors import Executor, Work, resolve_executor
from .common import RowStore, as_prompts, progress_bar
from .dataset import Dataset, build_prompt

log = logging.getLogger("omni_lab.studies")


@dataclass(frozen=True)
class StudyInputs:
    """A study's prompts: their keys, and either the dataset rows (data) or the `Prompt`s built here.

    Attributes:
        keys: one stable key per prompt (a Dataset's keys; a list's indices).
        rows: {prompt index: dataset row}, or None.
        prompts: {prompt index: Prompt}, or None.
    """

    keys: list[str]
    rows: dict | None = None
    prompts: dict | None = None

    def work(self, name: str, cells_function: Callable, options: dict) -> Work:
        """The `Work` an executor runs for these inputs."""
        return Work(name, cells_function, options, build_prompt, self.rows, self.prompts)


def check_lab(study: str, lab, executor: Executor) -> None:
    """OmniLabInputError unless `lab` is a Lab (or, for an executor that loads its own models, a source string)."""
    from ..lab import Lab

    if isinstance(lab, Lab):
        return
    if isinstance(lab, str) and executor.loads_models:
        return
    raise OmniLabInputError(
        f"{study} needs a Lab (ol.load(...)), got {type(lab).__name__}; a source string works with an executor that "
        "loads its own models (cluster=ol.cluster.Ray(...))"
    )


def study_inputs(lab, prompts, executor: Executor) -> StudyInputs:
    """The study's `StudyInputs`: a `Dataset` keeps its keys; a list's keys are its indices. For a remote executor,
    inputs must be data (a Dataset, strings or (string, reference) pairs), which become a Dataset."""
    from ..prompt import Prompt

    if isinstance(prompts, Dataset):
        return StudyInputs(prompts.keys, rows=dict(enumerate(prompts.rows)))
    if executor.remote:
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
        return StudyInputs(dataset.keys, rows=dict(enumerate(dataset.rows)))
    built = as_prompts(lab, prompts)
    return StudyInputs([str(index) for index in range(len(built))], prompts=dict(enumerate(built)))


def run_cells(
    work: Work,
    lab,
    cells: list,
    *,
    executor: Executor,
    chunk: Callable[[list, int], list[list]],
    row_key: Callable[[dict], object],
    adopt: Callable[[dict], dict | None],
    frame: Callable[[list[dict]], object],
    store: RowStore,
    progress: bool,
) -> list[dict]:
    """Run a study's cells; returns every row (those `store` already held, then the new ones, unordered).

    Args:
        work: the study's `Work`.
        lab: the study's Lab (or source string, for an executor that loads its own models).
        cells: every cell of the study, each with `.key` (what its rows are found by) and `.prompt` (its prompt).
        executor: where the cells run.
        chunk: `(pending cells, executor.chunk_size) -> chunks` (a study may keep a prompt's cells together).
        row_key: a row -> the key of the cell it belongs to.
        adopt: a stored row -> the row as the study returns it, or None when it belongs to no cell of this study.
        frame: rows -> the DataFrame `store.append` writes (the study's columns and dtypes).
        store: the keyed output (`out=`).
        progress: show one progress bar over all cells (all workers).
    """
    rows = [adopted for row in store.existing().to_dict("records") if (adopted := adopt(row)) is not None]
    done = {row_key(row) for row in rows}
    pending = [cell for cell in cells if cell.key not in done]
    if done:
        log.info("%s: %d of %d cells already in %s", work.name, len(cells) - len(pending), len(cells), store.path)
    log.info("%s: computing %d cells on %r", work.name, len(pending), executor)
    bar = progress_bar(len(cells), work.name, progress)
    bar.update(len(cells) - len(pending))

    def emit(chunk_rows: list[dict]) -> int:
        """Store a chunk's rows, each cell's once (this process is the only writer); returns the new cells."""
        fresh = [row for row in chunk_rows if row_key(row) not in done]
        new = dict.fromkeys(row_key(row) for row in fresh)
        done.update(new)
        if fresh:
            store.append(frame(fresh))
            rows.extend(fresh)
        bar.update(len(new))
        return len(new)

    try:
        chunks = chunk(pending, executor.chunk_size) if pending else []
        computed = executor.run(lab, work, chunks, emit) if chunks else 0
    finally:
        bar.close()
    log.info("%s: computed %d cells", work.name, computed)
    return rows


def resolve(study: str, lab, prompts, cluster) -> tuple[Executor, StudyInputs]:
    """The study's executor (from `cluster=`) and inputs, the lab checked against the executor."""
    executor = resolve_executor(cluster)
    check_lab(study, lab, executor)
    return executor, study_inputs(lab, prompts, executor)
