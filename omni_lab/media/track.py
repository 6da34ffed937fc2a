"""A video file's own sound track, as the release's serving stacks read it, placed on the video's clock.

vLLM (`use_audio_in_video=True`) and TensorRT-LLM (`extract_audio`) decode the first audio stream of the video file
with PyAV and put the whole track in one audio block right after the video's block. `load_video_audio` decodes the
same stream through the audio decoder every other clip takes (`audio.decode_stream`: the file's rate and channels,
then the channel mean and FFmpeg's resampler to 16 kHz mono, `audio.py`) and returns an `AudioClip` whose `start`
says where it begins on the video's clock, so the token map's audio seconds and the video's frame times agree.

The clock is the video's: 0 s is the video stream's first presentation time (`VideoClip.times` count from there). The
audio stream's own start time (a track that starts late, or an MP4 edit list that shifts it) places the first kept
sample; the samples themselves are the track's, unpadded, as the release feeds them to the audio encoder.

The track is trimmed to the video's span: sound before the first frame or after the video ends is not part of the
video and is dropped (the release serves the video's span). Its length is read from the container and stream headers
and checked against the prompt's limit (what the context holds) and `LIMITS.max_audio_seconds` before anything is
decoded; decoding stops at the video's end. A file with no audio stream, or whose sound lies wholly outside its
picture, is refused with `OmniLabInputError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OmniLabInputError
from . import integrity
from .audio import AudioClip, _rate, _to_model_audio, decode_stream
from .common import LIMITS, check_file, describe
from .video import VIDEO_EXTENSIONS, _scan


def has_sound_track(video) -> bool:
    """Whether the video file holds an audio stream (read from its header; nothing is decoded).

    Args:
        video: a video file path.
    Returns:
        True when the container lists at least one audio stream.
    Raises:
        OmniLabInputError: not a readable video file.
    """
    import av

    path = _checked_path(video)
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except Exception as error:  # PyAV raises InvalidDataError, ... for broken containers
        raise OmniLabInputError(
            f"video {str(path)!r} could not be opened ({type(error).__name__}: {error}); the file is corrupt or "
            f"truncated. Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4`."
        ) from None


def load_video_audio(video, *, max_seconds: float | None = None) -> AudioClip:
    """Decode a video file's sound track over the video's span, as a 16 kHz mono clip on the video's clock.

    Args:
        video: a video file path (mp4, webm, mkv, mov, avi, m4v) holding an audio stream.
        max_seconds: refuse a track whose kept part is longer, before decoding it (the prompt passes what the
            model's context holds); at most `LIMITS.max_audio_seconds`.
    Returns:
        `AudioClip` of the first audio stream between the video's first frame and its end, resampled to 16 kHz and
        averaged to mono like any clip; `start` is the seconds on the video's clock of its first sample (0 for a
        track that starts with the picture, 0.5 for one that starts half a second late). Sound before the first
        frame or after the video's end is dropped.
    Raises:
        OmniLabInputError: not a video file, no audio stream (the message names the file and the fix), sound that
            lies wholly outside the video, a track over the limit, a corrupt or truncated file.
    """
    import av

    limit = LIMITS.max_audio_seconds if max_seconds is None else min(max_seconds, LIMITS.max_audio_seconds)
    path = _checked_path(video)
    integrity.check_structure(path, "video")
    name = repr(str(path))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmniLabInputError(f"video file {name} has no video stream")
            if not container.streams.audio:
                raise OmniLabInputError(
                    f"video {name} has no sound track, so there is no video audio to add. Ask without it "
                    "(video_audio=False, or --video-audio off), or pass the sound as its own clip with audio=."
                )
            picture, sound = container.streams.video[0], container.streams.audio[0]
            channels = sound.layout.nb_channels
            _rate(sound.rate or sound.sample_rate, f"{name} (its sound track)")
            origin = _seconds(picture.start_time, picture.time_base) or 0.0
            span = _seconds(picture.duration, picture.time_base) or _scan(path)[0]
            sound_start = _seconds(sound.start_time, sound.time_base)
            sound_start = origin if sound_start is None else sound_start
            # the samples kept are placed by the decoded frames' own times (a stream's declared start time can differ
            # from its first decoded sample by a codec's priming); the header's start only sizes the check
            window = (origin, origin + span)
            _check_header_length(container, sound, sound_start, window, limit, name)
            samples, first = decode_stream(container, sound, limit, f"{name} (its sound track)", window)
    except OmniLabInputError:
        raise
    except Exception as error:  # PyAV raises InvalidDataError, ... for broken containers
        raise OmniLabInputError(
            f"the sound track of video {name} could not be decoded ({type(error).__name__}: {error}); the file is "
            f"corrupt or truncated. Re-encode it, e.g. `ffmpeg -i IN -c:v copy -c:a aac OUT.mp4`."
        ) from None
    clip = _to_model_audio(samples, int(sound.rate or sound.sample_rate), str(path), limit)
    clip.original_channels = int(channels)
    clip.start = max(first - origin, 0.0)
    return clip


def _checked_path(video) -> Path:
    if not isinstance(video, (str, os.PathLike)):
        raise OmniLabInputError(
            f"video_audio=True reads the sound track of a video file, and video {describe(video)} is not a file "
            "(frames and VideoClips carry no sound). Pass the file's path, or give the sound as audio=(waveform, rate)"
        )
    path = Path(video)
    check_file(path, "video", VIDEO_EXTENSIONS, LIMITS.video_bytes)
    return path


def _seconds(value, time_base) -> float | None:
    return float(value * time_base) if value is not None and time_base else None


def _check_header_length(container, sound, sound_start: float, window: tuple[float, float], limit, name) -> None:
    """Refuse, before decoding, sound that misses the video or whose part inside it is over `limit` seconds."""
    if sound.duration and sound.time_base:
        sound_end = sound_start + float(sound.duration * sound.time_base)
    elif container.duration:  # e.g. WebM: no stream duration; the container's end bounds the track's
        sound_end = (container.start_time or 0) / 1e6 + container.duration / 1e6
    else:
        return  # nothing declared: decoding checks the length as it goes
    covered = min(sound_end, window[1]) - max(sound_start, window[0])
    if covered <= 0:
        raise OmniLabInputError(
            f"the sound track of video {name} ({sound_start:.2f}-{sound_end:.2f} s) lies outside its picture "
            f"({window[0]:.2f}-{window[1]:.2f} s), so none of it belongs to the video; ask without it "
            "(video_audio=False)"
        )
    if covered > limit:
        raise OmniLabInputError(
            f"the sound track of video {name} covers {covered:.1f} s of the video; at most {limit:.0f} s of audio "
            f"fit (the model's context, or omni_lab.media.LIMITS.max_audio_seconds). Trim the video, e.g. "
            f"`ffmpeg -i IN -t {int(limit)} OUT.mp4`, or ask without its sound (video_audio=False)."
        )
