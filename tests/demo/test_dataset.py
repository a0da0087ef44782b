"""The synthetic demo dataset (stages/demo/): the BirdCLEF 2021 layout and columns, byte-identical
for a seed, odd formats, short and long recordings, soundscapes and their `nocall` windows."""

import ast

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers import METADATA_COLUMNS, TINY_DEMO, make_params, run_stage, tree_hashes, write_params
from stages.demo.calls import DESIGNS
from stages.demo.dataset import SPECIES, generate, sing_throughout


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
    assert len(hashes) == 9 + 2 + 1 + 2  # recordings, labelled and test soundscapes, two CSV files
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
    assert len(audio) == 12
    for path in audio:
        info = sf.info(str(path))
        assert (info.format, info.subtype) == ("OGG", "VORBIS"), path
        assert path.read_bytes()[:4] == b"OggS"
        assert info.frames > 0


def test_odd_formats(tmp_path):
    root, _ = generated(tmp_path, {"demo.odd_format_fraction": 1.0})
    infos = [sf.info(str(path)) for path in short_audio(root)]
    assert {info.samplerate for info in infos} <= {44100, 48000}
    assert {info.channels for info in infos} == {1, 2}
    for path in (root / "train_soundscapes").glob("*.ogg"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (32000, 1)


def test_no_odd_formats_by_request(tmp_path):
    root, _ = generated(tmp_path, {"demo.odd_format_fraction": 0.0})
    for path in short_audio(root):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (32000, 1)


def test_short_recordings(tmp_path):
    root, params = generated(tmp_path, {"demo.short_recording_fraction": 1.0, "demo.odd_format_fraction": 0.0})
    durations = [sf.info(str(path)).duration for path in short_audio(root)]
    assert len(durations) == 9
    assert all(params.demo.min_recording_seconds - 0.01 <= d < 5.0 for d in durations), durations


def test_long_recordings_without_short_fraction(tmp_path):
    root, params = generated(tmp_path, {"demo.short_recording_fraction": 0.0, "demo.odd_format_fraction": 0.0})
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
    """Drawn after everything else: without them the rest of the dataset is byte for byte the same."""
    root, _ = generated(tmp_path, {"demo.n_test_soundscapes": 0})
    without, with_test = tree_hashes(root), tree_hashes(demo_root)
    test_files = {name: digest for name, digest in with_test.items() if name.startswith("test_soundscapes/")}
    assert list(test_files) == ["test_soundscapes/50000_COR_20200115.ogg"]
    assert {name: digest for name, digest in with_test.items() if name not in test_files} == without
    labels = pd.read_csv(demo_root / "train_soundscape_labels.csv")
    assert not labels["audio_id"].eq(50000).any()


def test_all_nocall_soundscapes(tmp_path):
    root, _ = generated(tmp_path, {"demo.soundscape_nocall_fraction": 1.0})
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
    root, _ = generated(tmp_path, {"demo.noise_level": 0.0})
    labels = pd.read_csv(root / "train_soundscape_labels.csv")
    for audio_id, group in labels.groupby("audio_id"):
        audio, sample_rate = sf.read(str(next((root / "train_soundscapes").glob(f"{audio_id}_*.ogg"))))
        for row in group.itertuples():
            window = audio[(row.seconds - 5) * sample_rate:row.seconds * sample_rate]
            peak = np.abs(window).max()
            assert peak < 1e-3 if row.birds == "nocall" else peak > 1e-2, (row.row_id, peak)
