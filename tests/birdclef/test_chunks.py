"""Where chunks lie (stages/birdclef/chunks.py): full chunks and tails, overlap, the spread of
`max_chunks_per_recording`, float durations, and the cost, which must not follow a claimed duration."""

from __future__ import annotations

import math
import sys
import tracemalloc

import numpy as np
import pytest

from stages.birdclef.chunks import chunk_windows


def windows(duration, chunk=5.0, hop=5.0, min_remainder=2.0, max_chunks=100):
    return chunk_windows(duration, chunk, hop, min_remainder, max_chunks)


# ------------------------------------------------------------------------------- chunk_windows

def test_exact_multiple_has_only_full_chunks():
    assert windows(15.0) == [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]


@pytest.mark.parametrize("duration, tail", [(13.0, (10.0, 3.0)), (12.0, (10.0, 2.0)), (14.9, (10.0, 4.9))])
def test_tail_at_least_min_remainder_is_kept(duration, tail):
    assert windows(duration) == [(0.0, 5.0), (5.0, 5.0), tail]


@pytest.mark.parametrize("duration", [10.5, 11.0, 11.99])
def test_tail_shorter_than_min_remainder_is_dropped(duration):
    assert windows(duration) == [(0.0, 5.0), (5.0, 5.0)]


def test_recording_shorter_than_a_chunk():
    assert windows(3.2) == [(0.0, 3.2)]
    assert windows(2.0) == [(0.0, 2.0)]
    assert windows(1.99) == []
    assert windows(0.0) == []


def test_overlapping_hop():
    assert windows(10.0, hop=2.5, min_remainder=4.0) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0)]
    # Full chunks every hop, then the tail from the next hop on if it holds >= min_remainder.
    assert windows(11.0, hop=2.5) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0), (7.5, 3.5)]
    # A tail that ends where the last full chunk ends adds no audio: not kept.
    assert windows(10.0, hop=2.5) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0)]


def test_max_chunks_spreads_evenly_keeping_first_and_last():
    all_windows = windows(50.0)
    assert len(all_windows) == 10
    assert windows(50.0, max_chunks=4) == [(0.0, 5.0), (15.0, 5.0), (30.0, 5.0), (45.0, 5.0)]
    # The tail counts as the last chunk.
    assert windows(52.5, max_chunks=3) == [(0.0, 5.0), (25.0, 5.0), (50.0, 2.5)]
    assert windows(50.0, max_chunks=1) == [(0.0, 5.0)]
    assert windows(50.0, max_chunks=10) == all_windows


def test_max_chunks_gives_distinct_chunks():
    for n in range(1, 12):
        kept = windows(55.0, max_chunks=n)
        assert len(kept) == n
        assert len(set(kept)) == n
        assert [s for s, _ in kept] == sorted(s for s, _ in kept)


@pytest.mark.parametrize("duration, expected", [
    (14.999999, [(0.0, 5.0), (5.0, 5.0), (10.0, 4.999999)]),
    (15.000001, [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]),
    (15.0 - 1e-12, [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]),
    (479999 / 32000, [(0.0, 5.0), (5.0, 5.0), (10.0, 4.999969)]),
])
def test_floating_point_durations(duration, expected):
    assert windows(duration) == expected


@pytest.mark.parametrize("duration", [0.6, 1.0, 2.0, 2.4])
@pytest.mark.parametrize("min_remainder", [0.25, 0.3])
def test_small_hops_do_not_accumulate_error(duration, min_remainder):
    # Hops of 0.1 s added up drift (0.1 + 0.1 + 0.1 = 0.30000000000000004): the last full chunk
    # must still count as full, not turn into a tail just short of min_remainder.
    result = windows(duration, chunk=0.3, hop=0.1, min_remainder=min_remainder)
    n = round((duration - 0.3) / 0.1) + 1
    assert [s for s, _ in result] == [round(0.1 * i, 6) for i in range(n)]
    assert all(a == 0.3 for _, a in result)


def test_windows_stay_inside_the_recording():
    rng = np.random.default_rng(0)
    for duration in rng.uniform(0, 80, 300):
        for hop in (2.5, 5.0):
            result = windows(float(duration), hop=hop, max_chunks=6)
            assert (len(result) > 0) == (duration >= 2.0)
            assert len(result) <= 6
            for start, audio_s in result:
                assert 0 <= start < duration
                assert 2.0 - 1e-6 <= audio_s <= 5.0
                assert start + audio_s <= duration + 1e-6


# ------------------------------------------------------- chunk_windows: counted, not enumerated

def enumerated_windows(duration, chunk, hop, min_remainder, max_chunks):
    """chunk_windows as it was when it listed every window (the reference for normal durations)."""
    windows = []
    start = 0.0
    while start + chunk <= duration + 1e-9:
        windows.append((start, chunk))
        start += hop
    tail = duration - start
    covered_until = windows[-1][0] + chunk if windows else 0.0
    if tail >= min_remainder and duration > covered_until + 1e-9:
        windows.append((start, tail))
    if len(windows) > max_chunks:
        keep = np.linspace(0, len(windows) - 1, max_chunks).round().astype(int)
        windows = [windows[i] for i in keep]
    return [(round(s, 6), round(a, 6)) for s, a in windows]


@pytest.mark.parametrize("chunk, hop, min_remainder", [
    (5.0, 5.0, 2.0), (5.0, 2.5, 2.0), (5.0, 2.5, 4.0), (0.3, 0.1, 0.25), (1.0, 1.0, 0.5),
    (7.0, 3.0, 1.0), (5.0, 7.5, 1.0), (4.9, 1.7, 0.3), (10.0, 0.5, 5.0),
])
def test_chunk_windows_match_the_enumerating_version(chunk, hop, min_remainder):
    rng = np.random.default_rng(round(100 * hop))
    span = 300 * hop  # up to ~300 windows: the reference enumerates them all
    durations = [*rng.uniform(0, span, 300), *rng.integers(0, span * 32000, 100) / 32000,
                 *np.round(rng.uniform(0, span, 100), 2),
                 *(k * hop + chunk + offset for k in range(20) for offset in (0.0, 1e-7, -1e-7)),
                 0.0, chunk, min_remainder, 479999 / 32000]
    for duration in map(float, durations):
        for max_chunks in (1, 2, 3, 7, 1000):
            assert (chunk_windows(duration, chunk, hop, min_remainder, max_chunks)
                    == enumerated_windows(duration, chunk, hop, min_remainder, max_chunks)), duration


def test_chunk_windows_cost_does_not_follow_the_claimed_duration():
    tracemalloc.start()
    try:
        result = windows(1e6, max_chunks=3)  # 200,000 windows when enumerated (~25 MB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == [(0.0, 5.0), (500000.0, 5.0), (999995.0, 5.0)]
    assert peak < 200_000
    for duration in (1e9, 1e15, 1e300, sys.float_info.max):  # would take hours, then run out of memory
        assert [s for s, _ in windows(duration, max_chunks=3)][::2] == [0.0, duration - 5.0]
    with pytest.raises(ValueError, match="finite"):
        windows(math.inf)


