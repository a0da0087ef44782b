"""Stage featurize: every chunk of the chunk table -> a float16 log-mel array on disk.

Worker processes decode each recording once (mono, resampled to data.sample_rate), as far as its
last chunk and holding only the chunks' spans, so memory follows the chunks, not the file or what its
header claims (stages/audio.decode_chunks). A file that cannot be used (undecodable, an odd sample
rate, NaN or Inf samples, less audio than its header promised) is skipped, its rows left zero and
invalid, or with data.strict stops the stage. The free disk space for features.npy is checked before
it is created. On the CPU the workers also compute the log-mels (one thread each, so every core does
decode + mel); on CUDA the main process computes them in batches on the GPU. The main process
streams the float16 rows into a memory-mapped .npy file, so memory use does not grow with the size
of the dataset, and accumulates normalisation statistics over the train split only.

    python -m stages.featurize --params params.yaml --chunks data/prepared/chunks.csv --out data/features \
        --report reports/featurize_report.json
"""

from __future__ import annotations

import argparse
import mmap
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm import tqdm

from stages.atomic import atomic_path, write_json
from stages.audio import AudioError, decode_chunks
from stages.logmel import CpuLogMel, LogMel, n_frames
from stages.devices import resolve_device
from stages.params import DataParams, FeatureParams, ParamsError, load_params
from stages.problems import Problems

RELEASE_EVERY_BYTES = 64 * 2**20
# Files queued per worker on the CPU path. Items come back in order, so with torch's default of 2 a
# worker that finished its short files waits idle behind the other's long one. CPU items are float16
# log-mels; GPU-path items are 4x larger waveforms and the GPU keeps up, so those keep the default.
CPU_PREFETCH_FILES = 8
# Free space kept on top of features.npy itself: index.csv, stats.json, the report, and some room
# for whatever else writes to the same file system meanwhile.
DISK_MARGIN_BYTES = 64 * 2**20


class DiskSpaceError(OSError):
    """Not enough free space for features.npy; the message gives both sizes and what to do."""


class RecordingChunks(torch.utils.data.Dataset):
    """One item per audio file: the ids of its chunks and either their waveforms [chunks, samples]
    ("waves") or, given a `frontend`, their float16 log-mels [chunks, n_mels, frames] ("mels"); or
    "error", why the file is unusable. Decoding holds only what the chunks need (see decode_chunks)."""

    def __init__(self, chunks: pd.DataFrame, root: Path, p: DataParams, frontend: CpuLogMel | None = None):
        self.groups = [group for _, group in chunks.groupby("path", sort=False)]
        self.root = root
        self.p = p
        self.frontend = frontend

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict:
        group = self.groups[index]
        path = self.root / group["path"].iloc[0]
        item = {"path": str(path), "chunk_ids": group["chunk_id"].tolist(), "error": None,
                "audio_seconds": 0.0, "waves": None, "mels": None}
        try:
            decoded = decode_chunks(path, group["start_s"].tolist(), group["audio_s"].tolist(),
                                    self.p.sample_rate, self.p.chunk_samples, self.p.min_remainder_seconds)
        except AudioError as err:
            item["error"] = str(err)
            return item
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            item["error"] = f"cannot decode audio ({err})"
            return item
        item["audio_seconds"] = decoded.seconds_read
        waves = decoded.waves
        if self.frontend is None:
            item["waves"] = waves
        else:  # float16 here halves what travels back to the main process
            item["mels"] = self.frontend(waves.numpy()).astype(np.float16)
        return item


class TrainStats:
    """Sum and sum of squares of the stored float16 values of train rows: what training will see.

    Refuses to give a NaN or infinite mean or std (every later stage would train on NaN losses):
    decode_chunks rejects the audio that could cause one, so this is a second line of defence.
    """

    def __init__(self, is_train: np.ndarray):
        self.is_train = is_train
        self.sums = np.zeros(2, dtype=np.float64)
        self.count = 0
        self.first_non_finite: str | None = None

    def add(self, rows: np.ndarray, values: np.ndarray, source: str = "") -> None:
        train_rows = self.is_train[rows]
        if train_rows.any():
            train = values[train_rows].astype(np.float64).ravel()
            self.sums += [train.sum(), np.square(train, out=train).sum()]
            self.count += train.size
            if self.first_non_finite is None and not np.isfinite(self.sums).all():
                self.first_non_finite = f"{source} (rows {rows[train_rows].tolist()})"

    def mean_std(self) -> tuple[float, float]:
        if self.count == 0:
            raise ValueError("featurize: no train chunk could be decoded; nothing to compute statistics on")
        if self.first_non_finite is not None:
            raise ValueError(f"featurize: the normalisation statistics are not finite: train features "
                             f"hold NaN or Inf, first from {self.first_non_finite}. The stage stops here; "
                             "remove or re-encode that recording.")
        mean = self.sums[0] / self.count
        return float(mean), float(np.sqrt(max(self.sums[1] / self.count - mean**2, 0.0)))


class FeatureWriter:
    """Streams rows into a memory-mapped .npy file without keeping written pages resident."""

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        self.row_bytes = shape[1] * shape[2] * 2
        self.unreleased_bytes = 0

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        self.array[rows] = values
        self.unreleased_bytes += len(rows) * self.row_bytes
        if self.unreleased_bytes >= RELEASE_EVERY_BYTES:
            self.release()

    def release(self) -> None:
        # Written pages of a file mapping count towards RSS until dropped; flush them to the file,
        # then tell the kernel this process no longer needs them (the data stays in the file).
        self.array.flush()
        self.array._mmap.madvise(mmap.MADV_DONTNEED)
        self.unreleased_bytes = 0

    def close(self) -> None:
        self.array.flush()
        del self.array


def check_feature_params(p: FeatureParams, sample_rate: int) -> None:
    if p.win_length(sample_rate) > p.n_fft:
        raise ParamsError(f"features.win_ms: a {p.win_ms} ms window is {p.win_length(sample_rate)} "
                          f"samples, longer than features.n_fft ({p.n_fft})")
    if p.fmax > sample_rate / 2:
        raise ParamsError(f"features.fmax: {p.fmax} Hz is above the Nyquist frequency "
                          f"({sample_rate / 2} Hz) of data.sample_rate")


def check_free_space(target: Path, needed: int) -> None:
    """Fail before writing when `needed` bytes (plus DISK_MARGIN_BYTES) do not fit where `target` goes.

    features.npy is a memory map: a disk filling up half-way would kill the stage with SIGBUS."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed + DISK_MARGIN_BYTES:
        raise DiskSpaceError(
            f"featurize: {target.name} needs {_size(needed)} (chunks x n_mels x frames x 2 bytes), plus "
            f"a {_size(DISK_MARGIN_BYTES)} margin, but the file system holding {existing} has only "
            f"{_size(free)} free. Free space there (or move the DVC workspace to a larger disk), or make "
            "the features smaller: fewer chunks (data.max_chunks_per_recording), features.n_mels, "
            "data.chunk_seconds.")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def featurize(chunks: pd.DataFrame, root: Path, data: DataParams, fp: FeatureParams, out: Path,
              problems: Problems) -> dict:
    check_feature_params(fp, data.sample_rate)
    device = resolve_device(fp.device)  # asks the driver only; creates no CUDA context
    on_gpu = device.type == "cuda"
    dataset = RecordingChunks(chunks, root, data, None if on_gpu else CpuLogMel(fp, data.sample_rate))
    frames = n_frames(data.chunk_samples, fp.hop_length(data.sample_rate))
    check_free_space(out / "features.npy", len(chunks) * fp.n_mels * frames * 2)
    writer = FeatureWriter(out / "features.npy", (len(chunks), fp.n_mels, frames))
    valid = np.zeros(len(chunks), dtype=bool)
    stats = TrainStats((chunks["split"] == "train").to_numpy())
    audio_seconds = 0.0

    started = time.perf_counter()
    # Creating the iterator forks the workers: do it before CUDA is initialised, as forking a process
    # with a live CUDA context is fragile.
    items = iter(_loader(dataset, fp.workers, on_gpu))
    gpu_frontend = LogMel(fp, data.sample_rate).to(device) if on_gpu else None
    with tqdm(total=len(dataset), desc="featurize", unit="file") as progress:
        for item in items:
            progress.update()
            if item["error"] is not None:
                problems.skip(item["path"], None, item["error"])
                continue
            audio_seconds += item["audio_seconds"]
            for rows, values in _feature_rows(item, gpu_frontend, fp.batch_size, device):
                writer.write(rows, values)
                valid[rows] = True
                stats.add(rows, values, item["path"])
    elapsed = time.perf_counter() - started
    writer.close()

    mean, std = stats.mean_std()
    pd.DataFrame({"chunk_id": chunks["chunk_id"], "valid": valid.astype(int)}).to_csv(
        out / "index.csv", index=False)
    write_json(out / "stats.json", {"mean": mean, "std": std, "n_values": stats.count,
                                    "shape": [len(chunks), fp.n_mels, frames]})
    return {
        "device": str(device),
        "files": len(dataset),
        "chunks": int(len(chunks)),
        "chunks_valid": int(valid.sum()),
        "audio_seconds": round(audio_seconds, 2),
        "wall_seconds": round(elapsed, 2),
        "audio_seconds_per_second": round(audio_seconds / elapsed, 1),
        "peak_rss_mib_main": round(_peak_rss_mib(resource.RUSAGE_SELF), 1),
        "peak_rss_mib_largest_worker": round(_peak_rss_mib(resource.RUSAGE_CHILDREN), 1),
        "skipped": problems.skipped,
    }


def _feature_rows(item: dict, gpu_frontend: LogMel | None, batch_size: int, device: torch.device):
    """(chunk ids, float16 log-mels) of one item: as the worker computed them, or in GPU batches."""
    chunk_ids = np.asarray(item["chunk_ids"])
    if gpu_frontend is None:
        yield chunk_ids, item["mels"]
        return
    for begin in range(0, len(chunk_ids), batch_size):
        with torch.no_grad():
            mels = gpu_frontend(item["waves"][begin:begin + batch_size].to(device))
        yield chunk_ids[begin:begin + batch_size], mels.to(torch.float16).cpu().numpy()


def _loader(dataset: RecordingChunks, workers: int, on_gpu: bool) -> torch.utils.data.DataLoader:
    # collate_fn=_as_is: numpy log-mels then travel pickled through the worker's pipe; the default
    # would turn them into tensors, each passed through its own shared-memory file and socket (slower).
    prefetch = None if workers == 0 else 2 if on_gpu else CPU_PREFETCH_FILES
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                       worker_init_fn=_one_thread_per_worker, prefetch_factor=prefetch)


def _as_is(item: dict) -> dict:
    return item


def _one_thread_per_worker(_: int) -> None:
    torch.set_num_threads(1)  # the workers already run in parallel; more threads only contend


def _peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--chunks", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    chunks = pd.read_csv(args.chunks)
    problems = Problems(strict=params.data.strict)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        report = featurize(chunks, Path(params.data.root), params.data, params.features, tmp, problems)
    write_json(args.report, report)
    print(f"featurize: {report['chunks_valid']}/{report['chunks']} chunks, "
          f"{report['audio_seconds_per_second']} audio s per s, peak RSS {report['peak_rss_mib_main']} MiB")


if __name__ == "__main__":
    main()
