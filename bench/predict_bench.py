"""Section `predict` of `make bench`: end-to-end windows/s of stage predict on the CPU for each model
and backend (decode + log-mel + network + the submission table), the projected time for BirdCLEF
2021's hidden test, and the peak memory of predict on a long file against a short one.

The bundles hold random weights at the pipeline's default settings (params.yaml: 5 s chunks, 128 x
501 log-mels) and BirdCLEF 2021's 397 classes: speed does not depend on what the weights learned.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stages.audio.store import FeatureStats
from stages.core.params import Params
from stages.demo.dataset import generate_soundscapes
from stages.inference.bundle import Threshold, make_card, read_bundle, write_card
from stages.inference.export import export_onnx
from stages.inference.run import Predictor, predict_files
from stages.inference.backends import BACKENDS, load_backend
from stages.inference.submission import competition_table
from stages.audio.files import find_audio
from stages.models.factory import create_model
from stages.training.checkpoints import save

BIRDCLEF_2021_CLASSES = 397
# BirdCLEF 2021's hidden test: 80 soundscapes of 10 minutes, 120 windows each.
HIDDEN_TEST_WINDOWS = 80 * 120
TARGET_MINUTES = 10.0
TARGET_ONNX_SPEEDUP = 1.3


@dataclass(frozen=True)
class PredictSizes:
    files: int             # demo-style soundscapes scored per (model, backend)
    file_seconds: int      # their length (a multiple of 5)
    short_file_seconds: int  # predict's peak memory on a file this long (full batches: >= 5 x batch_size s)
    long_file_seconds: int   # against one this long
    batch_size: int


def bundle_for(params: Params, name: str, folder: Path) -> Path:
    """A bundle of random weights for model `name` of params.yaml, with model.onnx."""
    mp = params.models[name]
    frames = params.features.frames_per_chunk(params.data.chunk_samples, params.data.sample_rate)
    classes = [f"species{k:03d}" for k in range(BIRDCLEF_2021_CLASSES)]
    torch.manual_seed(0)
    model = create_model(mp.arch, len(classes), params.features.n_mels, frames, False, mp.options)
    folder.mkdir(parents=True)
    save({"model": model.state_dict(), "arch": mp.arch, "classes": classes, "epoch": 0, "valid_loss": 0.0},
         folder / "best.pt")
    stats = FeatureStats(-5.0, 3.0, 1, (1, params.features.n_mels, frames))
    write_card(folder, make_card(name, mp, params.data, params.features, stats, classes,
                                 Threshold(0.5, None, None), folder / "best.pt"))
    rows = np.random.default_rng(0).normal(-5.0, 3.0, (5, params.features.n_mels, frames)).astype(np.float16)
    export_onnx(read_bundle(folder), rows)
    return folder


def windows_per_second(folder: Path, backend: str, audio: Path, batch_size: int, threads: int) -> dict:
    bundle = read_bundle(folder)
    predictor = Predictor([bundle], load_backend(backend, threads, "cpu", batch_size), batch_size)
    paths = find_audio(audio)
    predict_files(paths[:1], audio, predictor, strict=True)  # warm-up: first-call allocations, kernel choice
    started = time.perf_counter()
    run = predict_files(paths, audio, predictor, strict=True)
    competition_table(run.files, predictor.classes, bundle.card.threshold.value)
    seconds = time.perf_counter() - started
    speed = run.n_windows / seconds
    return {"windows": run.n_windows, "seconds": round(seconds, 2), "windows_per_second": round(speed, 2),
            "projected_hidden_test_minutes": round(HIDDEN_TEST_WINDOWS / speed / 60, 2)}


def peak_rss_mib(folder: Path, audio: Path, out: Path, batch_size: int) -> float:
    """Peak RSS of `python -m stages.predict` (ONNX backend) in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(folder), "--audio", str(audio),
                    "--out", str(out), "--backend", "onnx", "--batch-size", str(batch_size)],
                   check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:  # an earlier, larger child holds the maximum: this one's peak is below it
        return round(before / 1024, 1)
    return round(after / 1024, 1)  # Linux reports KiB


def write_noise_wav(path: Path, seconds: int, sample_rate: int) -> None:
    """A quiet noise WAV of `seconds`, written a minute at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sample_rate, 1, "PCM_16") as file:
        for start in range(0, seconds, 60):
            file.write(rng.normal(0, 0.05, min(60, seconds - start) * sample_rate).astype(np.float32))


def predict_figures(params: Params, workdir: Path, sizes: PredictSizes) -> dict:
    threads = torch.get_num_threads()
    audio = workdir / "predict_audio"
    demo = replace(params.demo, soundscape_seconds=sizes.file_seconds)
    generate_soundscapes(demo, sizes.files, 90000, audio, np.random.default_rng(0))
    models = {}
    for name in params.models:
        folder = bundle_for(params, name, workdir / "bundles" / name)
        rates = {backend: windows_per_second(folder, backend, audio, sizes.batch_size, threads) for backend in BACKENDS}
        fastest = max(BACKENDS, key=lambda b: rates[b]["windows_per_second"])
        models[name] = {**rates, "onnx_speedup_vs_torch": round(rates["onnx"]["windows_per_second"]
                                                                / rates["torch"]["windows_per_second"], 2),
                        "faster_backend": fastest,
                        "meets_10_minutes": rates[fastest]["projected_hidden_test_minutes"] <= TARGET_MINUTES}
    first = workdir / "bundles" / next(iter(params.models))
    peaks = {}
    for which, seconds in (("short", sizes.short_file_seconds), ("long", sizes.long_file_seconds)):
        wav = workdir / which / f"{which}.wav"
        wav.parent.mkdir()
        write_noise_wav(wav, seconds, params.data.sample_rate)
        peaks[which] = peak_rss_mib(first, wav, workdir / f"{which}.csv", sizes.batch_size)
    return {"threads": threads, "batch_size": sizes.batch_size, "classes": BIRDCLEF_2021_CLASSES,
            "files": sizes.files, "file_seconds": sizes.file_seconds, "hidden_test_windows": HIDDEN_TEST_WINDOWS,
            "models": models,
            "memory": {"model": first.name, "short_file_seconds": sizes.short_file_seconds,
                       "short_peak_rss_mib": peaks["short"], "long_file_seconds": sizes.long_file_seconds,
                       "long_peak_rss_mib": peaks["long"],
                       "long_vs_short_rss_ratio": round(peaks["long"] / peaks["short"], 3)}}
