"""medsae.metrics: the one place for metric formulas (reconstruction, classification)."""

from medsae.metrics.reconstruction import (
    DENSE_THRESHOLD,
    ReconstructionAccumulator,
    firing_stats,
    reconstruction_metrics,
)

__all__ = ["DENSE_THRESHOLD", "ReconstructionAccumulator", "firing_stats", "reconstruction_metrics"]
