"""The evaluate stage's classification metrics: defined in :mod:`medsae.metrics.classification`
(formulas there), named here for the modules of this package."""

from __future__ import annotations

from medsae.metrics.classification import (
    balanced_accuracy,
    classification_report,
    f1_macro,
    macro_roc_auc,
    predict_classes,
    roc_auc,
    roc_auc_columns,
)

__all__ = [
    "balanced_accuracy",
    "classification_report",
    "f1_macro",
    "macro_roc_auc",
    "predict_classes",
    "roc_auc",
    "roc_auc_columns",
]
