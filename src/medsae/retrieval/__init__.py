"""medsae.retrieval: fingerprint search, text-to-image retrieval (ask), the index stage,
and their evaluations (the search service the report and the browser share is
:mod:`medsae.frontend.search`).

Names are imported lazily (on first use) so that importing the package, and ``medsae
--help``, stay fast. Add a name by adding it to ``_EXPORTS`` (name -> defining module).
"""

from __future__ import annotations

from medsae._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "FingerprintIndex": "medsae.retrieval.fingerprint",
    "brute_force_search": "medsae.retrieval.fingerprint_reference",
    "search_similar": "medsae.retrieval.index",
    "build_index": "medsae.retrieval.index",
    "ask": "medsae.retrieval.index",
    "AskResult": "medsae.retrieval.index",
    "text_retriever": "medsae.retrieval.index",
    "TextRetriever": "medsae.retrieval.language",
    "FeatureChoice": "medsae.retrieval.language",
    "llm_selector": "medsae.retrieval.language",
    "evaluate_fingerprints": "medsae.retrieval.fingerprint_eval",
    "evaluate_text_retrieval": "medsae.retrieval.text_eval",
    "load_queries": "medsae.retrieval.queries",
    "Query": "medsae.retrieval.queries",
    "SearchConfig": "medsae.retrieval.config",
    "AskConfig": "medsae.retrieval.config",
    "IndexConfig": "medsae.retrieval.config",
    "ASK_MODES": "medsae.retrieval.config",
    "index_config": "medsae.retrieval.index",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
