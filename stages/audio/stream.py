"""Decoding the chunks of one recording as a stream, in bounded memory and with numpy alone (no torch:
stage predict's ONNX path runs where torch is not installed): `ChunkStream`, `chunk_batches`, and the
checks every decoded file goes through. The torch wrappers featurize uses are in stages/audio/decode.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from stages.audio.numpy_dsp import SincResampler

# Source sample rates featurize accepts. Below 1 kHz nothing of a bird's song (about 1-10 kHz, and
# features.fmin 50 Hz to fmax 14 kHz) survives, and no recorder writes such files: a WAV claiming
# 1 Hz or 10 Hz is broken or crafted, and upsampling it to 32 kHz would multiply it 32000-fold.
# 8 kHz telephone-grade audio is still taken. 384 kHz is the fastest common (ultrasonic) recorder.
MIN_SOURCE_SAMPLE_RATE = 1_000
MAX_SOURCE_SAMPLE_RATE = 384_000
# torchaudio's resampler builds a filter of (new / g) x (2 * width + orig / g) float32 values, g the
# rates' greatest common divisor: 146,880 for 44.1 -> 32 kHz, at most ~0.6 M for any common rate, but
# 5.6 G (22 GiB) for a coprime rate such as 44101 Hz. Larger filters are refused.
MAX_RESAMPLE_FILTER_VALUES = 4 * 2**20
# Float audio is nominally within [-1, 1]; far beyond, |STFT|^2 overflows float32 (from ~1e15) and
# the log-mels turn infinite. 1e6 leaves room for any clipping headroom a real file has.
MAX_ABS_SAMPLE = 1e6
# How much shorter than its header a file may decode before it counts as damaged: MP3 encoder padding
# and an Ogg's last partial page stay well below it; a lost Ogg page (a few thousand samples) does not.
MAX_LENGTH_SHORTFALL_S = 0.05
# Samples (frames x channels) read per call: 4 MiB of float32 however many channels the file has.
READ_BLOCK_SAMPLES = 2**20


class AudioError(ValueError):
    """A recording featurize cannot use; the message says why (featurize skips the file with it)."""



# (source_rate, sample_rate) -> a filter with `width` and __call__(float32 numpy) -> float32 numpy.
FilterFactory = Callable[[int, int], Callable]


class ChunkStream:
    """Iterating yields (index, wave) for each chunk (`starts_s`, `audio_s` seconds of real audio) of
    one recording as soon as its samples are decoded, each wave a float32 numpy [chunk_samples]; with
    the torchaudio filter (`TorchaudioFilter`, what featurize uses) exactly what
    `cut_chunk(decode_mono(path, sample_rate), ...)` gives, with numpy's (the default) within float32
    rounding of it; `seconds_read` and
    `most_frames_held` are set once the iteration ends. Chunks come as they complete (in the order
    of their starts for chunks of one length).

    The file is read from its start in blocks of READ_BLOCK_SAMPLES, up to the last sample the chunks
    need (plus the resampler's reach) or to where its audio really ends, whatever its header claims;
    then, the chunks done, on to its end, to compare its decoded length with its header's (chunks are
    spread to a recording's end, so that rest is short). The source samples are held once, from the
    start of the earliest chunk not yet complete to the read position, and each chunk cuts its span
    from them, `margin` samples wider on each side so that resampling the span alone gives
    bit-identical values; the span is resampled and cut as soon as it is complete. (Ogg Vorbis cannot
    seek sample-exactly, hence the reading from the start: time follows the file's length, memory
    only the chunks.) Memory bound, in bytes:

        4 * (READ_BLOCK_SAMPLES * (1 + 1 / channels)                        read block, its downmix
             + 2 * (READ_BLOCK_SAMPLES / channels + chunk_seconds * source_rate + 2 * margin + period)
                                                                             held samples, while appending
             + 3 * chunk_seconds * sample_rate)                              resampling temporaries

    plus what the caller keeps of the yielded waves (decode_chunks: all of them), however many chunks
    overlap (1,000 windows on one 60 s file hold the same samples as one) and however long the file.
    source_rate <= MAX_SOURCE_SAMPLE_RATE; margin + period are a few hundredths of a second (period =
    source_rate / gcd(source_rate, sample_rate) samples, 441 for 44.1 kHz): about 20 MB for 5 s chunks
    of a mono 32 kHz file (measured on a 10-minute stereo 44.1 kHz WAV: +16 MiB peak RSS for 3
    chunks, against +556 MiB decoding it whole).

    Raises AudioError when the file is unusable: a source rate outside [MIN_SOURCE_SAMPLE_RATE,
    MAX_SOURCE_SAMPLE_RATE] or needing too large a resampling filter, no samples, a NaN, Inf or
    absurdly large sample, audio that ends before a chunk holds min(its audio_s, `min_audio_s`)
    seconds (its header promised more than the file holds), or a file that decodes more than
    MAX_LENGTH_SHORTFALL_S shorter than its header claims (damaged mid-file: its chunks would shift),
    the last after every chunk was yielded.
    """

    def __init__(self, path: Path, starts_s, audio_s, sample_rate: int, chunk_samples: int,
                 min_audio_s: float, make_filter: FilterFactory = SincResampler):
        self.path, self.sample_rate, self.chunk_samples = path, sample_rate, chunk_samples
        self.make_filter = make_filter
        self.starts_s, self.audio_s, self.min_audio_s = list(starts_s), list(audio_s), min_audio_s
        self.seconds_read = 0.0
        self.most_frames_held = 0

    def __len__(self) -> int:
        return len(self.starts_s)

    def __iter__(self):
        with sf.SoundFile(str(self.path)) as file:
            source_rate, channels = file.samplerate, file.channels
            claimed_s = file.frames / source_rate if source_rate > 0 else 0.0
            resampler = _Resampler(source_rate, self.sample_rate, self.make_filter)
            plans = sorted((_ChunkPlan(k, start, seconds, self.sample_rate, self.chunk_samples, resampler)
                            for k, (start, seconds) in enumerate(zip(self.starts_s, self.audio_s))),
                           key=lambda c: c.begin)
            block = np.empty((max(1, READ_BLOCK_SAMPLES // channels), channels), dtype=np.float32)
            end = max((plan.end for plan in plans), default=0)
            held = _HeldSamples()
            position, ended, pending, next_plan = 0, False, [], 0
            while position < end and not ended:
                audio = file.read(out=block[:min(len(block), end - position)])
                ended = len(audio) < min(len(block), end - position)
                mono = downmix(audio)
                _check_samples(mono, position, source_rate)
                while next_plan < len(plans) and plans[next_plan].begin < position + len(mono):
                    pending.append(plans[next_plan])
                    next_plan += 1
                held.append(mono, position, min((plan.begin for plan in pending), default=position + len(mono)),
                            max((plan.end for plan in pending), default=position))
                position += len(mono)
                self.most_frames_held = max(self.most_frames_held, len(held.samples))
                self.seconds_read = position / source_rate
                for plan in [plan for plan in pending if plan.end <= position]:
                    pending.remove(plan)
                    yield plan.index, plan.finish(held.span(plan.begin, plan.end), resampler, None, self.min_audio_s)
                # Later plans begin at or after `position`: what no pending plan needs goes back now.
                held.drop_before(min((plan.begin for plan in pending), default=position))
            rest = 0 if ended else _frames_left(file, block)
            claimed_frames = file.frames
        if position == 0:
            raise AudioError("decoded audio has no samples")
        for plan in pending + plans[next_plan:]:  # the audio ended before these chunks were complete
            span = held.span(plan.begin, min(plan.end, position))
            yield plan.index, plan.finish(span, resampler, position, self.min_audio_s, claimed_s)
        self.seconds_read = (position + rest) / source_rate
        _check_length(position + rest, claimed_frames, source_rate)


def chunk_batches(stream: ChunkStream, size: int):
    """The stream's chunks `size` at a time as they are decoded: (indices, waves [n, chunk_samples])."""
    indices, waves = [], []
    for index, wave in stream:
        indices.append(index)
        waves.append(wave)
        if len(waves) == size:
            yield indices, np.stack(waves)
            indices, waves = [], []
    if waves:
        yield indices, np.stack(waves)


class _HeldSamples:
    """The file's mono source samples from `start` on, as far as read: one buffer that every chunk
    cuts its span from, so chunks that overlap (many windows on one file) share their samples."""

    def __init__(self):
        self.start = 0
        self.samples = np.zeros(0, dtype=np.float32)

    def append(self, mono: np.ndarray, position: int, keep_from: int, keep_until: int) -> None:
        """Add a block read at `position`, keeping only [keep_from, keep_until): what the pending
        chunks span (later chunks begin after this block)."""
        part = mono[max(0, keep_from - position):max(0, keep_until - position)]
        if not len(self.samples):
            self.start = max(keep_from, position)
            self.samples = part.copy()  # `mono` may be a view of the reused read block
        elif len(part):
            self.samples = np.concatenate([self.samples, part])

    def drop_before(self, sample: int) -> None:
        if sample > self.start:
            self.samples = self.samples[min(sample - self.start, len(self.samples)):]
            self.start = sample

    def span(self, begin: int, end: int) -> np.ndarray:
        return self.samples[max(0, begin - self.start):max(0, end - self.start)]


def _frames_left(file: sf.SoundFile, block: np.ndarray) -> int:
    """Frames from the read position to where the file's audio really ends (decoded, then dropped)."""
    left = 0
    while True:
        read = len(file.read(out=block))
        left += read
        if read < len(block):
            return left


def _check_length(decoded: int, claimed: int, source_rate: int) -> None:
    """A file whose audio ends well before its header says was damaged on the way (an Ogg page lost
    mid-file shifts everything after it): every chunk past the damage would come from the wrong time."""
    if (claimed - decoded) / source_rate > MAX_LENGTH_SHORTFALL_S:
        raise AudioError(f"the file decodes to {decoded / source_rate:.2f} s but its header claims "
                         f"{claimed / source_rate:.2f} s: it is damaged (data lost mid-file or at its end), so "
                         "its chunks cannot be placed in time; replace it with an intact copy")


def _check_samples(mono: np.ndarray, position: int, source_rate: int) -> None:
    if len(mono) == 0:
        return
    low, high = float(mono.min()), float(mono.max())  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = position + int(np.argmin(np.isfinite(mono)))
        raise AudioError(f"decoded audio is not finite: sample {bad} ({bad / source_rate:.3f} s) is "
                         f"{mono[bad - position]}")
    if max(-low, high) > MAX_ABS_SAMPLE:
        raise AudioError(f"a sample reaches {max(-low, high):.3g}, beyond {MAX_ABS_SAMPLE:g} (audio "
                         "is expected within [-1, 1]; such values overflow the log-mel power)")


class _Resampler:
    """A sinc resampler from `source_rate` to `sample_rate` (the filter `make_filter` builds: the
    torchaudio one, or numpy's copy of it), built once per file.

    Output sample j depends on source samples of the block p = j // new only, p * orig - width to
    (p + 1) * orig + width (orig, new: the rates over their gcd): a span starting at a multiple of
    orig and reaching `margin` samples past what a chunk needs resamples to exactly the values the
    whole file does.
    """

    def __init__(self, source_rate: int, sample_rate: int, make_filter: FilterFactory):
        if not MIN_SOURCE_SAMPLE_RATE <= source_rate <= MAX_SOURCE_SAMPLE_RATE:
            raise AudioError(f"sample rate {source_rate} Hz is outside the {MIN_SOURCE_SAMPLE_RATE}-"
                             f"{MAX_SOURCE_SAMPLE_RATE} Hz this pipeline accepts")
        self.source_rate = source_rate
        gcd = math.gcd(source_rate, sample_rate)
        self.orig, self.new = source_rate // gcd, sample_rate // gcd
        self.filter = None
        self.width = 0
        if source_rate != sample_rate:
            # Checked before the filter is built: its width is lowpass_filter_width (6) zero
            # crossings at 0.99 x the lower rate, in source samples.
            width = math.ceil(6 * self.orig / (0.99 * min(self.orig, self.new)))
            values = self.new * (2 * width + self.orig)
            if values > MAX_RESAMPLE_FILTER_VALUES:
                raise AudioError(
                    f"resampling {source_rate} Hz to {sample_rate} Hz needs a filter of {values:,} values "
                    f"({4 * values / 2**20:,.0f} MiB; the rates share only a factor of {gcd}); convert "
                    "the file to a common rate such as 32000, 44100 or 48000 Hz")
            self.filter = make_filter(source_rate, sample_rate)
            self.width = self.filter.width
        # Source blocks of `orig` samples kept beyond a chunk's own on each side.
        self.margin_blocks = 0 if self.filter is None else 1 + math.ceil(self.width / self.orig)

    def __call__(self, span: np.ndarray, at_end: bool) -> np.ndarray:
        if self.filter is None:
            return span
        if at_end:  # the file's zero padding past its end, as far as the whole-file resampling uses it
            span = np.concatenate([span, np.zeros(self.width + 2 * self.orig, dtype=np.float32)])
        return self.filter(span)

    def length(self, source_frames: int) -> int:
        """Samples `functional.resample` gives for a whole file of `source_frames` samples."""
        if self.filter is None:
            return source_frames
        # torchaudio's own expression (a float32 ceil), so that the last sample matches too.
        return math.ceil(np.float32(self.new * source_frames / self.orig))


class _ChunkPlan:
    """One chunk: its samples at `sample_rate` and the span of source samples they need."""

    def __init__(self, index: int, start_s: float, audio_s: float, sample_rate: int, chunk_samples: int,
                 resampler: _Resampler):
        self.index, self.start_s, self.sample_rate, self.chunk_samples = index, start_s, sample_rate, chunk_samples
        self.first = round(start_s * sample_rate)  # what cut_chunk takes
        self.want = min(round(audio_s * sample_rate), chunk_samples)
        self.want_s = audio_s
        orig, new, margin = resampler.orig, resampler.new, resampler.margin_blocks
        first_block = self.first // new - margin
        last_block = -(-(self.first + self.want) // new) + margin
        self.begin = max(0, first_block * orig)  # a multiple of orig: resampled blocks align
        self.end = max(self.begin, last_block * orig)
        self.offset = (self.begin // orig) * new  # output index of the span's first resampled sample

    def finish(self, span: np.ndarray, resampler: _Resampler, audio_end: int | None, min_audio_s: float,
               claimed_s: float = 0.0) -> np.ndarray:
        """The chunk's wave: `span` (its source samples from `begin`, as far as the audio reaches)
        resampled and cut; `audio_end`: where the file's audio ended (source samples), None when it
        reaches past this span."""
        available = self.want
        if audio_end is not None:
            available = min(self.want, max(0, resampler.length(audio_end) - self.first))
            needed = min(self.want, round(min(self.want_s, min_audio_s) * self.sample_rate))
            if available < needed:
                ends_s = audio_end / resampler.source_rate
                # A header more than a second off is wrong; otherwise chunks.csv was cut for another file.
                why = ("the file holds less than its header says (truncated, or the header is wrong)"
                       if claimed_s > ends_s + 1.0 else
                       "the chunk table does not fit this file (changed since stage prepare ran?)")
                raise AudioError(f"the audio ends at {ends_s:.2f} s (its header claims {claimed_s:.2f} s), "
                                 f"too soon for the chunk at {self.start_s:g} s, which needs "
                                 f"{needed / self.sample_rate:g} s from there: {why}")
        wave = np.zeros(self.chunk_samples, dtype=np.float32)
        if available > 0:
            resampled = resampler(span, at_end=audio_end is not None)
            start = self.first - self.offset
            wave[:available] = resampled[start:start + available]
        return wave


def downmix(audio: np.ndarray) -> np.ndarray:
    """Channel mean of [samples, channels], bit-identical to `audio.mean(axis=1)`.

    numpy's mean over a short last axis is ~10x slower than these forms, which take a tenth of the
    decode time off stereo files; they round the same way for one or two channels only.
    """
    if audio.shape[1] == 1:
        return audio[:, 0]
    if audio.shape[1] == 2:
        return (audio[:, 0] + audio[:, 1]) / audio.dtype.type(2)
    return audio.mean(axis=1)
