"""medsae.interpret: feature statistics, their descriptions and the scores of those descriptions.

Names are imported lazily (on first use) so that importing the package, and ``medsae
--help``, stay fast. Add a name by adding it to ``_EXPORTS`` (name -> defining module).
"""

from __future__ import annotations

from medsae._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "interpret": "medsae.interpret.stage",
    "feature_statistics": "medsae.interpret.features",
    "FeatureStats": "medsae.interpret.features",
    "OfflineDescriber": "medsae.interpret.describe",
    "LLMDescriber": "medsae.interpret.describe",
    "Description": "medsae.interpret.describe",
    "score_detection": "medsae.interpret.scoring",
    "score_ranking": "medsae.interpret.scoring",
    "Scorer": "medsae.interpret.scoring",
    "EmbeddingScorer": "medsae.interpret.scorers",
    "LabelScorer": "medsae.interpret.scorers",
    "LLMScorer": "medsae.interpret.scorers",
    "InterpretConfig": "medsae.interpret.config",
    "LLMConfig": "medsae.llm.config",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
