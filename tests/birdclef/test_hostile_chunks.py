"""Hostile durations for stages/birdclef/chunks.py, generated with hypothesis: whatever a header
claims (up to the largest float), chunk_windows gives few, sorted windows inside the recording in
O(max_chunks) time, and the running sum of hops is the one the enumerating loop made."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.birdclef.chunks import chunk_windows, hop_sum

FAST = settings(max_examples=200, deadline=None)


# ------------------------------------------------------------------------------ chunk_windows

@FAST
@given(duration=st.one_of(st.floats(0, 1e4), st.floats(0, sys.float_info.max), st.sampled_from([1e9, 1e15, 1e300])),
       chunk=st.floats(0.05, 60), hop=st.floats(0.05, 60), remainder_share=st.floats(0.001, 1),
       max_chunks=st.integers(1, 64))
def test_chunk_windows_are_few_sorted_and_inside(duration, chunk, hop, remainder_share, max_chunks):
    min_remainder = max(chunk * remainder_share, 1e-3)
    result = chunk_windows(duration, chunk, hop, min_remainder, max_chunks)
    assert len(result) <= max_chunks
    starts = [start for start, _ in result]
    assert starts == sorted(set(starts))
    slack = 1e-6 + 4 * math.ulp(duration)
    for start, audio_s in result:
        assert 0 <= start and start + audio_s <= duration + slack
        assert 0 < audio_s <= round(chunk, 6)  # seconds are written with 6 decimals
    if duration >= chunk:
        assert result and result[0] == (0.0, round(chunk, 6))


@FAST
@given(st.floats(1e-3, 100), st.integers(0, 20000))
def test_hop_sum_adds_hops_one_by_one(hop, i):  # where the enumerating loop put chunk i
    total = 0.0
    for _ in range(i):
        total += hop
    assert hop_sum(i, hop) == total


@pytest.mark.parametrize("duration", [math.inf, -math.inf, math.nan])
def test_chunk_windows_of_no_duration_is_a_clear_error(duration):
    with pytest.raises(ValueError, match="finite"):
        chunk_windows(duration, 5.0, 5.0, 2.0, 3)
