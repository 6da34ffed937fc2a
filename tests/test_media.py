"""Bad input: each case gets an OmniLabInputError naming the input and the fix, or is handled as documented."""

import numpy as np
import pytest
import torch

from omni_lab import OmniLabInputError
from omni_lab.media import load_audio, load_image, load_video
from tests import synth


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    broken = synth.truncate(synth.write_image(tmp_path / f"a{suffix}", 120, 90))
    with pytest.raises(OmniLabInputError, match="truncated"):
        load_image(broken)


def test_corrupt_image(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(OmniLabInputError, match=str(path.name)):
        load_image(path)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_truncated_video(tmp_path, suffix):
    broken = synth.truncate(synth.write_video(tmp_path / f"v{suffix}", count=30))
    with pytest.raises(OmniLabInputError, match="truncated|corrupt"):
        load_video(broken)


def test_corrupt_video(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    with pytest.raises(OmniLabInputError, match="junk.mp4"):
        load_video(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_audio(tmp_path, suffix):
    broken = synth.truncate(synth.write_audio(tmp_path / f"a{suffix}", seconds=2.0))
    with pytest.raises(OmniLabInputError, match="truncated"):
        load_audio(broken)


def test_corrupt_audio(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"RIFF1234WAVEjunkjunkjunk" * 10)
    with pytest.raises(OmniLabInputError, match="junk.wav"):
        load_audio(path)


@pytest.mark.parametrize(
    ("loader", "name"), [(load_image, "notes.txt"), (load_video, "slides.pdf"), (load_audio, "song.midi")]
)
def test_unsupported_file_type_names_the_supported_ones(tmp_path, loader, name):
    path = tmp_path / name
    path.write_bytes(b"not media")
    with pytest.raises(OmniLabInputError, match="unsupported type") as error:
        loader(path)
    assert "supported:" in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(OmniLabInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_zero_length_audio_is_refused():
    with pytest.raises(OmniLabInputError, match="empty"):
        load_audio((np.zeros(0, np.float32), 16000))


def test_audio_array_without_a_rate_is_refused():
    with pytest.raises(OmniLabInputError, match="sampling rate"):
        load_audio(np.zeros(16000, np.float32))


def test_8khz_stereo_is_resampled_and_downmixed(tmp_path):
    path = synth.write_audio(tmp_path / "st.wav", seconds=2.0, rate=8000, channels=2, frequency=1000.0)
    clip = load_audio(path)
    assert clip.sampling_rate == 16000 and clip.original_rate == 8000 and clip.original_channels == 2
    assert clip.waveform.ndim == 1 and abs(len(clip.waveform) - 32000) <= 16
    spectrum = np.abs(np.fft.rfft(clip.waveform))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.waveform) - 1000.0) < 2.0  # still a 1 kHz tone
    # the downmix is the channel mean: amplitudes 0.5 and 0.35 average to 0.425
    assert abs(np.abs(clip.waveform[1000:-1000]).max() - 0.425) < 0.01


def test_mp3_decodes_through_pyav(tmp_path):
    clip = load_audio(synth.write_audio(tmp_path / "tone.mp3", seconds=1.0))
    assert 0.95 < clip.seconds < 1.2


def test_very_short_audio_is_padded_to_a_tenth_of_a_second():
    clip = load_audio((np.ones(400, np.float32) * 0.1, 16000))
    assert len(clip.waveform) == 1600 and clip.padded_from == 400


def test_very_large_image_is_shrunk_not_rejected(tmp_path, monkeypatch):
    import omni_lab.media as media

    monkeypatch.setattr(media.LIMITS, "preshrink_pixels", 200_000)
    path = synth.write_image(tmp_path / "big.png", 1200, 800)
    image = load_image(path)
    assert image.width * image.height <= 200_000 and abs(image.width / image.height - 1.5) < 0.01


def test_very_large_image_fits_the_patch_budget(full_meta_lab, tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("RGB", (9000, 6000), (10, 200, 30)).save(path)
    prompt = full_meta_lab.prompt("What colour?", images=[path])
    grid_h, grid_w = prompt.inputs["image_grid_hw"][0].tolist()
    assert grid_h * grid_w <= 13312 and prompt.token_map.counts()["image"] == grid_h * grid_w // 4


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    import omni_lab.media as media

    monkeypatch.setattr(media.LIMITS, "image_pixels", 10_000)
    path = synth.write_image(tmp_path / "big.png", 400, 300)
    with pytest.raises(OmniLabInputError, match="too large"):
        load_image(path)


def test_oversized_upload_is_refused(tmp_path, monkeypatch):
    import omni_lab.media as media

    monkeypatch.setattr(media.LIMITS, "video_bytes", 100)
    path = synth.write_video(tmp_path / "v.mp4")
    with pytest.raises(OmniLabInputError, match="limit"):
        load_video(path)


def test_one_frame_video_decodes(tmp_path):
    clip = load_video(synth.write_video(tmp_path / "one.mp4", count=1))
    assert clip.num_frames == 1 and clip.frame_indices == [0]


def test_video_sampling_at_fps_and_cap(tmp_path):
    path = synth.write_video(tmp_path / "v.mp4", count=40, fps=10)  # 4 s
    assert load_video(path, fps=1.0).frame_indices == [0, 10, 20, 30]
    assert load_video(path, fps=2.0).frame_indices == [0, 5, 10, 15, 20, 25, 30, 35]
    assert load_video(path, fps=None).num_frames == 40
    assert load_video(path, fps=None, max_frames=4).frame_indices == [0, 10, 20, 30]
    clip = load_video(path, fps=1.0)
    assert clip.fps == 10.0 and clip.timestamps() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("bad", [np.zeros((5, 5, 5, 5, 5)), "x" * 0, 123, np.zeros((2, 3, 7))])
def test_bad_image_values(bad):
    with pytest.raises(OmniLabInputError):
        load_image(bad)


def test_image_arrays_in_every_layout_decode_alike():
    rgb = synth.image_array(20, 10)
    expected = np.asarray(load_image(rgb))
    assert np.array_equal(np.asarray(load_image(rgb.transpose(2, 0, 1))), expected)
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(rgb))), expected)
    assert np.array_equal(np.asarray(load_image(rgb / 255.0)), expected)


def test_video_frames_of_different_sizes_are_refused():
    with pytest.raises(OmniLabInputError, match="differ in size"):
        load_video([np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)])


def test_nan_audio_is_refused():
    with pytest.raises(OmniLabInputError, match="NaN"):
        load_audio((np.full(1600, np.nan, np.float32), 16000))
