"""Seeded malformed files for fuzz tests: random bytes, truncated and bit-flipped valid
PNG, DICOM, NIfTI and gzip files, and headers declaring huge images."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator

import nibabel as nib
import numpy as np

MAGICS = (b"\x89PNG\r\n\x1a\n", b"\x1f\x8b\x08\x00", b"\xff\xd8\xff\xe0")


def valid_png(rng: np.random.Generator) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    shape = (int(rng.integers(8, 64)), int(rng.integers(8, 64)))
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def valid_dicom() -> bytes:
    from pydicom.data import get_testdata_file

    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        return f.read()


def valid_nifti(rng: np.random.Generator) -> bytes:
    shape = tuple(int(n) for n in rng.integers(6, 20, 3))
    img = nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4))
    return bytes(img.to_bytes())


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width x height`` with a few rows of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def huge_nifti(shape: tuple[int, ...]) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    return bytes(header.binaryblock) + b"\x00" * 4 + b"\x00" * 4096


def huge_dicom(rows: int, cols: int, frames: int) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(valid_dicom()))
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def truncated(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, max(2, len(data) - 1)))]


def bit_flipped(data: bytes, rng: np.random.Generator, header: int | None = None) -> bytes:
    out = bytearray(data)
    span = min(len(out), header or len(out))
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, span))
        out[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def malformed(seed: int, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` (kind, bytes) malformed files, the same for the same seed."""
    rng = np.random.default_rng(seed)
    png, dicom, nifti = valid_png(rng), valid_dicom(), valid_nifti(rng)
    packed = gzip.compress(nifti)
    makers = [
        ("random", lambda: rng.bytes(int(rng.integers(0, 4096)))),
        (
            "random-magic",
            lambda: MAGICS[int(rng.integers(0, 3))] + rng.bytes(int(rng.integers(0, 2048))),
        ),
        ("random-dicm", lambda: rng.bytes(128) + b"DICM" + rng.bytes(int(rng.integers(0, 2048)))),
        (
            "random-nifti-magic",
            lambda: rng.bytes(344) + b"n+1\x00" + rng.bytes(int(rng.integers(0, 2048))),
        ),
        ("png-truncated", lambda: truncated(png, rng)),
        ("png-flipped", lambda: bit_flipped(png, rng)),
        ("dicom-truncated", lambda: truncated(dicom, rng)),
        ("dicom-flipped", lambda: bit_flipped(dicom, rng, header=1024)),
        ("nifti-truncated", lambda: truncated(nifti, rng)),
        ("nifti-flipped", lambda: bit_flipped(nifti, rng, header=352)),
        ("gzip-truncated", lambda: truncated(packed, rng)),
        ("gzip-flipped", lambda: bit_flipped(packed, rng)),
        (
            "png-huge",
            lambda: huge_png(
                int(rng.integers(7_000, 2**31 - 1)), int(rng.integers(7_000, 2**31 - 1))
            ),
        ),
        ("nifti-huge", lambda: huge_nifti(tuple(int(v) for v in rng.integers(600, 32_000, 3)))),
        (
            "nifti-gz-huge",
            lambda: gzip.compress(huge_nifti(tuple(int(v) for v in rng.integers(600, 32_000, 3)))),
        ),
        (
            "dicom-huge",
            lambda: huge_dicom(
                int(rng.integers(7_000, 65_535)),
                int(rng.integers(7_000, 65_535)),
                int(rng.integers(1, 5)),
            ),
        ),
    ]
    for i in range(n):
        kind, make = makers[i % len(makers)]
        yield kind, make()
