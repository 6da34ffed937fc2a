"""What reproduces a run: the model source and the sha256 of its files, the versions, the reducer and the decoding.

    record = omni_lab.provenance.provenance(lab, run)     # JSON-able dict
    omni_lab.provenance.run_record(lab, run)              # run.to_dict() with its provenance, as the playground exports

A checkpoint's files are hashed once per process (keyed by path, size and modification time), so exporting many runs
of a 60 GB checkpoint reads it once. A random preset has no files: the sha256 of its weights (every tensor of the
state dict, in name order, as bytes) stands in for them, except on the meta device, where there are no weights.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

CHUNK_BYTES = 1 << 20
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path) -> str:
    """The sha256 hex digest of one file, read in 1 MiB chunks (memoised by path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def checkpoint_files(path) -> list[dict]:
    """Every file of a checkpoint directory (hidden ones and folders such as `.cache` skipped), in path order.

    Args:
        path: the checkpoint directory.
    Returns:
        [{"name": path relative to the directory, "bytes": size, "sha256": hex digest}].
    """
    root = Path(path)
    files = sorted(
        file
        for file in root.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(root).parts)
    )
    return [
        {"name": file.relative_to(root).as_posix(), "bytes": file.stat().st_size, "sha256": file_sha256(file)}
        for file in files
    ]


def weights_sha256(model) -> str | None:
    """sha256 over every tensor of `model.state_dict()` (name, dtype, shape, bytes) in name order; None on meta."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.is_meta:
            return None
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def inputs_sha256(prompt) -> str:
    """sha256 over the processor's inputs of a prompt (every tensor in key order): the same media and text at the
    same settings give the same digest."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(prompt.inputs):
        value = prompt.inputs[key]
        if isinstance(value, torch.Tensor):
            data = value.detach().to("cpu").contiguous()
            digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict:
    """{"omni_lab", "transformers", "torch", "python", "platform"} version strings."""
    import torch
    import transformers

    import omni_lab

    return {
        "omni_lab": omni_lab.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def model_source(lab) -> dict:
    """The model's source: the spec it was loaded from, its kind, device and dtype, and the sha256 of its checkpoint
    files (or, for a random preset, of its weights)."""
    source = lab.source
    entry = {
        "source": source.spec,
        "kind": source.kind,
        "device": str(lab.device),
        "dtype": str(lab.dtype).replace("torch.", ""),
    }
    if source.kind == "preset":
        entry["preset"] = source.preset
        entry["weights_sha256"] = weights_sha256(lab.model)
    else:
        entry["path"] = str(source.path)
        entry["files"] = checkpoint_files(source.path)
    return entry


def provenance(lab, run=None) -> dict:
    """What reproduces `run` on `lab`: versions, the model source with its file hashes, and (given a run) its reducers,
    decoding options, prompt and the sha256 of the processor's inputs.

    Args:
        lab: the `Lab` that ran (or would run).
        run: a `Run`, or None for the model and versions alone.
    Returns:
        JSON-able dict: "versions", "model" and, with a run, "run" ({"reducers", "options", "prompt",
        "inputs_sha256"}).
    """
    record = {"versions": versions(), "model": model_source(lab)}
    if run is not None:
        summary = run.to_dict()
        record["run"] = {
            "reducers": summary["reducers"],
            "options": summary["options"],
            "prompt": summary["prompt"],
            "inputs_sha256": inputs_sha256(run.prompt),
        }
    return record


def run_record(lab, run) -> dict:
    """`run.to_dict()` with its `provenance` under "provenance": the JSON a run is exported as."""
    return run.to_dict() | {"provenance": provenance(lab, run)}
