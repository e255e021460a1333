"""A new image as a search query: encode it and code it like the workspace's slices.

The image itself is prepared by :mod:`medsae.data.query_image` (one preprocessing for the
command line and the browser). Here it is embedded with the encoder that wrote the
workspace's embeddings (``encoder_from_store``) and coded with the run's SAE (``load_sae``).
Loading the models and using them are separate steps, so that a server loads them once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsae.errors import ArtifactError


def load_image_encoder(embeddings_folder: Path, device: str = "auto") -> Any:
    """The encoder that wrote the embeddings store in ``embeddings_folder``, rebuilt on
    ``device`` (see :mod:`medsae.device`)."""
    from medsae.encode.registry import encoder_from_store
    from medsae.encode.store import EmbeddingStore

    return encoder_from_store(EmbeddingStore(embeddings_folder), device=device)


def load_image_sae(sae_folder: Path) -> Any:
    """The trained SAE of a run (``WS/saes/<encoder>/<run>``)."""
    from medsae.sae import load_sae  # type: ignore[attr-defined]

    if not Path(sae_folder).is_dir():
        raise ArtifactError(f"{sae_folder}: SAE run not found; run `medsae train` first")
    return load_sae(sae_folder)


def embed_with(encoder: Any, image_uint8: np.ndarray) -> np.ndarray:
    """Embedding ``(dim,)`` of one prepared image."""
    return np.asarray(encoder.encode(image_uint8[None]), dtype=np.float32)[0]


def code_with(sae: Any, embedding_d: np.ndarray) -> np.ndarray:
    """Sparse code ``(n_latents,)`` of one embedding (float32, dense)."""
    import torch

    with torch.no_grad():
        codes = sae.encode(torch.as_tensor(np.asarray(embedding_d, dtype=np.float32)[None]))
    return codes.detach().cpu().numpy().astype(np.float32)[0]


def encode_image(image_uint8: np.ndarray, embeddings_folder: Path) -> np.ndarray:
    """Embedding ``(dim,)`` of one prepared image with the encoder that wrote the store."""
    return embed_with(load_image_encoder(embeddings_folder), image_uint8)


def code_embedding(embedding_d: np.ndarray, sae_folder: Path) -> np.ndarray:
    """Sparse code ``(n_latents,)`` of one embedding with the trained SAE of a run."""
    return code_with(load_image_sae(sae_folder), embedding_d)
