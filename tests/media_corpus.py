"""Real media files made with PyAV and Pillow, as cameras, phones, encoders and pipes write them.

Each writer puts known content at known times so a test can check what the model is shown: a white strip down the
left quarter of every video frame (where it ends up tells the orientation), frames at chosen presentation times
(variable frame rate), a 440 Hz tone of known length. `through_pipe=True` writes to a non-seekable stream, as
`ffmpeg ... -f matroska - > out.mkv` does: the muxer cannot go back to fill in sizes and durations.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

# (codec, suffix): the video encoders this PyAV build carries, in the containers people use them in
VIDEO_FORMATS = (
    ("libx264", ".mp4"),
    ("libx265", ".mp4"),
    ("libvpx-vp9", ".webm"),
    ("libvpx", ".webm"),
    ("libsvtav1", ".mkv"),
    ("mpeg4", ".mov"),
    ("mjpeg", ".avi"),
    ("gif", ".gif"),
)
# (codec or None for libsndfile, suffix, sample format)
AUDIO_FORMATS = (
    (None, ".wav", "PCM_16"),
    (None, ".wav", "PCM_24"),
    (None, ".wav", "FLOAT"),
    (None, ".flac", "PCM_16"),
    (None, ".aiff", "PCM_16"),
    ("libmp3lame", ".mp3", None),
    ("libopus", ".opus", None),
    ("flac", ".ogg", None),
    ("aac", ".m4a", None),
)


class _Pipe(io.RawIOBase):
    """A write-only stream that cannot seek, collecting what is written."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def seekable(self):
        return False

    def write(self, chunk):
        self.data += chunk
        return len(chunk)


def strip_frame(width: int, height: int, shade: int = 0) -> np.ndarray:
    """Black frame (or `shade` grey) with a white strip over the left quarter."""
    frame = np.full((height, width, 3), shade, np.uint8)
    frame[:, : max(1, width // 4)] = 255
    return frame


def write_video(
    path: Path,
    codec: str = "libx264",
    times: list[float] | None = None,
    width: int = 64,
    height: int = 48,
    rotation: int | None = None,
    through_pipe: bool = False,
) -> Path:
    """Frames at `times` seconds (default 10 at 10 fps); `rotation` sets the display matrix (degrees
    counter-clockwise, FFmpeg's convention: a phone's portrait clip says -90)."""
    import av

    times = list(times) if times is not None else [i / 10 for i in range(10)]
    pipe = _Pipe() if through_pipe else None
    container_format = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov", ".mp4": "mp4"}
    with av.open(pipe if pipe else str(path), "w", format=container_format.get(path.suffix)) as container:
        if codec == "gif":
            stream = container.add_stream("gif", rate=10)
            stream.pix_fmt = "rgb8"
        else:
            stream = container.add_stream(codec, rate=10)
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.width, stream.height = width, height
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)  # millisecond frame times
        if codec == "libsvtav1":
            stream.options = {"preset": "12", "svtav1-params": "log-level=0"}
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(strip_frame(width, height, shade=8 * index % 128), format="rgb24")
            frame.pts, frame.time_base = round(seconds * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    if pipe:
        path.write_bytes(bytes(pipe.data))
    return path


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """`(samples, channels)` float32 440 Hz sine at half scale (each channel a little quieter)."""
    time = np.arange(int(round(seconds * rate))) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * time)
    return np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(
    path: Path, seconds: float = 2.0, rate: int = 16000, channels: int = 1, codec: str | None = None, subtype=None
) -> Path:
    """A tone through libsndfile (`codec=None`, `subtype` e.g. "PCM_24") or an FFmpeg encoder."""
    samples = tone(seconds, rate, channels)
    if codec is None:
        import soundfile

        soundfile.write(str(path), samples, rate, subtype=subtype)
        return path
    import av

    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        step = 1024
        for start in range(0, len(samples), step):
            chunk = np.ascontiguousarray(samples[start : start + step].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_image(path: Path, array: np.ndarray, orientation: int | None = None) -> Path:
    """Save `array` (uint16 -> a 16-bit "I;16" image, float32 -> a float "F" image), with an EXIF orientation tag."""
    from PIL import Image

    image = Image.fromarray(array)
    options = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    image.save(path, **options)
    return path


def cut(path: Path, fraction: float) -> Path:
    """A copy holding the first `fraction` of the bytes."""
    data = path.read_bytes()
    out = path.with_name(f"cut{int(fraction * 100)}_{path.name}")
    out.write_bytes(data[: int(len(data) * fraction)])
    return out
