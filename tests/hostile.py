"""A corpus of hostile image files, built from bytes here so that every failure mode is reproducible.

Each entry reproduces one way real files broke convfilter's promises (found by running it over
Pillow's own test images): a plugin raising NotImplementedError, libtiff printing on stderr, a
format Pillow recognises and then refuses, truncated data, a registered extension on garbage.
:func:`corpus` returns ``{file name: bytes}``; :data:`EXPECTED` says what the one ``Error:``
line must say about each (``None``: the file is a good image, it must be processed).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _dds(pixel_flags: int, fourcc: bytes, dxgi_format: int | None = None, bitcount: int = 0) -> bytes:
    """A 4x4 DDS file: the 124-byte header, an optional DX10 header, then 64 bytes of data."""
    width = height = 4
    flags = 0x1 | 0x2 | 0x4 | 0x1000  # caps, height, width, pixel format
    header = struct.pack("<7I", 124, flags, height, width, 0, 0, 1) + b"\0" * 44  # size ... reserved
    pixel_format = struct.pack("<2I4sI4I", 32, pixel_flags, fourcc, bitcount, 0, 0, 0, 0)
    caps = struct.pack("<4I", 0x1000, 0, 0, 0) + b"\0" * 4
    data = b"DDS " + header + pixel_format + caps
    if dxgi_format is not None:
        data += struct.pack("<5I", dxgi_format, 3, 0, 1, 0)  # format, TEXTURE2D, misc, array size, misc2
    return data + bytes(range(64))


def dds_unimplemented_dxgi() -> bytes:
    """DX10 header naming a DXGI format Pillow does not decode: NotImplementedError at open."""
    return _dds(0x4, b"DX10", dxgi_format=93)  # DXGI_FORMAT_B4G4R4A4_UNORM... not in Pillow's table


def dds_unknown_pixel_flags() -> bytes:
    """Pixel-format flags Pillow does not know (8, 'YUV'): NotImplementedError at open."""
    return _dds(0x8, b"\0\0\0\0", bitcount=32)


def _tiff(entries: list[tuple[int, int, int, int]], data: bytes) -> bytes:
    """A little-endian TIFF: one IFD of (tag, type, count, value) entries, pixel data after it."""
    ifd_at = 8
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = ifd_at + ifd_size
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in sorted(entries):
        value = data_at if value == -1 else value  # -1: the offset of the pixel data
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0)
    return bytes(out) + data


def tiff_65535_samples_per_pixel() -> bytes:
    """A deflate TIFF declaring 65535 samples per pixel: libtiff prints
    'More samples per pixel than can be decoded: 65535' on stderr, then Pillow refuses it."""
    data = zlib.compress(bytes(64))
    short, long_ = 3, 4
    return _tiff([(256, short, 1, 8), (257, short, 1, 8), (258, short, 1, 8), (259, short, 1, 32946),
                  (262, short, 1, 1), (273, long_, 1, -1), (277, short, 1, 65535), (278, short, 1, 8),
                  (279, long_, 1, len(data))], data)


def tiff_damaged_deflate() -> bytes:
    """An 8x8 gray deflate TIFF whose compressed strip goes wrong after a few bytes: libtiff itself
    (C code) prints 'ZIPDecode: Decoding error at scanline 0, ...' on stderr while decoding."""
    data = b"x\x9cc`\xa0\x0cgarbage!"  # the start of zlib.compress(bytes(64)), then garbage
    short, long_ = 3, 4
    return _tiff([(256, short, 1, 8), (257, short, 1, 8), (258, short, 1, 8), (259, short, 1, 8),
                  (262, short, 1, 1), (273, long_, 1, -1), (277, short, 1, 1), (278, short, 1, 8),
                  (279, long_, 1, len(data))], data)


def tiff_unknown_pixel_mode() -> bytes:
    """An uncompressed gray TIFF with 4 samples of 8 bits per pixel, a layout Pillow has no mode for."""
    short, long_ = 3, 4
    data = bytes(4 * 4 * 4)
    return _tiff([(256, short, 1, 4), (257, short, 1, 4), (258, short, 1, 8), (259, short, 1, 1),
                  (262, short, 1, 1), (273, long_, 1, -1), (277, short, 1, 4), (278, short, 1, 4),
                  (279, long_, 1, len(data))], data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_unknown_compression_method() -> bytes:
    """A PNG whose colour profile (iCCP) names compression method 1 (only 0 exists): Pillow
    recognises the PNG, then refuses it."""
    header = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)  # 4x4, 8-bit gray
    profile = b"icc\0" + b"\x01" + zlib.compress(b"not a real profile")  # name, method 1, data
    pixels = zlib.compress(b"".join(b"\0" + bytes(4) for _ in range(4)))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"iCCP", profile)
            + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b""))


def _encoded(fmt: str, size=(48, 64), **options) -> bytes:
    pixels = np.random.default_rng(11).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def good_png() -> bytes:
    return _encoded("PNG")


def good_bmp() -> bytes:
    return _encoded("BMP")


def truncated_jpeg() -> bytes:
    """The first 60% of a baseline JPEG: the header and part of the scan."""
    whole = _encoded("JPEG", quality=90)
    return whole[: len(whole) * 6 // 10]


def truncated_png() -> bytes:
    """A PNG cut in its image data (IDAT), before its end."""
    whole = _encoded("PNG")
    return whole[: len(whole) * 6 // 10]


def garbage() -> bytes:
    """Bytes no plugin claims (for a file whose extension says image)."""
    return bytes(np.random.default_rng(5).integers(0, 256, 700, dtype=np.uint8))


TRUNCATED = "the file is truncated"
EXPECTED = {  # file name -> what its Error line must contain (None: a good image)
    "unimplemented_dxgi.dds": ("recognised as DDS", "cannot decode", "Unimplemented DXGI format 93"),
    "unknown_pixel_flags.dds": ("recognised as DDS", "cannot decode", "Unknown pixel format flags 8"),
    "samples_65535.tif": ("recognised as TIFF", "impossible number of samples per pixel",
                          "More samples per pixel than can be decoded: 65535"),
    "damaged_deflate.tif": ("cannot decode this TIFF image (L, 8x8)", "damaged", "decoder error -2",
                            "ZIPDecode: Decoding error at scanline 0"),
    "unknown_pixel_mode.tif": ("recognised as TIFF", "pixel layout", "unknown pixel mode"),
    "unknown_compression.png": ("recognised as PNG", "unknown compression method"),
    "truncated.jpg": ("cannot decode this JPEG image (RGB, 64x48)", TRUNCATED, "--accept-truncated"),
    "truncated.png": ("cannot decode this PNG image (RGB, 64x48)", TRUNCATED, "--accept-truncated"),
    "garbage.dds": ("not an image Pillow can read (unknown format)",),
    "garbage.jpg": ("not an image Pillow can read (unknown format)",),
    "hopper.png": None,  # two inputs with one stem: both are processed, under their whole names
    "hopper.bmp": None,
}
ACCEPTED_TRUNCATED = ("truncated.jpg", "truncated.png")  # decoded in part with --accept-truncated


def corpus() -> dict[str, bytes]:
    return {
        "unimplemented_dxgi.dds": dds_unimplemented_dxgi(),
        "unknown_pixel_flags.dds": dds_unknown_pixel_flags(),
        "samples_65535.tif": tiff_65535_samples_per_pixel(),
        "damaged_deflate.tif": tiff_damaged_deflate(),
        "unknown_pixel_mode.tif": tiff_unknown_pixel_mode(),
        "unknown_compression.png": png_unknown_compression_method(),
        "truncated.jpg": truncated_jpeg(),
        "truncated.png": truncated_png(),
        "garbage.dds": garbage(),
        "garbage.jpg": garbage(),
        "hopper.png": good_png(),
        "hopper.bmp": good_bmp(),
    }


def write_corpus(folder) -> list:
    """Write :func:`corpus` into ``folder``; return the paths, in name order."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in sorted(corpus().items()):
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths
