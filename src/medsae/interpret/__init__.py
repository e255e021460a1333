"""medsae.interpret: feature statistics, descriptions and their scores; search and ask.

Names are imported lazily (on first use) so that importing the package, and ``medsae
--help``, stay fast. Add a name by adding it to ``_EXPORTS`` (name -> defining module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # features, descriptions and their scores
    "interpret": "medsae.interpret.stage",
    "feature_statistics": "medsae.interpret.features",
    "FeatureStats": "medsae.interpret.features",
    "OfflineDescriber": "medsae.interpret.describe",
    "LLMDescriber": "medsae.interpret.describe",
    "Description": "medsae.interpret.describe",
    "score_detection": "medsae.interpret.scoring",
    "score_ranking": "medsae.interpret.scoring",
    "EmbeddingScorer": "medsae.interpret.scorers",
    "LabelScorer": "medsae.interpret.scorers",
    "LLMScorer": "medsae.interpret.scorers",
    "InterpretConfig": "medsae.interpret.config",
    "LLMConfig": "medsae.interpret.config",
    # language-model client and the test server
    "LLMClient": "medsae.interpret.llm",
    "LLMError": "medsae.interpret.llm",
    "Usage": "medsae.interpret.llm",
    "FakeLLMServer": "medsae.interpret.fake_llm_server",
    "Faults": "medsae.interpret.fake_llm_server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medsae.interpret' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# fingerprint search and text-to-image retrieval
_EXPORTS.update(
    {
        "FingerprintIndex": "medsae.interpret.fingerprint",
        "brute_force_search": "medsae.interpret.fingerprint_reference",
        "search_similar": "medsae.interpret.index",
        "build_index": "medsae.interpret.index",
        "ask": "medsae.interpret.index",
        "AskResult": "medsae.interpret.index",
        "text_retriever": "medsae.interpret.index",
        "TextRetriever": "medsae.interpret.ask",
        "FeatureChoice": "medsae.interpret.ask",
        "llm_selector": "medsae.interpret.ask",
        "evaluate_fingerprints": "medsae.interpret.fingerprint_eval",
        "evaluate_text_retrieval": "medsae.interpret.text_eval",
        "load_queries": "medsae.interpret.queries",
        "Query": "medsae.interpret.queries",
        "TextEmbedder": "medsae.interpret.text",
        "SearchConfig": "medsae.interpret.retrieval_config",
        "AskConfig": "medsae.interpret.retrieval_config",
        "IndexConfig": "medsae.interpret.retrieval_config",
    }
)
__all__ = sorted(_EXPORTS)
