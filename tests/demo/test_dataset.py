"""The synthetic demo dataset (stages/demo/): the BirdCLEF 2021 layout and columns, byte-identical
for a seed, odd formats, short and long recordings, soundscapes and their `nocall` windows, the
bird-free background clips and their kinds of noise."""

import ast
import dataclasses

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers import METADATA_COLUMNS, TINY_DEMO, make_params, run_stage, tree_hashes, write_params
from stages.demo.calls import DESIGNS
from stages.demo.dataset import PITCH_JITTER, SPECIES, generate, generate_background, sing_throughout
from stages.demo.noise import HUM_TONE_CEILING_HZ, INSECT_BAND_HZ, NOISE_KINDS, noise_clip

# For the tests of everything but background/: its clips take a few seconds to write.
WITHOUT_BACKGROUND = {"demo.n_background_files": 0}
TINY_BACKGROUND = make_params(TINY_DEMO).demo.n_background_files  # what demo_root holds


def generated(tmp_path, overrides=None, seed=None):
    params = make_params({**TINY_DEMO, **(overrides or {})})
    root = tmp_path / "demo"
    generate(params.demo, params.seed if seed is None else seed, root)
    return root, params


def short_audio(root):
    return sorted((root / "train_short_audio").rglob("*.ogg"))


def test_same_seed_gives_byte_identical_files(tmp_path, demo_root):
    root, _ = generated(tmp_path)
    hashes = tree_hashes(root)
    # recordings, labelled and test soundscapes, background clips, two CSV files
    assert len(hashes) == 9 + 2 + 1 + TINY_BACKGROUND + 2
    assert hashes == tree_hashes(demo_root)


def test_other_seed_gives_other_audio(tmp_path, demo_root):
    root, params = generated(tmp_path, seed=make_params().seed + 1)
    ours, theirs = tree_hashes(root), tree_hashes(demo_root)
    assert ours.keys() == theirs.keys()
    changed = [name for name in ours if name.endswith(".ogg") and ours[name] != theirs[name]]
    assert len(changed) == len([name for name in ours if name.endswith(".ogg")])


def test_metadata_has_the_birdclef_columns(demo_root):
    metadata = pd.read_csv(demo_root / "train_metadata.csv")
    assert list(metadata.columns) == METADATA_COLUMNS
    assert len(metadata) == 9
    assert sorted(metadata["primary_label"].unique()) == ["amerob", "norcar", "rocpig"]
    assert metadata["filename"].is_unique
    assert metadata["rating"].between(0, 5).all()
    for row in metadata.itertuples():
        assert (demo_root / "train_short_audio" / row.primary_label / row.filename).is_file()
        codes = ast.literal_eval(row.secondary_labels)
        assert isinstance(codes, list) and row.primary_label not in codes
        assert "rocpig" not in codes  # the demo spells it the way the real metadata does: rocpig1
    assert metadata["secondary_labels"].str.contains("rocpig1").any()


def test_audio_is_ogg_vorbis(demo_root):
    files = sorted(demo_root.rglob("*"))
    audio = [path for path in files if path.suffix == ".ogg"]
    assert len(audio) == 12 + TINY_BACKGROUND
    for path in audio:
        info = sf.info(str(path))
        assert (info.format, info.subtype) == ("OGG", "VORBIS"), path
        assert path.read_bytes()[:4] == b"OggS"
        assert info.frames > 0


def test_odd_formats(tmp_path):
    root, _ = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.odd_format_fraction": 1.0})
    infos = [sf.info(str(path)) for path in short_audio(root)]
    assert {info.samplerate for info in infos} <= {44100, 48000}
    assert {info.channels for info in infos} == {1, 2}
    for path in (root / "train_soundscapes").glob("*.ogg"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (32000, 1)


def test_no_odd_formats_by_request(tmp_path):
    root, _ = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.odd_format_fraction": 0.0})
    for path in short_audio(root):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (32000, 1)


def test_short_recordings(tmp_path):
    root, params = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.short_recording_fraction": 1.0,
                                       "demo.odd_format_fraction": 0.0})
    durations = [sf.info(str(path)).duration for path in short_audio(root)]
    assert len(durations) == 9
    assert all(params.demo.min_recording_seconds - 0.01 <= d < 5.0 for d in durations), durations


def test_long_recordings_without_short_fraction(tmp_path):
    root, params = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.short_recording_fraction": 0.0,
                                       "demo.odd_format_fraction": 0.0})
    durations = [sf.info(str(path)).duration for path in short_audio(root)]
    assert all(5.0 <= d <= params.demo.max_recording_seconds + 0.01 for d in durations), durations


def test_soundscapes_and_their_labels(demo_root):
    labels = pd.read_csv(demo_root / "train_soundscape_labels.csv")
    assert list(labels.columns) == ["row_id", "site", "audio_id", "seconds", "birds"]
    assert len(labels) == 2 * 20 // 5
    assert (labels["birds"] == "nocall").any()
    assert (labels["birds"] != "nocall").any()
    for row in labels.itertuples():
        assert row.row_id == f"{row.audio_id}_{row.site}_{row.seconds}"
        assert row.birds == "nocall" or set(row.birds.split()) <= {"amerob", "norcar", "rocpig"}
        matches = list((demo_root / "train_soundscapes").glob(f"{row.audio_id}_{row.site}_*.ogg"))
        assert len(matches) == 1
        assert sf.info(str(matches[0])).duration == pytest.approx(20.0)
    for audio_id, group in labels.groupby("audio_id"):
        assert sorted(group["seconds"]) == [5, 10, 15, 20]


def test_test_soundscapes_are_unlabelled_and_leave_the_labelled_data_as_it_was(tmp_path, demo_root):
    """Drawn after everything else but background/ (drawn after them, so it moves with them): without
    them the rest of the dataset is byte for byte the same."""
    root, _ = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.n_test_soundscapes": 0})
    without, with_test = tree_hashes(root), tree_hashes(demo_root)
    test_files = {name: digest for name, digest in with_test.items() if name.startswith("test_soundscapes/")}
    assert list(test_files) == ["test_soundscapes/50000_COR_20200115.ogg"]
    rest = {name: digest for name, digest in with_test.items()
            if name not in test_files and not name.startswith("background/")}
    assert rest == without
    labels = pd.read_csv(demo_root / "train_soundscape_labels.csv")
    assert not labels["audio_id"].eq(50000).any()


def test_all_nocall_soundscapes(tmp_path):
    root, _ = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.soundscape_nocall_fraction": 1.0})
    assert (pd.read_csv(root / "train_soundscape_labels.csv")["birds"] == "nocall").all()


def test_main_writes_the_dataset_atomically(tmp_path, demo_root):
    params = write_params(tmp_path / "params.yaml", TINY_DEMO)
    result = run_stage("stages.demo_data", "--params", str(params), "--out", str(tmp_path / "out" / "demo"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tree_hashes(tmp_path / "out" / "demo") == tree_hashes(demo_root)
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["demo"]


def test_every_species_has_a_call_design():
    assert [code for code, _, _ in SPECIES] == list(DESIGNS)


@pytest.mark.parametrize("code", list(DESIGNS))
def test_the_focal_bird_sings_throughout(code):
    # Labels are per recording: a 5 s chunk without a call would be a wrong label.
    sample_rate = 32000
    audio = np.zeros(30 * sample_rate)
    sing_throughout(audio, DESIGNS[code], 0.3, 5.0, sample_rate, np.random.default_rng(0))
    calling = np.flatnonzero(np.abs(audio) > 1e-3) / sample_rate
    assert calling[0] < 1.0 and calling[-1] > 29.0
    assert np.diff(calling).max() < 2.5  # so any 5 s window holds a good part of a phrase


def test_nocall_soundscape_windows_hold_no_call(tmp_path):
    root, _ = generated(tmp_path, {**WITHOUT_BACKGROUND, "demo.noise_level": 0.0})
    labels = pd.read_csv(root / "train_soundscape_labels.csv")
    for audio_id, group in labels.groupby("audio_id"):
        audio, sample_rate = sf.read(str(next((root / "train_soundscapes").glob(f"{audio_id}_*.ogg"))))
        for row in group.itertuples():
            window = audio[(row.seconds - 5) * sample_rate:row.seconds * sample_rate]
            peak = np.abs(window).max()
            assert peak < 1e-3 if row.birds == "nocall" else peak > 1e-2, (row.row_id, peak)


def test_background_clips_are_mono_vorbis_of_the_set_length(demo_root):
    p = make_params(TINY_DEMO).demo
    files = sorted((demo_root / "background").iterdir())
    kinds = [NOISE_KINDS[index % len(NOISE_KINDS)] for index in range(p.n_background_files)]
    assert sorted(path.name for path in files) == sorted(f"{kind}_{k:02d}.ogg" for k, kind in enumerate(kinds))
    for path in files:
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.channels) == ("OGG", "VORBIS", 1), path
        assert (info.samplerate, info.frames) == (p.sample_rate, round(p.background_seconds * p.sample_rate))
        audio, _ = sf.read(str(path))
        assert 0 < np.sqrt(np.mean(audio ** 2)) < 0.2, path  # noise at about the soundscapes' level


def test_background_leaves_the_rest_of_the_dataset_as_it_was(tmp_path):
    """Drawn last: with or without it, every other file is byte for byte the same."""
    small = {"demo.n_species": 2, "demo.recordings_per_species": 2, "demo.max_recording_seconds": 6.0,
             "demo.n_soundscapes": 1, "demo.soundscape_seconds": 10, "demo.background_seconds": 2.0}
    without, _ = generated(tmp_path / "without", {**small, "demo.n_background_files": 0})
    with_three, _ = generated(tmp_path / "with", {**small, "demo.n_background_files": 3})
    assert (without / "background").is_dir() and not any((without / "background").iterdir())
    hashes = tree_hashes(with_three)
    background = sorted(name for name in hashes if name.startswith("background/"))
    assert background == ["background/insects_02.ogg", "background/rain_01.ogg", "background/wind_00.ogg"]
    rest = {name: digest for name, digest in hashes.items() if name not in background}
    assert rest == tree_hashes(without)
    assert {name.split("/")[0] for name in rest} == {"train_metadata.csv", "train_soundscape_labels.csv",
                                                     "train_short_audio", "train_soundscapes", "test_soundscapes"}


def test_background_same_seed_same_bytes(tmp_path):
    p = dataclasses.replace(make_params(TINY_DEMO).demo, n_background_files=len(NOISE_KINDS), background_seconds=2.0)
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        generate_background(p, tmp_path / name, np.random.default_rng(seed))
    first, again, other = (tree_hashes(tmp_path / name) for name in ("first", "again", "other"))
    assert first == again and len(first) == len(NOISE_KINDS)
    assert other.keys() == first.keys() and all(other[name] != first[name] for name in first)


def power_share(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    return float(power[(freqs >= low_hz) & (freqs < high_hz)].sum() / power.sum())


@pytest.mark.parametrize("kind, low_hz, high_hz", [("insects", 8500, np.inf), ("wind", 0, 1000), ("hum", 0, 1000)])
def test_each_kind_of_noise_lies_where_it_claims(kind, low_hz, high_hz):
    for seed in range(3):
        audio = noise_clip(kind, 5 * 32000, 32000, 0.02, np.random.default_rng(seed))
        assert power_share(audio, 32000, low_hz, high_hz) > 0.9, (kind, seed)


def test_no_sustained_tone_inside_a_call_band():
    # Insects above every species' band and hum's tones below, even for birds singing higher or lower.
    assert INSECT_BAND_HZ[0] > max(design.high_hz for design in DESIGNS.values()) * (1 + PITCH_JITTER)
    assert HUM_TONE_CEILING_HZ < min(design.low_hz for design in DESIGNS.values()) * (1 - PITCH_JITTER)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_clip_is_at_the_asked_level(kind):
    audio = noise_clip(kind, 32000, 32000, 0.03, np.random.default_rng(0))
    assert audio.dtype == np.float64 and audio.shape == (32000,)
    assert np.sqrt(np.mean(audio ** 2)) == pytest.approx(0.03)
    assert np.array_equal(audio, noise_clip(kind, 32000, 32000, 0.03, np.random.default_rng(0)))


def test_unknown_noise_kind():
    with pytest.raises(ValueError, match="unknown noise kind 'snow'"):
        noise_clip("snow", 100, 32000, 0.02, np.random.default_rng(0))
