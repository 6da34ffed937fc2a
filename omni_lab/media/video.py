"""Video: frames sampled while decoding, at their presentation times, turned upright, under a memory budget.

A file is opened, its length found (from the header, or by reading packet timestamps without decoding when the
header has none, as live-streamed Matroska / WebM), the sample times fixed, the decoded size of those frames checked
against `LIMITS.video_memory_bytes`, and only then decoded: each frame is converted to RGB only if it is kept, so a
long video never sits in memory. Each kept frame's time is its presentation timestamp (variable frame rate stays
right), and a container's rotation (a phone's portrait clip) is applied to the pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import OmniLabInputError
from . import integrity
from .common import LIMITS, as_numpy, check_file, describe
from .images import to_uint8_rgb

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")


@dataclass
class VideoClip:
    """Decoded video frames and their timing.

    Attributes:
        frames: `(T, H, W, 3)` uint8 RGB (other dtypes and layouts are converted by `load_video`).
        fps: frame rate of the source (None when unknown: the prompt then labels frames without seconds).
        frame_indices: index of each kept frame in the source (default 0..T-1).
        source: where the frames came from, for messages and the token map.
        times: seconds of each kept frame from the source's first frame (its presentation timestamp); None derives
            them from `frame_indices / fps`, as the release does.
    """

    frames: np.ndarray
    fps: float | None = None
    frame_indices: list[int] | None = None
    source: str = "<frames>"
    times: list[float] | None = None

    def __post_init__(self):
        what = f"VideoClip {self.source}"
        self.fps = validate.number(f"{what} fps", self.fps, low=0, low_open=True, allow_none=True)
        count = len(self.frames) if hasattr(self.frames, "__len__") else 0
        if self.frame_indices is None or (not len(self.frame_indices) and count):
            self.frame_indices = list(range(count))
        self.frame_indices = [
            validate.number(f"{what} frame_indices[{i}]", index, low=0, integer=True)
            for i, index in enumerate(self.frame_indices)
        ]
        if len(self.frame_indices) != count:
            raise OmniLabInputError(f"{what}: {len(self.frame_indices)} frame indices for {count} frames")
        if any(b <= a for a, b in zip(self.frame_indices, self.frame_indices[1:], strict=False)):
            raise OmniLabInputError(f"{what}: frame_indices must increase, got {self.frame_indices[:8]}...")
        if self.times is not None:
            self.times = [validate.number(f"{what} times[{i}]", t, low=0) for i, t in enumerate(self.times)]
            if len(self.times) != count or any(b < a for a, b in zip(self.times, self.times[1:], strict=False)):
                raise OmniLabInputError(f"{what}: times must give one non-decreasing second per frame")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def timestamps(self) -> list[float | None]:
        """Seconds of each frame as the prompt states them: `times` to the millisecond, else the release's
        `index x int(1000 / fps)` milliseconds, else None (no frame rate known)."""
        if self.times is not None:
            return [round(t * 1000) / 1000.0 for t in self.times]
        if not self.fps:
            return [None] * self.num_frames
        frame_ms = int(1000.0 / self.fps)
        return [index * frame_ms / 1000.0 for index in self.frame_indices]


def load_video(video, fps: float | None = 1.0, max_frames: int = 128) -> VideoClip:
    """Decode (or wrap) a video and sample its frames.

    Args:
        video: a path (mp4, webm, mkv, mov, avi, gif), a `VideoClip`, an array `(T, H, W, 3)`, or a list of frames
            (PIL images or arrays). Arrays and lists carry no timing: wrap them as `VideoClip(frames, fps=...)` to
            have the prompt state seconds.
        fps: frames per second to sample from a file (NVIDIA's recipe uses 1); None keeps every frame.
        max_frames: cap on sampled frames (at most `LIMITS.max_frames`); longer videos are sampled evenly over their
            whole length.
    Returns:
        `VideoClip` with `(T, H, W, 3)` uint8 frames, the source fps, each frame's source index and its time.
    """
    fps = validate.number("fps", fps, low=0, low_open=True, allow_none=True, fix="pass frames per second, e.g. 1")
    max_frames = validate.number("max_frames", max_frames, low=1, high=LIMITS.max_frames, integer=True)
    if isinstance(video, VideoClip):
        frames = as_numpy(video.frames)
        frames = np.asarray(video.frames) if frames is None else frames
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise OmniLabInputError(f"video {video.source}: frames of shape {frames.shape} are not (T, H, W, 3)")
        if frames.dtype != np.uint8 or frames.shape[-1] != 3:
            frames = np.stack([to_uint8_rgb(frame, "video frame") for frame in frames])
        return VideoClip(frames, video.fps, list(video.frame_indices), video.source, video.times)
    if isinstance(video, (str, os.PathLike)):
        return _decode_file(Path(video), fps, max_frames)
    array = as_numpy(video)
    if array is not None:
        if array.ndim != 4:
            raise OmniLabInputError(
                f"video array of shape {array.shape} is not (T, H, W, 3); a single image goes in images=[...]"
            )
        frames = list(array)
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise OmniLabInputError(f"video {describe(video)} is not a path, VideoClip, (T, H, W, 3) array or frame list")
    if not frames:
        raise OmniLabInputError("video has no frames; pass at least one frame")
    if len(frames) > LIMITS.max_frames:
        raise OmniLabInputError(f"video has {len(frames)} frames, over the {LIMITS.max_frames}-frame limit")
    decoded = [_frame_to_uint8(frame) for frame in frames]
    if len({frame.shape for frame in decoded}) > 1:
        raise OmniLabInputError(
            f"video frames differ in size ({sorted({frame.shape for frame in decoded})}); resize them to one size"
        )
    return VideoClip(np.stack(decoded), None, list(range(len(decoded))), "<frames>")


def _frame_to_uint8(frame) -> np.ndarray:
    from PIL import Image

    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = as_numpy(frame)
    if array is None:
        raise OmniLabInputError(f"video frame {describe(frame)} is not a PIL image or array")
    return to_uint8_rgb(array, "video frame")


def sample_times(span: float, step: float, max_frames: int) -> np.ndarray:
    """Seconds to sample: every `step` from 0 while inside `span`, evenly spread over it when that is over the cap
    (the count is computed first, so a tiny step never builds a huge array)."""
    count = 1 if span <= 0 else math.floor(span / step - 1e-9) + 1
    if count > max_frames:
        return np.linspace(0.0, span, max_frames, endpoint=False)
    return np.arange(count) * step


def _decode_file(path: Path, fps: float | None, max_frames: int) -> VideoClip:
    import av

    check_file(path, "video", VIDEO_EXTENSIONS, LIMITS.video_bytes)
    structure = integrity.check_structure(path, "video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmniLabInputError(f"video file {str(path)!r} has no video stream")
            stream = container.streams.video[0]
            source_fps = float(stream.average_rate) if stream.average_rate else None
            declared = _declared_seconds(container, stream)
            span, packets = (declared, None) if declared and fps else _scan(path)
            if fps is None and packets is not None and packets <= max_frames:
                targets = None  # every frame
            else:
                step = 1.0 / fps if fps else span / max(1, packets or 1)
                targets = sample_times(span or 0.0, step, max_frames)
            _check_budget(path, stream, len(targets) if targets is not None else packets or 1, fps, max_frames)
            # Kept frames go straight into one preallocated array (no list of frames stacked afterwards, which would
            # double the peak); every frame is converted at the first kept frame's size.
            capacity = len(targets) if targets is not None else max(1, packets or 1)
            buffer, indices, times, size, last, first = None, [], [], None, 0.0, None
            for index, frame in enumerate(container.decode(stream)):
                seconds = float(frame.pts * stream.time_base) if frame.pts is not None else index / (source_fps or 1)
                first = seconds if first is None else first
                last = seconds - first
                if len(indices) >= capacity:
                    continue  # every target taken: decode on only to learn the decoded length
                if targets is None or last >= targets[len(indices)] - 1e-6:
                    size = size or (frame.width, frame.height)
                    pixels = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                    pixels = _upright(pixels, getattr(frame, "rotation", 0) or 0)
                    if buffer is None:
                        buffer = np.empty((capacity, *pixels.shape), np.uint8)
                    buffer[len(indices)] = pixels
                    indices.append(index)
                    times.append(last)
                    while targets is not None and len(indices) < len(targets) and last >= targets[len(indices)]:
                        targets = np.delete(targets, len(indices))  # several targets inside one frame
                        capacity -= 1
    except OmniLabInputError:
        raise
    except Exception as error:  # PyAV raises InvalidDataError, IndexError, ... for broken containers
        raise OmniLabInputError(
            f"video {str(path)!r} could not be decoded ({type(error).__name__}: {error}); the file is corrupt or "
            f"truncated. Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`."
        ) from None
    if not indices:
        raise OmniLabInputError(f"video {str(path)!r} contains no decodable frames; the file is truncated or corrupt")
    if structure == integrity.UNCHECKED:
        interval = 1.0 / source_fps if source_fps else 0.0
        integrity.check_duration(path, "video", declared, last + interval, interval)
    return VideoClip(buffer[: len(indices)], source_fps, indices, str(path), times)


def _declared_seconds(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration else None


def _scan(path: Path) -> tuple[float, int]:
    """(seconds from the first to past the last video packet, packets) by demuxing alone: no frame is decoded."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first, end, packets = None, 0.0, 0
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            start = float(packet.pts * stream.time_base)
            first = start if first is None else min(first, start)
            end = max(end, start + float((packet.duration or 0) * stream.time_base))
            packets += 1
    return max(0.0, end - (first or 0.0)), packets


def _check_budget(path: Path, stream, frames: int, fps, max_frames: int) -> None:
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    frame_bytes = width * height * 3
    needed = frames * frame_bytes
    if needed > LIMITS.video_memory_bytes:
        fits = max(1, LIMITS.video_memory_bytes // max(1, frame_bytes))
        raise OmniLabInputError(
            f"video {str(path)!r}: {frames} frames of {width} x {height} would take {needed / 2**30:.1f} GiB decoded, "
            f"over the {LIMITS.video_memory_bytes / 2**30:.1f} GiB budget (omni_lab.media.LIMITS.video_memory_bytes); "
            f"sample fewer, e.g. fps=1, max_frames={min(fits, 128)}"
        )


def _upright(pixels: np.ndarray, rotation: float) -> np.ndarray:
    """Apply the container's display rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    turns = round(rotation / 90.0) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels
