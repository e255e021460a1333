"""Registries: describer name -> factory, scorer name -> factory (as ``medsae.sae.registry``).

A factory takes the :class:`Components` of one interpret run (its inputs, the endpoint client
and the text embedder) and returns a :class:`Describer` or a
:class:`~medsae.interpret.scoring.Scorer`. Add a describer or scorer by adding a factory here
(and its name to :class:`~medsae.interpret.config.InterpretConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from medsae.interpret.config import InterpretConfig
from medsae.interpret.describe import Description, LLMDescriber, OfflineDescriber
from medsae.interpret.features import FeatureStats
from medsae.interpret.inputs import InterpretInputs
from medsae.interpret.scorers import EmbeddingScorer, LabelScorer, LLMScorer, TextEmbedFn
from medsae.interpret.scoring import Scorer, near_miss_sample
from medsae.llm.client import LLMClient


class Describer(Protocol):
    """Writes one short phrase per feature from its training-split statistics."""

    name: str

    def describe_many(self, stats: Sequence[FeatureStats]) -> list[Description]:
        """The descriptions of ``stats``, in their order (failures recorded, never raised)."""
        ...


@dataclass
class Components:
    """What a describer or scorer factory may use: the run's inputs and configuration, the
    endpoint client (None unless a component needs it), the slice images sent to it (None:
    text only) and the text embedder of the embedding scorer (None: the bundled one)."""

    inputs: InterpretInputs
    config: InterpretConfig
    client: LLMClient | None = None
    images: np.ndarray | None = None
    embedder: TextEmbedFn | None = None

    def need_client(self, what: str) -> LLMClient:
        """The endpoint client, or ValueError naming the component that needs it."""
        if self.client is None:
            raise ValueError(f"{what} needs an LLM endpoint client; none was built")
        return self.client


def offline_describer(c: Components) -> Describer:
    """:class:`~medsae.interpret.describe.OfflineDescriber` with the near-miss contrast draws
    of ``config.contrast_draws`` (none when 0), rules fitted on at most ``config.fit_slices``
    non-activating training slices."""
    inp, config = c.inputs, c.config
    contrast: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
    if config.contrast_draws > 0:

        def contrast(latent: int) -> tuple[np.ndarray, np.ndarray]:
            near = near_miss_sample(
                inp.space, latent, inp.train, config, inp.draw, inp.train_background
            )
            return near.rows[near.positive], near.rows[~near.positive]

    return OfflineDescriber(
        inp.labels,
        inp.codes,
        inp.train,
        contrast=contrast,
        fit_slices=config.fit_slices,
        seed=config.seed,
    )


def llm_describer(c: Components) -> Describer:
    """:class:`~medsae.interpret.describe.LLMDescriber` over the endpoint client."""
    inp = c.inputs
    return LLMDescriber(
        c.need_client("the llm describer"),
        inp.table,
        inp.labels,
        c.images,
        n_train=len(inp.train),
        send_images=c.config.llm.send_images,
        image_size=c.config.llm.image_size,
    )


def embedding_scorer(c: Components) -> Scorer:
    """:class:`~medsae.interpret.scorers.EmbeddingScorer` (offline, text embeddings)."""
    return EmbeddingScorer(c.inputs.labels, c.embedder)


def label_scorer(c: Components) -> Scorer:
    """:class:`~medsae.interpret.scorers.LabelScorer` (offline, the labels a description names)."""
    return LabelScorer(c.inputs.labels)


def llm_scorer(c: Components) -> Scorer:
    """:class:`~medsae.interpret.scorers.LLMScorer` (the endpoint judges slices)."""
    return LLMScorer(
        c.need_client("the llm scorer"),
        c.inputs.table,
        c.inputs.labels,
        c.images,
        batch=c.config.detection_batch,
        send_images=c.config.llm.send_images,
        image_size=c.config.llm.image_size,
        seed=c.config.seed,
    )


DESCRIBERS: dict[str, Callable[[Components], Describer]] = {
    "offline": offline_describer,
    "llm": llm_describer,
}
SCORERS: dict[str, Callable[[Components], Scorer]] = {
    "embedding": embedding_scorer,
    "labels": label_scorer,
    "llm": llm_scorer,
}
NEEDS_CLIENT = frozenset({"llm"})
"""Describer and scorer names that need the endpoint client."""

SCORER_METHODS = {
    "embedding": "offline text-embedding scorer (all-MiniLM-L6-v2): description vs the slices' "
    "label and metadata phrases; threshold chosen on the training split, scores on held-out splits",
    "labels": "label scorer: share of the labels named by the description that a held-out slice "
    "carries; threshold chosen on the training split",
    "llm": "LLM/VLM scorer: the endpoint judges held-out slices (images and metadata) against the description",
}
"""One line per scorer, recorded in ``scores.json``."""


def build_describer(name: str, components: Components) -> Describer:
    """The describer registered as ``name`` (ValueError listing the names on a bad one)."""
    if name not in DESCRIBERS:
        raise ValueError(f"unknown describer {name!r}; known: {sorted(DESCRIBERS)}")
    return DESCRIBERS[name](components)


def build_scorer(name: str, components: Components) -> Scorer:
    """The scorer registered as ``name`` (ValueError listing the names on a bad one)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(SCORERS)}")
    return SCORERS[name](components)


def make_client(config: InterpretConfig, cache_dir: Path | None) -> LLMClient:
    """The endpoint client from ``config.llm`` (unset fields from the environment)."""
    c = config.llm
    return LLMClient.from_env(
        c.base_url,
        c.model,
        c.api_key.get_secret_value() if c.api_key else None,
        embedding_model=c.embedding_model,
        timeout_s=c.timeout_s,
        max_retries=c.max_retries,
        backoff_s=c.backoff_s,
        max_backoff_s=c.max_backoff_s,
        invalid_retries=c.invalid_retries,
        concurrency=c.concurrency,
        cache_dir=cache_dir if c.cache else None,
        temperature=c.temperature,
        max_tokens=c.max_tokens,
    )
