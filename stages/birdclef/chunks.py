"""Where the chunks of a recording or a soundscape window lie: start and seconds of real audio.

Pure arithmetic on durations, O(max_chunks) whatever a header claims; stage prepare writes the result
to chunks.csv.
"""

from __future__ import annotations

import math
import sys

import numpy as np

SOUNDSCAPE_WINDOW_SECONDS = 5.0  # the competition scores 5 s windows


EPSILON = 1e-9  # seconds: a chunk that ends this close past the recording's end still counts as full


# Chunk i starts at the float sum of i hops (hop_sum), as it always did, so chunk tables stay
# byte-identical. From about 2**52 hops on such a sum stalls (the old loop never ended there):
# recordings longer than RUNNING_SUM_HOPS hops (5.6e15 s at a 5 s hop) put chunk i at i * hop.
RUNNING_SUM_HOPS = 2**50


def chunk_windows(duration: float, chunk: float, hop: float, min_remainder: float,
                  max_chunks: int) -> list[tuple[float, float]]:
    """(start, seconds of real audio) for each chunk of a recording.

    Full chunks every `hop` seconds, then the tail if it holds at least `min_remainder` seconds
    and reaches past the last full chunk (zero-padded later). Long recordings keep `max_chunks`
    chunks spread evenly over the whole recording, so the kept pieces are not all from its start.
    The cost is O(max_chunks) whatever the duration (a header may claim 10^9 s): the chunks are
    counted, and only the kept ones are built. ValueError for a duration that is not finite.
    """
    if not math.isfinite(duration):
        raise ValueError(f"duration must be a finite number of seconds, got {duration!r}")
    running = duration / hop < RUNNING_SUM_HOPS

    def start(i: int) -> float:
        if running:
            return hop_sum(i, hop)
        try:
            return i * hop
        except OverflowError:  # i beyond floats: past any duration
            return math.inf

    n_full = full_chunk_count(start, duration, chunk, hop)
    tail = duration - start(n_full)
    covered_until = start(n_full - 1) + chunk if n_full else 0.0
    # tail < chunk always holds, except at absurd durations where a chunk is below the float spacing.
    has_tail = min_remainder <= tail < chunk and duration > covered_until + EPSILON
    total = n_full + int(has_tail)
    if total > max_chunks:
        spread = (np.linspace(0, total - 1, max_chunks) if total < 2**53  # as always
                  else np.linspace(0.0, 1.0, max_chunks) * float(total - 1))  # no float overflow
        indices = [int(i) for i in spread.round()]
    else:
        indices = range(total)
    return [(round(start(i), 6), round(chunk if i < n_full else tail, 6)) for i in indices]


def full_chunk_count(start, duration: float, chunk: float, hop: float) -> int:
    """How many i >= 0 have start(i) + chunk <= duration + EPSILON, for a non-decreasing start():
    a guess by division, then a bisection, so O(log) calls whatever the count."""
    def fits(i: int) -> bool:
        return start(i) + chunk <= duration + EPSILON

    if not fits(0):
        return 0
    quotient = (duration + EPSILON - chunk) / hop
    guess = int(quotient) if math.isfinite(quotient) else int(sys.float_info.max)
    low = guess if fits(guess) else 0  # fits(low)
    high = guess + 1
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low + 1


def hop_sum(i: int, hop: float) -> float:
    """0.0 + hop + hop + ... (i additions) in floats: where the loop this replaced put chunk i.

    Made in O(log i) steps. Between two powers of two every float is a multiple of one spacing,
    and once an addition has started and ended there, each further one adds the same amount
    (round-to-nearest-even sees the same remainder; after a tie the sum is even), so those
    additions are counted, not made. Exact for i < RUNNING_SUM_HOPS (the sum cannot stall there).
    """
    numerator, _ = hop.as_integer_ratio()
    if i * numerator < 2**53:
        return i * hop  # every partial sum is a float exactly, and so is the product
    total = 0.0
    while i > 0:
        before, total, i = total, total + hop, i - 1
        if i == 0 or before == 0.0 or math.frexp(before)[1] != math.frexp(total)[1]:
            continue  # this addition crossed a power of two
        step = (total + hop) - total
        if step == 0.0:
            return total  # hop is below half the float spacing: the sum has stalled
        top = 2.0 ** math.frexp(total)[1]  # the next power of two
        room = math.ceil((top - total) / step) - 1  # additions of `step` that stay below top
        jump = min(i, room)
        total, i = total + jump * step, i - jump
    return total


def soundscape_chunk(window_end: float, chunk_seconds: float) -> tuple[float, float]:
    # A chunk as long as the training chunks, centred on the competition's 5 s window.
    centre = window_end - SOUNDSCAPE_WINDOW_SECONDS / 2
    start = max(0.0, centre - chunk_seconds / 2)
    return round(start, 6), chunk_seconds
