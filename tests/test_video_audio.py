"""A video file's own sound track (`video_audio=True`), placed as the release's serving stacks place it.

Clips are written here with PyAV as one file holding the picture and its sound (H.264 + AAC in MP4, VP9 + Opus in
WebM, whichever encoders this PyAV has) and compared with the same frames and sound passed separately: the same
token ids, counts and answer from the toy twin; a track written half a second late lands half a second later on
the video's clock; sound past the video's end is trimmed; a file without sound is refused by name (and in the
playground answered without sound, with a note).
"""

from fractions import Fraction

import av
import numpy as np
import pytest

from omni_lab import media
from omni_lab.errors import OmniLabInputError
from omni_lab.token_map import AUDIO_SECONDS_PER_TOKEN
from omni_lab.toy import shapesworld

RATE = 16000
CONTAINERS = {  # suffix: (video encoders, audio encoders), first available wins
    ".mp4": (("libx264", "mpeg4"), ("aac",)),
    ".webm": (("libvpx-vp9", "libvpx"), ("libopus",)),
}
OMNI_SEED = shapesworld.eval_seed(0, "omni", 2)  # "3, right": three beeps (1.46 s) inside a 15-frame (1.875 s) clip


def encoders(suffix: str) -> tuple[str, str]:
    video_codecs, audio_codecs = CONTAINERS[suffix]
    video = next((codec for codec in video_codecs if codec in av.codecs_available), None)
    audio = next((codec for codec in audio_codecs if codec in av.codecs_available), None)
    if video is None or audio is None:
        pytest.skip(f"this PyAV has no encoder for {suffix} ({video_codecs} / {audio_codecs})")
    return video, audio


def write_clip(path, frames: np.ndarray, fps: float, sound: np.ndarray | None = None, delay: float = 0.0):
    """`(T, H, W, 3)` uint8 frames at `fps`, with `sound` (16 kHz mono float32) as the file's audio stream starting
    `delay` seconds after the first frame (its first frame's pts); no audio stream when `sound` is None."""
    video_codec, audio_codec = encoders(path.suffix)
    with av.open(str(path), "w") as container:
        picture = container.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1000))
        picture.width, picture.height, picture.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        picture.options = {"crf": "10"} if video_codec == "libx264" else {"crf": "10", "b": "0"}
        track = None
        if sound is not None:
            track = container.add_stream(audio_codec, rate=RATE, layout="mono")
        for frame in frames:
            container.mux(picture.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(picture.encode(None))
        if track is not None:
            block = av.AudioFrame.from_ndarray(sound[None].astype(np.float32), format="flt", layout="mono")
            block.sample_rate, block.time_base, block.pts = RATE, Fraction(1, RATE), round(delay * RATE)
            container.mux(track.encode(block))
            container.mux(track.encode(None))
    return path


def burst_track(seconds: float, at: float, length: float = 0.2) -> np.ndarray:
    """Silence with one 440 Hz burst at `at` seconds (an onset to find again)."""
    wave = np.zeros(round(seconds * RATE), np.float32)
    start = round(at * RATE)
    time = np.arange(round(length * RATE)) / RATE
    wave[start : start + len(time)] = 0.5 * np.sin(2 * np.pi * 440 * time)
    return wave


def onset_on_video_clock(clip) -> float:
    """Seconds on the video's clock where the clip first gets loud (its start plus the first sample over 0.25)."""
    return clip.start + int(np.flatnonzero(np.abs(clip.waveform) > 0.25)[0]) / clip.sampling_rate


def still_frames(count: int, size: int = 64) -> np.ndarray:
    frames = np.zeros((count, size, size, 3), np.uint8)
    frames[:, 16:48, 16:48] = (200, 40, 40)
    return frames


@pytest.fixture(scope="module")
def omni_example():
    example = shapesworld.sample(OMNI_SEED, family="omni", task="count_and_direction")
    clip = example.video
    waveform, rate = example.audio
    assert rate == RATE and len(waveform) <= clip.num_frames / clip.fps * RATE  # the beeps lie inside the video
    # a video's sound covers the video: the beeps, then silence to the clip's end, on one clock
    sound = np.pad(waveform, (0, round(clip.num_frames / clip.fps * RATE) - len(waveform)))
    return example, sound


# ----------------------------------------------------------------------------------- one file == the parts passed apart
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_clip_with_its_sound_in_one_file_asks_the_twin_what_the_parts_passed_apart_ask(
    twin_lab, omni_example, suffix, tmp_path
):
    example, sound = omni_example
    frames, fps = example.video.frames, example.video.fps
    together = write_clip(tmp_path / f"clip{suffix}", frames, fps, sound)
    silent = write_clip(tmp_path / f"silent{suffix}", frames, fps)  # the same pictures, encoded the same way

    muxed = twin_lab.prompt(example.question, video=str(together), video_audio=True, fps=None)
    apart = twin_lab.prompt(example.question, video=str(silent), audio=(sound, RATE), fps=None)

    track = muxed.audios[0]
    assert track.start == 0.0 and len(track.waveform) == len(sound)  # trimmed to the video: no codec padding left
    assert muxed.token_map.counts() == apart.token_map.counts()
    assert muxed.token_map.counts()["audio"] == twin_lab.processor._estimate_audio_num_embeddings(len(sound))
    assert np.array_equal(muxed.input_ids.numpy(), apart.input_ids.numpy())  # video block, then its audio block
    modality = muxed.token_map["modality"]
    audio_rows, video_rows = np.flatnonzero(modality == "audio"), np.flatnonzero(modality == "video")
    assert audio_rows[0] > video_rows[-1]  # the whole audio after the whole video, not interleaved
    answers = [twin_lab.run(p, max_new_tokens=8, reducer=None).answer for p in (muxed, apart)]
    assert answers[0] == answers[1] == example.answer


# -------------------------------------------------------------------------------------------------- the video's clock
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_track_written_half_a_second_late_lands_half_a_second_later(twin_lab, suffix, tmp_path):
    frames = still_frames(16)  # 2 s at 8 fps
    sound = burst_track(2.0, at=0.3)  # written 0.5 s late, it runs past the video's end
    on_time = write_clip(tmp_path / f"on_time{suffix}", frames, 8, sound)
    late = write_clip(tmp_path / f"late{suffix}", frames, 8, sound, delay=0.5)

    prompts = [twin_lab.prompt("When?", video=str(path), video_audio=True, fps=None) for path in (on_time, late)]
    onsets = [onset_on_video_clock(p.audios[0]) for p in prompts]
    assert onsets[0] == pytest.approx(0.3, abs=0.01)
    assert onsets[1] - onsets[0] == pytest.approx(0.5, abs=0.01)
    holding = []  # t0 of the audio token whose window holds the burst's onset
    for prompt, onset in zip(prompts, onsets, strict=True):
        clip, token_map = prompt.audios[0], prompt.token_map
        rows = token_map.rows(modality="audio")
        t0, t1 = token_map["t0"][rows], token_map["t1"][rows]
        assert t0[0] == pytest.approx(clip.start) and t1[-1] == pytest.approx(clip.start + clip.seconds)
        np.testing.assert_allclose(np.diff(t0), AUDIO_SECONDS_PER_TOKEN)  # 80 ms tokens, from the track's start
        holding.append(float(t0[(t0 <= onset) & (onset < t1)][0]))
        assert prompt.videos[0].times[0] == 0.0  # both clocks start at the first frame
    assert holding[1] - holding[0] == pytest.approx(0.5, abs=AUDIO_SECONDS_PER_TOKEN)
    late_clip = prompts[1].audios[0]
    assert 0.4 <= late_clip.start <= 0.51  # the first decoded sample (AAC priming may precede the sound itself)
    assert late_clip.start + late_clip.seconds == pytest.approx(2.0, abs=1 / RATE)  # trimmed at the video's end


def test_sound_past_the_video_is_trimmed_to_the_video(twin_lab, tmp_path):
    frames = still_frames(8)  # 1 s at 8 fps
    sound = burst_track(2.0, at=0.2) + burst_track(2.0, at=1.5)  # a second burst after the picture has ended
    path = write_clip(tmp_path / "long_sound.webm", frames, 8, sound)
    track = media.load_video_audio(path)
    assert track.start == 0.0 and len(track.waveform) == RATE  # 1.0 s: the video's span
    assert np.abs(track.waveform[round(0.15 * RATE) :]).max() > 0.25  # the first burst is there, whole
    prompt = twin_lab.prompt("What?", video=str(path), video_audio=True, fps=None)
    first_second = twin_lab.prompt("What?", video=still_frames(8), audio=(sound[:RATE], RATE))
    assert prompt.token_map.counts()["audio"] == first_second.token_map.counts()["audio"]


# --------------------------------------------------------------------------------------------------- refusals, budgets
def test_a_video_without_sound_asked_for_its_sound_is_refused_by_name(twin_lab, tmp_path):
    path = write_clip(tmp_path / "silent.mp4", still_frames(8), 8)
    assert not media.has_sound_track(path)
    with pytest.raises(OmniLabInputError, match=r"silent\.mp4.*has no sound track.*video_audio=False"):
        twin_lab.prompt("What?", video=str(path), video_audio=True)
    with pytest.raises(OmniLabInputError, match="is not a file"):
        twin_lab.prompt("What?", video=still_frames(8), video_audio=True)
    with pytest.raises(OmniLabInputError, match="one video file"):
        twin_lab.prompt("What?", video_audio=True)


def test_the_track_length_is_checked_against_the_context_before_decoding(twin_lab, tmp_path, monkeypatch):
    path = write_clip(tmp_path / "clip.mp4", still_frames(16), 8, burst_track(2.0, at=0.5))
    monkeypatch.setattr("omni_lab.media.track.decode_stream", lambda *args, **kwargs: pytest.fail("decoded"))
    with pytest.raises(OmniLabInputError, match=r"clip\.mp4.*covers 2\.0 s.*at most 1 s"):
        media.load_video_audio(path, max_seconds=1.0)  # what the prompt passes: the seconds its context holds
    assert media.load_video_audio.__module__ == "omni_lab.media.track"
    monkeypatch.setattr(media.LIMITS, "max_audio_seconds", 1.0)  # the media budget, under the twin's ~330 s context
    with pytest.raises(OmniLabInputError, match=r"covers 2\.0 s.*at most 1 s"):
        twin_lab.prompt("What?", video=str(path), video_audio=True)


def test_video_audio_goes_before_other_clips(twin_lab, tmp_path):
    sound = burst_track(2.0, at=0.5)
    path = write_clip(tmp_path / "clip.webm", still_frames(16), 8, sound)
    other = burst_track(0.5, at=0.1)
    prompt = twin_lab.prompt("What?", video=str(path), audio=(other, RATE), video_audio=True, fps=None)
    assert [len(clip.waveform) for clip in prompt.audios] == [2 * RATE, len(other)]
    estimate = twin_lab.processor._estimate_audio_num_embeddings
    rows = prompt.token_map.rows(modality="audio")
    assert np.bincount(prompt.token_map["item"][rows]).tolist() == [estimate(2 * RATE), estimate(len(other))]


# ------------------------------------------------------------------------------------------------- the CLI, playground
def test_the_cli_flag_gives_the_model_the_video_sound(twin_lab, tmp_path, capsys, monkeypatch):
    import json

    import omni_lab
    from omni_lab.cli import main

    monkeypatch.setattr(omni_lab, "load", lambda *args, **kwargs: twin_lab)  # the session's twin, not a new load

    path = write_clip(tmp_path / "clip.mp4", still_frames(16), 8, burst_track(2.0, at=0.5))
    arguments = ["run", "toy", "--text", "What?", "--video", str(path), "--fps", "8", "--max-new-tokens", "2"]
    assert main([*arguments, "--video-audio", "--json"]) == 0
    with_sound = json.loads(capsys.readouterr().out)
    expected = twin_lab.prompt("What?", video=str(path), video_audio=True, fps=8).token_map.counts()
    assert with_sound["tokens_before"] == expected
    assert expected["audio"] == twin_lab.processor._estimate_audio_num_embeddings(2 * RATE)  # the video's 2 s
    assert main([*arguments, "--json"]) == 0
    assert "audio" not in json.loads(capsys.readouterr().out)["tokens_before"]
    silent = write_clip(tmp_path / "silent.mp4", still_frames(8), 8)
    assert main(["run", "toy", "--text", "What?", "--video", str(silent), "--video-audio"]) == 2
    assert "has no sound track" in capsys.readouterr().err


def test_the_playground_uses_an_uploaded_video_sound_and_notes_a_silent_one(twin_lab, omni_example, tmp_path):
    from omni_lab.playground import handlers

    settings = handlers.default_settings(twin_lab)
    example, sound = omni_example
    frames, fps = example.video.frames, example.video.fps
    together = write_clip(tmp_path / "together.mp4", frames, fps, sound)
    silent = write_clip(tmp_path / "silent.mp4", frames, fps)
    upload = {"path": str(together), "orig_name": "together.mp4"}

    def ask(max_new_tokens=8, **kwargs):
        return list(handlers.ask(twin_lab, settings, example.question, max_new_tokens=max_new_tokens, **kwargs))[-1]

    answer, stats, *_ = ask(video=upload)
    pictures = handlers.load_uploads(None, str(silent), None, settings)["video"]  # as the playground samples them
    apart = twin_lab.prompt(example.question, video=pictures, audio=(sound, RATE))
    assert "note" not in stats and answer == example.answer
    assert stats["tokens_before"]["audio"] == twin_lab.processor._estimate_audio_num_embeddings(len(sound)) > 0
    assert stats["tokens_before"] == apart.token_map.counts()
    unsound = handlers.build_prompt(twin_lab, settings, example.question, video=upload, video_audio=False)
    assert "audio" not in unsound.token_map.counts()
    answer, stats, *_ = ask(max_new_tokens=2, video={"path": str(silent), "orig_name": "my clip.mp4"})
    assert "audio" not in stats["tokens_before"] and answer  # no error: answered from the pictures
    assert list(stats)[0] == "note" and "'my clip.mp4' has no sound track" in stats["note"]
    # a silent video with an audio upload beside it (the gallery's video + audio examples): that upload is its sound
    beside = {"path": str(silent), "orig_name": "my clip.mp4"}
    assert handlers.silent_video_note(beside, str(tmp_path / "beeps.flac")) is None
    assert "has no sound track" in handlers.silent_video_note(beside, None)


def test_occluding_an_audio_window_of_a_late_track_silences_those_seconds_of_it(twin_lab, tmp_path):
    from omni_lab.attribution.media_occlusion import occluded_prompt

    path = write_clip(tmp_path / "late.webm", still_frames(16), 8, burst_track(1.0, at=0.3), delay=0.5)
    prompt = twin_lab.prompt("When?", video=str(path), video_audio=True, fps=None)
    clip = prompt.audios[0]
    onset = onset_on_video_clock(clip)  # 0.8 s on the video's clock, 0.3 s into the track
    windows = [unit for unit in prompt.token_map.partition("audio_window", seconds=0.5) if unit.modality == "audio"]
    window = next(unit for unit in windows if unit.seconds[0] <= onset < unit.seconds[1])
    assert window.label == "audio 0 0.50-1.00 s"  # windows on the video's clock: the track starts at 0.5 s
    rebuilt, changed = occluded_prompt(twin_lab, prompt, [window])
    silenced = rebuilt.audios[0]
    assert changed == {"audio"} and silenced.start == clip.start
    np.testing.assert_array_equal(rebuilt.token_map["t0"], prompt.token_map["t0"])
    stop = round((window.seconds[1] - clip.start) * RATE)  # the window, counted from the track's first sample
    assert not silenced.waveform[:stop].any() and np.abs(clip.waveform[:stop]).max() > 0.25
    np.testing.assert_array_equal(silenced.waveform[stop:], clip.waveform[stop:])
