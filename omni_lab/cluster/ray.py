"""Studies on Ray: `Ray`, the executor (omni_lab/executors.py) whose `StudyWorker` actors each load the model once.

The study (on the calling process) plans its cells and packs them into chunks; `Ray.run` hands each chunk to an actor
with the study's `Work` cut to the dataset rows the chunk needs (plain data: texts, media paths, ShapesWorld seeds,
and the study's cell function and prompt builder, which travel by reference); the actor builds the prompts, computes
the rows with that very function (the one the local path calls) and returns them. The study alone writes rows, keyed
by cell, so none is written twice. Ray restarts a dead actor (`max_restarts`) and retries its task
(`max_task_retries`); a chunk whose actor is gone for good goes to another actor. Scheduling, retries and placement
are Ray's: the driver only keeps each actor a few chunks ahead with `ray.wait`. Nothing here knows which study runs.

`ray` is imported inside the functions here, never at import time.
"""

from __future__ import annotations

import importlib
import socket
import uuid
from collections import deque
from dataclasses import dataclass

from ..errors import OmniLabInputError, OmniLabModelError
from ..executors import Executor, Work

INSTALL = "pip install 'omni-lab[cluster]'"


@dataclass(frozen=True)
class Ray(Executor):
    """Where and how a study's cells run on Ray (an `Executor`).

    Attributes:
        address: a running Ray cluster ("host:port", "ray://host:10001" or "auto"); None starts Ray on this
            machine (or uses the Ray this process already started).
        workers: number of actors; each loads the model once.
        gpus_per_worker: GPUs per actor (0 for CPU; more than 1 spreads one model over them with `device="auto"`,
            accelerate's device map; fractions share a GPU).
        cpus_per_worker: CPUs per actor (also its torch thread count, set by Ray).
        chunk_size: cells per chunk (a sweep's prompt's cells stay together, so a chunk may hold a few more); for
            the per-prompt studies, prompts per chunk, at most an even share of the pending prompts per worker.
        device: the actors' `ol.load(..., device=)`; default "cpu" without GPUs, "cuda" with one, "auto" with more.
        source: the model the actors load; default the study's lab's source (`lab.source.spec`).
        dtype: the actors' dtype; default the study's lab's dtype (`ol.load`'s default for a source string).
        max_restarts, max_task_retries: Ray's restarts of a dead actor and retries of its tasks.
        chunks_in_flight: chunks queued per actor, so an actor never waits for the driver.
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 1
    cpus_per_worker: float = 1
    chunk_size: int = 32
    device: str | None = None
    source: str | None = None
    dtype: object = None
    max_restarts: int = 3
    max_task_retries: int = 3
    chunks_in_flight: int = 2

    loads_models = True  # the actors load the model: a study may be given a source string
    remote = True  # work travels to other processes: prompts must be data

    def __post_init__(self):
        checks = {
            "workers": (self.workers, 1, "at least one actor"),
            "chunk_size": (self.chunk_size, 1, "at least one cell"),
            "chunks_in_flight": (self.chunks_in_flight, 1, "at least one chunk"),
        }
        for name, (value, least, what) in checks.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise OmniLabInputError(f"ol.cluster.Ray({name}={value!r}): give an integer >= {least} ({what})")
        if not isinstance(self.gpus_per_worker, (int, float)) or self.gpus_per_worker < 0:
            raise OmniLabInputError(
                f"ol.cluster.Ray(gpus_per_worker={self.gpus_per_worker!r}): give a number >= 0 (0 runs on CPUs)"
            )
        if not isinstance(self.cpus_per_worker, (int, float)) or self.cpus_per_worker <= 0:
            raise OmniLabInputError(f"ol.cluster.Ray(cpus_per_worker={self.cpus_per_worker!r}): give a number > 0")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise OmniLabInputError(
                f"ol.cluster.Ray(gpus_per_worker={self.gpus_per_worker}): above 1, give a whole number of GPUs"
            )
        if self.gpus_per_worker == 0 and self.device not in (None, "cpu"):
            raise OmniLabInputError(
                f"ol.cluster.Ray(device={self.device!r}, gpus_per_worker=0): an actor without GPUs runs on 'cpu'; "
                "give gpus_per_worker >= 1 for a GPU device"
            )

    def run(self, lab, work: Work, chunks: list[list], emit) -> int:
        """The `Executor` interface: `run_chunks` with these options."""
        return run_chunks(self, lab, work, chunks, emit)

    @property
    def resolved_device(self) -> str:
        """The device the actors load the model on."""
        if self.device is not None:
            return self.device
        if self.gpus_per_worker == 0:
            return "cpu"
        return "auto" if self.gpus_per_worker > 1 else "cuda"

    def actor_options(self) -> dict:
        """The Ray actor options of each worker (resources, restarts, retries)."""
        return {
            "num_cpus": self.cpus_per_worker,
            "num_gpus": self.gpus_per_worker,
            "max_restarts": self.max_restarts,
            "max_task_retries": self.max_task_retries,
        }


class StudyWorker:
    """A Ray actor's state: one loaded lab, and the chunks of any study it computes.

    Args:
        source, device, dtype: passed to `ol.load` (once, when the actor starts or restarts).
    """

    def __init__(self, source: str, device: str, dtype=None):
        from ..lab import load

        self.lab = load(source, device=device, dtype=dtype, progress=False)
        self.cells_computed = 0

    def compute(self, work: Work, chunk: list) -> list[dict]:
        """The rows of one chunk: `work.compute` on this actor's lab (prompts built from `work.rows`)."""
        result = work.compute(self.lab, chunk)
        self.cells_computed += len(chunk)
        return result

    def pid(self) -> int:
        import os

        return os.getpid()


def import_ray():
    """The `ray` module, or OmniLabInputError naming the install command."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise OmniLabInputError(f"cluster=ol.cluster.Ray(...) needs Ray, which is not installed: {INSTALL}") from None


def _probe(address: str) -> None:
    """OmniLabInputError unless something listens at a "host:port" (or "ray://host:port") address."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise OmniLabInputError(
            f"ol.cluster.Ray(address={address!r}): give 'host:port' (the head's GCS port, 6379 by default), "
            "'ray://host:10001', 'auto' or None (start Ray on this machine)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise OmniLabInputError(
            f"no Ray cluster answers at ol.cluster.Ray(address={address!r}) ({error}): start one there with "
            "`ray start --head`, check the host and port, or give address=None to run Ray on this machine"
        ) from None


def connect(options: Ray):
    """Start or join Ray and check the cluster can hold the workers; returns the `ray` module."""
    ray = import_ray()
    if options.address is not None:
        _probe(options.address)
    if not ray.is_initialized():
        try:
            ray.init(address=options.address, include_dashboard=False, ignore_reinit_error=True)
        except ConnectionError as error:
            raise OmniLabInputError(
                f"could not join the Ray cluster at address={options.address!r} ({error}): start it with "
                "`ray start --head` or give address=None"
            ) from None
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if options.gpus_per_worker > gpus or options.workers * options.gpus_per_worker > gpus:
        raise OmniLabInputError(
            f"ol.cluster.Ray(workers={options.workers}, gpus_per_worker={options.gpus_per_worker}) needs "
            f"{options.workers * options.gpus_per_worker:g} GPUs but the Ray cluster has {gpus:g}: lower workers or "
            "gpus_per_worker (gpus_per_worker=0 runs on CPUs), or add GPU nodes to the cluster"
        )
    if options.workers * options.cpus_per_worker > cpus:
        raise OmniLabInputError(
            f"ol.cluster.Ray(workers={options.workers}, cpus_per_worker={options.cpus_per_worker}) needs "
            f"{options.workers * options.cpus_per_worker:g} CPUs but the Ray cluster has {cpus:g}: lower workers or "
            "cpus_per_worker"
        )
    return ray


def start_workers(options: Ray, source: str, dtype) -> tuple[list, list[str]]:
    """The study's actors (named `omni-lab-<id>-<i>`, so they can be found with `ray.get_actor`) and their names."""
    ray = import_ray()
    remote = ray.remote(StudyWorker)
    prefix = f"omni-lab-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}" for i in range(options.workers)]
    actors = [
        remote.options(name=name, **options.actor_options()).remote(source, options.resolved_device, dtype)
        for name in names
    ]
    return actors, names


def run_chunks(options: Ray, lab, work: Work, chunks: list[list], emit) -> int:
    """`Ray.run`: compute `chunks` on Ray actors; hand each chunk's rows to `emit` (here) as they arrive.

    Args:
        options: the `Ray` options.
        lab: the study's `Lab` (its source and dtype are the actors' defaults) or a model source string.
        work: the study's `Work` (each chunk ships with the dataset rows of its prompts).
        chunks: lists of cells.
        emit: rows -> number of cells newly stored (the driver's only writer).
    Returns:
        the number of cells stored.
    """
    source = options.source or (lab if isinstance(lab, str) else lab.source.spec)
    dtype = options.dtype if options.dtype is not None or isinstance(lab, str) else lab.dtype
    for chunk in chunks:  # every chunk's rows are there before any actor starts
        work.for_chunk(chunk)
    ray = connect(options)
    from ray import exceptions
    from ray.exceptions import RayActorError, RayTaskError

    unavailable = getattr(exceptions, "ActorUnavailableError", ())

    actors, _ = start_workers(options, source, dtype)
    queue = deque(chunks)
    in_flight: dict = {}  # object ref -> (actor index, chunk)
    load = [0] * len(actors)
    alive = set(range(len(actors)))
    stored, last_death = 0, None

    def submit(index: int) -> None:
        chunk = queue.popleft()
        reference = actors[index].compute.remote(work.for_chunk(chunk), chunk)
        in_flight[reference] = (index, chunk)
        load[index] += 1

    try:
        while queue or in_flight:
            for index in sorted(alive, key=load.__getitem__):
                while queue and load[index] < options.chunks_in_flight:
                    submit(index)
            if not in_flight:
                raise OmniLabModelError(
                    f"every Ray worker died (each restarted up to max_restarts={options.max_restarts} times); "
                    f"{sum(map(len, queue))} cells are left; the last death: {last_death}. Fix that, then rerun with "
                    "the same out= to resume"
                )
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for reference in ready:
                index, chunk = in_flight.pop(reference)
                load[index] -= 1
                try:
                    rows = ray.get(reference)
                except RayTaskError as error:  # the study itself failed on a cell: surface its own exception
                    raise error.as_instanceof_cause() from None
                except RayActorError as error:  # retries exhausted: its chunk goes to another actor
                    if not isinstance(error, unavailable):  # gone for good (a restarting actor is only unavailable)
                        alive.discard(index)
                    last_death = error
                    queue.appendleft(chunk)
                    continue
                stored += emit(rows)
    finally:
        for actor in actors:
            ray.kill(actor)
    return stored
