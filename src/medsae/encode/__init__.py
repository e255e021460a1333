"""Encoders and the embedding store: slice images -> ``WS/embeddings/<name>/``.

Public API::

    from medsae.encode import get_encoder, list_encoders, encode, encoder_from_store, EncodeConfig

    enc = get_encoder("efficientnet-lite0")        # .name, .dim, .input_size, .encode(images_uint8)
    outcome = encode(ws, EncodeConfig(encoder="efficientnet-lite0"))
    store = EmbeddingStore(ws.embeddings("efficientnet-lite0"))
    query_enc = encoder_from_store(store)          # encode new images the same way

Heavy modules (torch models, transformers, Ray) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medsae.encode.registry import EncoderInfo, encoder_from_store, get_encoder, list_encoders
from medsae.encode.store import EmbeddingStore, normalize_rows, write_store

if TYPE_CHECKING:
    from medsae.encode.config import EncodeConfig
    from medsae.workspace import StageOutcome


def encode(workspace: Any, config: EncodeConfig | None = None, force: bool = False) -> StageOutcome:
    """Run the ``encode`` stage (see :func:`medsae.encode.stage.encode`)."""
    from medsae.encode.stage import encode as _encode

    return _encode(workspace, config, force=force)


def __getattr__(name: str) -> Any:
    if name == "EncodeConfig":
        from medsae.encode.config import EncodeConfig

        return EncodeConfig
    raise AttributeError(f"module 'medsae.encode' has no attribute {name!r}")


__all__ = [
    "EmbeddingStore",
    "EncodeConfig",
    "EncoderInfo",
    "encode",
    "encoder_from_store",
    "get_encoder",
    "list_encoders",
    "normalize_rows",
    "write_store",
]
