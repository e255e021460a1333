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
