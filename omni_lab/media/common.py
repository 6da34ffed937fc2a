"""What every decoder shares: the limits, file checks and array conversion."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OmniLabInputError

SAMPLING_RATE = 16000


@dataclass
class Limits:
    """Upload, decode and memory limits; change them on `omni_lab.media.LIMITS` for unusual inputs.

    Every limit is checked before the work it bounds: file sizes before opening, pixel counts from the header before
    decoding, a video's decoded-frame memory from its duration, size and the sampling before decoding, audio length
    from the header (and while decoding) before it is resampled.
    """

    image_bytes: int = 256 * 2**20
    video_bytes: int = 4 * 2**30
    audio_bytes: int = 2 * 2**30
    image_pixels: int = 200_000_000  # decoded pixels (after JPEG's reduced-size decoding); decompression bombs beyond
    preshrink_pixels: int = 64_000_000  # larger images are shrunk before the processor's own resize
    max_frames: int = 4096  # frames one video may be sampled to
    video_memory_bytes: int = 2 * 2**30  # the sampled frames of one video, as uint8 RGB
    max_audio_seconds: float = 6 * 3600.0
    min_sampling_rate: int = 1000
    max_sampling_rate: int = 768_000


LIMITS = Limits()


def describe(value) -> str:
    if isinstance(value, (str, os.PathLike)):
        return repr(str(value))
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} ({value.dtype})"
    return type(value).__name__


def check_file(path: Path, kind: str, extensions: tuple[str, ...], limit: int) -> None:
    """Exists, is a file of a supported type, is not empty and is under `limit` bytes."""
    if not path.exists():
        raise OmniLabInputError(f"{kind} file {str(path)!r} does not exist")
    if not path.is_file():
        raise OmniLabInputError(f"{kind} path {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix not in extensions:
        raise OmniLabInputError(
            f"{kind} file {str(path)!r} has an unsupported type {suffix or '(no extension)'!r}; "
            f"supported: {', '.join(extensions)}"
        )
    size = path.stat().st_size
    if size == 0:
        raise OmniLabInputError(f"{kind} file {str(path)!r} is empty (0 bytes)")
    if size > limit:
        raise OmniLabInputError(
            f"{kind} file {str(path)!r} is {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB limit; "
            f"shorten or downscale it, or raise omni_lab.media.LIMITS"
        )


def as_numpy(value) -> np.ndarray | None:
    """An ndarray from an ndarray or torch tensor; None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return None


def value_range(array: np.ndarray) -> tuple[float, float]:
    return float(array.min()), float(array.max())
