"""Synthetic media written to disk for tests: images, videos and audio of known content and length."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    """`(height, width, 3)` uint8 noise."""
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def write_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    from PIL import Image

    Image.fromarray(image_array(width, height, seed)).save(path)
    return path


def moving_square_frames(count: int, width: int = 64, height: int = 48) -> np.ndarray:
    """`(count, height, width, 3)` frames of a white square moving right over black."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    for index in range(count):
        left = (4 * index) % max(1, width - 8)
        frames[index, 10:18, left : left + 8] = 255
    return frames


def write_video(
    path: Path, count: int = 20, fps: int = 10, width: int = 64, height: int = 48, codec: str | None = None
) -> Path:
    import av

    codec = codec or {".webm": "libvpx-vp9", ".mp4": "libx264"}.get(path.suffix, "mpeg4")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in moving_square_frames(count, width, height):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def tone(seconds: float, rate: int = 16000, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    """`(samples,)` or `(samples, channels)` float32 sine."""
    time = np.arange(int(round(seconds * rate))) / rate
    wave = (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1)


def write_audio(
    path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, frequency: float = 440.0
) -> Path:
    samples = tone(seconds, rate, frequency, channels)
    if path.suffix == ".mp3":
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("mp3", rate=rate)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return path
    import soundfile

    soundfile.write(str(path), samples, rate)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Write a copy holding only the first `fraction` of the bytes, next to the original."""
    data = path.read_bytes()
    truncated = path.with_name("truncated_" + path.name)
    truncated.write_bytes(data[: int(len(data) * fraction)])
    return truncated
