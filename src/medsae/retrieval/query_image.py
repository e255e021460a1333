"""A new image as a query: load it, bring it to the workspace's image size, encode, code.

Accepted inputs: a 2D array, a PNG/JPEG file, a DICOM file (rescale slope/intercept
applied, then its own window, else the 1st-99th percentile range) or a NIfTI volume with a
plane and a slice index (brought to the canonical RAS orientation and shown in the
workspace's display convention, see :mod:`medsae.data.geometry`; scaled by the 1st-99th
percentile of the volume). The image is padded to a square and resized to the workspace's
image size; grayscale is repeated to 3 channels when the workspace stores 3 windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medsae.errors import ArtifactError, InputError


def _to_uint8(x: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.dtype == np.uint8:
        return x
    if low is None or high is None:
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return np.zeros(x.shape, dtype=np.uint8)
        low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    if not high > low:
        high = low + 1.0
    return np.clip(np.rint(255.0 * (x - low) / (high - low)), 0, 255).astype(np.uint8)


def _dicom_image(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many kinds of errors on bad files
        raise InputError(path, f"cannot read DICOM pixel data: {e}") from e
    if pixels.ndim != 2:
        raise InputError(
            path, f"expected a single 2D DICOM image, got pixel array shape {pixels.shape}"
        )
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
        getattr(ds, "RescaleIntercept", 0) or 0
    )
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        if w > 0:
            return _to_uint8(pixels, c - w / 2, c + w / 2)
    return _to_uint8(pixels)


def _nifti_slice(path: Path, plane: str | None, index: int | None) -> np.ndarray:
    import nibabel as nib

    from medsae.data import geometry

    if plane not in geometry.PLANE_AXIS:
        raise InputError(
            path, f"a volume needs --plane (axial, coronal or sagittal), got {plane!r}"
        )
    if index is None:
        raise InputError(path, "a volume needs --index (the slice number along the plane's axis)")
    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many kinds of errors on bad files
        raise InputError(path, f"cannot read the NIfTI volume: {e}") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
    vol = geometry.reorient(data, geometry.canonical_transform(img.affine))
    axis = geometry.PLANE_AXIS[plane]
    if not 0 <= index < vol.shape[axis]:
        raise InputError(
            path, f"slice index {index} out of range 0..{vol.shape[axis] - 1} for {plane}"
        )
    finite = np.asarray(vol, dtype=np.float32)
    low, high = (float(v) for v in np.percentile(finite[np.isfinite(finite)], [1, 99]))
    return _to_uint8(geometry.display_slice(finite, plane, index), low, high)


def load_query_image(
    image: str | Path | np.ndarray, plane: str | None = None, index: int | None = None
) -> np.ndarray:
    """A 2D uint8 image from an array, PNG/JPEG, DICOM file or NIfTI volume + plane + index."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            arr = arr[..., :3].mean(axis=2)
        if arr.ndim != 2:
            raise InputError("image", f"expected a 2D image array, got shape {image.shape}")
        return arr if arr.dtype == np.uint8 else _to_uint8(arr)
    path = Path(image)
    if not path.is_file():
        raise InputError(path, "image file not found")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_slice(path, plane, index)
    if name.endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")):
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except OSError as e:
            raise InputError(path, f"cannot read the image: {e}") from e
    return _dicom_image(path)


def fit_to_workspace(image_2d: np.ndarray, size: int, channels: int | None = None) -> np.ndarray:
    """Pad to a square (0 fill, centred), resize to ``size`` (bilinear); 3 channels if asked."""
    h, w = image_2d.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image_2d
    out = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))
    if channels:
        out = np.repeat(out[..., None], channels, axis=2)
    return out


def encode_image(image_uint8: np.ndarray, embeddings_folder: Path) -> np.ndarray:
    """Embedding ``(dim,)`` of one prepared image with the encoder that wrote the store."""
    from medsae.encode.store import EmbeddingStore

    store = EmbeddingStore(embeddings_folder)
    try:
        from medsae.encode.registry import encoder_from_store
    except ImportError as e:
        raise ArtifactError("encoding a new image needs medsae.encode.encoder_from_store") from e
    encoder = encoder_from_store(store)
    emb = np.asarray(encoder.encode(image_uint8[None]), dtype=np.float32)
    return emb[0]


def code_embedding(embedding_d: np.ndarray, sae_folder: Path) -> np.ndarray:
    """Sparse code ``(n_latents,)`` of one embedding with the trained SAE of a run."""
    import torch

    try:
        from medsae.sae import load_sae
    except ImportError as e:
        raise ArtifactError("coding a new embedding needs medsae.sae.load_sae") from e
    if not Path(sae_folder).is_dir():
        raise ArtifactError(f"{sae_folder}: SAE run not found; run `medsae train` first")
    sae = load_sae(sae_folder)
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(embedding_d, dtype=np.float32)[None])
        codes = sae.encode(x)
    return codes.detach().cpu().numpy().astype(np.float32)[0]
