"""Decode and validate images, video and audio; know nothing of the model.

Every decoder returns plain data (an RGB PIL image, `uint8` frames with their times, a 16 kHz mono `float32`
waveform) and raises `OmniLabInputError` naming the input and the fix for anything it cannot use: corrupt or
truncated files, unsupported types, empty or non-finite samples, implausible rates, inputs over the limits
(`LIMITS`, checked before the work they bound). What the model sees is what the file shows: EXIF orientation and
container rotation applied, frame times from presentation timestamps, high-bit-depth and float pixels by their range.
A video file's own sound track (`load_video_audio`) is decoded like any clip and placed on the video's clock.
"""

from .audio import AUDIO_EXTENSIONS, MIN_AUDIO_SECONDS, SOUNDFILE_EXTENSIONS, AudioClip, load_audio
from .common import LIMITS, SAMPLING_RATE, Limits
from .images import IMAGE_EXTENSIONS, load_image, original_size
from .track import has_sound_track, load_video_audio
from .video import VIDEO_EXTENSIONS, VideoClip, load_video

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "LIMITS",
    "MIN_AUDIO_SECONDS",
    "SAMPLING_RATE",
    "SOUNDFILE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AudioClip",
    "Limits",
    "VideoClip",
    "has_sound_track",
    "load_audio",
    "load_image",
    "load_video",
    "load_video_audio",
    "original_size",
]
