"""The pixel size of an encoded image, read from its header without decoding it.

The server refuses an image whose decoded size exceeds ``--max_image_pixels`` before the graph
decodes it (a 400 KB PNG can claim 20000 × 20000 pixels). The formats are those of
``tf.io.decode_image``: PNG, JPEG, GIF, BMP and WebP. Anything else (or a header too short to
read) gives None and is left to the graph, which refuses what it cannot decode.

    >>> image_size(png_bytes)
    (480, 640)                       # (height, width)
"""

from __future__ import annotations

import struct

__all__ = ["image_size"]

# JPEG start-of-frame markers: every SOFn except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the header of a PNG, JPEG, GIF, BMP or WebP; None otherwise."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return height, width
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return height, width
        if data[:2] == b"BM":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(height), abs(width)  # a negative height means rows top-down
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
    except struct.error:  # a header cut short
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit width - 1 and height - 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return height, width
    if chunk == b"VP8L":  # lossless: 14 bits each after the 0x2f signature byte
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: after the 3-byte frame tag and the start code
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walks the JPEG markers up to the first start-of-frame."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return height, width
        offset += 2 + length
    return None
