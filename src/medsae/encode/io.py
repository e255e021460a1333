"""File names of the encode stage's artifact (``WS/embeddings/<encoder>/``), defined once.

The shards themselves are named by :func:`medsae.encode.store.shard_name`
(``shard-00000.npy``, ...).
"""

from __future__ import annotations

STORE_FILE = "store.json"
"""The store's metadata: encoder, config, dim, dtype, rows, shards and norms."""
PART_FILE = "part.json"
"""One shard's record while a sharded or distributed encode is in progress."""
IMPORT_STAGE = "import"
"""The stage name in the manifests of imported embeddings (``medsae import-embeddings``)."""
TOKEN_POSITIONS = "positions.npy"
"""A token store's ``(n_tokens, 3)`` slice row, grid row, grid column of each token."""
TOKEN_SLICE_PTR = "slice_ptr.npy"
"""A token store's ``(n_slices + 1,)`` offsets of each slice's tokens."""
