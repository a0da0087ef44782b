"""Stage demo_data: a synthetic dataset in the exact BirdCLEF 2021 layout.

Each species gets a call of its own (frequency band, sweep shape, syllable rhythm) that a model can
learn to tell apart. Calls sit at random times over background noise, so labels are weak like the
real data: a recording holds its species somewhere, and some 5 s pieces of it hold no call at all.
Same seed, same bytes.

    python -m stages.demo_data --params params.yaml --out data/demo
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.atomic import atomic_path
from stages.ogg import write_ogg_vorbis
from stages.params import DemoParams, load_params

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
SWEEP_SHAPES = ("up", "down", "chevron", "trill")
SOUNDSCAPE_SITES = ("COR", "SSW")
METADATA_COLUMNS = [
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "date", "filename", "license", "rating", "time", "url",
]
UNKNOWN_SECONDARY_CODE = "xxxunk"  # real metadata names species outside the 397 classes


@dataclass(frozen=True)
class CallShape:
    """What makes one species recognisable."""
    low_hz: float
    high_hz: float
    sweep: str
    syllables: int
    syllable_seconds: float
    gap_seconds: float


def make_call_shapes(n_species: int, rng: np.random.Generator) -> list[CallShape]:
    # Centre frequencies spread over 1.2-10 kHz on a log scale: neighbouring species differ in band
    # and, through the cycled sweep shapes and rhythms, in shape as well.
    centres = np.geomspace(1200, 10000, n_species)
    shapes = []
    for index, centre in enumerate(centres):
        width = centre * rng.uniform(0.15, 0.35)
        shapes.append(CallShape(
            low_hz=float(centre - width / 2),
            high_hz=float(centre + width / 2),
            sweep=SWEEP_SHAPES[index % len(SWEEP_SHAPES)],
            syllables=int(1 + (index * 2) % 5),
            syllable_seconds=float(rng.uniform(0.06, 0.25)),
            gap_seconds=float(rng.uniform(0.04, 0.15)),
        ))
    return shapes


def synthesize_call(shape: CallShape, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(0.95, 1.05)  # individual birds differ a little
    n = int(shape.syllable_seconds * sample_rate)
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    low, high = shape.low_hz * jitter, shape.high_hz * jitter
    if shape.sweep == "up":
        freq = low + (high - low) * t
    elif shape.sweep == "down":
        freq = high - (high - low) * t
    elif shape.sweep == "chevron":
        freq = low + (high - low) * (1 - np.abs(2 * t - 1))
    else:  # trill: fast frequency modulation around the band centre
        freq = (low + high) / 2 + (high - low) / 2 * np.sin(2 * np.pi * 30 * t * shape.syllable_seconds)
    syllable = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.hanning(n)
    gap = np.zeros(int(shape.gap_seconds * sample_rate))
    return np.concatenate([np.concatenate([syllable, gap]) for _ in range(shape.syllables)])


def background_noise(n_samples: int, level: float, rng: np.random.Generator) -> np.ndarray:
    # Brown-ish noise (low frequencies dominate, like wind and distant traffic) plus a white floor.
    brown = np.cumsum(rng.normal(0, 1, n_samples))
    brown -= np.convolve(brown, np.ones(512) / 512, mode="same")
    brown /= np.abs(brown).max() + 1e-9
    return level * (brown + 0.3 * rng.normal(0, 1, n_samples))


def place_calls(audio: np.ndarray, call_starts: np.ndarray, shape: CallShape, gain: float,
                sample_rate: int, rng: np.random.Generator) -> None:
    for start in call_starts:
        call = gain * rng.uniform(0.5, 1.0) * synthesize_call(shape, sample_rate, rng)
        begin = int(start * sample_rate)
        end = min(len(audio), begin + len(call))
        audio[begin:end] += call[:end - begin]


def random_call_starts(seconds: float, rate_per_10s: float, rng: np.random.Generator) -> np.ndarray:
    count = max(1, rng.poisson(rate_per_10s * seconds / 10))
    return np.sort(rng.uniform(0, max(seconds - 1.0, 0.1), count))


def generate_recordings(p: DemoParams, shapes: list[CallShape], out: Path,
                        rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    codes = [code for code, _, _ in SPECIES[:p.n_species]]
    for species_index, (code, scientific, common) in enumerate(SPECIES[:p.n_species]):
        (out / "train_short_audio" / code).mkdir(parents=True)
        for k in range(p.recordings_per_species):
            xc_id = 100000 + species_index * 1000 + k
            if rng.random() < p.short_recording_fraction:
                seconds = float(rng.uniform(p.min_recording_seconds, 5.0))
            else:
                seconds = float(rng.uniform(5.0, p.max_recording_seconds))
            audio = background_noise(int(seconds * p.sample_rate), p.noise_level, rng)
            place_calls(audio, random_call_starts(seconds, p.calls_per_10_seconds, rng),
                        shapes[species_index], 0.3, p.sample_rate, rng)

            secondary: list[str] = []
            if rng.random() < p.secondary_label_fraction:
                other = int(rng.choice([i for i in range(p.n_species) if i != species_index]))
                place_calls(audio, random_call_starts(seconds, p.calls_per_10_seconds / 2, rng),
                            shapes[other], 0.15, p.sample_rate, rng)
                secondary.append("rocpig1" if codes[other] == "rocpig" else codes[other])
                if rng.random() < 0.3:
                    secondary.append(UNKNOWN_SECONDARY_CODE)

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


def generate_soundscapes(p: DemoParams, shapes: list[CallShape], out: Path,
                         rng: np.random.Generator) -> pd.DataFrame:
    (out / "train_soundscapes").mkdir(parents=True)
    codes = [code for code, _, _ in SPECIES[:p.n_species]]
    rows = []
    for index in range(p.n_soundscapes):
        audio_id = 10000 + index * 1111
        site = SOUNDSCAPE_SITES[index % len(SOUNDSCAPE_SITES)]
        audio = background_noise(p.soundscape_seconds * p.sample_rate, p.noise_level, rng)
        for end in range(5, p.soundscape_seconds + 1, 5):
            birds: list[str] = []
            if rng.random() >= p.soundscape_nocall_fraction:
                n_birds = 1 + int(rng.random() < 0.25)
                for species_index in rng.choice(p.n_species, n_birds, replace=False):
                    # Keep calls inside the window (with a small margin) so each row's label is exact.
                    shape = shapes[int(species_index)]
                    call_seconds = shape.syllables * (shape.syllable_seconds + shape.gap_seconds) * 1.05
                    start = end - 5 + rng.uniform(0.1, max(0.2, 4.9 - call_seconds))
                    place_calls(audio, np.array([start]), shape, 0.3, p.sample_rate, rng)
                    birds.append(codes[int(species_index)])
            rows.append({
                "row_id": f"{audio_id}_{site}_{end}",
                "site": site,
                "audio_id": audio_id,
                "seconds": end,
                "birds": " ".join(sorted(birds)) if birds else "nocall",
            })
        filename = f"{audio_id}_{site}_2020{index % 12 + 1:02d}15.ogg"
        write_ogg_vorbis(out / "train_soundscapes" / filename,
                         np.clip(audio, -1, 1).astype(np.float32), p.sample_rate, serial=audio_id)
    return pd.DataFrame(rows, columns=["row_id", "site", "audio_id", "seconds", "birds"])


def generate(p: DemoParams, seed: int, out: Path) -> None:
    if p.n_species > len(SPECIES):
        raise ValueError(f"demo.n_species: at most {len(SPECIES)} synthetic species are defined")
    rng = np.random.default_rng(seed)
    shapes = make_call_shapes(p.n_species, rng)
    out.mkdir(parents=True)
    generate_recordings(p, shapes, out, rng).to_csv(out / "train_metadata.csv", index=False)
    generate_soundscapes(p, shapes, out, rng).to_csv(out / "train_soundscape_labels.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    with atomic_path(args.out) as tmp:
        generate(params.demo, params.seed, tmp)
    print(f"demo dataset written to {args.out}")


if __name__ == "__main__":
    main()
