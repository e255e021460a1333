"""The streamed NIfTI reader and the per-slab counts give what nibabel and the whole-array
code give, on every layout; bad files fail naming the subject and file."""

from __future__ import annotations

import gzip
import itertools
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsae.data import geometry as geo
from medsae.data import volume_io
from medsae.data.anatomy import plane_counts, slab_counts
from medsae.data.cases import Case
from medsae.data.intensity import to_uint8
from medsae.data.volume_io import (
    _ByteStream,
    load_image,
    load_mask,
    mask_slabs,
    open_nifti,
)
from medsae.errors import InputError

AFFINE = np.diag([0.8, 0.9, 1.5, 1.0])


@pytest.fixture(params=["default", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the default inflater (ISA-L when installed) and with zlib."""
    if request.param == "zlib":
        monkeypatch.setattr(volume_io, "_inflate_lib", zlib)
    return str(request.param)


def _write(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return str(path)


def _streamed(path: str, slab_bytes: int) -> np.ndarray:
    nii = open_nifti(path, "CT:s1")
    assert nii is not None
    out = np.empty(nii.shape, dtype=nii.dtype, order="F")
    for k0, slab in nii.raw_slabs(slab_bytes):
        out[:, :, k0 : k0 + slab.shape[2]] = slab
    return out


@pytest.mark.parametrize(
    "suffix,dtype,klass,big_endian",
    [
        (".nii.gz", np.uint8, nib.Nifti1Image, False),
        (".nii", np.int16, nib.Nifti1Image, False),
        (".nii.gz", np.float32, nib.Nifti2Image, False),
        (".nii.gz", np.int16, nib.Nifti1Image, True),
    ],
)
@pytest.mark.parametrize("slab_bytes", [1, 700, 1 << 21])
def test_stream_matches_nibabel(
    tmp_path: Path, suffix: str, dtype: type, klass: type, big_endian: bool, slab_bytes: int
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3, size=(7, 5, 9)).astype(dtype)
    if big_endian:
        data = data.astype(np.dtype(dtype).newbyteorder(">"))
    img = klass(data, AFFINE)
    img.header.set_slope_inter(1.0, 0.0)
    path = _write(tmp_path / f"m{suffix}", img)
    ref = nib.load(path)
    got = _streamed(path, slab_bytes)
    assert np.array_equal(got, np.asarray(ref.dataobj))
    nii = open_nifti(path, "CT:s1")
    assert nii is not None and np.array_equal(nii.affine, ref.affine)


def test_extensions_and_4d_with_one_frame(tmp_path: Path) -> None:
    data = np.arange(4 * 3 * 5, dtype=np.int16).reshape((4, 3, 5, 1))
    img = nib.Nifti1Image(data, AFFINE)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 50))
    path = _write(tmp_path / "e.nii.gz", img)
    nii = open_nifti(path, "CT:s1")
    assert nii is not None and nii.shape == (4, 3, 5)
    assert np.array_equal(_streamed(path, 30), data[..., 0])


def test_multi_member_gzip_and_tiny_feeds(tmp_path: Path, inflater: str) -> None:
    data = np.random.default_rng(1).integers(0, 255, size=(6, 6, 8)).astype(np.uint8)
    plain = _write(tmp_path / "p.nii", nib.Nifti1Image(data, AFFINE))
    raw = Path(plain).read_bytes()
    cut = 352 + 100  # a member ends inside the voxel data
    path = tmp_path / "two.nii.gz"
    path.write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]))
    assert np.array_equal(_streamed(str(path), 50), data)
    stream = _ByteStream(path.read_bytes(), gz=True, feed=7)
    assert bytes(stream.read(len(raw))) == raw
    stream.finish()


def test_scaled_image_and_mask_match_nibabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(-100, 3000, size=(6, 7, 8)).astype(np.int16)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_slope_inter(0.37, -1024.0)
    path = _write(tmp_path / "ct.nii.gz", img)
    case = Case("s1", "CT", "d", "nifti", path, {})
    vol, affine, _ = load_image(case)
    ref = nib.load(path)
    assert vol.dtype == np.float32
    assert np.array_equal(vol, ref.get_fdata(dtype=np.float32))
    assert np.array_equal(affine, ref.affine)
    # a scaled mask is read whole through nibabel, scaled values included
    mask = rng.integers(0, 2, size=(6, 7, 8)).astype(np.uint8)
    mimg = nib.Nifti1Image(mask, AFFINE)
    mimg.header.set_slope_inter(2.0, 0.0)
    mpath = _write(tmp_path / "liver.nii.gz", mimg)
    whole = load_mask(mpath, "CT:s1", (6, 7, 8), ref.affine)
    assert np.array_equal(whole, np.asarray(nib.load(mpath).dataobj))
    slabs = list(mask_slabs(mpath, "CT:s1", (6, 7, 8), ref.affine))
    assert len(slabs) == 1 and np.array_equal(slabs[0][1], whole)


def _mask_file(tmp_path: Path) -> tuple[str, bytes]:
    data = np.zeros((16, 16, 40), np.uint8)
    data[3:9, 4:12, 5:30] = 1
    path = _write(tmp_path / "liver.nii.gz", nib.Nifti1Image(data, AFFINE))
    return path, Path(path).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "crc", "missing", "header"])
def test_bad_mask_files_name_subject_and_file(tmp_path: Path, damage: str, inflater: str) -> None:
    path, raw = _mask_file(tmp_path)
    words = "corrupt or truncated"
    if damage == "truncated":
        Path(path).write_bytes(raw[: len(raw) // 2])
    elif damage == "crc":
        Path(path).write_bytes(raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:])
    elif damage == "missing":
        Path(path).unlink()
        words = "file not found"
    else:
        Path(path).write_bytes(gzip.compress(b"\x00" * 20))
        words = "cannot read NIfTI header"
    with pytest.raises(InputError) as err:
        for _ in mask_slabs(path, "CT:s0042", (16, 16, 40), AFFINE):
            pass
    assert "CT:s0042" in str(err.value) and path in str(err.value) and words in str(err.value)


def _orientations() -> list[np.ndarray]:
    """Affines of every axis permutation, with flips on some axes."""
    out = []
    for perm in itertools.permutations(range(3)):
        for flips in ((1, 1, 1), (-1, 1, -1), (-1, -1, 1)):
            aff = np.zeros((4, 4))
            for n, (t, f) in enumerate(zip(perm, flips, strict=True)):
                aff[t, n] = f * (0.5 + n)
            aff[3, 3] = 1.0
            out.append(aff)
    return out


@pytest.mark.parametrize("affine", _orientations())
def test_slab_counts_equal_whole_array_counts(affine: np.ndarray) -> None:
    rng = np.random.default_rng(int(abs(affine).sum() * 10))
    native = np.zeros((9, 11, 13), np.uint8)
    native[2:7, 3:10, 4:12] = rng.random((5, 7, 8)) < 0.5
    native[0, 0, 0] = 255  # any nonzero value counts
    ornt = geo.canonical_transform(affine)
    canon = geo.reorient(native, ornt)
    planes = ["axial", "coronal", "sagittal"]
    keep = {}
    for p in planes:  # crop a different range of each in-plane axis
        r_ax, c_ax = geo.in_plane_axes(p)
        keep[p] = {r_ax: (1, canon.shape[r_ax] - 2), c_ax: (2, canon.shape[c_ax])}
    ref = plane_counts(canon != 0, planes, keep)
    for step in (1, 2, 5, 13):
        slabs = ((k0, native[:, :, k0 : k0 + step]) for k0 in range(0, 13, step))
        got = slab_counts(slabs, native.shape, ornt, planes, keep)
        for p in planes:
            assert np.array_equal(got[p], ref[p]), (p, step)


@pytest.mark.parametrize("layout", ["C", "F", "flipped", "rgb"])
def test_display_stack_equals_display_slices(layout: str) -> None:
    vol = np.random.default_rng(3).integers(0, 255, size=(6, 7, 8)).astype(np.uint8)
    if layout == "F":
        vol = np.asfortranarray(vol)
    elif layout == "flipped":
        vol = np.asfortranarray(vol)[::-1, :, ::-1]
    elif layout == "rgb":
        vol = np.stack([vol, vol // 2, vol // 3], axis=-1)
    for plane, axis in geo.PLANE_AXIS.items():
        for indices in (range(vol.shape[axis]), range(1, vol.shape[axis] - 1, 3)):
            stack = geo.display_stack(vol, plane, indices)
            assert stack.flags.c_contiguous and stack.shape[0] == len(indices)
            for t, i in enumerate(indices):
                assert np.array_equal(stack[t], geo.display_slice(vol, plane, i))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_to_uint8_does_not_depend_on_memory_layout(dtype: type) -> None:
    vol = (np.random.default_rng(4).normal(0, 600, size=(9, 10, 11))).astype(dtype)
    scale = np.float32(255.0 / 900.0)
    ref = np.clip(np.rint((vol.astype(np.float32) - np.float32(-300.0)) * scale), 0, 255)
    flipped = np.asfortranarray(vol)[::-1, ::-1]
    for v, expected in ((vol, ref), (np.asfortranarray(vol), ref), (flipped, ref[::-1, ::-1])):
        out = to_uint8(v, -300.0, 600.0)
        assert out.dtype == np.uint8 and np.array_equal(out, expected.astype(np.uint8))
