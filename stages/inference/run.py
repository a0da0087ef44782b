"""What stage predict computes: every window of every audio file scored by one or more bundles.

Each file is decoded as featurize decodes (stages/audio/stream.py: bounded memory, the same checks),
streamed window by window: at most `batch_size` windows' waves and log-mels are held at once, plus the
read block and the source samples the open windows share, however long the file (`ChunkStream`'s
bound: about 20 MB, plus 4 x batch_size x 0.3 M bytes of waves and log-mels, 60 MB at batch 32).
What grows with the audio is its scores alone: windows x classes float32, 1.6 KB a window for
BirdCLEF 2021's 397 classes (1.1 MB for a 2-hour file). A file that cannot be used is listed and
skipped, or with `strict` stops the run. Several bundles: their probabilities are averaged (an
ensemble).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from stages.audio.stream import AudioError, ChunkStream, chunk_batches
from stages.birdclef.metadata import audio_duration
from stages.inference.backends import Backend
from stages.inference.bundle import AudioSettings, Bundle
from stages.inference.windows import Window, plan_windows


class PredictError(ValueError):
    """Predict cannot run as asked (no audio, incompatible bundles, a bad file under --strict)."""


@dataclass(frozen=True)
class FileScores:
    path: Path
    windows: list[Window]
    scores: np.ndarray  # [windows, classes], the bundles' mean sigmoid score


@dataclass
class Run:
    files: list[FileScores] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0   # decoding, log-mels, the networks: everything but writing the output

    @property
    def n_windows(self) -> int:
        return sum(len(f.windows) for f in self.files)


def common_audio(bundles: list[Bundle]) -> tuple[AudioSettings, list[str]]:
    """The audio settings and class list every bundle shares (an ensemble needs both the same)."""
    first = bundles[0].card
    for bundle in bundles[1:]:
        card = bundle.card
        if card.classes != first.classes:
            raise PredictError(f"{bundle.folder} and {bundles[0].folder} predict different class lists "
                               f"({len(card.classes)} and {len(first.classes)} classes): they cannot be averaged")
        if card.audio != first.audio:
            raise PredictError(f"{bundle.folder} and {bundles[0].folder} were trained on different audio settings "
                               f"({card.audio} against {first.audio}): they cannot score the same windows")
    return first.audio, first.classes


class Predictor:
    """Scores files with every bundle on `backend`; log-mels computed once per distinct front end."""

    def __init__(self, bundles: list[Bundle], backend: Backend, batch_size: int):
        self.audio, self.classes = common_audio(bundles)
        self.mels = [bundle.card.mel for bundle in bundles]
        self.front_ends = {mel: backend.log_mel(mel, self.audio.sample_rate) for mel in set(self.mels)}
        self.scorers = [backend.scorer(bundle) for bundle in bundles]
        self.make_filter = backend.make_filter
        self.batch_size = batch_size

    def score_file(self, path: Path, windows: list[Window], progress: tqdm) -> np.ndarray:
        stream = ChunkStream(path, [w.chunk_start_s for w in windows], [w.chunk_audio_s for w in windows],
                             self.audio.sample_rate, self.audio.chunk_samples, self.audio.min_remainder_seconds,
                             self.make_filter)
        scores = np.zeros((len(windows), len(self.classes)), dtype=np.float32)
        for indices, waves in _decoded(chunk_batches(stream, self.batch_size)):
            scores[indices] = self._score(waves)
            progress.update(len(indices))
        return scores

    def _score(self, waves: np.ndarray) -> np.ndarray:
        # float16 and back: the values featurize stores and the networks were trained and evaluated on.
        mels = {mel: front(waves).astype(np.float16).astype(np.float32) for mel, front in self.front_ends.items()}
        total = sum(scorer(mels[mel]) for scorer, mel in zip(self.scorers, self.mels))
        return total / len(self.scorers)


def predict_files(paths: list[Path], root: Path, predictor: Predictor, strict: bool) -> Run:
    """Every window of `paths` (files under `root`) scored, in file then time order."""
    run = Run()
    started = time.perf_counter()
    for path in paths:
        reason, windows = _windows_of(path, root, predictor.audio)
        if reason is None:
            with tqdm(total=len(windows), desc=f"predict: {path.name}", unit="window", leave=False) as progress:
                try:
                    run.files.append(FileScores(path, windows, predictor.score_file(path, windows, progress)))
                    continue
                except AudioError as err:
                    reason = str(err)
        if strict:
            raise PredictError(f"{path}: {reason}. Remove or fix it, or run without --strict to skip such files.")
        print(f"predict: skipped {path}: {reason}", flush=True)
        run.skipped.append({"file": str(path), "reason": reason})
    run.seconds = time.perf_counter() - started
    return run


def _decoded(batches):
    """The batches of a ChunkStream, its decoding failures as AudioError (the file is skipped)."""
    chunks = iter(batches)
    while True:
        try:
            yield next(chunks)
        except StopIteration:
            return
        except AudioError:
            raise
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            raise AudioError(f"cannot decode audio ({err})") from None


def _windows_of(path: Path, root: Path, audio: AudioSettings) -> tuple[str | None, list[Window]]:
    """The file's windows, or why it has none (unreadable, or shorter than the tail rule allows)."""
    duration, reason = audio_duration(path, root)
    if reason is not None:
        return reason, []
    windows = plan_windows(duration, audio)
    if not windows:
        return (f"{duration:.2f} s long, shorter than the {audio.min_remainder_seconds:g} s a window needs "
                "(data.min_remainder_seconds of the bundle): no window"), []
    return None, windows
