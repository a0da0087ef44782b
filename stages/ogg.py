"""OGG Vorbis writing with reproducible bytes.

libsndfile gives every Ogg stream a random serial number, so the same audio encodes to different
bytes on every run. The demo dataset must be byte-identical for a given seed (DVC hashes it), so we
pin the serial number and recompute each page's checksum.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

_SERIAL_OFFSET = 14
_CRC_OFFSET = 22
_HEADER_SIZE = 27


def encode_ogg_vorbis(audio: np.ndarray, sample_rate: int, serial: int) -> bytes:
    """Encode float audio ([samples] or [samples, channels]) with a fixed Ogg stream serial."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="OGG", subtype="VORBIS")
    return pin_ogg_serial(buffer.getvalue(), serial)


def write_ogg_vorbis(path: Path, audio: np.ndarray, sample_rate: int, serial: int) -> None:
    path.write_bytes(encode_ogg_vorbis(audio, sample_rate, serial))


def pin_ogg_serial(data: bytes, serial: int) -> bytes:
    pages = bytearray(data)
    position = 0
    while position < len(pages):
        if pages[position:position + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {position}")
        n_segments = pages[position + 26]
        segment_table = pages[position + _HEADER_SIZE:position + _HEADER_SIZE + n_segments]
        page_end = position + _HEADER_SIZE + n_segments + sum(segment_table)
        struct.pack_into("<I", pages, position + _SERIAL_OFFSET, serial)
        struct.pack_into("<I", pages, position + _CRC_OFFSET, 0)
        struct.pack_into("<I", pages, position + _CRC_OFFSET, _ogg_crc(pages[position:page_end]))
        position = page_end
    return bytes(pages)


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
