"""What a query image may decode to: limits checked before its data is read.

A few megabytes of upload can declare gigabytes of pixels (a PNG of 12,000 x 12,000, a NIfTI
header of 512 x 512 x 1000 voxels, a gzip of zeros). :class:`QueryLimits` bounds what a query
file decodes to, not only its own size; each check runs on the file's header (or on a
streamed decompression that stops at the cap) before the data is decoded, and a refusal is a
:class:`medsae.data.query_image.QueryImageError` with reason ``too_large`` naming the limit
and the value (the browser answers 413 with both). Defaults are listed in docs/report.md.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medsae.errors import InputError

MiB = 1024 * 1024
Reason = Literal["unreadable", "unsupported", "too_large"]
NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00")


class QueryImageError(InputError):
    """A query image that cannot be used; ``reason`` says why (unreadable, unsupported, too large)."""

    def __init__(
        self,
        what: str | Path,
        problem: str,
        reason: Reason = "unreadable",
        limit: tuple[str, int, int] | None = None,
    ) -> None:
        self.reason: Reason = reason
        self.limit = limit  # (name, value, allowed) of the limit a too-large file passed
        super().__init__(what, problem)


@dataclass(frozen=True)
class QueryLimits:
    """Limits on what one query file decodes to.

    Attributes
    ----------
    max_decompressed_bytes:
        Bytes a gzip-compressed file may decompress to (the decompression is streamed and
        stops here); default 256 MiB.
    max_pixels:
        Pixels of a 2D image (PNG, JPEG, a DICOM frame), from its header; default 36 million
        (6,000 x 6,000).
    max_voxels:
        Voxels of a volume read for one query slice (a NIfTI volume, a multi-frame DICOM),
        from its header; default 64 Mi (512 x 512 x 256), 256 MiB as float32.
    """

    max_decompressed_bytes: int = 256 * MiB
    max_pixels: int = 36_000_000
    max_voxels: int = 64 * MiB

    def check(self, limit: str, value: int, what: str, thing: str) -> None:
        """Raise ``too_large`` when ``value`` exceeds the limit named ``limit``."""
        allowed = int(getattr(self, limit))
        if value > allowed:
            raise QueryImageError(
                what,
                f"{thing} of {value:,} exceeds the limit {limit} = {allowed:,}",
                "too_large",
                limit=(limit, int(value), allowed),
            )


def gunzip_capped(data: bytes, cap: int, what: str, head: int | None = None) -> bytes:
    """The gzip ``data`` decompressed, streamed, refused (``too_large``) past ``cap`` bytes.

    ``head`` decompresses only the first ``head`` bytes (a header to check before the rest);
    concatenated gzip members are read as one stream. Raises ``QueryImageError``
    (unreadable) for a broken or truncated stream.
    """
    want = cap + 1 if head is None else min(head, cap + 1)
    parts: list[bytes] = []
    got = 0
    rest = data
    while True:
        stream = zlib.decompressobj(wbits=31)  # gzip framing
        try:
            part = stream.decompress(rest, want - got)
        except zlib.error as e:
            raise QueryImageError(what, f"cannot decompress the gzip file: {e}") from e
        parts.append(part)
        got += len(part)
        if got >= want or not stream.eof or not stream.unused_data:
            break
        rest = stream.unused_data  # the next gzip member
    out = b"".join(parts)
    if head is not None:
        return out
    if got > cap:  # more output was waiting beyond the cap: refused without producing it
        raise QueryImageError(
            what,
            f"gzip content decompresses to more than the limit max_decompressed_bytes = {cap:,}",
            "too_large",
            limit=("max_decompressed_bytes", got, cap),
        )
    if not stream.eof:
        raise QueryImageError(what, "cannot decompress the gzip file: the stream is truncated")
    return out


def nifti_size(head: bytes, what: str, limits: QueryLimits) -> int:
    """Bytes a NIfTI-1 file needs (header, extensions and data), from its header; the
    voxel limit is checked here, before any data is read."""
    import nibabel as nib

    if len(head) < 348 or head[344:348] not in NIFTI_MAGIC:
        raise QueryImageError(what, "gzip content is not a NIfTI-1 image", "unsupported")
    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(head[:348]))
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = int(header.get_data_dtype().itemsize)
        offset = int(header.get_data_offset())
    except Exception as e:  # nibabel raises several types for broken headers
        raise QueryImageError(what, f"cannot read the NIfTI header: {e}") from e
    if any(n < 1 for n in shape):
        raise QueryImageError(what, f"NIfTI header declares an empty volume {shape}")
    voxels = int(np.prod(shape, dtype=object))
    limits.check("max_voxels", voxels, what, f"NIfTI volume {shape}, voxels")
    return max(offset, 348) + voxels * itemsize


def pil_bomb(error: Exception, what: str, limits: QueryLimits) -> QueryImageError:
    """Pillow's own refusal of a huge image (past twice its ``MAX_IMAGE_PIXELS``, raised when
    the header is read) as a refusal of ``max_pixels``."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = int(found.group(1)) if found else limits.max_pixels + 1
    return QueryImageError(
        what,
        f"image of {pixels:,} pixels exceeds the limit max_pixels = {limits.max_pixels:,}",
        "too_large",
        limit=("max_pixels", pixels, limits.max_pixels),
    )
