"""A synthetic dataset in the exact BirdCLEF 2021 layout.

Each species sings phrases of its own (frequency band, note shape, note length, rhythm; see
stages/demo/calls.py) over field background noise: pink noise and gusty wind. Labels are weak like
the real data (one label set per recording), but the focal bird sings throughout, so every 5 s
piece of a recording does hold its species; some recordings also hold a fainter second species
(a secondary label). The soundscapes mix the same species, more distant, with windows that hold no
bird at all (`nocall`). background/ holds bird-free clips (wind, rain, insects, traffic hum, the
field ambient; stages/demo/noise.py) for training's background noise mixing (train.background), as
freefield1010 or warblrb10k no-bird clips do on real data. Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stages.audio.ogg import write_ogg_vorbis
from stages.core.atomic import atomic_path
from stages.core.params import DemoParams
from stages.demo.calls import DESIGNS, CallDesign, background_noise, synthesize_phrase
from stages.demo.noise import NOISE_KINDS, noise_clip

# Real eBird codes, so the demo reads like the real data; `rocpig` exercises the `rocpig1` quirk.
SPECIES = [
    ("amerob", "Turdus migratorius", "American Robin"),
    ("norcar", "Cardinalis cardinalis", "Northern Cardinal"),
    ("rocpig", "Columba livia", "Rock Pigeon"),
    ("blujay", "Cyanocitta cristata", "Blue Jay"),
    ("sonspa", "Melospiza melodia", "Song Sparrow"),
    ("rewbla", "Agelaius phoeniceus", "Red-winged Blackbird"),
    ("houwre", "Troglodytes aedon", "House Wren"),
    ("carwre", "Thryothorus ludovicianus", "Carolina Wren"),
    ("eastow", "Pipilo erythrophthalmus", "Eastern Towhee"),
    ("tuftit", "Baeolophus bicolor", "Tufted Titmouse"),
    ("bkcchi", "Poecile atricapillus", "Black-capped Chickadee"),
    ("amecro", "Corvus brachyrhynchos", "American Crow"),
]


SOUNDSCAPE_SITES = ("COR", "SSW")
# Audio ids of the labelled (train_soundscapes/) and hidden (test_soundscapes/) soundscapes: apart.
TRAIN_SOUNDSCAPE_FIRST_ID = 10000
TEST_SOUNDSCAPE_FIRST_ID = 50000
BACKGROUND_FIRST_SERIAL = 900000  # Ogg serials of background/, clear of the recordings' XC ids


METADATA_COLUMNS = [
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "date", "filename", "license", "rating", "time", "url",
]


UNKNOWN_SECONDARY_CODE = "xxxunk"  # real metadata names species outside the 397 classes


# Peak amplitudes of a phrase: focal recordings are close, soundscape birds somewhat further away;
# the background's RMS is demo.noise_level (times 0.6-1.6 per file). Soundscape birds stay loud
# enough to be recognised by a model trained on the focal recordings: far quieter birds made the
# demo's soundscape F1 a test of detection range, not of whether the pipeline learned the species.
FOCAL_GAIN = (0.15, 0.45)


SECONDARY_GAIN = (0.2, 0.45)    # relative to the focal bird: a fainter bird further away


SOUNDSCAPE_GAIN = (0.12, 0.35)


SOUNDSCAPE_PHRASES = (2, 4)     # phrases per bird in a window (upper bound exclusive)


PITCH_JITTER = 0.04             # individual birds sing up to 4 % higher or lower


# Background clips at the soundscapes' ambient level, some quieter, some louder: a noise folder of
# real recordings is not level-matched either. Not louder still: rain's drops would clip.
BACKGROUND_GAIN = (0.5, 1.5)


def bird_pitch(rng: np.random.Generator) -> float:
    return float(rng.uniform(1 - PITCH_JITTER, 1 + PITCH_JITTER))


def add_phrase(audio: np.ndarray, phrase: np.ndarray, start_s: float, sample_rate: int) -> None:
    begin = int(start_s * sample_rate)
    end = min(len(audio), begin + len(phrase))
    audio[begin:end] += phrase[:end - begin]


def sing_throughout(audio: np.ndarray, design: CallDesign, gain: float, phrases_per_10s: float,
                    sample_rate: int, rng: np.random.Generator) -> None:
    """One bird singing phrases at a steady rate from start to end. Labels are per recording, so
    every 5 s piece must hold some of its calls: gaps between phrases stay well under 5 s."""
    pitch, interval = bird_pitch(rng), 10.0 / phrases_per_10s
    seconds = len(audio) / sample_rate
    start = rng.uniform(0, min(interval, 1.0) / 2)
    while start < seconds:
        phrase = synthesize_phrase(design, pitch, sample_rate, rng)
        add_phrase(audio, gain * rng.uniform(0.6, 1.0) * phrase, start, sample_rate)
        phrase_seconds = len(phrase) / sample_rate
        start += max(phrase_seconds + 0.15, interval * rng.uniform(0.7, 1.3))


def noise_level(p: DemoParams, rng: np.random.Generator) -> float:
    return p.noise_level * float(rng.uniform(0.6, 1.6))


def focal_recording(p: DemoParams, species_index: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A recording of one species, sometimes with a fainter second one; its audio and secondary labels."""
    codes = [code for code, _, _ in SPECIES[:p.n_species]]
    if rng.random() < p.short_recording_fraction:
        seconds = float(rng.uniform(p.min_recording_seconds, 5.0))
    else:
        seconds = float(rng.uniform(5.0, p.max_recording_seconds))
    audio = background_noise(int(seconds * p.sample_rate), p.sample_rate, noise_level(p, rng), rng)
    gain = rng.uniform(*FOCAL_GAIN)
    sing_throughout(audio, DESIGNS[codes[species_index]], gain, p.calls_per_10_seconds, p.sample_rate, rng)
    secondary: list[str] = []
    if rng.random() < p.secondary_label_fraction:
        other = int(rng.choice([i for i in range(p.n_species) if i != species_index]))
        # It sings throughout as well: a piece where the secondary label is silent is a wrong label.
        sing_throughout(audio, DESIGNS[codes[other]], gain * rng.uniform(*SECONDARY_GAIN),
                        p.calls_per_10_seconds, p.sample_rate, rng)
        secondary.append("rocpig1" if codes[other] == "rocpig" else codes[other])
        if rng.random() < 0.3:
            secondary.append(UNKNOWN_SECONDARY_CODE)
    return audio, secondary


def generate_recordings(p: DemoParams, out: Path, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    progress = tqdm(total=p.n_species * p.recordings_per_species, desc="demo_data: recordings", unit="file")
    for species_index, (code, scientific, common) in enumerate(SPECIES[:p.n_species]):
        (out / "train_short_audio" / code).mkdir(parents=True)
        for k in range(p.recordings_per_species):
            progress.update()
            xc_id = 100000 + species_index * 1000 + k
            audio, secondary = focal_recording(p, species_index, rng)
            audio, sample_rate = odd_format(audio, p, rng)
            filename = f"XC{xc_id}.ogg"
            write_ogg_vorbis(out / "train_short_audio" / code / filename,
                             np.clip(audio, -1, 1).astype(np.float32), sample_rate, serial=xc_id)
            rows.append({
                "primary_label": code,
                "secondary_labels": str(secondary),
                "type": str(["call"] if rng.random() < 0.5 else ["song"]),
                "latitude": round(float(rng.uniform(25, 50)), 4),
                "longitude": round(float(rng.uniform(-120, -70)), 4),
                "scientific_name": scientific,
                "common_name": common,
                "author": f"Synthetic Recordist {k % 4 + 1}",
                "date": f"20{10 + k % 10}-0{1 + k % 9}-1{k % 10}",
                "filename": filename,
                "license": "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
                "rating": float(rng.choice([2.5, 3.0, 3.5, 4.0, 4.5, 5.0])),
                "time": f"{6 + k % 12:02d}:00",
                "url": f"https://www.xeno-canto.org/{xc_id}",
            })
    progress.close()
    return pd.DataFrame(rows, columns=METADATA_COLUMNS)


def odd_format(audio: np.ndarray, p: DemoParams, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Some recordings come at 44.1/48 kHz and/or in stereo, so resampling and downmixing run."""
    if rng.random() >= p.odd_format_fraction:
        return audio, p.sample_rate
    sample_rate = int(rng.choice([44100, 48000]))
    n_out = int(round(len(audio) * sample_rate / p.sample_rate))
    positions = np.linspace(0, len(audio) - 1, n_out)
    resampled = np.interp(positions, np.arange(len(audio)), audio)
    if rng.random() < 0.5:
        right = 0.8 * resampled + rng.normal(0, p.noise_level / 4, n_out)
        resampled = np.stack([resampled, right], axis=1)
    return resampled, sample_rate


def soundscape_window(audio: np.ndarray, end: int, p: DemoParams, rng: np.random.Generator) -> list[str]:
    """Fill the 5 s window ending at `end` with one or two distant birds, or leave it empty (nocall);
    the species it holds. Phrases stay inside the window, so each row's label is exact."""
    if rng.random() < p.soundscape_nocall_fraction:
        return []
    codes = [code for code, _, _ in SPECIES[:p.n_species]]
    birds = [codes[int(i)] for i in rng.choice(p.n_species, 1 + int(rng.random() < 0.25), replace=False)]
    for code in birds:
        pitch, gain = bird_pitch(rng), rng.uniform(*SOUNDSCAPE_GAIN)
        for _ in range(int(rng.integers(*SOUNDSCAPE_PHRASES))):
            phrase = gain * synthesize_phrase(DESIGNS[code], pitch, p.sample_rate, rng)
            latest = max(4.9 - len(phrase) / p.sample_rate, 0.1)
            add_phrase(audio, phrase, end - 5 + rng.uniform(0.1, latest), p.sample_rate)
    return sorted(birds)


def generate_soundscapes(p: DemoParams, count: int, first_id: int, folder: Path,
                         rng: np.random.Generator) -> pd.DataFrame:
    """`count` soundscapes in `folder`, audio ids from `first_id`; their window labels."""
    folder.mkdir(parents=True)
    rows = []
    for index in tqdm(range(count), desc=f"demo_data: {folder.name}", unit="file"):
        audio_id = first_id + index * 1111
        site = SOUNDSCAPE_SITES[index % len(SOUNDSCAPE_SITES)]
        n_samples = p.soundscape_seconds * p.sample_rate
        audio = background_noise(n_samples, p.sample_rate, noise_level(p, rng), rng)
        for end in range(5, p.soundscape_seconds + 1, 5):
            birds = soundscape_window(audio, end, p, rng)
            rows.append({
                "row_id": f"{audio_id}_{site}_{end}",
                "site": site,
                "audio_id": audio_id,
                "seconds": end,
                "birds": " ".join(birds) if birds else "nocall",
            })
        filename = f"{audio_id}_{site}_2020{index % 12 + 1:02d}15.ogg"
        write_ogg_vorbis(folder / filename, np.clip(audio, -1, 1).astype(np.float32), p.sample_rate, serial=audio_id)
    return pd.DataFrame(rows, columns=["row_id", "site", "audio_id", "seconds", "birds"])


def generate_background(p: DemoParams, folder: Path, rng: np.random.Generator) -> None:
    """`p.n_background_files` bird-free clips in `folder`, the noise kinds in turn."""
    folder.mkdir(parents=True)
    n_samples = round(p.background_seconds * p.sample_rate)
    for index in tqdm(range(p.n_background_files), desc="demo_data: background", unit="file"):
        kind = NOISE_KINDS[index % len(NOISE_KINDS)]
        level = noise_level(p, rng) * float(rng.uniform(*BACKGROUND_GAIN))
        audio = noise_clip(kind, n_samples, p.sample_rate, level, rng)
        write_ogg_vorbis(folder / f"{kind}_{index:02d}.ogg", np.clip(audio, -1, 1).astype(np.float32),
                         p.sample_rate, serial=BACKGROUND_FIRST_SERIAL + index)


def write_demo(p: DemoParams, seed: int, out: Path) -> None:
    """Stage demo_data: the dataset written to `out` whole (or not at all, if interrupted)."""
    with atomic_path(out) as tmp:
        generate(p, seed, tmp)


def generate(p: DemoParams, seed: int, out: Path) -> None:
    if p.n_species > len(SPECIES):
        raise ValueError(f"demo.n_species: at most {len(SPECIES)} synthetic species are defined")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    generate_recordings(p, out, rng).to_csv(out / "train_metadata.csv", index=False)
    labelled = generate_soundscapes(p, p.n_soundscapes, TRAIN_SOUNDSCAPE_FIRST_ID, out / "train_soundscapes", rng)
    labelled.to_csv(out / "train_soundscape_labels.csv", index=False)
    # Drawn last, so the labelled data stays what it was without them. Their labels are not written,
    # as the competition hides them; a test can still recompute them from the seed.
    generate_soundscapes(p, p.n_test_soundscapes, TEST_SOUNDSCAPE_FIRST_ID, out / "test_soundscapes", rng)
    # Last of all, for the same reason: the rest of the dataset is byte for byte what it was without them.
    generate_background(p, out / "background", rng)
