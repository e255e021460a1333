"""medsae.metrics: the one place for metric formulas (reconstruction, classification,
dictionary matching)."""

from medsae.metrics.classification import (
    balanced_accuracy,
    binary_balanced_accuracy,
    binary_f1,
    classification_report,
    f1_macro,
    macro_roc_auc,
    roc_auc,
    roc_auc_columns,
)
from medsae.metrics.matching import DictionaryMatch, abs_cosine, match_dictionaries, recovery_f1
from medsae.metrics.reconstruction import (
    DENSE_THRESHOLD,
    ReconstructionAccumulator,
    firing_stats,
    reconstruction_metrics,
)

__all__ = [
    "DENSE_THRESHOLD",
    "DictionaryMatch",
    "ReconstructionAccumulator",
    "abs_cosine",
    "balanced_accuracy",
    "binary_balanced_accuracy",
    "binary_f1",
    "classification_report",
    "f1_macro",
    "firing_stats",
    "macro_roc_auc",
    "match_dictionaries",
    "reconstruction_metrics",
    "recovery_f1",
    "roc_auc",
    "roc_auc_columns",
]
