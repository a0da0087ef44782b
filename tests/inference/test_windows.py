"""Where predict looks: the 5 s windows of a file, their model chunks, row ids, and the audio search."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.inference.bundle import AudioSettings
from stages.audio.files import find_audio
from stages.inference.windows import plan_windows, row_id, soundscape_row_prefix

FIVE_SECOND = AudioSettings(32000, 5.0, 2.0)


@pytest.mark.parametrize("duration, ends", [
    (60.0, [5.0 * k for k in range(1, 13)]),
    (12.5, [5.0, 10.0, 15.0]),   # a 2.5 s tail holds min_remainder (2 s): zero-padded window
    (11.0, [5.0, 10.0]),         # a 1 s tail is dropped, as in training
    (2.0, [5.0]),                # exactly min_remainder: one padded window
    (1.5, []),                   # too short for any window
])
def test_windows_follow_the_training_tail_rule(duration, ends):
    windows = plan_windows(duration, FIVE_SECOND)
    assert [w.end_s for w in windows] == ends
    assert [w.start_s for w in windows] == [end - 5.0 for end in ends]
    assert [w.chunk_start_s for w in windows] == [end - 5.0 for end in ends]
    assert [w.chunk_audio_s for w in windows] == [min(5.0, duration - end + 5.0) for end in ends]


def test_a_shorter_chunk_is_centred_on_its_window():
    windows = plan_windows(12.0, AudioSettings(32000, 1.0, 0.5))
    assert [w.chunk_start_s for w in windows] == [2.0, 7.0, 12.0]
    assert [w.chunk_audio_s for w in windows] == [1.0, 1.0, 0.0]  # the 2 s tail's centre lies past the end


def test_row_ids_name_audio_id_site_and_end_second():
    prefix = soundscape_row_prefix(Path("test_soundscapes/7019_COR_20190904.ogg"))
    assert prefix == "7019_COR"
    assert [row_id(prefix, w) for w in plan_windows(15.0, FIVE_SECOND)] == ["7019_COR_5", "7019_COR_10", "7019_COR_15"]


@pytest.mark.parametrize("name", ["7019_COR.ogg", "field_recording.ogg", "7019_COR_2019.ogg", "7019_COR_20190904.wav"])
def test_other_names_are_not_soundscapes(name):
    assert soundscape_row_prefix(Path(name)) is None


def test_audio_search_is_sorted_recursive_and_skips_hidden_and_other_files(tmp_path):
    for name in ("b.ogg", "a.WAV", "sub/c.flac", ".hidden.ogg", ".cache/d.ogg", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)] == ["a.WAV", "b.ogg", "sub/c.flac"]
    assert find_audio(tmp_path / "b.ogg") == [tmp_path / "b.ogg"]
