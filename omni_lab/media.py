"""Decode and validate images, video and audio; know nothing of the model.

Every decoder returns plain data (a PIL image, `uint8` frames with their timing, a 16 kHz mono `float32` waveform)
and raises `OmniLabInputError` naming the input and the fix for anything it cannot use: corrupt or truncated files,
unsupported types, empty audio, files over the size limits. Resampling and downmixing of audio are done here with
FFmpeg's resampler (PyAV), so any rate and channel count is accepted.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OmniLabInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif")
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
SAMPLING_RATE = 16000
MIN_AUDIO_SECONDS = 0.1  # the release pads shorter clips to 0.1 s (docs/model_layout.md §6)


@dataclass
class Limits:
    """Upload and decode limits; change them on `omni_lab.media.LIMITS` for unusual inputs."""

    image_bytes: int = 256 * 2**20
    video_bytes: int = 4 * 2**30
    audio_bytes: int = 2 * 2**30
    image_pixels: int = 400_000_000  # refuse decompression bombs beyond this
    preshrink_pixels: int = 64_000_000  # larger images are shrunk before the processor's own resize
    max_frames: int = 4096
    max_audio_seconds: float = 6 * 3600.0


LIMITS = Limits()


@dataclass
class VideoClip:
    """Decoded video frames and their timing.

    Attributes:
        frames: `(T, H, W, 3)` uint8 RGB.
        fps: frame rate of the source (None when unknown: the prompt then labels frames without seconds).
        frame_indices: index of each kept frame in the source, so `frame_indices[i] / fps` is its time.
        source: where the frames came from, for messages and the token map.
    """

    frames: np.ndarray
    fps: float | None = None
    frame_indices: list[int] = field(default_factory=list)
    source: str = "<frames>"

    def __post_init__(self):
        if not self.frame_indices:
            self.frame_indices = list(range(len(self.frames)))
        if len(self.frame_indices) != len(self.frames):
            raise OmniLabInputError(
                f"video {self.source}: {len(self.frame_indices)} frame indices for {len(self.frames)} frames"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def timestamps(self) -> list[float | None]:
        """Seconds of each frame as the model's prompt states them (integer-millisecond frame duration)."""
        if not self.fps:
            return [None] * self.num_frames
        frame_ms = int(1000.0 / self.fps)
        return [index * frame_ms / 1000.0 for index in self.frame_indices]


@dataclass
class AudioClip:
    """A 16 kHz mono float32 waveform, with what it was before conversion."""

    waveform: np.ndarray
    source: str = "<waveform>"
    original_rate: int = SAMPLING_RATE
    original_channels: int = 1
    padded_from: int | None = None  # original sample count when shorter than 0.1 s and padded

    sampling_rate: int = SAMPLING_RATE

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sampling_rate


def _describe(value) -> str:
    if isinstance(value, (str, os.PathLike)):
        return repr(str(value))
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} ({value.dtype})"
    return type(value).__name__


def _check_file(path: Path, kind: str, extensions: tuple[str, ...], limit: int) -> None:
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


# --------------------------------------------------------------------------------------------------------- images
def load_image(image):
    """Decode one image to RGB PIL.

    Args:
        image: a path, a PIL image, or an array `(H, W)`, `(H, W, 3)` or `(H, W, 4)` (uint8, or float in [0, 1]).
    Returns:
        an RGB `PIL.Image.Image`; images over `LIMITS.preshrink_pixels` are shrunk (aspect kept) before the model's
        processor resizes them into its patch budget.
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        _check_file(path, "image", IMAGE_EXTENSIONS, LIMITS.image_bytes)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, LIMITS.image_pixels
                try:
                    opened = Image.open(path)
                    if opened.width * opened.height > LIMITS.preshrink_pixels:
                        opened.draft("RGB", _shrunk_size(opened.size))  # JPEG decodes at reduced size directly
                    opened.load()
                finally:
                    Image.MAX_IMAGE_PIXELS = previous
        except Image.DecompressionBombError as error:
            raise OmniLabInputError(
                f"image {str(path)!r} is too large to decode safely ({error}); downscale it first or raise "
                f"omni_lab.media.LIMITS.image_pixels"
            ) from None
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as error:
            raise OmniLabInputError(
                f"image {str(path)!r} could not be decoded ({error}); the file is corrupt, truncated or not an "
                f"image. Re-export it as PNG or JPEG."
            ) from None
        return _shrink(opened.convert("RGB"))
    if isinstance(image, Image.Image):
        return _shrink(image.convert("RGB"))
    array = _as_numpy(image)
    if array is None:
        raise OmniLabInputError(
            f"image {_describe(image)} is not a path, PIL image or array; pass one of those per image"
        )
    return _shrink(Image.fromarray(_to_uint8_rgb(array, "image")))


def _shrunk_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = math.sqrt(LIMITS.preshrink_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _shrink(image):
    if image.width * image.height <= LIMITS.preshrink_pixels:
        return image
    from PIL import Image

    return image.resize(_shrunk_size(image.size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def _as_numpy(value) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return None


def _to_uint8_rgb(array: np.ndarray, kind: str) -> np.ndarray:
    """`(H, W)`, `(H, W, 1|3|4)` or channel-first `(1|3|4, H, W)` → `(H, W, 3)` uint8."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise OmniLabInputError(
            f"{kind} array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise OmniLabInputError(f"{kind} array contains NaN or infinite values")
        if np.issubdtype(array.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        pixels = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        raise OmniLabInputError(f"{kind} array has dtype {array.dtype}; use uint8 or float in [0, 1]")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


# ---------------------------------------------------------------------------------------------------------- video
def load_video(video, fps: float | None = 1.0, max_frames: int = 128) -> VideoClip:
    """Decode (or wrap) a video and sample its frames.

    Args:
        video: a path (mp4, webm, mkv, mov, avi, gif), a `VideoClip`, an array `(T, H, W, 3)`, or a list of frames
            (PIL images or arrays). Arrays and lists carry no timing: wrap them as `VideoClip(frames, fps=...)` to
            have the prompt state seconds.
        fps: frames per second to sample from a file (NVIDIA's recipe uses 1); None keeps every frame.
        max_frames: cap on sampled frames; longer videos are sampled evenly over their whole length.
    Returns:
        `VideoClip` with `(T, H, W, 3)` uint8 frames, the source fps and each frame's source index.
    """
    if isinstance(video, VideoClip):
        frames = np.asarray(video.frames)
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise OmniLabInputError(f"video {video.source}: frames of shape {frames.shape} are not (T, H, W, 3)")
        if frames.dtype != np.uint8 or frames.shape[-1] != 3:
            frames = np.stack([_to_uint8_rgb(frame, "video frame") for frame in frames])
        return VideoClip(frames, video.fps, list(video.frame_indices), video.source)
    if isinstance(video, (str, os.PathLike)):
        return _decode_video_file(Path(video), fps, max_frames)
    array = _as_numpy(video)
    if array is not None:
        if array.ndim != 4:
            raise OmniLabInputError(
                f"video array of shape {array.shape} is not (T, H, W, 3); a single image goes in images=[...]"
            )
        frames = list(array)
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise OmniLabInputError(f"video {_describe(video)} is not a path, VideoClip, (T, H, W, 3) array or frame list")
    if not frames:
        raise OmniLabInputError("video has no frames; pass at least one frame")
    decoded = [_frame_to_uint8(frame) for frame in frames]
    if len({frame.shape for frame in decoded}) > 1:
        raise OmniLabInputError(
            f"video frames differ in size ({sorted({frame.shape for frame in decoded})}); resize them to one size"
        )
    if len(decoded) > LIMITS.max_frames:
        raise OmniLabInputError(f"video has {len(decoded)} frames, over the {LIMITS.max_frames}-frame limit")
    return VideoClip(np.stack(decoded), None, list(range(len(decoded))), "<frames>")


def _frame_to_uint8(frame) -> np.ndarray:
    from PIL import Image

    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = _as_numpy(frame)
    if array is None:
        raise OmniLabInputError(f"video frame {_describe(frame)} is not a PIL image or array")
    return _to_uint8_rgb(array, "video frame")


def _decode_video_file(path: Path, fps: float | None, max_frames: int) -> VideoClip:
    import av

    _check_file(path, "video", VIDEO_EXTENSIONS, LIMITS.video_bytes)
    if fps is not None and not fps > 0:
        raise OmniLabInputError(f"video fps must be positive or None, got {fps}")
    if max_frames < 1:
        raise OmniLabInputError(f"max_frames must be at least 1, got {max_frames}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmniLabInputError(f"video file {str(path)!r} has no video stream")
            stream = container.streams.video[0]
            source_fps = float(stream.average_rate) if stream.average_rate else None
            declared = container.duration / 1e6 if container.duration else None
            # With a known duration the sample times are fixed up front and frames are kept as they stream past,
            # so a long video never sits in memory; without one, every frame is kept and sampled afterwards.
            targets = _sample_times(declared, source_fps, fps, max_frames) if declared else None
            kept, kept_indices, times, start = [], [], [], None
            for index, frame in enumerate(container.decode(stream)):
                seconds = float(frame.pts * stream.time_base) if frame.pts is not None else index / (source_fps or 1.0)
                start = seconds if start is None else start
                times.append(seconds - start)
                if targets is None:
                    kept.append(frame.to_ndarray(format="rgb24"))
                    kept_indices.append(index)
                    if len(kept) > LIMITS.max_frames * 16:
                        raise OmniLabInputError(f"video {str(path)!r} is too long to decode here; trim it first")
                elif len(kept_indices) < len(targets) and times[-1] >= targets[len(kept_indices)] - 1e-6:
                    kept.append(frame.to_ndarray(format="rgb24"))
                    kept_indices.append(index)
                    while len(kept_indices) < len(targets) and times[-1] >= targets[len(kept_indices)] - 1e-6:
                        targets = np.delete(targets, len(kept_indices))  # several targets inside one frame
    except OmniLabInputError:
        raise
    except Exception as error:  # PyAV raises InvalidDataError, IndexError, ... for broken containers
        raise OmniLabInputError(
            f"video {str(path)!r} could not be decoded ({type(error).__name__}: {error}); the file is corrupt or "
            f"truncated. Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`."
        ) from None
    if not kept:
        raise OmniLabInputError(f"video {str(path)!r} contains no decodable frames; the file is truncated or corrupt")
    interval = 1.0 / source_fps if source_fps else 0.0
    decoded_span = times[-1] + interval
    if declared and decoded_span < 0.9 * declared - 2 * interval:
        raise OmniLabInputError(
            f"video {str(path)!r} appears truncated: its header says {declared:.2f} s but only {decoded_span:.2f} s "
            f"decode. Re-download or re-encode it."
        )
    if targets is None:
        span = times[-1] + interval
        chosen = np.searchsorted(np.asarray(times), _sample_times(span, source_fps, fps, max_frames) - 1e-6)
        chosen = sorted({int(i) for i in np.clip(chosen, 0, len(kept) - 1)})
        kept, kept_indices = [kept[i] for i in chosen], [kept_indices[i] for i in chosen]
    return VideoClip(np.stack(kept), source_fps, kept_indices, str(path))


def _sample_times(span: float, source_fps: float | None, fps: float | None, max_frames: int) -> np.ndarray:
    """Seconds to sample: every 1/fps (every source frame when fps is None), evenly spread when over the cap."""
    step = 1.0 / fps if fps else 1.0 / (source_fps or 1.0)
    times = np.arange(0.0, max(span, 1e-9), step)
    if len(times) > max_frames:
        times = np.linspace(0.0, span, max_frames, endpoint=False)
    return times


# ---------------------------------------------------------------------------------------------------------- audio
def load_audio(audio, sampling_rate: int | None = None) -> AudioClip:
    """Decode (or wrap) audio as a 16 kHz mono float32 waveform.

    Args:
        audio: a path (wav, flac, ogg, mp3, m4a, aac, opus, aiff), an `AudioClip`, or an array `(samples,)` or
            `(samples, channels)` together with `sampling_rate` (also accepted as a tuple `(array, rate)`).
        sampling_rate: the rate of an array input; required for arrays (a wrong guess would silently change pitch).
    Returns:
        `AudioClip`; any rate is resampled to 16 kHz (FFmpeg's resampler) and channels are averaged to mono. Clips
        shorter than 0.1 s are zero-padded to 0.1 s as the release does; silence is valid input.
    """
    if isinstance(audio, AudioClip):
        return audio
    if isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[1]):
        audio, sampling_rate = audio
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        _check_file(path, "audio", AUDIO_EXTENSIONS, LIMITS.audio_bytes)
        samples, rate = _decode_audio_file(path)
        source = str(path)
    else:
        array = _as_numpy(audio)
        if array is None:
            if isinstance(audio, list):
                array = np.asarray(audio, dtype=np.float32)
            else:
                raise OmniLabInputError(f"audio {_describe(audio)} is not a path, AudioClip or waveform array")
        if sampling_rate is None:
            raise OmniLabInputError(
                "audio given as an array needs its sampling rate: pass audio=(waveform, rate) or "
                "ol.load_audio(waveform, sampling_rate=rate)"
            )
        samples, rate, source = np.asarray(array), int(sampling_rate), "<waveform>"
        if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
            samples = samples.T  # (channels, samples) → (samples, channels)
    return _to_model_audio(samples, rate, source)


def _to_model_audio(samples: np.ndarray, rate: int, source: str) -> AudioClip:
    if samples.ndim not in (1, 2):
        raise OmniLabInputError(
            f"audio {source}: waveform of shape {samples.shape} is not (samples,) or (samples, channels)"
        )
    if rate <= 0:
        raise OmniLabInputError(f"audio {source}: sampling rate must be positive, got {rate}")
    if samples.shape[0] == 0:
        raise OmniLabInputError(f"audio {source} is empty (0 samples); pass at least {MIN_AUDIO_SECONDS} s of sound")
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise OmniLabInputError(f"audio {source} contains NaN or infinite samples")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    mono = samples if samples.ndim == 1 else samples.mean(axis=1)
    if mono.shape[0] / rate > LIMITS.max_audio_seconds:
        raise OmniLabInputError(
            f"audio {source} lasts {mono.shape[0] / rate:.0f} s, over the {LIMITS.max_audio_seconds:.0f} s limit"
        )
    waveform = _resample(mono, rate) if rate != SAMPLING_RATE else np.ascontiguousarray(mono)
    padded_from = None
    minimum = int(MIN_AUDIO_SECONDS * SAMPLING_RATE)
    if len(waveform) < minimum:
        padded_from = len(waveform)
        waveform = np.pad(waveform, (0, minimum - len(waveform)))
    return AudioClip(waveform.astype(np.float32), source, rate, channels, padded_from)


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(mono, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
    pieces = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _decode_audio_file(path: Path) -> tuple[np.ndarray, int]:
    suffix = path.suffix.lower()
    if suffix in SOUNDFILE_EXTENSIONS:
        import soundfile

        try:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except Exception as error:  # LibsndfileError, RuntimeError
            raise OmniLabInputError(
                f"audio {str(path)!r} could not be decoded ({error}); the file is corrupt or truncated. "
                f"Re-export it as 16-bit WAV or FLAC."
            ) from None
        if suffix == ".wav":
            _check_wav_complete(path)
        return samples, int(rate)
    return _decode_audio_av(path)


def _decode_audio_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise OmniLabInputError(f"audio file {str(path)!r} has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.sample_rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces = []
            for frame in container.decode(stream):
                pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except OmniLabInputError:
        raise
    except Exception as error:
        raise OmniLabInputError(
            f"audio {str(path)!r} could not be decoded ({type(error).__name__}: {error}); the file is corrupt or "
            f"truncated. Re-export it, e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`."
        ) from None
    if not pieces:
        raise OmniLabInputError(f"audio {str(path)!r} contains no decodable samples")
    return np.concatenate(pieces), int(rate)


def _check_wav_complete(path: Path) -> None:
    """libsndfile reads a truncated WAV without complaint; compare the data chunk's declared size with the file."""
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
            return
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                if size == 0xFFFFFFFF:  # streaming / RF64 writers leave the size open
                    return
                available = os.path.getsize(path) - file.tell()
                if available < size:
                    raise OmniLabInputError(
                        f"audio {str(path)!r} is truncated: its header declares {size} bytes of samples but the file "
                        f"holds {available}. Re-export or re-download it."
                    )
                return
            file.seek(size + (size & 1), io.SEEK_CUR)
