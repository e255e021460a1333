"""medsae.metrics: the one place for metric formulas (reconstruction, classification)."""

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
from medsae.metrics.reconstruction import (
    DENSE_THRESHOLD,
    ReconstructionAccumulator,
    firing_stats,
    reconstruction_metrics,
)

__all__ = [
    "DENSE_THRESHOLD",
    "ReconstructionAccumulator",
    "balanced_accuracy",
    "binary_balanced_accuracy",
    "binary_f1",
    "classification_report",
    "f1_macro",
    "firing_stats",
    "macro_roc_auc",
    "reconstruction_metrics",
    "roc_auc",
    "roc_auc_columns",
]
