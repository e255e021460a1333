"""File names of the index stage's artifacts (``WS/index/<encoder>/<run>/``), defined once.

Every module that writes or reads one of these files imports its name from here.
"""

from __future__ import annotations

FINGERPRINT_INDEX = "fingerprint_index.npz"
"""CSC posting lists of the codes: ``indptr``, ``rows``, ``values``, ``subject_ids``."""

FINGERPRINT_INDEX_INFO = "fingerprint_index.json"
"""Sizes and memory of the fingerprint index."""

FINGERPRINT_ROWS = "fingerprint_rows.parquet"
"""Per indexed row: slice id, subject key and the filterable metadata."""

FINGERPRINT_EVAL = "fingerprint_eval.json"
"""The fingerprint evaluation: sparse vs dense top-K vs full dense retrieval."""

DESCRIPTIONS = "descriptions.npz"
"""Text embeddings of the feature descriptions and the name of the embedder."""

TEXT_RETRIEVAL = "text_retrieval.json"
"""The query-suite evaluation of text-to-image retrieval."""
