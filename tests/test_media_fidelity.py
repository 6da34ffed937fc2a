"""What the model sees is what the file shows: a corpus of real media made here with PyAV and Pillow.

Each case is checked for what reaches the model, against the content the writer put there: orientation (where the
white strip ends up), frame times (the presentation times written), pixel values by their real range, audio length
and its token rows (12.5 per second), token boxes in the original image's pixels; and every cut file is refused.
"""

import numpy as np
import pytest
import torch

from omni_lab import OmniLabInputError, media
from omni_lab.media import AudioClip, VideoClip, load_audio, load_image, load_video
from tests import media_corpus as corpus

VFR_TIMES = [0.0, 0.1, 0.5, 0.6, 1.5, 1.6, 1.7, 3.0]


# ---------------------------------------------------------------------------------------------------- orientation
@pytest.mark.parametrize(("orientation", "strip_at"), [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, strip_at):
    stored = corpus.strip_frame(320, 160)  # stored wide, white strip over the left quarter
    path = corpus.write_image(tmp_path / "photo.jpg", stored, orientation=orientation)
    image = np.asarray(load_image(path))
    assert image.shape[:2] == ((160, 320) if orientation in (1, 3) else (320, 160))
    edges = {"left": image[:, :8], "right": image[:, -8:], "top": image[:8], "bottom": image[-8:]}
    assert edges[strip_at].mean() > 240 and min(edge.mean() for edge in edges.values()) < 15


def test_a_pil_image_with_an_orientation_tag_is_turned_too(tmp_path):
    from PIL import Image

    path = corpus.write_image(tmp_path / "photo.jpg", corpus.strip_frame(320, 160), orientation=6)
    image = load_image(Image.open(path))
    assert image.size == (160, 320) and np.asarray(image)[:8].mean() > 240
    assert media.original_size(image) == (160, 320)


@pytest.mark.parametrize(
    ("rotation", "shape", "strip_at"), [(-90, (64, 48), "top"), (90, (64, 48), "bottom"), (180, (48, 64), "right")]
)
def test_video_rotation_metadata_is_applied(tmp_path, rotation, shape, strip_at):
    """A phone's portrait clip is stored landscape with a display matrix (FFmpeg reports -90 degrees)."""
    clip = load_video(corpus.write_video(tmp_path / "phone.mp4", rotation=rotation), fps=None)
    frame = clip.frames[0]
    assert frame.shape[:2] == shape and clip.size == shape[::-1]
    edges = {"top": frame[:4], "bottom": frame[-4:], "right": frame[:, -4:], "left": frame[:, :4]}
    assert edges[strip_at].mean() > 240 and min(edge.mean() for edge in edges.values()) < 15


# ---------------------------------------------------------------------------------------------------- frame times
@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("libvpx-vp9", ".webm"), ("mjpeg", ".avi")])
def test_variable_frame_rate_times_come_from_timestamps(tmp_path, codec, suffix):
    path = corpus.write_video(tmp_path / f"vfr{suffix}", codec, times=VFR_TIMES)
    every = load_video(path, fps=None)
    assert np.allclose(every.times, VFR_TIMES, atol=1e-3)
    assert every.timestamps() == VFR_TIMES
    sampled = load_video(path, fps=1.0)  # the first frame at or after 0, 1 and 2 s
    assert np.allclose(sampled.times, [0.0, 1.5, 3.0], atol=1e-3)


def test_the_prompt_and_token_map_state_the_real_frame_times(toy_lab, tmp_path):
    path = corpus.write_video(tmp_path / "vfr.mp4", times=VFR_TIMES)
    prompt = toy_lab.prompt("What happens?", video=path, fps=None)
    text = toy_lab.processor.tokenizer.decode(prompt.input_ids[0])
    for index, seconds in enumerate(VFR_TIMES):
        assert f"rame {index + 1} sampled at {seconds:.2f} seconds" in text
    video = prompt.token_map["modality"] == "video"
    tubelets, t0, t1 = (prompt.token_map[column][video] for column in ("tubelet", "t0", "t1"))
    assert np.allclose(t0, np.asarray(VFR_TIMES)[2 * tubelets]) and np.allclose(
        t1, np.asarray(VFR_TIMES)[2 * tubelets + 1]
    )


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".avi"])
def test_streamed_files_without_sizes_or_duration_decode_with_bounded_frames(tmp_path, suffix):
    """Written through a pipe: no duration, no sizes (a piped AVI's header even states a wrong length)."""
    codec = {".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mjpeg"}[suffix]
    path = corpus.write_video(tmp_path / f"live{suffix}", codec, times=[i / 10 for i in range(40)], through_pipe=True)
    clip = load_video(path, fps=2.0)
    assert np.allclose(clip.times, np.arange(8) * 0.5, atol=1e-3)
    assert load_video(path, fps=None, max_frames=5).num_frames == 5


def test_a_tiny_sampling_step_never_builds_every_sample_time(tmp_path):
    clip = load_video(corpus.write_video(tmp_path / "v.mp4"), fps=1e6, max_frames=4)
    assert clip.num_frames == 4 and np.allclose(clip.times, [0.0, 0.3, 0.5, 0.8], atol=0.051)


def test_the_decoded_frame_budget_is_checked_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(media.LIMITS, "video_memory_bytes", 64 * 48 * 3 * 5)
    path = corpus.write_video(tmp_path / "v.mp4")
    with pytest.raises(OmniLabInputError, match=r"10 frames of 64 x 48 .* budget.*max_frames=5"):
        load_video(path, fps=None)
    assert load_video(path, fps=None, max_frames=5).num_frames == 5


# ---------------------------------------------------------------------------------------------------- pixel range
def _grey(image) -> float:
    return float(np.asarray(image).astype(float).mean())


@pytest.mark.parametrize(
    ("array", "mode", "suffix"),
    [(np.full((16, 16), 32768, np.uint16), "I;16", ".png"), (np.full((16, 16), 0.5, np.float32), "F", ".tiff")],
)
def test_high_bit_depth_and_float_files_keep_their_brightness(tmp_path, array, mode, suffix):
    from PIL import Image

    path = corpus.write_image(tmp_path / f"grey{suffix}", array)
    assert Image.open(path).mode == mode
    assert abs(_grey(load_image(path)) - 127.5) <= 1


@pytest.mark.parametrize(
    "array",
    [
        np.full((8, 8, 3), 32768, np.uint16),
        np.full((8, 8, 3), 0.5, np.float64),
        np.zeros((8, 8, 3), np.float32),  # [-1, 1] with no negatives seen: 0 is black in [0, 1]
        np.full((8, 8, 3), 128, np.int64),
        np.full((8, 8, 3), 127.5, np.float32),
    ],
    ids=["uint16", "float01", "float-zero", "int64-8bit", "float-0-255"],
)
def test_array_values_convert_by_their_real_range(array):
    expected = 0.0 if not array.any() else 127.5
    assert abs(_grey(load_image(array)) - expected) <= 1


def test_signed_float_images_map_minus_one_to_black_and_one_to_white():
    array = np.concatenate([np.full((4, 8, 3), -1.0), np.full((4, 8, 3), 1.0)]).astype(np.float32)
    image = np.asarray(load_image(array))
    assert image[:4].max() == 0 and image[4:].min() == 255


@pytest.mark.parametrize("array", [np.full((4, 4), 70000, np.int32), np.full((4, 4), 300.0, np.float32)])
def test_values_of_no_known_range_are_refused_with_the_range(array):
    with pytest.raises(OmniLabInputError, match="rescale|pass floats"):
        load_image(array)


def test_boxes_are_in_the_original_images_pixels_when_it_was_shrunk(toy_lab, tmp_path, monkeypatch):
    monkeypatch.setattr(media.LIMITS, "preshrink_pixels", 10_000)
    path = corpus.write_image(tmp_path / "big.png", corpus.strip_frame(400, 300))
    prompt = toy_lab.prompt("What is there?", images=[path])
    assert prompt.images[0].width * prompt.images[0].height <= 10_000
    rows = prompt.token_map["modality"] == "image"
    x1, y1 = prompt.token_map["x1"][rows], prompt.token_map["y1"][rows]
    assert prompt.token_map["x0"][rows].min() == 0 and abs(x1.max() - 400) < 1e-6 and abs(y1.max() - 300) < 1e-6


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 400), (3000, 2)])
def test_odd_image_sizes_build_a_prompt_with_boxes_inside_the_image(toy_lab, tmp_path, width, height):
    path = corpus.write_image(tmp_path / "odd.png", np.full((height, width, 3), 200, np.uint8))
    prompt = toy_lab.prompt("What is there?", images=[path])
    rows = prompt.token_map["modality"] == "image"
    assert rows.sum() > 0
    assert prompt.token_map["x1"][rows].max() <= width + 1e-6 and prompt.token_map["y1"][rows].max() <= height + 1e-6


# ---------------------------------------------------------------------------------------------------------- audio
AUDIO_CASES = [
    (None, ".wav", "PCM_16", 8000, 1),
    (None, ".wav", "PCM_24", 48000, 6),
    (None, ".wav", "FLOAT", 22050, 2),
    (None, ".flac", "PCM_16", 44100, 2),
    (None, ".aiff", "PCM_16", 16000, 1),
    ("libmp3lame", ".mp3", None, 44100, 2),
    ("libopus", ".opus", None, 48000, 1),
    ("aac", ".m4a", None, 32000, 2),
]


@pytest.mark.parametrize(("codec", "suffix", "subtype", "rate", "channels"), AUDIO_CASES)
def test_audio_of_any_rate_and_channels_keeps_its_length_and_loudness(
    toy_lab, tmp_path, codec, suffix, subtype, rate, channels
):
    path = corpus.write_audio(tmp_path / f"tone{suffix}", 2.0, rate, channels, codec, subtype)
    clip = load_audio(path)
    assert clip.original_rate == rate and clip.original_channels == channels
    assert abs(clip.seconds - 2.0) < 0.06  # encoder priming and padding
    expected_peak = 0.5 * np.mean([1 - 0.1 * c for c in range(channels)])
    assert abs(np.abs(clip.waveform[4000:-4000]).max() - expected_peak) < 0.03
    prompt = toy_lab.prompt("What is it?", audio=path)
    rows = int((prompt.token_map["modality"] == "audio").sum())
    assert abs(rows / clip.seconds - 12.5) < 0.6


def test_integer_samples_are_scaled_by_the_width_that_holds_them():
    pcm16 = (np.sin(np.linspace(0, 20, 1600)) * 16000).astype(np.int16)
    as_int16 = load_audio((pcm16, 16000)).waveform
    assert np.allclose(load_audio((pcm16.astype(np.int64), 16000)).waveform, as_int16)
    assert abs(np.abs(as_int16).max() - 16000 / 32768) < 1e-3
    unsigned = load_audio((np.full(1600, 128, np.uint8), 16000)).waveform
    assert np.abs(unsigned).max() == 0.0  # unsigned 8-bit PCM is centred on 128
    pcm24 = np.array([2**23 - 1, -(2**23)] * 800, np.int32)
    assert abs(load_audio((pcm24, 16000)).waveform.max() - 1.0) < 1e-6


@pytest.mark.parametrize(
    ("clip", "match"),
    [
        (AudioClip(np.full(1600, np.nan, np.float32)), "NaN"),
        (AudioClip(np.zeros(0, np.float32)), "empty"),
        (AudioClip(np.zeros(1600, np.float32), sampling_rate=-5), "sampling_rate"),
    ],
)
def test_audio_clips_are_checked_like_arrays(clip, match):
    with pytest.raises(OmniLabInputError, match=match):
        load_audio(clip)


def test_a_hand_made_clip_at_another_rate_is_resampled():
    clip = load_audio(AudioClip(corpus.tone(1.0, 44100)[:, 0], sampling_rate=44100))
    assert clip.sampling_rate == 16000 and abs(len(clip.waveform) - 16000) <= 16


@pytest.mark.parametrize("rate", [torch.tensor(16000), np.int64(16000), 16000.0])
def test_the_rate_of_a_waveform_pair_may_be_any_kind_of_number(rate):
    assert load_audio((np.zeros(1600, np.float32), rate)).seconds == 0.1


@pytest.mark.parametrize("rate", [1, float("nan"), float("inf"), 10**9, "16000"])
def test_implausible_rates_are_refused_before_resampling(rate):
    with pytest.raises(OmniLabInputError, match="sampling_rate"):
        load_audio((np.zeros(16000, np.float32), rate))


def test_audio_longer_than_the_context_holds_is_refused_before_decoding(toy_lab, tmp_path):
    path = corpus.write_audio(tmp_path / "long.wav", 30.0, 8000)
    with pytest.raises(OmniLabInputError, match=r"at most \d+ s fit"):
        load_audio(path, max_seconds=20.0)
    fits = toy_lab.context_length / 12.5
    with pytest.raises(OmniLabInputError, match="at most"):
        toy_lab.prompt("Listen", audio=(np.zeros(int((fits + 5) * 16000), np.float32), 16000))


def test_a_flat_list_of_samples_is_one_waveform_not_thousands_of_clips(toy_lab):
    with pytest.raises(OmniLabInputError, match="sampling rate"):
        toy_lab.prompt("Listen", audio=[0.0] * 16000)
    with pytest.raises(OmniLabInputError, match="ragged"):
        load_audio(([[0.0, 1.0], [0.0]], 16000))


# ----------------------------------------------------------------------------------------------------- truncation
@pytest.mark.parametrize(("codec", "suffix"), corpus.VIDEO_FORMATS)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_every_cut_video_is_refused(tmp_path, codec, suffix, fraction):
    whole = corpus.write_video(tmp_path / f"v{suffix}", codec)
    assert load_video(whole, fps=None).num_frames == 10
    with pytest.raises(OmniLabInputError, match="truncated|corrupt"):
        load_video(corpus.cut(whole, fraction), fps=None)


@pytest.mark.parametrize(("codec", "suffix", "subtype"), [case[:3] for case in AUDIO_CASES] + [("flac", ".ogg", None)])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_every_cut_audio_file_is_refused(tmp_path, codec, suffix, subtype, fraction):
    whole = corpus.write_audio(tmp_path / f"a{suffix}", 2.0, 48000 if codec == "libopus" else 16000, 1, codec, subtype)
    assert abs(load_audio(whole).seconds - 2.0) < 0.06
    with pytest.raises(OmniLabInputError, match="truncated|corrupt"):
        load_audio(corpus.cut(whole, fraction))


def test_video_clips_and_wrong_arguments_are_named():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    for kwargs, name in [({"fps": float("nan")}, "fps"), ({"fps": -1}, "fps"), ({"frame_indices": [1, 0]}, "increase")]:
        with pytest.raises(OmniLabInputError, match=name):
            VideoClip(frames, **kwargs)
    for kwargs, name in [
        ({"fps": "1"}, "fps="),
        ({"max_frames": 2.5}, "max_frames="),
        ({"max_frames": None}, "max_frames="),
    ]:
        with pytest.raises(OmniLabInputError, match=name):
            load_video(frames, **kwargs)
    with pytest.raises(OmniLabInputError, match=r"max_frames=1000000000"):
        load_video(frames, fps=None, max_frames=10**9)
