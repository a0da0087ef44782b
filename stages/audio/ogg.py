"""Ogg pages: the one reader of their headers, used by the code and the tests, and Vorbis writing
with reproducible bytes.

libsndfile gives every Ogg stream a random serial number, so the same audio encodes to different
bytes on every run. The demo dataset must be byte-identical for a given seed (DVC hashes it), so we
pin the serial number and recompute each page's checksum. Stage prepare reads the pages at a file's
two ends to tell a truncated recording, and one of several chained streams, from a whole one.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# Byte offsets in an Ogg page header (RFC 3533, section 6).
CAPTURE_PATTERN = b"OggS"
FLAGS_OFFSET = 5
GRANULE_OFFSET = 6
SERIAL_OFFSET = 14
CRC_OFFSET = 22
SEGMENT_COUNT_OFFSET = 26
HEADER_SIZE = 27
END_OF_STREAM_FLAG = 0x04
MAX_PAGE_BYTES = HEADER_SIZE + 255 + 255 * 255  # header, segment table, 255 segments of 255 bytes


@dataclass(frozen=True)
class OggPage:
    offset: int   # where the page starts in the data
    size: int     # header + segment table + body, in bytes
    flags: int
    serial: int   # the logical stream the page belongs to

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def end_of_stream(self) -> bool:
        return bool(self.flags & END_OF_STREAM_FLAG)


def page_at(data: bytes | bytearray, offset: int) -> OggPage | None:
    """The page starting at `offset`, or None where no whole page header and segment table are."""
    header = data[offset:offset + HEADER_SIZE]
    if len(header) < HEADER_SIZE or header[:4] != CAPTURE_PATTERN:
        return None
    n_segments = header[SEGMENT_COUNT_OFFSET]
    segment_table = data[offset + HEADER_SIZE:offset + HEADER_SIZE + n_segments]
    if len(segment_table) < n_segments:
        return None
    serial = struct.unpack_from("<I", header, SERIAL_OFFSET)[0]
    return OggPage(offset, HEADER_SIZE + n_segments + sum(segment_table), header[FLAGS_OFFSET], serial)


def pages(data: bytes | bytearray) -> Iterator[OggPage]:
    """Every page of a whole Ogg file, in order; ValueError where the data is not a page."""
    offset = 0
    while offset < len(data):
        page = page_at(data, offset)
        if page is None:
            raise ValueError(f"not an Ogg page at byte {offset}")
        yield page
        offset = page.end


def last_page(data: bytes | bytearray) -> OggPage | None:
    """The whole page that ends exactly where `data` ends, if any. "OggS" can also occur inside packet
    data, so candidates are tried from the end backwards."""
    position = data.rfind(CAPTURE_PATTERN)
    while position >= 0:
        page = page_at(data, position)
        if page is not None and page.end == len(data):
            return page
        position = data.rfind(CAPTURE_PATTERN, 0, position)
    return None


@dataclass(frozen=True)
class OggEnds:
    """The first page of an Ogg file and the whole page it ends with (None where there is none)."""
    first: OggPage | None
    last: OggPage | None

    @property
    def truncated(self) -> bool:
        """libsndfile reads a truncated Ogg file (say, an interrupted download) without complaint, as
        a shorter recording; the missing end-of-stream page at its end is what gives it away."""
        return self.last is None or not self.last.end_of_stream

    @property
    def chained(self) -> bool:
        """More than one logical stream, one after another (what `cat a.ogg b.ogg` makes) or
        multiplexed: the file ends in a stream other than the one it begins with."""
        return self.first is not None and self.last is not None and self.first.serial != self.last.serial


def ogg_ends(path: Path) -> OggEnds:
    """Read only the file's first page header and its last MAX_PAGE_BYTES."""
    with path.open("rb") as file:
        first = page_at(file.read(MAX_PAGE_BYTES), 0)
        size = file.seek(0, 2)
        file.seek(max(0, size - MAX_PAGE_BYTES))
        return OggEnds(first, last_page(file.read()))


def reseal(data: bytearray, page: OggPage) -> None:
    """Recompute the checksum of `page` after its bytes were changed in place."""
    struct.pack_into("<I", data, page.offset + CRC_OFFSET, 0)
    struct.pack_into("<I", data, page.offset + CRC_OFFSET, _ogg_crc(data[page.offset:page.end]))


def set_granule(data: bytearray, page: OggPage, granule: int) -> None:
    """Make `page` claim `granule` samples so far (what a file's duration is read from), resealed."""
    struct.pack_into("<q", data, page.offset + GRANULE_OFFSET, granule)
    reseal(data, page)


def encode_ogg_vorbis(audio: np.ndarray, sample_rate: int, serial: int) -> bytes:
    """Encode float audio ([samples] or [samples, channels]) with a fixed Ogg stream serial."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="OGG", subtype="VORBIS")
    return pin_ogg_serial(buffer.getvalue(), serial)


def write_ogg_vorbis(path: Path, audio: np.ndarray, sample_rate: int, serial: int) -> None:
    path.write_bytes(encode_ogg_vorbis(audio, sample_rate, serial))


def pin_ogg_serial(data: bytes, serial: int) -> bytes:
    pinned = bytearray(data)
    for page in pages(pinned):
        struct.pack_into("<I", pinned, page.offset + SERIAL_OFFSET, serial)
        reseal(pinned, page)
    return bytes(pinned)


def _make_crc_table() -> list[int]:
    # Ogg's CRC-32: polynomial 0x04C11DB7, MSB first, initial value 0, no final xor.
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _make_crc_table()


def _ogg_crc(page: bytes | bytearray) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc
