"""Executors: where a study's cells run. A study hands an executor a `Work` (its cell function, the function that
builds a prompt from a dataset row, and the rows) and chunks of cells; the executor runs the chunks and hands each
chunk's rows back to the study's `emit`, on the calling process, as they arrive. It knows nothing of which study it
runs, and the studies know nothing of where their cells run.

    Local()                          here, in this process, with the study's lab (the default)
    Threads(labs)                    several labs in this process, one thread each (e.g. one per GPU of a box)
    ol.cluster.Ray(workers=8, ...)   Ray actors that each load the model once (omni_lab/cluster/ray.py)

A new executor subclasses `Executor` and implements `run`; nothing else changes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import OmniLabInputError


@dataclass(frozen=True)
class Work:
    """What a study computes, as data an executor can ship.

    Attributes:
        name: the study's name (logs and progress bars).
        cells_function: `(lab, prompt_of, cells, **options) -> row dicts`, a module-level function (it travels to
            other processes by reference).
        options: its keyword options (plain data; with Ray they must pickle).
        build_prompt: `(lab, row) -> Prompt`, a module-level function building a prompt from a dataset row.
        rows: {prompt index: dataset row} (plain data), or None when the prompts exist only here (`prompts`).
        prompts: {prompt index: Prompt} built on this process (local executors only), or None.
    """

    name: str
    cells_function: Callable
    options: dict
    build_prompt: Callable | None = None
    rows: dict | None = None
    prompts: dict | None = None

    def prompt_of(self, lab) -> Callable:
        """prompt index -> `Prompt` for `lab`: the prompts given here, else built from the dataset rows."""
        if self.prompts is not None:
            return self.prompts.__getitem__
        return lambda index: self.build_prompt(lab, self.rows[index])

    def compute(self, lab, chunk: list) -> list[dict]:
        """The rows of one chunk of cells on `lab`."""
        return self.cells_function(lab, self.prompt_of(lab), chunk, **self.options)

    def for_chunk(self, chunk: list) -> Work:
        """A copy holding only the dataset rows `chunk` needs (what ships with it to another process)."""
        if self.rows is None:
            raise OmniLabInputError(
                f"{self.name}: this executor runs in other processes, so prompts must travel as data: give an "
                "ol.studies.Dataset (texts, media paths or ShapesWorld seeds) or strings instead of Prompt objects"
            )
        needed = {cell.prompt for cell in chunk}
        return Work(self.name, self.cells_function, self.options, self.build_prompt, {i: self.rows[i] for i in needed})


class Executor:
    """Base of executors.

    Attributes:
        chunk_size: cells per chunk (a study may keep a prompt's cells together, so a chunk can hold a few more).
        loads_models: the executor loads its own models (a study may then be given a source string instead of a
            Lab); False: it runs on the Lab the study was given.
        remote: the work runs in other processes, so prompts must travel as data (a Dataset or strings).
    """

    chunk_size: int = 32
    loads_models: bool = False
    remote: bool = False

    def run(self, lab, work: Work, chunks: list[list], emit: Callable[[list[dict]], int]) -> int:
        """Compute every chunk and hand its rows to `emit` (on this process); returns what `emit` counted.

        Args:
            lab: the study's `Lab` (or, for an executor that loads its own models, possibly a source string).
            work: what to compute.
            chunks: lists of cells (each with `.prompt`, its prompt index).
            emit: rows -> the number of cells newly stored (the study's only writer).
        """
        raise NotImplementedError


class Local(Executor):
    """Run the chunks one after another in this process, on the study's lab. Each chunk's rows are stored as soon as
    it is done, so the default of one cell (a sweep keeps a prompt's cells together) loses little to an interruption.
    """

    def __init__(self, chunk_size: int = 1):
        self.chunk_size = _positive("Local", "chunk_size", chunk_size)

    def run(self, lab, work, chunks, emit) -> int:
        return sum(emit(work.compute(lab, chunk)) for chunk in chunks)

    def __repr__(self) -> str:
        return f"Local(chunk_size={self.chunk_size})"


class Threads(Executor):
    """Run chunks on several labs at once, one thread per lab: e.g. one model per GPU of a box
    (`Threads([ol.load(path, device=f"cuda:{i}") for i in range(8)])`). Torch releases the GIL in its kernels, so
    labs on different devices overlap; each `Lab` serialises its own runs, so a lab is never shared by two chunks.

    Args:
        labs: the labs (at least one); the study's own lab is not used.
        chunk_size: cells per chunk.
    """

    loads_models = True

    def __init__(self, labs, chunk_size: int = 8):
        from .lab import Lab

        labs = list(labs)
        if not labs or not all(isinstance(lab, Lab) for lab in labs):
            raise OmniLabInputError("Threads(labs=...): give a list of at least one Lab (ol.load(...))")
        self.labs = labs
        self.chunk_size = _positive("Threads", "chunk_size", chunk_size)

    def run(self, lab, work, chunks, emit) -> int:
        pending: queue.SimpleQueue = queue.SimpleQueue()
        for chunk in chunks:
            pending.put(chunk)
        results: queue.SimpleQueue = queue.SimpleQueue()

        def worker(own_lab) -> None:
            while True:
                try:
                    chunk = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put(("rows", work.compute(own_lab, chunk)))
                except BaseException as error:  # surfaced on the calling thread
                    results.put(("error", error))
                    return

        threads = [threading.Thread(target=worker, args=(own,), daemon=True) for own in self.labs]
        for thread in threads:
            thread.start()
        stored, received = 0, 0
        try:
            while received < len(chunks):
                kind, value = results.get()
                if kind == "error":
                    raise value
                received += 1
                stored += emit(value)
        finally:
            while not pending.empty():  # an error stops the others after their current chunk
                pending.get_nowait()
            for thread in threads:
                thread.join()
        return stored

    def __repr__(self) -> str:
        return f"Threads({len(self.labs)} labs, chunk_size={self.chunk_size})"


def resolve_executor(cluster) -> Executor:
    """The executor of a study's `cluster=`: None runs here (`Local`); an `Executor` is used as given."""
    if cluster is None:
        return Local()
    if isinstance(cluster, Executor):
        return cluster
    raise OmniLabInputError(
        f"cluster={cluster!r}: give None (run here), ol.cluster.Ray(workers=...), ol.executors.Threads(labs) or "
        "another omni_lab.executors.Executor"
    )


def _positive(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OmniLabInputError(f"{owner}({name}={value!r}): give an integer >= 1")
    return value
