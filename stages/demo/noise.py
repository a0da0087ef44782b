"""Bird-free field noise for the demo dataset's background/ folder (stage demo_data).

Training can mix audio with no target bird into its chunks (train.background), so that a model
learns wind, rain, insects and traffic are not birds; on real data that folder holds freefield1010
or warblrb10k no-bird clips. The demo writes its own, of several kinds. None holds a sustained tone
inside the demo species' bands (DESIGNS in stages/demo/calls.py, about 380 Hz to 8 kHz): "no bird"
noise that sounded like a species would teach the model to miss it. So insects sing above the
highest band and hum's tones stay below the lowest; wind, rain and the field ambient are toneless.
All randomness comes from the caller's numpy Generator: same seed, same samples.
"""

from __future__ import annotations

import numpy as np

from stages.demo.calls import background_noise, shaped_noise

NOISE_KINDS = ("wind", "rain", "insects", "hum", "field")

RUMBLE_LOW_HZ = 20.0              # brown noise is cut below this, so it does not drift like DC
WIND_CORNER_HZ = 150.0            # above it wind falls off faster than brown noise: felt, not heard
WIND_GUST_SECONDS = 1.5           # one gust level this often
WIND_GUSTS = (0.05, 1.0)          # between gusts the wind all but stops
RAIN_DROPS_PER_SECOND = (20.0, 120.0)   # drizzle to downpour
RAIN_DROP_SECONDS = (0.001, 0.004)      # decay time of a drop's click
RAIN_DROP_TAIL = 6                # a click is cut after this many decay times (-52 dB)
RAIN_HISS = (0.4, 1.0)            # the hiss's RMS against the drops'
# Rewbla's 7.8 kHz band top, sung up to 4 % higher, is the highest demo call: a margin above it.
INSECT_BAND_HZ = (9000.0, 12000.0)
INSECT_WIDTH_HZ = 800.0           # one insect's band; several make a chorus over the whole range
INSECT_COUNT = (3, 8)             # insects in a chorus (upper bound exclusive)
INSECT_PULSES_HZ = (25.0, 70.0)   # stridulation: wing strokes a second
INSECT_CHIRPS_HZ = (0.5, 4.0)     # the strokes come in chirps
INSECT_PULSE_SHARPNESS = 4        # power of the raised sine: short pulses with gaps between
INSECT_FLOOR = 0.1                # the field ambient under the chorus, as an RMS ratio (1 % power)
HUM_FUNDAMENTAL_HZ = (50.0, 120.0)       # mains hum to idling engines
HUM_TONE_CEILING_HZ = 300.0       # harmonics stop below the lowest demo band (rocpig's 380 Hz coos)
HUM_WAVER = 0.03                  # engine speed wanders by up to +-3 %
HUM_WAVER_SECONDS = 2.0
HUM_SWELL = (0.5, 1.0)            # vehicles come and go: the tones' loudness wanders
HUM_SWELL_SECONDS = 3.0
HUM_NOISE_CORNER_HZ = 250.0       # the road noise under the tones
HUM_NOISE = (0.3, 0.8)            # its RMS against the tones'


def noise_clip(kind: str, n_samples: int, sample_rate: int, level: float,
               rng: np.random.Generator) -> np.ndarray:
    """`n_samples` of noise of one of NOISE_KINDS at RMS `level` (float64, mono)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}: one of {', '.join(NOISE_KINDS)}")
    audio = MAKERS[kind](n_samples, sample_rate, rng)
    return level * audio / (np.sqrt(np.mean(audio ** 2)) + 1e-12)


def coloured(n_samples: int, sample_rate: int, amplitude, rng: np.random.Generator) -> np.ndarray:
    """Noise whose spectrum's amplitude is `amplitude(freqs)`, at unit RMS (zero if nothing passes)."""
    n_fft = 1 << (n_samples - 1).bit_length()  # shaped in the frequency domain: a fast FFT length
    noise = shaped_noise(n_fft, amplitude(np.fft.rfftfreq(n_fft, 1 / sample_rate)), rng)[:n_samples]
    return unit(noise)


def unit(audio: np.ndarray) -> np.ndarray:
    return audio / (np.sqrt(np.mean(audio ** 2)) + 1e-12)


def wander(n_samples: int, sample_rate: int, seconds: float, span: tuple[float, float],
           rng: np.random.Generator) -> np.ndarray:
    """A slowly varying gain: a random level in `span` every `seconds`, joined linearly."""
    knots = rng.uniform(*span, int(n_samples / sample_rate / seconds) + 2)
    return np.interp(np.arange(n_samples) / sample_rate / seconds, np.arange(len(knots)), knots)


def wind(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    rumble = coloured(n_samples, sample_rate, lambda f: (f > RUMBLE_LOW_HZ) / np.maximum(f, 1.0)
                      / (1 + f / WIND_CORNER_HZ), rng)
    return rumble * wander(n_samples, sample_rate, WIND_GUST_SECONDS, WIND_GUSTS, rng)


def rain(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Drops: each a burst of noise that decays within milliseconds, so broadband and never tonal."""
    drops = np.zeros(n_samples)
    count = rng.poisson(rng.uniform(*RAIN_DROPS_PER_SECOND) * n_samples / sample_rate)
    for start in np.sort(rng.integers(0, n_samples, count)):
        decay = rng.uniform(*RAIN_DROP_SECONDS)
        t = np.arange(min(int(RAIN_DROP_TAIL * decay * sample_rate), n_samples - start)) / sample_rate
        # Squared, so a few drops are near and loud and most are faint.
        drops[start:start + len(t)] += rng.uniform(0.1, 1.0) ** 2 * np.exp(-t / decay) * rng.normal(0, 1, len(t))
    return unit(drops) + rng.uniform(*RAIN_HISS) * rng.normal(0, 1, n_samples)


def insects(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A chorus of cricket-like stridulation: narrow noise bands cut into fast pulses."""
    t = np.arange(n_samples) / sample_rate
    low, high = INSECT_BAND_HZ
    chorus = np.zeros(n_samples)
    for _ in range(int(rng.integers(*INSECT_COUNT))):
        centre = rng.uniform(low + INSECT_WIDTH_HZ / 2, high - INSECT_WIDTH_HZ / 2)
        # A raised-cosine band: no hard edges whose ringing would spread the band.
        band = coloured(n_samples, sample_rate, lambda f: np.cos(np.clip((f - centre) / INSECT_WIDTH_HZ,
                                                                         -0.5, 0.5) * np.pi) ** 2, rng)
        pulses = np.sin(np.pi * rng.uniform(*INSECT_PULSES_HZ) * t + rng.uniform(0, np.pi))
        chirps = 0.5 + 0.5 * np.cos(2 * np.pi * rng.uniform(*INSECT_CHIRPS_HZ) * t + rng.uniform(0, 2 * np.pi))
        chorus += rng.uniform(0.3, 1.0) * band * pulses ** INSECT_PULSE_SHARPNESS * chirps ** 2
    # Below ~18 kHz sampling the band lies above Nyquist, as it would for a real recorder: only the
    # ambient remains, still no bird.
    return unit(chorus) + background_noise(n_samples, sample_rate, INSECT_FLOOR, rng)


def hum(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic or an engine: a wavering low fundamental, the harmonics below the bird bands, road noise."""
    fundamental = rng.uniform(*HUM_FUNDAMENTAL_HZ)
    speed = wander(n_samples, sample_rate, HUM_WAVER_SECONDS, (1 - HUM_WAVER, 1 + HUM_WAVER), rng)
    phase = 2 * np.pi * np.cumsum(fundamental * speed) / sample_rate
    top = int(HUM_TONE_CEILING_HZ / (fundamental * (1 + HUM_WAVER)))
    tones = sum(rng.uniform(0.3, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
                for k in range(1, top + 1))
    tones = unit(tones * wander(n_samples, sample_rate, HUM_SWELL_SECONDS, HUM_SWELL, rng))
    road = coloured(n_samples, sample_rate, lambda f: (f > RUMBLE_LOW_HZ) / (1 + (f / HUM_NOISE_CORNER_HZ) ** 2), rng)
    return tones + rng.uniform(*HUM_NOISE) * road


def field(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    return background_noise(n_samples, sample_rate, 1.0, rng)  # the soundscapes' ambient, nothing else


MAKERS = {"wind": wind, "rain": rain, "insects": insects, "hum": hum, "field": field}
