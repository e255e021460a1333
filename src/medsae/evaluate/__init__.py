"""medsae.evaluate: how good is an SAE, and which configuration is best.

Public API (imported lazily so that ``medsae --help`` does not import torch)::

    evaluate(workspace, encoder, run, config=None, force=False)   the ``evaluate`` stage
    rank(workspace, config=None, force=False)                      the ``rank`` stage
    EvaluateConfig, RankConfig                                     configs
    reconstruction_report, sparsity_from_codes                     reconstruction and sparsity
    run_probes, performance_recovery                               linear probes and recovery
    linear_probes(features, labels)                                probes on your own arrays
    reconstruction_report(sae, x)                                  reconstruction of any (N, d) array
    monosemanticity, concept_map                                   feature-level scores
    derive_tasks, filter_tasks                                     probe tasks from the data

Formulas: docs/evaluate.md.
"""

from __future__ import annotations

from medsae._lazy import lazy_exports

_EXPORTS = {
    "evaluate": "medsae.evaluate.stage",
    "build_evaluation": "medsae.evaluate.stage",
    "rank": "medsae.evaluate.ranking",
    "build_table": "medsae.evaluate.ranking",
    "EvaluateConfig": "medsae.evaluate.config",
    "RankConfig": "medsae.evaluate.config",
    "reconstruction_report": "medsae.evaluate.reconstruction",
    "sparsity_from_codes": "medsae.evaluate.reconstruction",
    "run_probes": "medsae.evaluate.probes",
    "linear_probes": "medsae.evaluate.arrays",
    "performance_recovery": "medsae.evaluate.recovery",
    "monosemanticity": "medsae.evaluate.monosemantic",
    "concept_map": "medsae.evaluate.concepts",
    "labels_from_tasks": "medsae.evaluate.concepts",
    "derive_tasks": "medsae.evaluate.tasks",
    "filter_tasks": "medsae.evaluate.tasks",
    "load_inputs": "medsae.evaluate.inputs",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
