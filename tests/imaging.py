"""Image fixtures shared by several test modules."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` 1-bit pixels, with almost no pixel data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * ((width + 7) // 8 + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    """``image`` saved as ``fmt`` (PNG, JPEG, GIF...) in memory."""
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()
