"""The one Ogg page reader (stages/audio/ogg.py) on real Vorbis files: pages tile a file exactly, the
last one carries end-of-stream, a chained file ends in another stream, a changed granule is what libsndfile then reports, and a pinned serial
gives the same bytes every time."""

from __future__ import annotations

import io

import pytest
import soundfile as sf

from helpers import tone
from stages.audio.ogg import (CAPTURE_PATTERN, GRANULE_OFFSET, encode_ogg_vorbis, last_page, ogg_ends, page_at,
                              pages, set_granule)

SR = 32000


@pytest.fixture(scope="module")
def vorbis() -> bytes:
    return encode_ogg_vorbis(tone(3.0), SR, serial=7)


def test_pages_tile_the_file_and_only_the_last_ends_the_stream(vorbis):
    found = list(pages(vorbis))
    assert len(found) >= 3 and found[0].offset == 0 and found[-1].end == len(vorbis)
    assert all(a.end == b.offset for a, b in zip(found, found[1:]))
    assert [page.end_of_stream for page in found] == [False] * (len(found) - 1) + [True]
    assert last_page(vorbis) == found[-1]


def test_what_is_not_a_page_is_named(vorbis):
    with pytest.raises(ValueError, match="not an Ogg page at byte 0"):
        list(pages(b"RIFF" + vorbis))
    assert page_at(vorbis, 1) is None and page_at(vorbis[:20], 0) is None  # cut inside the header


def test_a_capture_pattern_inside_packet_data_is_not_mistaken_for_a_page(vorbis):
    last = last_page(vorbis)
    forged = bytearray(vorbis)
    forged[last.end - 8:last.end - 4] = CAPTURE_PATTERN  # "OggS" in the last page's body
    assert last_page(forged) == last


@pytest.mark.parametrize("cut, whole", [("nothing", True), ("last page", False), ("half a page", False),
                                        ("junk appended", False)])
def test_a_file_is_truncated_unless_it_ends_with_an_end_of_stream_page(tmp_path, vorbis, cut, whole):
    last = last_page(vorbis)
    data = {"nothing": vorbis, "last page": vorbis[:last.offset], "half a page": vorbis[:last.offset + last.size // 2],
            "junk appended": vorbis + b"\0" * 100}[cut]
    (tmp_path / "a.ogg").write_bytes(data)
    assert ogg_ends(tmp_path / "a.ogg").truncated is not whole


def test_pages_know_their_stream_and_a_chained_file_ends_in_another(tmp_path, vorbis):
    assert {page.serial for page in pages(vorbis)} == {7}
    (tmp_path / "one.ogg").write_bytes(vorbis)
    (tmp_path / "chained.ogg").write_bytes(vorbis + encode_ogg_vorbis(tone(1.0), SR, serial=8))
    one, chained = ogg_ends(tmp_path / "one.ogg"), ogg_ends(tmp_path / "chained.ogg")
    assert not one.chained and one.first.serial == one.last.serial == 7
    assert chained.chained and (chained.first.serial, chained.last.serial) == (7, 8) and not chained.truncated


def test_set_granule_is_what_libsndfile_reads_as_the_length(vorbis):
    last = last_page(vorbis)
    data = bytearray(vorbis)
    set_granule(data, last, 10 * SR)
    assert sf.info(io.BytesIO(bytes(data))).frames == 10 * SR
    # The checksum matters: libogg drops a page whose checksum is wrong, and the length then comes
    # from an earlier page.
    unsealed = bytearray(vorbis)
    unsealed[last.offset + GRANULE_OFFSET:last.offset + GRANULE_OFFSET + 8] = (10 * SR).to_bytes(8, "little")
    assert sf.info(io.BytesIO(bytes(unsealed))).frames != 10 * SR


def test_a_pinned_serial_gives_the_same_bytes():
    assert encode_ogg_vorbis(tone(1.0), SR, serial=3) == encode_ogg_vorbis(tone(1.0), SR, serial=3)
    assert encode_ogg_vorbis(tone(1.0), SR, serial=3) != encode_ogg_vorbis(tone(1.0), SR, serial=4)
