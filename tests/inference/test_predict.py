"""`python -m stages.predict` on folders of audio: the submission's rows, formats, ensembles, and what
bad files and bad folders give (a listed skip or a clear error, never a half-written submission)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bundle_files import CLASSES, chirps, make_bundle, write_soundscape
from helpers import ROOT, run_stage, subprocess_env, write_ogg
from stages.audio.ogg import encode_ogg_vorbis
from stages.audio.stream import ChunkStream
from stages.inference.run import PredictError
from stages.predict import main
from subprocesses import run_subprocess

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundles") / "efficientnet_b0", onnx=True)


def predict(*args) -> None:
    """`python -m stages.predict ARGS` in this process."""
    argv = sys.argv
    sys.argv = ["stages.predict", *map(str, args)]
    try:
        main()
    finally:
        sys.argv = argv


def test_row_ids_and_order_match_a_hand_built_expectation(bundle, tmp_path):
    audio = tmp_path / "test_soundscapes"
    write_soundscape(audio, 3, "COR", 10.0)
    write_soundscape(audio, 20, "SSW", 12.0, seed=1)  # 2 s tail: one more, zero-padded window
    out = tmp_path / "submission.csv"
    predict("--model", bundle.folder, "--audio", audio, "--out", out)
    table = pd.read_csv(out)
    assert list(table.columns) == ["row_id", "birds"]
    # Files in sorted name order ("20_..." before "3_..."), windows in time order.
    assert table["row_id"].tolist() == ["20_SSW_5", "20_SSW_10", "20_SSW_15", "3_COR_5", "3_COR_10"]
    assert all(set(birds.split()) <= {*CLASSES, "nocall"} for birds in table["birds"])


def test_other_audio_gets_one_row_per_window_with_top_k_and_all_scores(bundle, tmp_path):
    audio = tmp_path / "field"
    write_ogg(audio / "dawn.ogg", chirps(7.0, 3))
    stereo = np.stack([chirps(6.0, 4, 48000), chirps(6.0, 5, 48000)], axis=1)
    (audio / "night").mkdir()
    sf.write(audio / "night" / "stereo48k.wav", stereo, 48000)
    write_ogg(audio / "short.ogg", chirps(2.0, 8))  # a 2 s file: one zero-padded window
    out = tmp_path / "windows.csv"
    predict("--model", bundle.folder, "--audio", audio, "--out", out, "--top-k", 2, "--scores", "--threshold", 0.3)
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "start_s", "end_s", "birds", "top1", "top1_score", "top2", "top2_score",
                                   *CLASSES]
    # 7 s: a 2 s tail over the bundle's 0.5 s min_remainder; the 48 kHz stereo file is decoded like the rest.
    assert table[["file", "start_s", "end_s"]].values.tolist() == [
        ["dawn.ogg", 0.0, 5.0], ["dawn.ogg", 5.0, 10.0], ["night/stereo48k.wav", 0.0, 5.0],
        ["night/stereo48k.wav", 5.0, 10.0], ["short.ogg", 0.0, 5.0]]
    scores = table[CLASSES].to_numpy()
    assert np.allclose(table["top1_score"], scores.max(axis=1), atol=1e-6)
    assert (table["top1"] == np.asarray(CLASSES)[scores.argmax(axis=1)]).all()
    expected = [" ".join(c for c, s in zip(CLASSES, row) if s >= 0.3) or "nocall" for row in scores]
    assert table["birds"].tolist() == expected


def test_an_ensemble_averages_the_probabilities(bundle, tmp_path):
    other = make_bundle(tmp_path / "other", seed=1)
    audio = tmp_path / "a"
    write_ogg(audio / "a.ogg", chirps(10.0, 6))
    runs = {}
    for name, models in {"one": [bundle.folder], "two": [other.folder], "both": [bundle.folder, other.folder]}.items():
        args = [arg for model in models for arg in ("--model", model)]
        predict(*args, "--audio", audio, "--out", tmp_path / f"{name}.csv", "--scores")
        runs[name] = pd.read_csv(tmp_path / f"{name}.csv")[CLASSES].to_numpy()
    assert np.allclose(runs["both"], (runs["one"] + runs["two"]) / 2, atol=2e-6)


def test_unusable_files_are_listed_and_the_others_scored(bundle, tmp_path):
    audio = tmp_path / "mixed"
    write_soundscape(audio, 1, "COR", 10.0)
    (audio / "2_COR_20210101.ogg").write_bytes(b"")
    (audio / "3_COR_20210101.ogg").write_bytes(b"OggS but not really" * 50)
    write_ogg(audio / "4_COR_20210101.ogg", chirps(0.3, 1))  # below min_remainder (0.5 s): no window
    (audio / "5_COR_20210101.ogg").write_bytes(encode_ogg_vorbis(chirps(6.0, 1), 32000, serial=1)
                                                + encode_ogg_vorbis(chirps(6.0, 2), 32000, serial=2))
    out, report = tmp_path / "submission.csv", tmp_path / "predict.json"
    predict("--model", bundle.folder, "--audio", audio, "--out", out, "--report", report)
    assert pd.read_csv(out)["row_id"].tolist() == ["1_COR_5", "1_COR_10"]
    assert "a tail of at least 0.5 s is zero-padded" in json.loads(report.read_text())["windows_rule"]
    listed = json.loads(report.read_text())["skipped"]
    skipped = {entry["file"].rsplit("/", 1)[1]: entry["reason"] for entry in listed}
    assert skipped["2_COR_20210101.ogg"] == "file is empty"
    assert "not a readable audio file" in skipped["3_COR_20210101.ogg"]
    assert "no window" in skipped["4_COR_20210101.ogg"]
    assert skipped["5_COR_20210101.ogg"].startswith("chained Ogg file")


def test_strict_stops_at_a_bad_file_and_keeps_the_previous_submission(bundle, tmp_path):
    audio = tmp_path / "bad"
    write_soundscape(audio, 1, "COR", 10.0)
    (audio / "2_COR_20210101.ogg").write_bytes(b"")
    out = tmp_path / "submission.csv"
    out.write_text("row_id,birds\nearlier,run\n")
    with pytest.raises(PredictError, match=r"2_COR_20210101.ogg: file is empty.*without --strict"):
        predict("--model", bundle.folder, "--audio", audio, "--out", out, "--strict")
    assert out.read_text() == "row_id,birds\nearlier,run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "submission.csv"]  # no temporary left


def test_a_folder_without_audio_is_an_error_or_with_allow_empty_a_header(bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    out = tmp_path / "submission.csv"
    with pytest.raises(PredictError, match="no audio files .* in .*empty"):
        predict("--model", bundle.folder, "--audio", tmp_path / "empty", "--out", out)
    assert not out.exists()
    predict("--model", bundle.folder, "--audio", tmp_path / "missing", "--out", out, "--allow-empty")
    assert out.read_text() == "row_id,birds\n"


def test_nothing_usable_writes_nothing(bundle, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ogg").write_bytes(b"")
    with pytest.raises(PredictError, match="none of the 1 audio files"):
        predict("--model", bundle.folder, "--audio", tmp_path / "a", "--out", tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_a_long_file_streams_in_the_same_memory_as_a_short_one(tmp_path):
    """The decoder's source buffer for consecutive windows stays at a few windows' spans however long
    the file (the 2-hour figure is in the bench); the predicted rows cover the whole file."""
    held = {}
    for minutes in (1, 4):
        path = tmp_path / f"{minutes}.wav"
        sf.write(path, chirps(60.0 * minutes, minutes), 32000)
        starts = [5.0 * k for k in range(12 * minutes)]
        stream = ChunkStream(path, starts, [5.0] * len(starts), 32000, 160000, 2.0)
        assert sorted(index for index, _ in stream) == list(range(len(starts)))
        held[minutes] = stream.most_frames_held
    # At most READ_BLOCK_SAMPLES / window + 2 = 8 windows' spans, the docstring's bound, for both lengths.
    assert max(held.values()) <= 8 * 160000


def test_the_command_fails_without_a_traceback(tmp_path):
    (tmp_path / "bundle").mkdir()
    result = run_stage("stages.predict", "--model", str(tmp_path / "bundle"), "--audio", str(tmp_path),
                       "--out", str(tmp_path / "s.csv"), cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "no card.json" in result.stderr


# Run as `python -c`: the named packages cannot be imported, then `python -m stages.predict ARGS`.
WITHOUT_TORCH = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchaudio", "torchvision", "timm"}:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Blocked())
sys.argv = ["stages.predict", *sys.argv[1:]]
runpy.run_module("stages.predict", run_name="__main__")
"""


def test_the_onnx_backend_runs_without_torch_or_timm(bundle, tmp_path):
    """What a Kaggle notebook with onnxruntime and numpy but no torch can run: a 44.1 kHz stereo
    file is resampled and turned into log-mels by the numpy front end."""
    audio = tmp_path / "a"
    (audio).mkdir()
    sf.write(audio / "stereo44k.wav", np.stack([chirps(7.0, 2, 44100)] * 2, axis=1), 44100)
    out = tmp_path / "s.csv"
    result = run_subprocess([sys.executable, "-c", WITHOUT_TORCH, "--model", str(bundle.folder), "--audio", str(audio),
                             "--out", str(out), "--backend", "onnx", "--scores"],
                            cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    onnx = pd.read_csv(out)
    predict("--model", bundle.folder, "--audio", audio, "--out", tmp_path / "t.csv", "--scores")
    with_torch = pd.read_csv(tmp_path / "t.csv")
    assert onnx[["file", "start_s", "end_s"]].equals(with_torch[["file", "start_s", "end_s"]])
    assert np.abs(onnx[CLASSES].to_numpy() - with_torch[CLASSES].to_numpy()).max() < 1e-3
