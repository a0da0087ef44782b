"""Synthetic bird calls and field background noise for the demo dataset (stage demo_data).

A species sings phrases: a few notes of one shape (up-sweep, down-sweep, arched or flat whistle,
amplitude-modulated trill, harmonic stack, buzzy noise band) in a frequency band of its own, with
its own note length, note spacing and notes per phrase. Individual birds sing a few percent higher
or lower and every phrase varies a little, so a model has to learn the pattern, not one waveform.
All randomness comes from the caller's numpy Generator: same seed, same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AM_RATE_HZ = 45.0       # amplitude modulation of `am` notes: a rattle-like trill
HARMONICS = 5           # partials of a `harmonic` note, amplitude 1/k
VIBRATO_DEPTH = 0.01    # `flat` whistles waver by +-1 % at a few Hz, like real ones


@dataclass(frozen=True)
class CallDesign:
    """What makes one species recognisable."""
    kind: str            # note shape: up | down | arch | flat | am | harmonic | buzz
    low_hz: float        # the note's band (the fundamental's, for `harmonic`)
    high_hz: float
    note_seconds: float
    gap_seconds: float   # silence between the notes of a phrase
    notes: int           # notes per phrase
    step: float = 1.0    # pitch ratio from one note to the next (< 1: a descending series)


# Loosely modelled on each species' song; what matters is that bands, shapes and rhythms differ.
DESIGNS = {
    "amerob": CallDesign("arch", 1900, 2700, 0.22, 0.10, 3),            # caroled, slurred whistles
    "norcar": CallDesign("down", 2900, 4800, 0.15, 0.07, 5),            # loud down-slurred "cheer"s
    "rocpig": CallDesign("harmonic", 380, 520, 0.50, 0.20, 2, 0.94),     # low, hollow coos
    "blujay": CallDesign("buzz", 1000, 1600, 0.30, 0.15, 3),            # harsh, noisy "jeer"s
    "sonspa": CallDesign("up", 5000, 6800, 0.045, 0.03, 12),            # fast trill of short up-sweeps
    "rewbla": CallDesign("am", 7200, 7800, 0.70, 0.10, 1),              # one long buzzy, rattling note
    "houwre": CallDesign("down", 3500, 5000, 0.06, 0.04, 10, 0.97),     # bubbling, falling chatter
    "carwre": CallDesign("arch", 2600, 3600, 0.12, 0.05, 6),            # rolling "teakettle"
    "eastow": CallDesign("flat", 2200, 2300, 0.35, 0.12, 2, 1.12),      # two rising whistles
    "tuftit": CallDesign("down", 3000, 3600, 0.18, 0.12, 4, 1.0),       # "peter peter"
    "bkcchi": CallDesign("flat", 3900, 4000, 0.40, 0.08, 2, 0.85),      # "fee-bee"
    "amecro": CallDesign("harmonic", 550, 700, 0.35, 0.25, 3, 1.0),     # cawing
}


def note_frequency(kind: str, low: float, high: float, u: np.ndarray) -> np.ndarray:
    """The instantaneous frequency along a note, u running from 0 to 1 (sweeps are geometric, as
    pitch is heard)."""
    if kind == "up":
        return low * (high / low) ** u
    if kind == "down":
        return high * (low / high) ** u
    if kind in ("arch", "harmonic"):
        return low * (high / low) ** np.sin(np.pi * u)
    centre = np.sqrt(low * high)
    if kind == "flat":
        return centre * (1 + VIBRATO_DEPTH * np.sin(2 * np.pi * 3.0 * u))
    return np.full_like(u, centre)  # am, buzz


def synthesize_note(design: CallDesign, seconds: float, pitch: float, sample_rate: int,
                    rng: np.random.Generator) -> np.ndarray:
    n = max(int(seconds * sample_rate), 16)
    u = np.arange(n) / n
    t = np.arange(n) / sample_rate
    freq = note_frequency(design.kind, design.low_hz * pitch, design.high_hz * pitch, u)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    if design.kind == "harmonic":
        nyquist = sample_rate / 2
        wave = sum(np.sin(k * phase) / k for k in range(1, HARMONICS + 1) if k * freq.max() < nyquist)
    elif design.kind == "buzz":
        # Low-passed noise shifted up to the band centre: a noisy band about (high - low) wide.
        # A Hann kernel, not a box: its low sidelobes keep the band from smearing over all frequencies.
        width = (design.high_hz - design.low_hz) * pitch
        kernel = np.hanning(max(int(2 * sample_rate / width), 3))
        noise = np.convolve(rng.normal(0, 1, n + len(kernel)), kernel, mode="valid")[:n]
        wave = noise / (noise.std() + 1e-9) * np.cos(phase)
    else:
        wave = np.sin(phase)
        if design.kind == "am":
            wave *= 0.5 + 0.5 * np.sin(2 * np.pi * AM_RATE_HZ * t)
    envelope = np.sin(np.pi * u) ** 0.5  # quick attack and release, no click
    return wave * envelope / (np.abs(wave).max() + 1e-9)


def synthesize_phrase(design: CallDesign, pitch: float, sample_rate: int,
                      rng: np.random.Generator) -> np.ndarray:
    """One phrase at the bird's `pitch` (its ratio to the species' band); tempo, note count and each
    note's pitch vary a little from phrase to phrase."""
    notes = design.notes + (int(rng.integers(-1, 2)) if design.notes > 3 else 0)
    tempo = rng.uniform(0.9, 1.1)
    gap = np.zeros(int(design.gap_seconds * tempo * sample_rate))
    parts = []
    for index in range(notes):
        note_pitch = pitch * design.step ** index * rng.uniform(0.985, 1.015)
        parts += [synthesize_note(design, design.note_seconds * tempo, note_pitch, sample_rate, rng), gap]
    return np.concatenate(parts[:-1])


def background_noise(n_samples: int, sample_rate: int, level: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Field background at RMS `level`: pink noise (foliage, distant sounds) plus wind, a rumble
    below a few hundred Hz that rises and falls in gusts."""
    n_fft = 1 << (n_samples - 1).bit_length()  # shaped in the frequency domain: a fast FFT length
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    freqs[0] = freqs[1]
    pink = shaped_noise(n_fft, 1 / np.sqrt(freqs), rng)[:n_samples]
    wind = shaped_noise(n_fft, 1 / freqs * (freqs > 20), rng)[:n_samples]  # brown, no DC drift
    knots = rng.uniform(0.2, 1.0, int(n_samples / sample_rate) + 2)  # one gust level a second
    gusts = np.interp(np.arange(n_samples) / sample_rate, np.arange(len(knots)), knots)
    noise = pink / (pink.std() + 1e-9) + rng.uniform(0.5, 2.0) * gusts * wind / (wind.std() + 1e-9)
    return level * noise / (noise.std() + 1e-9)


def shaped_noise(n: int, amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise with the spectrum's amplitude shaped by `amplitude` (one value per rfft bin)."""
    return np.fft.irfft(np.fft.rfft(rng.normal(0, 1, n)) * amplitude, n)
