"""Sounds of ShapesWorld: 1-5 beeps, high or low, pure tones or band-limited noise bursts, over faint hiss.

Clips are 1-4 s of 16 kHz mono float32. Each beep lasts 0.12-0.3 s with 10 ms raised-cosine ramps, beeps are at least
0.15 s apart, so every beep spans two or more of the audio tower's 80 ms tokens and every gap at least one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLING_RATE = 16000
PITCHES: dict[str, tuple[float, float]] = {"low": (280.0, 480.0), "high": (1500.0, 2400.0)}  # Hz, centre range
KINDS = ("tone", "noise")
MAX_BEEPS = 5


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
    samples = int(round(seconds * SAMPLING_RATE))
    waveform = rng.normal(0, rng.uniform(0.02, 0.05), samples)
    frequency = float(rng.uniform(*PITCHES[pitch]))
    amplitude = rng.uniform(0.3, 0.6)
    beeps = []
    start = lead
    for index in range(count):
        first = int(round(start * SAMPLING_RATE))
        length = int(round(lengths[index] * SAMPLING_RATE))
        if kind == "tone":
            signal = np.sin(2 * np.pi * frequency * np.arange(length) / SAMPLING_RATE + rng.uniform(0, 2 * np.pi))
        else:
            signal = _band_noise(rng, length, frequency)
        waveform[first : first + length] += amplitude * _envelope(length) * signal
        beeps.append((first / SAMPLING_RATE, (first + length) / SAMPLING_RATE))
        start += lengths[index] + (gaps[index] if index < count - 1 else 0.0)
    return BeepTrack(waveform.astype(np.float32), tuple(beeps), pitch, kind, frequency)
