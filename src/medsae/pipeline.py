"""The whole pipeline: every stage in order, from one :class:`~medsae.config.PipelineConfig`.

Each section of the config becomes the stage's own config class (``[prepare]`` ->
``PrepareConfig``, ``[train]`` -> ``TrainConfig``, ...). Stages run through their public
functions, so finished stages are skipped (their manifests match) and stale ones rebuilt.

Keys that belong to the pipeline rather than to a stage's config:

* ``[encode] encoders = [...]``: encode with several encoders (each an ``EncodeConfig``
  with that ``encoder``); the other keys of the section apply to each.
* ``[interpret] runs`` and ``[index] runs``: ``"best"`` (default: the best run of the
  ranking) or ``"all"``.
* ``[train] tokens = {...}``: settings of the train stage for token stores (``[encode]
  tokens = true`` writes ``WS/embeddings/<encoder>-tokens/``), over the section's own
  (e.g. one architecture and a few epochs: a token store has a grid's worth of rows per slice).

After the stages, ``WS/summary.json`` collects the headline figures from the artifacts
(never recomputed): ``best_config``, ``r2``, ``l0``, ``alive_fraction``, ``recovery_at_10``
(shared: at most 10 latents per task; ``recovery_at_10_per_class`` beside it),
``detection_balanced_accuracy``, ``text_precision_at_10``, ``fingerprint_agreement``,
``pointing_game`` and ``energy_in_mask`` (means over the described features with a
structure to point at, beside their Gaussian-blob ``*_baseline``). With several seeds of the
chosen configuration every figure is their mean, with ``<figure>_sd`` (the sample standard
deviation over the seeds that have it), ``n_seeds`` and ``seed_runs``, and ``seed_stability`` (MCC and the fractions of alive
latents matched at |cosine| >= 0.9 and 0.7, from the interpret stage); ``baselines`` holds
the same figures of every baseline dictionary (``{run: {figure: value}}``).
For a token SAE, ``organ_map`` (organ rediscovery mAP of ``token_sae``, ``attribution``,
``pca``, ``kmeans`` and ``chance``) with ``pointing_game_token``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.text import Text

from medsae.config import (
    PipelineConfig,
    build_config,
    merge_overrides,
    parse_override,
    read_config_file,
    resolve_paths,
)
from medsae.data.io import PHANTOM_MARKER
from medsae.errors import InputError, MedsaeError
from medsae.evaluate.io import best_run, read_ranking
from medsae.evaluate.seeds import config_of, is_baseline, seed_group, seed_summary
from medsae.interpret.io import SCORES
from medsae.progress import console
from medsae.retrieval.io import FINGERPRINT_EVAL, TEXT_RETRIEVAL
from medsae.sae.io import trained_runs
from medsae.workspace import (
    MANIFEST,
    SUMMARY,
    StageOutcome,
    Workspace,
    build_lock,
    read_manifest,
    write_json_atomic,
)


@dataclass(frozen=True)
class Stage:
    """One row of the pipeline: where a stage's config and function live, and what it runs on.

    ``scope`` says how the function is called:

    * ``workspace``: ``fn(ws, cfg, force=)`` once;
    * ``encoders``: once per configured encoder (``[encode] encoders = [...]``), same call;
    * ``encoder``: ``fn(ws, encoder, cfg, force=)`` for every encoder with embeddings;
    * ``encoder_runs``: ``fn(ws, encoder, None, cfg, force=)``, every run of each encoder;
    * ``run``: ``fn(ws, encoder, run, cfg, force=)`` for every trained run;
    * ``chosen_runs``: the same for the section's ``runs`` (``"best"``, the default, is
      :func:`medsae.evaluate.io.best_run`; ``"all"`` every trained run).
    """

    name: str
    config: tuple[str, str]
    function: tuple[str, str]
    scope: Literal["workspace", "encoders", "encoder", "encoder_runs", "run", "chosen_runs"]


PIPELINE: tuple[Stage, ...] = (
    Stage("prepare", ("medsae.data", "PrepareConfig"), ("medsae.data", "prepare"), "workspace"),
    Stage("split", ("medsae.data", "SplitConfig"), ("medsae.data", "split"), "workspace"),
    Stage(
        "encode", ("medsae.encode.config", "EncodeConfig"), ("medsae.encode", "encode"), "encoders"
    ),
    Stage("train", ("medsae.sae.config", "TrainConfig"), ("medsae.sae", "train"), "encoder"),
    Stage(
        "codes", ("medsae.sae.config", "CodesConfig"), ("medsae.sae", "write_codes"), "encoder_runs"
    ),
    Stage(
        "evaluate",
        ("medsae.evaluate.config", "EvaluateConfig"),
        ("medsae.evaluate.stage", "evaluate"),
        "run",
    ),
    Stage(
        "rank", ("medsae.evaluate.config", "RankConfig"), ("medsae.evaluate", "rank"), "workspace"
    ),
    Stage(
        "interpret",
        ("medsae.interpret.config", "InterpretConfig"),
        ("medsae.interpret", "interpret"),
        "chosen_runs",
    ),
    Stage(
        "index",
        ("medsae.retrieval.config", "IndexConfig"),
        ("medsae.retrieval.index", "build_index"),
        "chosen_runs",
    ),
    Stage(
        "report", ("medsae.report", "ReportConfig"), ("medsae.report", "build_report"), "workspace"
    ),
)
STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE)

SUMMARY_FILE = SUMMARY
SUMMARY_KEYS = (
    "best_config",
    "r2",
    "l0",
    "alive_fraction",
    "recovery_at_10",
    "detection_balanced_accuracy",
    "text_precision_at_10",
    "fingerprint_agreement",
    "pointing_game",
    "energy_in_mask",
)


EVAL_DETAIL_KEYS = (
    "r2_uniform",
    "r2_grand_mean_val_paper",
    "recovery_at_10_per_class",
    "recovery_at_10_paper_tasks",
    "recovery_at_10_per_class_paper_tasks",
    "auc_at_10_mean",
    "mean_n_features",
)
"""Figures of the chosen run's evaluation copied into the summary beside the headline ones,
on the same (test) split; Table 1 chose the run on their validation twins (the evaluation
summary's ``selection`` block), never on these."""


class StageUnavailable(MedsaeError):
    """A stage's implementation is not importable in this installation."""


def _function(module: str, name: str, stage: str) -> Callable[..., Any]:
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise StageUnavailable(f"stage {stage!r}: {module}.{name} is not available ({e})") from e
    return fn  # type: ignore[no-any-return]


def _config(module: str, name: str, data: dict[str, Any], source: str) -> Any:
    cls: Any = _function(module, name, source.split(".")[0])
    return build_config(cls, data, source)


@dataclass
class PipelineRun:
    """What one pipeline invocation did: outcomes and wall-clock seconds per stage."""

    workspace: Workspace
    outcomes: dict[str, list[StageOutcome]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] | None = None

    def stage_seconds(self) -> dict[str, float]:
        """Build time of each stage's artifacts as recorded in their manifests."""
        out: dict[str, float] = {}
        for stage, outcomes in self.outcomes.items():
            total = 0.0
            for o in outcomes:
                total += float((o.manifest.get("timings") or {}).get("seconds") or 0.0)
            out[stage] = round(total, 3)
        return out


class Pipeline:
    """Runs the stages of a :class:`PipelineConfig` on one workspace."""

    def __init__(
        self, config: PipelineConfig, workspace: str | Path | None = None, force: bool = False
    ) -> None:
        root = workspace or config.workspace
        if not root:
            raise InputError(
                "workspace", "no workspace: set `workspace = ...` in the config or pass --workspace"
            )
        if config.device is not None:  # asked for CUDA without one: said before any stage
            from medsae.device import resolve_device

            resolve_device(config.device, "device")
        self.config = config
        self.ws = Workspace(root).ensure()
        self.force = force
        self.result = PipelineRun(self.ws)
        self.encoders: list[str] = []
        self._cpu0 = time.process_time()

    # ------------------------------------------------------------------ helpers
    def _section(self, name: str) -> dict[str, Any]:
        return dict(getattr(self.config, name) or {})

    def stage_section(self, stage: Stage) -> dict[str, Any]:
        """The config section of ``stage``, with the pipeline's ``device`` unless the
        section sets its own (stages whose config has a device field)."""
        section = self._section(stage.name)
        device = self.config.device
        if device is not None and "device" in getattr(
            _function(*stage.config, stage.name), "model_fields", {}
        ):
            section.setdefault("device", device)
        return section

    def _record(
        self, stage: str, outcomes: StageOutcome | Sequence[StageOutcome] | None, t0: float
    ) -> None:
        items = (
            []
            if outcomes is None
            else [outcomes]
            if isinstance(outcomes, StageOutcome)
            else list(outcomes)
        )
        self.result.outcomes.setdefault(stage, []).extend(items)
        self.result.seconds[stage] = round(
            self.result.seconds.get(stage, 0.0) + time.perf_counter() - t0, 3
        )
        self.result.cpu_seconds[stage] = round(
            self.result.cpu_seconds.get(stage, 0.0) + time.process_time() - self._cpu0, 3
        )
        self._cpu0 = time.process_time()

    def _encoder_names(self) -> list[str]:
        if self.encoders:
            return self.encoders
        return self.ws.encoders()

    def _chosen_runs(self, section: dict[str, Any]) -> list[tuple[str, str]]:
        which = section.pop("runs", "best")
        if which not in ("best", "all"):
            raise InputError("runs", f"expected 'best' or 'all', got {which!r}")
        all_runs = [(e, r) for e in self._encoder_names() for r in trained_runs(self.ws, e)]
        if which == "all":
            return all_runs
        best = best_run(self.ws)
        return [best] if best is not None else all_runs[:1]

    def _configs(self, stage: Stage, section: dict[str, Any]) -> list[tuple[Any, Any]]:
        """``(config, target)`` pairs of one stage; the target is what the call runs on."""
        module, cls = stage.config
        if stage.scope == "encoders":
            names = section.pop("encoders", None) or [None]
            return [
                (_config(module, cls, {**section, "encoder": n}, f"{stage.name}.{n}"), None)
                if n
                else (_config(module, cls, section, stage.name), None)
                for n in names
            ]
        targets: list[Any] = [None]
        token_settings = section.pop("tokens", None) if stage.scope == "encoder" else None
        if stage.scope in ("encoder", "encoder_runs"):
            targets = self._encoder_names()
        if token_settings:  # a token store trains with the section's token settings
            from medsae.encode.tokens import is_token_store

            return [
                (
                    _config(module, cls, {**section, **token_settings}, f"{stage.name}.tokens")
                    if is_token_store(self.ws.embeddings(t))
                    else _config(module, cls, section, stage.name),
                    t,
                )
                for t in targets
            ]
        elif stage.scope == "run":
            targets = [(e, r) for e in self._encoder_names() for r in trained_runs(self.ws, e)]
        elif stage.scope == "chosen_runs":
            targets = self._chosen_runs(section)
        cfg = _config(module, cls, section, stage.name)
        return [(cfg, target) for target in targets]

    def run_stage(self, stage: Stage) -> None:
        """Run one row of :data:`PIPELINE` on every target its scope names."""
        fn = _function(*stage.function, stage.name)
        for cfg, target in self._configs(stage, self.stage_section(stage)):
            t0 = time.perf_counter()
            if stage.scope in ("workspace", "encoders"):
                outcome = fn(self.ws, cfg, force=self.force)
            elif stage.scope == "encoder":
                outcome = fn(self.ws, target, cfg, force=self.force)
            elif stage.scope == "encoder_runs":
                outcome = fn(self.ws, target, None, cfg, force=self.force)
            else:
                outcome = fn(self.ws, *target, cfg, force=self.force)
            self._record(stage.name, outcome, t0)
            if stage.scope == "encoders":
                self.encoders.append(outcome.path.name)
                if getattr(cfg, "tokens", False):
                    from medsae.encode.tokens import token_store_name

                    self.encoders.append(token_store_name(outcome.path.name))

    # ------------------------------------------------------------------ all
    def run(self, stages: Sequence[str] | None = None) -> PipelineRun:
        """Run ``stages`` (default: all, in order), then write the summary when the run has
        reached its end."""
        chosen = list(stages or STAGES)
        unknown = [s for s in chosen if s not in STAGES]
        if unknown:
            raise InputError("stages", f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
        for stage in STAGES:
            if stage not in chosen:
                continue
            if stage == "report":
                # the report shows the summary: write it first
                self.result.summary = write_summary(self.ws)
            console.rule(Text(stage, style="bold"))
            self._cpu0 = time.process_time()
            self.run_stage(PIPELINE[STAGES.index(stage)])
        if "report" not in chosen and {"evaluate", "rank"} & set(chosen):
            self.result.summary = write_summary(self.ws)
        return self.result


def run_pipeline(
    config: PipelineConfig,
    workspace: str | Path | None = None,
    force: bool = False,
    stages: Sequence[str] | None = None,
) -> PipelineRun:
    """Run the configured stages in order (see :class:`Pipeline`)."""
    return Pipeline(config, workspace, force).run(stages)


def _read(path: Path) -> dict[str, Any]:
    from medsae.artifacts import read_json_optional

    return read_json_optional(path) or {}


def collect_summary(
    ws: Workspace, encoder: str | None = None, run: str | None = None
) -> dict[str, Any]:
    """The headline figures of a workspace, read from its artifacts (missing ones are None).

    * ``r2``, ``l0``, ``alive_fraction``, ``recovery_at_10``: ``WS/eval/<enc>/<run>/summary.json``
    * ``detection_balanced_accuracy``: ``WS/features/<enc>/<run>/scores.json`` (median over
      scored features)
    * ``text_precision_at_10`` (the query suite's report half) and
      ``text_precision_at_10_achievable`` (an oracle reading the labels, same queries):
      ``WS/index/<enc>/<run>/text_retrieval.json``
    * ``fingerprint_agreement``: ``WS/index/<enc>/<run>/fingerprint_eval.json``
    * ``pointing_game``, ``energy_in_mask`` (and ``*_baseline``): the ``localisation`` block of
      ``WS/features/<enc>/<run>/scores.json``
    """
    if encoder is None or run is None:
        found = best_run(ws)
        if found is None:
            runs = [(e, r) for e in ws.encoders() for r in trained_runs(ws, e)]
            found = runs[0] if runs else None
        if found is not None:
            encoder, run = found
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    if encoder is None or run is None:
        return summary
    summary["best_config"] = f"{encoder}/{run}"
    summary["encoder"], summary["run"] = encoder, run
    summary.update(run_figures(ws, encoder, run))
    summary["selection_split"] = read_ranking(ws.ranking).get("selection_split")
    names = trained_runs(ws, encoder)
    group = seed_group(run, names) or [run]
    summary.update(seed_summary({r: run_figures(ws, encoder, r) for r in group}))
    summary["seed_stability"] = _read(ws.features(encoder, run) / SCORES).get("seed_stability")
    summary["baselines"] = {
        r: run_figures(ws, encoder, r) for r in names if is_baseline(r) and config_of(r) == r
    }
    summary.update(organ_summary(ws))
    return summary


def run_figures(ws: Workspace, encoder: str, run: str) -> dict[str, Any]:
    """The headline figures of one run, read from its artifacts (missing ones are None; see
    :func:`collect_summary`)."""
    out: dict[str, Any] = {}
    ev = _read(ws.eval(encoder, run) / SUMMARY)
    for key in ("r2", "l0", "alive_fraction", "recovery_at_10", "monosemanticity"):
        out[key] = ev.get(key)
    for key in EVAL_DETAIL_KEYS:
        out[key] = ev.get(key)
    # the paper's Figure 2G is a validation figure: its twin from the selection block
    out["auc_at_10_mean_val"] = (ev.get("selection") or {}).get("auc_at_10_mean")
    scores = _read(ws.features(encoder, run) / SCORES)
    dba = scores.get("detection_balanced_accuracy")
    out["detection_balanced_accuracy"] = dba.get("median") if isinstance(dba, dict) else dba
    out["ranking_top2"] = (scores.get("ranking") or {}).get("top2")
    localisation = scores.get("localisation") or {}
    for key in ("pointing_game", "energy_in_mask"):
        out[key] = localisation.get(key)
        out[f"{key}_baseline"] = localisation.get(f"{key}_baseline")
    text = _read(ws.index(encoder, run) / TEXT_RETRIEVAL)
    out["text_precision_at_10"] = text.get("text_precision_at_10")
    out["text_precision_at_10_achievable"] = text.get("text_precision_at_10_achievable")
    out["fingerprint_agreement"] = _read(ws.index(encoder, run) / FINGERPRINT_EVAL).get(
        "fingerprint_agreement"
    )
    return out


def organ_summary(ws: Workspace) -> dict[str, Any]:
    """``organ_map`` (mAP per method) and ``pointing_game_token`` of the workspace's token
    SAE (:func:`medsae.evaluate.io.organ_runs`, the first); both None without one."""
    from medsae.evaluate.io import ORGANS, organ_runs

    out: dict[str, Any] = {"organ_map": None, "pointing_game_token": None}
    runs = organ_runs(ws)
    if not runs:
        return out
    enc, run = runs[0]
    organs = _read(ws.eval(enc, run) / ORGANS)
    out["organ_run"] = f"{enc}/{run}"
    if organs.get("status") != "computed":
        return {**out, "organ_map_status": organs.get("reason")}
    out["organ_map"] = {
        m: (organs.get(m) or {}).get("map")
        for m in ("token_sae", "attribution", "pca", "kmeans", "chance")
    }
    out["pointing_game_token"] = (organs.get("token_sae") or {}).get("pointing_game")
    return out


def write_summary(ws: Workspace) -> dict[str, Any]:
    """Write ``WS/summary.json`` (see :func:`collect_summary`) with per-stage build times."""
    summary = collect_summary(ws)
    timings: dict[str, float] = {}
    for p in sorted(ws.root.rglob(MANIFEST)):
        rel = p.parent.relative_to(ws.root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        m = read_manifest(p.parent) or {}
        stage = str(m.get("stage", rel.parts[0]))
        if stage == "report":  # the report reads this file: its own time would make it stale
            continue
        timings[stage] = round(
            timings.get(stage, 0.0) + float((m.get("timings") or {}).get("seconds") or 0.0), 3
        )
    summary["stage_seconds"] = timings
    write_json_atomic(ws.root / SUMMARY_FILE, summary)
    return summary


# ---------------------------------------------------------------------- demo
DEMO_PHANTOM: dict[str, Any] = {
    # Many small subjects rather than few large ones: retrieval returns one slice per
    # subject, so the gallery needs several subjects of each modality and study type (with
    # 32 + 32 subjects a CT head query had one CT head subject to find; fingerprint
    # agreement on modality / plane was 0.85 / 0.87 there, 0.94 / 0.93 with 64 + 64 and
    # 0.970 / 0.965 with 96 + 96 at about the same number of slices).
    "ct_subjects": 96,
    "mri_subjects": 96,
    "size_xy": 64,
    "n_slices": 80,
    "seed": 0,
}
DEMO_BASELINES = ("pca", "kmeans", "ica", "random")
"""The baseline dictionaries the demo fits (``dictionary`` learning does not fit its time)."""
DEMO_CONFIG: dict[str, Any] = {
    "prepare": {
        "planes": ["axial", "coronal", "sagittal"],
        "step": 18,
        "size": 128,
        "label_maps": True,
    },
    "split": {},
    "encode": {
        "encoder": "efficientnet-lite0",
        "batch_size": 32,
        "options": {"input_size": 128, "pooling": "multiscale"},
        # tokens: stages 3-5 (native grids 16, 8, 8: none finer than upsampled) on 8 x 8
        "tokens": True,
        "token_grid": 8,
        "token_parts": [2, 3, 4],
    },
    "train": {
        # the SAEs, and baseline dictionaries at the selected SAE's size and k (L0)
        "arch": ["matryoshka", "topk", *DEMO_BASELINES],
        "levels": [[32, 128, 512], [64, 256, 1024]],
        "k": [[4, 8, 16]],
        "arch_options": {b: {"levels": [[512]], "k": [[16]]} for b in DEMO_BASELINES},
        # the configuration the ranking selects, trained with three seeds (the rest once)
        "seeds": [0, 1, 2],
        "seeds_for": ["matryoshka_D32-128-512_K16"],
        "epochs": 60,
        "batch_size": 256,
        "val_every_epochs": 5,
        "checkpoint_every_seconds": 30,  # a killed demo loses at most half a minute
        # one token SAE beside the grid: 64 tokens per slice, so a few epochs
        "tokens": {
            "arch": ["matryoshka"],
            "levels": [[32, 128, 512]],
            "k": [[4, 8, 16]],
            "epochs": 3,
            "val_every_epochs": 1,
            "seeds": [0],  # one seed: the grid's seeds are for the slice SAE
        },
    },
    "codes": {},
    "evaluate": {
        "max_iter": 60,
        "recovery_ns": [1, 2, 5, 10, 20],
        "recovery_methods": ["mean_diff"],
        "headline_method": "mean_diff",
        "mono_splits": ["val", "test"],  # the demo has few val subjects
        "mono_top_n": 5,
        "organ_max_slices": 128,  # organ rediscovery: 128 validation, 128 test slices
    },
    "rank": {},
    "interpret": {"describer": "offline"},
    "index": {},
    "report": {"n_features": 24},
}


def demo_config(
    workspace: str | Path, **overrides: dict[str, Any]
) -> tuple[PipelineConfig, dict[str, Any]]:
    """The demo's pipeline config and phantom settings (``overrides`` per section, merged)."""
    from medsae.config import merge_overrides

    data = merge_overrides(
        {"workspace": str(workspace), **DEMO_CONFIG},
        {k: v for k, v in overrides.items() if k != "phantom"},
    )
    phantom = {**DEMO_PHANTOM, **(overrides.get("phantom") or {})}
    data["prepare"] = {
        **data["prepare"],
        "source": str(Path(workspace).expanduser().resolve() / "phantom-data"),
    }
    return build_config(PipelineConfig, data, "demo"), phantom


def make_demo_data(ws: Workspace, phantom: dict[str, Any]) -> Path:
    """Write the phantom dataset into ``WS/phantom-data`` unless the same one is there already."""
    out = ws.root / "phantom-data"
    cfg = _config("medsae.data", "PhantomConfig", phantom, "phantom")
    marker = out / PHANTOM_MARKER
    wanted = cfg.model_dump(mode="json")
    if marker.is_file() and _read(marker) == wanted:
        console.print(f"phantom: up to date, skipped ({out})", style="dim")
        return out
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out, "phantom"):  # a second demo on this workspace is refused by name
        _function("medsae.data", "make_phantom", "phantom")(out, cfg)
        write_json_atomic(marker, wanted)
    console.print(f"phantom: wrote {out} in {time.perf_counter() - t0:.1f} s", style="green")
    return out


def run_demo(
    workspace: str | Path, force: bool = False, **overrides: dict[str, Any]
) -> PipelineRun:
    """The demo: phantom data, then every stage with the demo's small sizes, then the summary."""
    config, phantom = demo_config(workspace, **overrides)
    pipeline = Pipeline(config, workspace, force)
    t0 = time.perf_counter()
    make_demo_data(pipeline.ws, phantom)
    pipeline.result.seconds["phantom"] = round(time.perf_counter() - t0, 3)
    return pipeline.run()


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """The pipeline config of a file, ``--set`` overrides applied.

    ``workspace`` and the path fields of the stage tables (``[prepare] source``) are read
    relative to the file, so that the file means the same from any working directory;
    overrides are taken as given.
    """
    data = resolve_file_paths(read_config_file(path), Path(path).expanduser().resolve().parent)
    for item in overrides or []:
        data = merge_overrides(data, parse_override(item))
    return build_config(PipelineConfig, data, path)


def resolve_file_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A pipeline file's ``workspace`` and stage path fields made absolute against ``base``."""
    out = dict(data)
    if isinstance(out.get("workspace"), str):
        out["workspace"] = str((base / Path(out["workspace"]).expanduser()).resolve())
    for stage in PIPELINE:
        section = out.get(stage.name)
        if isinstance(section, dict):
            model = getattr(importlib.import_module(stage.config[0]), stage.config[1])
            out[stage.name] = resolve_paths(model, section, base)
    return out
