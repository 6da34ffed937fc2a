"""Property-based fuzzing with Hypothesis: every input gives a result or a clean omni-lab error, within a memory ceiling.

Generated media are real files written by PyAV and Pillow (random codec, container, size, frame times, rotation,
EXIF orientation, pixel mode, sample format, rate and channels), then left whole or damaged (cut short, bytes
overwritten, garbage appended). Whole files must decode to what was written; damaged ones may decode (damage a
decoder can step over) or raise `OmniLabInputError`. Public API arguments are drawn from well-formed and ill-formed
values alike (wrong types, NaN, infinities, lone surrogates, classes for instances, huge counts).

Profiles: "ci" (the default: fixed seed, derandomised, under 3 minutes on 2 cores) and "long" (`OMNI_LAB_FUZZ=long`:
ten times the examples, a fresh seed each run). Outcome counts are written to tests/artifacts/fuzz_outcomes.json.
"""

import json
import os
import resource
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omni_lab as ol
from omni_lab import OmniLabInputError, OmniLabModelError, media
from tests import media_corpus as corpus

pytestmark = pytest.mark.fuzz

SCALE = 10 if os.environ.get("OMNI_LAB_FUZZ") == "long" else 1
COMMON = {
    "deadline": None,
    "derandomize": SCALE == 1,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    "database": None,
}
MEMORY_CEILING_MB = 3000  # growth of the process's peak resident memory over the whole module
OUTCOMES: dict[str, Counter] = {}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module", autouse=True)
def _report():
    start = _peak_mb()
    yield
    growth = _peak_mb() - start
    out = Path(__file__).parent / "artifacts"
    out.mkdir(exist_ok=True)
    summary = {name: dict(counts) for name, counts in OUTCOMES.items()}
    summary["peak_memory_growth_mb"] = round(growth, 1)
    (out / "fuzz_outcomes.json").write_text(json.dumps(summary, indent=2))
    assert growth < MEMORY_CEILING_MB, f"fuzzing grew peak memory by {growth:.0f} MB"


def _outcome(test: str, kind: str, call):
    """Run `call`; count "ok" or "refused" under (test, kind); anything else propagates and fails the test."""
    try:
        result = call()
    except (OmniLabInputError, OmniLabModelError) as error:
        assert str(error), "an omni-lab error must say what is wrong"
        OUTCOMES.setdefault(test, Counter())[f"{kind}: refused"] += 1
        return None
    OUTCOMES.setdefault(test, Counter())[f"{kind}: ok"] += 1
    return result


def _damage(data: bytes, how: str, where: float, seed: int) -> bytes:
    if how == "cut":
        return data[: max(1, int(len(data) * where))]
    if how == "overwrite":
        rng = np.random.default_rng(seed)
        start = int(len(data) * where)
        chunk = rng.integers(0, 256, size=min(64, max(1, len(data) - start)), dtype=np.uint8).tobytes()
        return data[:start] + chunk + data[start + len(chunk) :]
    if how == "append":
        return data + np.random.default_rng(seed).integers(0, 256, 256, dtype=np.uint8).tobytes()
    return data


DAMAGE = st.tuples(
    st.sampled_from(["none", "none", "cut", "overwrite", "append"]),
    st.floats(0.02, 0.99),
    st.integers(0, 2**16),
)


# ---------------------------------------------------------------------------------------------------------- video
VIDEO_CODECS = [("libx264", ".mp4"), ("libvpx-vp9", ".webm"), ("mpeg4", ".mov"), ("mjpeg", ".avi"), ("gif", ".gif"),
                ("libx264", ".mkv")]  # fmt: skip


@settings(max_examples=30 * SCALE, **COMMON)
@given(
    codec=st.sampled_from(VIDEO_CODECS),
    size=st.tuples(st.integers(8, 48), st.integers(8, 40)),  # encoders refuse tinier frames
    gaps=st.lists(st.floats(0.01, 0.7), min_size=0, max_size=11),
    rotation=st.sampled_from([None, 0, 90, -90, 180]),
    through_pipe=st.booleans(),
    damage=DAMAGE,
    fps=st.one_of(st.none(), st.floats(0.2, 60)),
    max_frames=st.integers(1, 40),
)
def test_video_files(tmp_path_factory, codec, size, gaps, rotation, through_pipe, damage, fps, max_frames):
    codec_name, suffix = codec
    width, height = (2 * size[0], 2 * size[1]) if codec_name != "gif" else size
    times = np.concatenate([[0.0], np.cumsum(gaps)]).round(3).tolist()
    path = tmp_path_factory.mktemp("v") / f"clip{suffix}"
    pipe = through_pipe and suffix in (".mkv", ".webm", ".avi")
    corpus.write_video(path, codec_name, times, width, height, rotation if suffix != ".gif" else None, pipe)
    how, where, seed = damage
    path.write_bytes(_damage(path.read_bytes(), how, where, seed))
    clip = _outcome("video files", "whole" if how == "none" else how, lambda: media.load_video(path, fps, max_frames))
    if how == "none":
        assert clip is not None, "a whole file must decode"
    if clip is not None:
        assert 1 <= clip.num_frames <= max_frames and clip.frames.dtype == np.uint8
        assert all(b >= a for a, b in zip(clip.times, clip.times[1:], strict=False))
        if how == "none":
            turned = rotation in (90, -90) and suffix != ".gif"
            assert clip.size == ((height, width) if turned else (width, height))
            assert all(min(abs(t - x) for x in times) < 0.011 for t in clip.times)  # GIF: centiseconds


# ---------------------------------------------------------------------------------------------------------- image
IMAGE_MODES = {"L": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "I;16": np.uint16, "F": np.float32, "1": bool}
IMAGE_FORMATS = {".png": ("L", "RGB", "RGBA", "I;16", "1"), ".jpg": ("L", "RGB"), ".gif": ("L", "RGB"),
                 ".tiff": ("L", "RGB", "RGBA", "I;16", "F", "1"), ".webp": ("RGB", "RGBA"), ".bmp": ("L", "RGB", "1")}  # fmt: skip


@st.composite
def image_files(draw):
    suffix = draw(st.sampled_from(sorted(IMAGE_FORMATS)))
    mode = draw(st.sampled_from(IMAGE_FORMATS[suffix]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width, channels) if channels else (height, width)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = IMAGE_MODES[mode]
    if dtype is bool:
        array = rng.random(shape) > 0.5
    elif dtype is np.float32:
        array = rng.random(shape).astype(np.float32)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    orientation = draw(st.sampled_from([None, 1, 3, 6, 8])) if suffix == ".jpg" else None
    return suffix, mode, array, orientation


@settings(max_examples=60 * SCALE, **COMMON)
@given(case=image_files(), damage=DAMAGE)
def test_image_files(tmp_path_factory, case, damage):
    from PIL import Image

    suffix, mode, array, orientation = case
    path = tmp_path_factory.mktemp("i") / f"image{suffix}"
    if mode == "1":
        Image.fromarray(array).convert("1").save(path)
    else:
        corpus.write_image(path, array, orientation=orientation)
    how, where, seed = damage
    path.write_bytes(_damage(path.read_bytes(), how, where, seed))
    image = _outcome("image files", "whole" if how == "none" else how, lambda: media.load_image(path))
    if how == "none":
        assert image is not None, "a whole file must decode"
        height, width = array.shape[:2]
        assert image.size == ((height, width) if orientation in (6, 8) else (width, height))
    if image is not None:
        assert image.mode == "RGB"


# ---------------------------------------------------------------------------------------------------------- audio
AUDIO_WRITERS = [(None, ".wav", "PCM_16"), (None, ".wav", "PCM_24"), (None, ".wav", "FLOAT"), (None, ".wav", "PCM_U8"),
                 (None, ".flac", "PCM_16"), (None, ".aiff", "PCM_16"), ("libmp3lame", ".mp3", None),
                 ("libopus", ".opus", None), ("aac", ".m4a", None)]  # fmt: skip
RATES = {"libopus": (8000, 12000, 16000, 24000, 48000), "libmp3lame": (8000, 16000, 22050, 44100, 48000)}


@settings(max_examples=40 * SCALE, **COMMON)
@given(
    writer=st.sampled_from(AUDIO_WRITERS),
    rate_index=st.integers(0, 4),
    channels=st.sampled_from([1, 2, 6]),
    seconds=st.floats(0.02, 2.0),
    damage=DAMAGE,
)
def test_audio_files(tmp_path_factory, writer, rate_index, channels, seconds, damage):
    codec, suffix, subtype = writer
    rate = RATES.get(codec, (8000, 11025, 16000, 44100, 48000))[rate_index]
    channels = channels if codec is None or channels < 6 else 2
    path = tmp_path_factory.mktemp("a") / f"sound{suffix}"
    corpus.write_audio(path, seconds, rate, channels, codec, subtype)
    how, where, seed = damage
    path.write_bytes(_damage(path.read_bytes(), how, where, seed))
    clip = _outcome("audio files", "whole" if how == "none" else how, lambda: media.load_audio(path))
    if how == "none":
        assert clip is not None, "a whole file must decode"
        slack = 0.08 + (2304 / rate if codec else 0.0)  # lossy codecs: priming and padding, up to two frames
        assert clip.seconds >= media.MIN_AUDIO_SECONDS and abs(clip.seconds - max(seconds, 0.1)) < slack
    if clip is not None:
        assert clip.waveform.dtype == np.float32 and np.isfinite(clip.waveform).all()


# ------------------------------------------------------------------------------------------------------------ API
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just([1, 2]),
)


@pytest.fixture(scope="module")
def lab():
    return ol.load("random:toy")


@st.composite
def audio_inputs(draw):
    """Waveforms of any dtype and shape, sometimes with a NaN or infinity, as a pair, a bare array or a list."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.int64, np.uint8, np.int32]))
    shape = draw(st.sampled_from([(0,), (5,), (1600,), (1600, 2), (2, 1600), (3, 3, 3)]))
    values = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape) * draw(st.sampled_from([0.5, 300]))
    if draw(st.booleans()) and values.size:
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, 0.0]))
    with np.errstate(invalid="ignore"):
        waveform = values.astype(dtype) if np.issubdtype(dtype, np.floating) else np.nan_to_num(values).astype(dtype)
    rate = draw(st.one_of(st.sampled_from([16000, 8000, 44100.0, 1, 0, -5]), ANYTHING))
    return draw(st.sampled_from([(waveform, rate), waveform, list(waveform.ravel()[:32])]))


def _refusal_names(test: str, broken: str | None, names: dict, call):
    """At most one argument is drawn from anything at all (`broken`); a refusal must name it (`names[broken]`: the
    words its message may use), and with no argument broken the call must succeed."""
    try:
        result = call()
    except (OmniLabInputError, OmniLabModelError) as error:
        OUTCOMES.setdefault(test, Counter())[f"{broken or 'none'} broken: refused"] += 1
        assert broken is not None, f"well-formed arguments were refused: {error}"
        assert any(word in str(error) for word in names[broken]), (broken, str(error))
        return None
    OUTCOMES.setdefault(test, Counter())[f"{broken or 'none'} broken: ok"] += 1
    return result


PROMPT_ARGUMENTS = {
    "text": (st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20), ("text", "prompt is empty")),
    "fps": (st.sampled_from([1.0, None, 0.5]), ("fps",)),
    "max_frames": (st.sampled_from([4, 128]), ("max_frames",)),
    "audio": (st.sampled_from([None, (np.zeros(1600, np.float32), 16000)]), ("audio", "sampling", "waveform")),
}


@settings(max_examples=60 * SCALE, **COMMON)
@given(data=st.data(), broken=st.sampled_from([None, *PROMPT_ARGUMENTS]))
def test_prompt_arguments(lab, data, broken):
    arguments = {name: data.draw(strategy, label=name) for name, (strategy, _) in PROMPT_ARGUMENTS.items()}
    if broken == "text":
        arguments["text"] = data.draw(st.one_of(st.just("a \ud800 b"), st.just("  "), ANYTHING), label="bad text")
    elif broken == "audio":
        arguments["audio"] = data.draw(audio_inputs(), label="bad audio")
    elif broken:
        arguments[broken] = data.draw(ANYTHING, label=f"bad {broken}")
    video = np.zeros((3, 16, 16, 3), np.uint8)
    names = {name: words for name, (_, words) in PROMPT_ARGUMENTS.items()}
    prompt = _refusal_names("prompt arguments", broken, names, lambda: lab.prompt(video=video, **arguments))
    if prompt is not None:
        assert len(prompt) == len(prompt.token_map)


RUN_ARGUMENTS = {
    "max_new_tokens": (st.integers(0, 3), ("max_new_tokens",)),
    "do_sample": (st.booleans(), ("do_sample",)),
    "temperature": (st.floats(0.1, 2.0), ("temperature",)),
    "top_p": (st.floats(0.05, 1.0), ("top_p",)),
    "top_k": (st.integers(0, 5), ("top_k",)),
    "reducer": (st.sampled_from(["model", None, ("evs", 0.5), ("random", 0.3), ("tome", 0.25)]), ("reducer", "rate")),
    "capture": (st.sampled_from([None, "routing", ["attention_mass", "residual"]]), ("capture",)),
}
BAD_REDUCERS = st.one_of(
    st.sampled_from([ol.reducers.EVS, "evs", 5]),
    st.tuples(st.sampled_from(["evs", "random", "tome", "divprune", "x"]), ANYTHING),
)


@settings(max_examples=60 * SCALE, **COMMON)
@given(data=st.data(), broken=st.sampled_from([None, *RUN_ARGUMENTS]))
def test_run_arguments(lab, data, broken):
    arguments = {name: data.draw(strategy, label=name) for name, (strategy, _) in RUN_ARGUMENTS.items()}
    if broken == "reducer":
        arguments["reducer"] = data.draw(BAD_REDUCERS, label="bad reducer")
    elif broken == "capture":
        arguments["capture"] = data.draw(st.one_of(st.sampled_from(["nope", ["routing", 3]]), ANYTHING), label="bad")
    elif broken:
        arguments[broken] = data.draw(ANYTHING, label=f"bad {broken}")
    prompt = lab.prompt("What moves?", video=np.zeros((4, 16, 16, 3), np.uint8))
    names = {name: words for name, (_, words) in RUN_ARGUMENTS.items()}

    def call():
        reducer = arguments.pop("reducer")
        chosen = ol.reducers.at_rate(*reducer) if isinstance(reducer, tuple) else reducer
        return lab.run(prompt, reducer=chosen, **arguments)

    run = _refusal_names("run arguments", broken, names, call)
    if run is not None:
        assert len(run.token_map) >= len(prompt) and len(run.generated_ids) <= max(3, arguments["max_new_tokens"])
