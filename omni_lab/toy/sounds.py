"""Sounds of ShapesWorld: 1-5 beeps, high or low, pure tones or band-limited noise bursts, over faint hiss.

Clips are 1-4 s of 16 kHz mono float32. Each beep lasts 0.12-0.3 s with 10 ms raised-cosine ramps, beeps are at least
0.15 s apart, so every beep spans two or more of the audio tower's 80 ms tokens and every gap at least one.
`beep_track` places the beeps at random; `beeps_at` puts them at given seconds of a clip of given length, so a clip
can share one clock with a video (the hard tier's sync family: a beep starting on a frame's time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_RATE = 16000
PITCHES: dict[str, tuple[float, float]] = {"low": (280.0, 480.0), "high": (1500.0, 2400.0)}  # Hz, centre range
KINDS = ("tone", "noise")
MAX_BEEPS = 5


@dataclass(frozen=True)
class AudioTruth:
    """A clip's beeps `(start, end)` in seconds, their pitch ("high"/"low") and kind ("tone"/"noise")."""

    beeps: tuple[tuple[float, float], ...]
    pitch: str
    kind: str
    frequency: float
    seconds: float


@dataclass(frozen=True)
class BeepTrack:
    """One synthesised clip and how it was made.

    Attributes:
        waveform: `(samples,)` float32 at 16 kHz.
        beeps: `(start, end)` seconds of every beep, in order.
        pitch: "high" or "low".
        kind: "tone" (sine) or "noise" (noise band-passed around the pitch).
        frequency: the centre frequency in Hz.
    """

    waveform: np.ndarray
    beeps: tuple[tuple[float, float], ...]
    pitch: str
    kind: str
    frequency: float

    @property
    def seconds(self) -> float:
        return len(self.waveform) / SAMPLING_RATE

    def truth(self) -> AudioTruth:
        """What an example records of the clip."""
        return AudioTruth(self.beeps, self.pitch, self.kind, self.frequency, self.seconds)


def _band_noise(rng: np.random.Generator, samples: int, centre: float) -> np.ndarray:
    """White noise kept between centre/1.4 and centre*1.4 Hz (FFT mask), scaled to a sine's RMS (1/sqrt(2))."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, 1 / SAMPLING_RATE)
    spectrum[(frequencies < centre / 1.4) | (frequencies > centre * 1.4)] = 0
    noise = np.fft.irfft(spectrum, samples)
    return noise / (np.sqrt(2 * np.mean(noise**2)) + 1e-9)


def _envelope(samples: int) -> np.ndarray:
    ramp = min(samples // 2, SAMPLING_RATE // 40)  # 25 ms
    envelope = np.ones(samples)
    rise = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    envelope[:ramp], envelope[samples - ramp :] = rise, rise[::-1]
    return envelope


def beep_track(rng: np.random.Generator, count: int, pitch: str, kind: str) -> BeepTrack:
    """Synthesise `count` beeps of a pitch and kind at random times in a 1-4 s clip.

    Args:
        rng: the example's generator.
        count: 1-5 beeps.
        pitch: "high" or "low".
        kind: "tone" or "noise".
    Returns:
        `BeepTrack`.
    """
    if not 1 <= count <= MAX_BEEPS or pitch not in PITCHES or kind not in KINDS:
        raise ValueError(f"beep_track(count={count}, pitch={pitch!r}, kind={kind!r}) is outside ShapesWorld")
    lengths = rng.uniform(0.12, 0.3, count)
    gaps = rng.uniform(0.15, 0.4, count - 1)
    lead, tail = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
    needed = lead + lengths.sum() + gaps.sum() + tail
    seconds = float(np.clip(rng.uniform(max(1.0, needed), max(1.0, needed) + 1.5), max(1.0, needed), 4.0))
    spare = seconds - needed  # spread the extra time over the lead, the gaps and the tail
    shares = rng.dirichlet(np.ones(count + 1)) * spare
    lead += shares[0]
    gaps = gaps + shares[1:count]
    placed, start = [], lead
    for index in range(count):
        placed.append((int(round(start * SAMPLING_RATE)), int(round(lengths[index] * SAMPLING_RATE))))
        start += lengths[index] + (gaps[index] if index < count - 1 else 0.0)
    return _synthesise(rng, placed, int(round(seconds * SAMPLING_RATE)), pitch, kind)


def beeps_at(
    rng: np.random.Generator, intervals: list[tuple[float, float]], seconds: float, pitch: str, kind: str
) -> BeepTrack:
    """Synthesise beeps at given `(start, end)` seconds in a clip of `seconds` (over the same faint hiss).

    Args:
        rng: the example's generator.
        intervals: `(start, end)` of each beep in seconds, in order, inside `[0, seconds]`, each at least 0.05 s long.
        seconds: the clip's length.
        pitch: "high" or "low".
        kind: "tone" or "noise".
    Returns:
        `BeepTrack` whose `beeps` are the intervals rounded to whole samples.
    """
    if pitch not in PITCHES or kind not in KINDS:
        raise ValueError(f"beeps_at(pitch={pitch!r}, kind={kind!r}) is outside ShapesWorld")
    ends = [0.0, *(end for _, end in intervals)]
    for (start, end), previous_end in zip(intervals, ends, strict=False):
        if not (previous_end <= start and end - start >= 0.05 and end <= seconds):
            raise ValueError(f"beeps_at: beep ({start}, {end}) overlaps another or leaves the {seconds} s clip")
    placed = [
        (int(round(start * SAMPLING_RATE)), int(round((end - start) * SAMPLING_RATE))) for start, end in intervals
    ]
    return _synthesise(rng, placed, int(round(seconds * SAMPLING_RATE)), pitch, kind)


def _synthesise(rng: np.random.Generator, placed: list[tuple[int, int]], samples: int, pitch: str, kind: str):
    """Hiss of `samples` samples with a beep at each `(first sample, length in samples)` of `placed`."""
    waveform = rng.normal(0, rng.uniform(0.02, 0.05), samples)
    frequency = float(rng.uniform(*PITCHES[pitch]))
    amplitude = rng.uniform(0.3, 0.6)
    beeps = []
    for first, length in placed:
        if kind == "tone":
            signal = np.sin(2 * np.pi * frequency * np.arange(length) / SAMPLING_RATE + rng.uniform(0, 2 * np.pi))
        else:
            signal = _band_noise(rng, length, frequency)
        waveform[first : first + length] += amplitude * _envelope(length) * signal
        beeps.append((first / SAMPLING_RATE, (first + length) / SAMPLING_RATE))
    return BeepTrack(waveform.astype(np.float32), tuple(beeps), pitch, kind, frequency)
