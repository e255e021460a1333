"""A training grid expanded into one SAE config per valid combination, and run names.

Every (architecture, dictionary ladder, k ladder) combination of a :class:`TrainConfig` asks
the architecture's class which fields it makes (:meth:`SparseAutoencoder.grid_fields`:
its level rule and k rule), adds the train table's fields that the architecture's config
declares (``level_weights``, ``l1_coefficient``, AuxK and threshold options, ...), then the
architecture's own ``arch_options``, and validates the result as that config class. An
architecture's ``arch_options`` may set its own ``levels`` and ``k`` ladders (e.g. baseline
dictionaries fitted at one size only).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from medsae.sae.base import GridSkip
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.registry import get

GRID_FIELDS = frozenset({"arch", "levels", "k", "arch_options", "seeds", "seeds_for"})
SEED_SUFFIX = re.compile(r"^(?P<config>.+)_s(?P<seed>\d+)$")
"""A run of a configuration's extra seed: ``<config run name>_s<seed>``."""


def seed_of(run: str) -> tuple[str, int | None]:
    """``(configuration, seed)`` of a run name: ``("topk_D512_K16", 2)`` for
    ``topk_D512_K16_s2``; the seed is None for a configuration's first (unsuffixed) run."""
    m = SEED_SUFFIX.match(run)
    return (m["config"], int(m["seed"])) if m else (run, None)


def run_name(cfg: SAEConfig) -> str:
    """The run name, deterministic from the config: ``<arch>_D<levels>[_<name part>]``.

    ``matryoshka-perlevel_D128-512-2048-8192_K5-10-20-40``, ``matryoshka_D128-512_K40``,
    ``topk_D8192_K40``, ``relu_D8192_L1-0.001``.
    """
    d = "D" + "-".join(str(m) for m in cfg.levels)
    part = get(cfg.arch).name_part(cfg)
    return f"{cfg.arch}_{d}_{part}" if part else f"{cfg.arch}_{d}"


def _reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
    return str(e).splitlines()[-1]


def expand_grid(
    cfg: TrainConfig, d_in: int, encoder: str = ""
) -> tuple[list[SAEConfig], list[dict[str, str]]]:
    """The SAEs of a grid and the skipped combinations (each ``{"combo", "reason"}``).

    Duplicate run names (e.g. two k ladders ending with the same k for a flat architecture)
    are trained once. With ``seeds``, each configuration (of ``seeds_for``) gives one run per
    seed, the extra ones named ``<run>_s<seed>`` (:func:`seed_of`).
    """
    runs: list[SAEConfig] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    shared = {
        name: getattr(cfg, name)
        for name in type(cfg).model_fields
        if name not in GRID_FIELDS and getattr(cfg, name) is not None
    }
    for arch in cfg.arch:
        cls = get(arch)
        declared = cls.config_class.model_fields
        common: dict[str, Any] = {k: v for k, v in shared.items() if k in declared}
        options = dict(cfg.arch_options.get(arch, {}))
        ladders, k_ladders = options.pop("levels", cfg.levels), options.pop("k", cfg.k)
        common.update(options)
        for levels in ladders:
            for ks in k_ladders:
                combo = f"{arch} levels={levels} k={ks}"
                try:
                    fields = cls.grid_fields(levels, ks)
                    sae = cls.config_class.model_validate(
                        {**common, **fields, "arch": arch, "d_in": d_in, "encoder": encoder}
                    )
                except (GridSkip, ValueError) as e:
                    skipped.append({"combo": combo, "reason": _reason(e)})
                    continue
                name = run_name(sae)
                if name in seen:
                    continue
                seen.add(name)
                for seed in _seeds(cfg, arch, name):
                    runs.append(
                        sae.model_copy(update={"run": name if seed is None else f"{name}_s{seed}"})
                    )
    return runs, skipped


def _seeds(cfg: TrainConfig, arch: str, name: str) -> list[int | None]:
    """The seed suffixes of one configuration's runs (None: its first, unsuffixed run)."""
    if not cfg.seeds or (cfg.seeds_for is not None and not {arch, name} & set(cfg.seeds_for)):
        return [None]
    return [None, *cfg.seeds[1:]]
