"""Where stage predict looks in a file: consecutive 5-second windows, the model's chunk in each, and
the competition's row ids for files named like BirdCLEF soundscapes.

The windows follow the rule training cut recordings by (stages/birdclef/chunks.py): full windows from
the start, then the tail if it holds at least data.min_remainder_seconds (zero-padded to 5 s), else
it is dropped. Each window's model input is a chunk as long as the training chunks, centred on the
window, as stage prepare cuts the labelled soundscapes: with 5-second chunks, the window itself.
(With shorter chunks the centred chunk of a short tail window can lie past the audio: it is zeros.)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from stages.birdclef.chunks import chunk_windows, soundscape_chunk
from stages.inference.bundle import WINDOW_SECONDS, AudioSettings

# <audio_id>_<SITE>_<YYYYMMDD>.ogg, as BirdCLEF's train_soundscapes/ and hidden test_soundscapes/ name files.
SOUNDSCAPE_NAME = re.compile(r"^(?P<audio_id>\d+)_(?P<site>[A-Za-z0-9]+)_(?P<date>\d{8})\.ogg$")


@dataclass(frozen=True)
class Window:
    start_s: float       # the 5 s window
    end_s: float
    chunk_start_s: float  # the model's input: data.chunk_seconds from here,
    chunk_audio_s: float  # of which this much is audio (the rest, past the file's end, zeros)


def plan_windows(duration_s: float, audio: AudioSettings) -> list[Window]:
    """The windows of a file of `duration_s` seconds (none if it is shorter than min_remainder)."""
    spans = chunk_windows(duration_s, WINDOW_SECONDS, WINDOW_SECONDS, audio.min_remainder_seconds, sys.maxsize)
    windows = []
    for start, _ in spans:
        end = round(start + WINDOW_SECONDS, 6)
        chunk_start = soundscape_chunk(end, audio.chunk_seconds)[0]
        chunk_audio = round(max(0.0, min(audio.chunk_seconds, duration_s - chunk_start)), 6)
        windows.append(Window(start, end, chunk_start, chunk_audio))
    return windows


def soundscape_row_prefix(path: Path) -> str | None:
    """`<audio_id>_<SITE>` for a file named like a BirdCLEF soundscape, else None."""
    match = SOUNDSCAPE_NAME.match(path.name)
    return None if match is None else f"{match['audio_id']}_{match['site']}"


def row_id(prefix: str, window: Window) -> str:
    """The competition's row id: `<audio_id>_<SITE>_<end second>`."""
    return f"{prefix}_{round(window.end_s)}"
