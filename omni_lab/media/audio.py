"""Audio: any file, rate or channel count to a 16 kHz mono float32 waveform, with its length checked before the work.

Integer samples become floats by one rule (`to_float`): a signed type is divided by 2**(bits - 1) of the narrowest
PCM width (8 only for int8; then 16, 24, 32) whose range holds every value, so int64 holding 16-bit samples is
still 16-bit sound; unsigned types are offset binary (uint8 PCM is centred on 128) of the narrowest width that holds
them. Float samples are kept as they are (they must be finite).

A file's length is read from its header before decoding and refused past `max_seconds` (the prompt passes what the
model's context holds) or `LIMITS.max_audio_seconds`; decoding also stops as soon as it passes that length, for
files whose header says nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import OmniLabInputError
from . import integrity
from .common import LIMITS, SAMPLING_RATE, as_numpy, check_file, describe

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".aiff", ".aif")
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")
MIN_AUDIO_SECONDS = 0.1  # the release pads shorter clips to 0.1 s (docs/model_layout.md §6)
_PCM_BITS = (16, 24, 32)


@dataclass
class AudioClip:
    """A mono float32 waveform at `sampling_rate` (16 kHz once through `load_audio`), with what it was before.

    An `AudioClip` made by hand at another rate, or with integer samples, is converted by `load_audio` like an
    array; its samples are checked like any input (finite, not empty, a plausible rate). `start` is where the clip
    begins on the clock of the video it came from (a video's own sound track, `load_video_audio`; the token map's
    audio seconds count from there); 0 for a clip of its own."""

    waveform: np.ndarray
    source: str = "<waveform>"
    original_rate: int = SAMPLING_RATE
    original_channels: int = 1
    padded_from: int | None = None  # original sample count when shorter than 0.1 s and padded

    sampling_rate: int = SAMPLING_RATE
    start: float = 0.0  # seconds on the video's clock (a video's sound track); 0 for a clip of its own

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sampling_rate


def is_rate(value) -> bool:
    """Whether `value` can be the rate of an `(array, rate)` pair (a Python, numpy or 0-d torch number)."""
    return validate.scalar(value) is not None


def is_pair(value) -> bool:
    """Whether `value` is `(waveform, rate)`: a waveform (array, tensor or list) then something that is not one."""
    if not (isinstance(value, tuple) and len(value) == 2):
        return False
    waveform, rate = value
    waves = (list, np.ndarray)
    is_wave = isinstance(waveform, waves) or as_numpy(waveform) is not None
    return is_rate(rate) or (is_wave and not isinstance(rate, waves) and getattr(rate, "ndim", 0) == 0)


def load_audio(audio, sampling_rate: int | None = None, *, max_seconds: float | None = None) -> AudioClip:
    """Decode (or wrap) audio as a 16 kHz mono float32 waveform.

    Args:
        audio: a path (wav, flac, ogg, mp3, m4a, aac, opus, aiff), an `AudioClip`, or an array `(samples,)` or
            `(samples, channels)` together with `sampling_rate` (also accepted as a tuple `(array, rate)`).
        sampling_rate: the rate of an array input; required for arrays (a wrong guess would silently change pitch).
        max_seconds: refuse longer audio before decoding or resampling it (the prompt passes what the context holds).
    Returns:
        `AudioClip`; any rate is resampled to 16 kHz (FFmpeg's resampler) and channels are averaged to mono. Clips
        shorter than 0.1 s are zero-padded to 0.1 s as the release does; silence is valid input.
    """
    limit = LIMITS.max_audio_seconds if max_seconds is None else min(max_seconds, LIMITS.max_audio_seconds)
    if isinstance(audio, AudioClip):
        return _from_clip(audio, limit)
    if is_pair(audio):
        audio, sampling_rate = audio
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        check_file(path, "audio", AUDIO_EXTENSIONS, LIMITS.audio_bytes)
        samples, rate, channels = _decode_file(path, limit)
        clip = _to_model_audio(samples, _rate(rate, repr(str(path))), str(path), limit)
        clip.original_channels = channels
        return clip
    array = as_numpy(audio)
    if array is None and isinstance(audio, (list, tuple)):
        try:
            array = np.asarray(audio, dtype=np.float32)
        except (ValueError, TypeError):
            raise OmniLabInputError(
                "audio given as a list must be one waveform of numbers (or rows of equal length, one per sample); "
                "this one is ragged or holds non-numbers. Pass a numpy array with its rate: audio=(waveform, rate)"
            ) from None
    if array is None:
        raise OmniLabInputError(f"audio {describe(audio)} is not a path, AudioClip or waveform array")
    if sampling_rate is None:
        raise OmniLabInputError(
            "audio given as an array needs its sampling rate: pass audio=(waveform, rate) or "
            "ol.load_audio(waveform, sampling_rate=rate)"
        )
    samples = np.asarray(array)
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
        samples = samples.T  # (channels, samples) -> (samples, channels)
    return _to_model_audio(samples, _rate(sampling_rate), "<waveform>", limit)


def _rate(value, source: str | None = None) -> int:
    """A plausible sampling rate in Hz; `source` names a file whose header states `value`."""
    if source is not None:
        rate = validate.scalar(value)
        if rate is None or not LIMITS.min_sampling_rate <= rate <= LIMITS.max_sampling_rate:
            raise OmniLabInputError(
                f"audio {source} states a sampling rate of {value} Hz (sampling_rate={value!r}), outside the "
                f"plausible {LIMITS.min_sampling_rate}-{LIMITS.max_sampling_rate} Hz; re-export it, e.g. "
                "`ffmpeg -i IN -ar 16000 OUT.wav`"
            )
        return int(rate)
    return validate.number(
        "sampling_rate",
        value,
        low=LIMITS.min_sampling_rate,
        high=LIMITS.max_sampling_rate,
        integer=True,
        fix="pass the waveform's rate in Hz, e.g. audio=(waveform, 16000)",
    )


def _from_clip(clip: AudioClip, limit: float) -> AudioClip:
    waveform = as_numpy(clip.waveform)
    waveform = np.asarray(clip.waveform) if waveform is None else waveform
    rate = _rate(clip.sampling_rate)
    if rate == SAMPLING_RATE and waveform.ndim == 1 and waveform.dtype == np.float32 and len(waveform):
        if not np.isfinite(waveform).all():
            raise OmniLabInputError(f"audio {clip.source} contains NaN or infinite samples; replace them first")
        if len(waveform) / rate > limit:
            raise _too_long(clip.source, len(waveform) / rate, limit)
        return clip
    converted = _to_model_audio(waveform, rate, clip.source, limit)
    converted.original_rate, converted.original_channels = clip.original_rate, clip.original_channels
    converted.start = clip.start
    return converted


def _too_long(source: str, seconds: float, limit: float) -> OmniLabInputError:
    return OmniLabInputError(
        f"audio {source} lasts {seconds:.1f} s; at most {limit:.0f} s fit (the model's context, or "
        f"omni_lab.media.LIMITS.max_audio_seconds). Trim it, e.g. `ffmpeg -i IN -t {int(limit)} OUT.wav`."
    )


def to_float(samples: np.ndarray, source: str) -> np.ndarray:
    """float32 samples by the module's integer rule."""
    if samples.dtype == np.bool_:
        raise OmniLabInputError(f"audio {source} holds booleans, not samples; pass float or integer PCM")
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    if not np.issubdtype(samples.dtype, np.integer):
        raise OmniLabInputError(f"audio {source} has dtype {samples.dtype}; pass float or integer PCM samples")
    low, high = int(samples.min()), int(samples.max())
    if np.issubdtype(samples.dtype, np.signedinteger):
        widths = (8, *_PCM_BITS) if samples.dtype == np.int8 else _PCM_BITS
        for bits in widths:
            if -(2 ** (bits - 1)) <= low and high < 2 ** (bits - 1):
                return (samples.astype(np.float64) / 2 ** (bits - 1)).astype(np.float32)
    else:
        for bits in (8, *_PCM_BITS):
            if high < 2**bits:
                return ((samples.astype(np.float64) - 2 ** (bits - 1)) / 2 ** (bits - 1)).astype(np.float32)
    raise OmniLabInputError(
        f"audio {source} has integer samples in [{low}, {high}], beyond 32-bit PCM; pass floats in [-1, 1]"
    )


def _to_model_audio(samples: np.ndarray, rate: int, source: str, limit: float) -> AudioClip:
    if samples.ndim not in (1, 2):
        raise OmniLabInputError(
            f"audio {source}: waveform of shape {samples.shape} is not (samples,) or (samples, channels)"
        )
    if samples.shape[0] == 0 or (samples.ndim == 2 and samples.shape[1] == 0):
        raise OmniLabInputError(f"audio {source} is empty (0 samples); pass at least {MIN_AUDIO_SECONDS} s of sound")
    if samples.shape[0] / rate > limit:
        raise _too_long(source, samples.shape[0] / rate, limit)
    samples = to_float(samples, source)
    if not np.isfinite(samples).all():
        raise OmniLabInputError(f"audio {source} contains NaN or infinite samples; replace them first")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    mono = samples if samples.ndim == 1 else samples.mean(axis=1)
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


def _decode_file(path: Path, limit: float) -> tuple[np.ndarray, int, int]:
    """(samples, rate, channels in the file)."""
    structure = integrity.check_structure(path, "audio")
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        import soundfile

        try:
            info = soundfile.info(str(path))
            _rate(info.samplerate, repr(str(path)))
            if info.frames and info.samplerate and info.frames / info.samplerate > limit:
                raise _too_long(repr(str(path)), info.frames / info.samplerate, limit)
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except OmniLabInputError:
            raise
        except Exception:  # libsndfile cannot read it (Opus in Ogg, odd WAV subtypes, damage): FFmpeg decides
            return _decode_av(path, limit, structure)
        if structure == integrity.UNCHECKED and info.frames > 0 and rate:
            integrity.check_duration(path, "audio", info.frames / rate, len(samples) / rate)
        return samples, int(rate), samples.shape[1]
    return _decode_av(path, limit, structure)


def _decode_av(path: Path, limit: float, structure: str) -> tuple[np.ndarray, int, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise OmniLabInputError(f"audio file {str(path)!r} has no audio stream")
            stream = container.streams.audio[0]
            rate, channels = stream.rate or stream.sample_rate, stream.layout.nb_channels
            _rate(rate, repr(str(path)))
            declared = container.duration / 1e6 if container.duration else None
            if declared and declared > limit:
                raise _too_long(repr(str(path)), declared, limit)
            samples, _ = decode_stream(container, stream, limit, repr(str(path)))
    except OmniLabInputError:
        raise
    except Exception as error:
        raise OmniLabInputError(
            f"audio {str(path)!r} could not be decoded ({type(error).__name__}: {error}); the file is corrupt or "
            f"truncated. Re-export it, e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`."
        ) from None
    if structure == integrity.UNCHECKED:
        integrity.check_duration(path, "audio", declared, len(samples) / rate)
    return samples, int(rate), int(channels)


def decode_stream(container, stream, limit: float, source: str, window=None) -> tuple[np.ndarray, float]:
    """Decode one audio stream of an open PyAV container at its own rate and channels.

    Args:
        container, stream: the open container and its audio stream.
        limit: refuse more than this many seconds of kept samples (checked while decoding).
        source: the input's name, for messages.
        window: `(start, stop)` seconds on the stream's clock (presentation times) to keep; None keeps all. Samples
            count on from the first frame's time; decoding stops once past `stop`.
    Returns:
        `(samples (n, channels) float32, stream seconds of the first kept sample)`.
    Raises:
        OmniLabInputError: over `limit`, or no sample (in the window).
    """
    import av

    rate = stream.rate or stream.sample_rate
    # planar float at the file's own rate and channels: the mono downmix is ours (the channel mean, as for every other
    # input), not FFmpeg's matrix
    resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
    pieces, kept, position, first, keep = [], 0, 0, None, (0, None)

    def take(frames) -> None:
        nonlocal kept, position
        for out in frames:
            block = out.to_ndarray().T  # (samples, channels)
            low = max(keep[0] - position, 0)
            high = len(block) if keep[1] is None else min(max(keep[1] - position, 0), len(block))
            position += len(block)
            if high > low:
                pieces.append(block[low:high])
                kept += high - low

    for frame in container.decode(stream):
        if first is None:
            first = float(frame.time) if frame.time is not None else 0.0
            if window is not None:  # sample indices from the first frame: [start, stop) on the stream's clock
                keep = (max(round((window[0] - first) * rate), 0), max(round((window[1] - first) * rate), 0))
        take(resampler.resample(frame))
        if kept / rate > limit:
            raise _too_long(source, kept / rate, limit)
        if keep[1] is not None and position >= keep[1]:
            break
    take(resampler.resample(None))
    if not pieces:
        where = "" if window is None else f" between {window[0]:.2f} s and {window[1]:.2f} s"
        raise OmniLabInputError(
            f"audio {source} contains no decodable samples{where}; the file is truncated or corrupt"
        )
    return np.concatenate(pieces), (first or 0.0) + keep[0] / rate
