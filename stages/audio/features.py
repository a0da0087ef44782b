"""Every chunk of the chunk table -> a float16 log-mel array on disk (what stage featurize runs).

Worker processes decode each recording once (mono, resampled to data.sample_rate), as far as its
last chunk and holding only the chunks' spans, so memory follows the chunks, not the file or what its
header claims (stages/audio/stream.py). A file that cannot be used (undecodable, an odd sample
rate, NaN or Inf samples, less audio than its header promised) is skipped, its rows left zero and
invalid, or with data.strict stops the stage. The free disk space for features.npy is checked before
it is created. On the CPU the workers also compute the log-mels (one thread each, so every core does
decode + mel); on CUDA the main process computes them in batches on the GPU. The main process
streams the float16 rows into a memory-mapped .npy file, so memory use does not grow with the size
of the dataset, and accumulates normalisation statistics over the train split only.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm import tqdm

from stages.audio.decode import TorchaudioFilter, decode_chunks
from stages.audio.stream import AudioError, ChunkStream, chunk_batches
from stages.audio.logmel import CpuLogMel, LogMel
from stages.audio.store import FeatureStats, FeatureWriter, TrainStats, check_free_space
from stages.core.atomic import atomic_path, write_json
from stages.core.devices import resolve_device
from stages.core.params import DataParams, FeatureParams, Params
from stages.core.problems import Problems

# Files queued per worker on the CPU path. Items come back in order, so with torch's default of 2 a
# worker that finished its short files waits idle behind the other's long one. CPU items are float16
# log-mels; GPU-path items are 4x larger waveforms and the GPU keeps up, so those keep the default.
CPU_PREFETCH_FILES = 8
# Chunks whose waveforms a CPU worker holds before turning them into log-mels (640 KB each at 5 s,
# 32 kHz): a file with many chunks costs its float16 log-mels, not its float32 waveforms.
MEL_BATCH_CHUNKS = 16


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
            if self.frontend is None:
                decoded = decode_chunks(path, group["start_s"].tolist(), group["audio_s"].tolist(),
                                        self.p.sample_rate, self.p.chunk_samples, self.p.min_remainder_seconds)
                item["waves"], item["audio_seconds"] = decoded.waves, decoded.seconds_read
            else:
                item["mels"], item["audio_seconds"] = self._mels(path, group)
        except AudioError as err:
            item["error"] = str(err)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            item["error"] = f"cannot decode audio ({err})"
        return item

    def _mels(self, path: Path, group: pd.DataFrame) -> tuple[np.ndarray, float]:
        """float16 log-mels of the group's chunks, computed MEL_BATCH_CHUNKS at a time as they are
        decoded (float16 here halves what travels back to the main process); seconds decoded."""
        stream = ChunkStream(path, group["start_s"].tolist(), group["audio_s"].tolist(), self.p.sample_rate,
                             self.p.chunk_samples, self.p.min_remainder_seconds, TorchaudioFilter)
        mels = None
        for indices, waves in chunk_batches(stream, MEL_BATCH_CHUNKS):
            batch = self.frontend(waves)
            if mels is None:
                mels = np.empty((len(stream), *batch.shape[1:]), dtype=np.float16)
            mels[indices] = batch
        return mels, stream.seconds_read


def featurize(chunks: pd.DataFrame, root: Path, data: DataParams, fp: FeatureParams, out: Path,
              problems: Problems) -> dict:
    device = resolve_device(fp.device)  # asks the driver only; creates no CUDA context
    on_gpu = device.type == "cuda"
    dataset = RecordingChunks(chunks, root, data, None if on_gpu else CpuLogMel(fp, data.sample_rate))
    frames = fp.frames_per_chunk(data.chunk_samples, data.sample_rate)
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
    FeatureStats(mean, std, stats.count, (len(chunks), fp.n_mels, frames)).write(out)
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


def write_features(params: Params, chunks_csv: Path, out: Path, report_path: Path) -> dict:
    """Stage featurize: the features of every chunk of `chunks_csv` in `out` (replaced whole, or left
    as it was if the stage fails), its report in `report_path`; returns the report."""
    chunks = pd.read_csv(chunks_csv)
    problems = Problems(strict=params.data.strict)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        report = featurize(chunks, Path(params.data.root), params.data, params.features, tmp, problems)
    write_json(report_path, report)
    return report
