"""The whole pipeline: every stage in order, from one :class:`~medsae.config.PipelineConfig`.

Each section of the config becomes the stage's own config class (``[prepare]`` ->
``PrepareConfig``, ``[train]`` -> ``TrainConfig``, ...). Stages run through their public
functions, so finished stages are skipped (their manifests match) and stale ones rebuilt.

Keys that belong to the pipeline rather than to a stage's config:

* ``[encode] encoders = [...]``: encode with several encoders (each an ``EncodeConfig``
  with that ``encoder``); the other keys of the section apply to each.
* ``[interpret] runs`` and ``[index] runs``: ``"best"`` (default: the best run of the
  ranking) or ``"all"``.

After the stages, ``WS/summary.json`` collects the headline figures from the artifacts
(never recomputed): ``best_config``, ``r2``, ``l0``, ``alive_fraction``, ``recovery_at_10``,
``detection_balanced_accuracy``, ``text_precision_at_10``, ``fingerprint_agreement``.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsae.config import PipelineConfig, build_config
from medsae.errors import InputError, MedsaeError
from medsae.progress import console
from medsae.workspace import StageOutcome, Workspace, read_manifest, write_json_atomic

STAGES: tuple[str, ...] = (
    "prepare",
    "split",
    "encode",
    "train",
    "codes",
    "evaluate",
    "rank",
    "interpret",
    "index",
    "report",
)
SUMMARY_FILE = "summary.json"
SUMMARY_KEYS = (
    "best_config",
    "r2",
    "l0",
    "alive_fraction",
    "recovery_at_10",
    "detection_balanced_accuracy",
    "text_precision_at_10",
    "fingerprint_agreement",
)


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
        self.config = config
        self.ws = Workspace(root).ensure()
        self.force = force
        self.result = PipelineRun(self.ws)
        self.encoders: list[str] = []
        self._cpu0 = time.process_time()

    # ------------------------------------------------------------------ helpers
    def _section(self, name: str) -> dict[str, Any]:
        return dict(getattr(self.config, name) or {})

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

    def _selected_runs(self, section: dict[str, Any]) -> list[tuple[str, str]]:
        which = section.pop("runs", "best")
        if which not in ("best", "all"):
            raise InputError("runs", f"expected 'best' or 'all', got {which!r}")
        all_runs = [(e, r) for e in self._encoder_names() for r in self.ws.runs(e)]
        if which == "all":
            return all_runs
        best = best_run(self.ws)
        if best is not None:
            return [best]
        return all_runs[:1]

    # ------------------------------------------------------------------ stages
    def prepare(self) -> None:
        cfg = _config("medsae.data", "PrepareConfig", self._section("prepare"), "prepare")
        t0 = time.perf_counter()
        self._record(
            "prepare",
            _function("medsae.data", "prepare", "prepare")(self.ws, cfg, force=self.force),
            t0,
        )

    def split(self) -> None:
        cfg = _config("medsae.data", "SplitConfig", self._section("split"), "split")
        t0 = time.perf_counter()
        self._record(
            "split", _function("medsae.data", "split", "split")(self.ws, cfg, force=self.force), t0
        )

    def encode(self) -> None:
        section = self._section("encode")
        names = section.pop("encoders", None)
        configs = (
            [
                _config(
                    "medsae.encode.config", "EncodeConfig", {**section, "encoder": n}, f"encode.{n}"
                )
                for n in names
            ]
            if names
            else [_config("medsae.encode.config", "EncodeConfig", section, "encode")]
        )
        fn = _function("medsae.encode", "encode", "encode")
        for cfg in configs:
            t0 = time.perf_counter()
            outcome = fn(self.ws, cfg, force=self.force)
            self._record("encode", outcome, t0)
            self.encoders.append(outcome.path.name)

    def train(self) -> None:
        cfg = _config("medsae.sae.config", "TrainConfig", self._section("train"), "train")
        fn = _function("medsae.sae", "train", "train")
        for enc in self._encoder_names():
            t0 = time.perf_counter()
            self._record("train", fn(self.ws, enc, cfg, force=self.force), t0)

    def codes(self) -> None:
        cfg = _config("medsae.sae.config", "CodesConfig", self._section("codes"), "codes")
        fn = _function("medsae.sae", "write_codes", "codes")
        for enc in self._encoder_names():
            t0 = time.perf_counter()
            self._record("codes", fn(self.ws, enc, None, cfg, force=self.force), t0)

    def evaluate(self) -> None:
        cfg = _config(
            "medsae.evaluate.config", "EvaluateConfig", self._section("evaluate"), "evaluate"
        )
        fn = _function("medsae.evaluate.stage", "evaluate", "evaluate")
        for enc in self._encoder_names():
            for run in self.ws.runs(enc):
                t0 = time.perf_counter()
                self._record("evaluate", fn(self.ws, enc, run, cfg, force=self.force), t0)

    def rank(self) -> None:
        cfg = _config("medsae.evaluate.config", "RankConfig", self._section("rank"), "rank")
        fn = _function("medsae.evaluate", "rank", "rank")
        t0 = time.perf_counter()
        self._record("rank", fn(self.ws, cfg, force=self.force), t0)

    def interpret(self) -> None:
        section = self._section("interpret")
        runs = self._selected_runs(section)
        cfg = _config("medsae.interpret.config", "InterpretConfig", section, "interpret")
        fn = _function("medsae.interpret", "interpret", "interpret")
        for enc, run in runs:
            t0 = time.perf_counter()
            self._record("interpret", fn(self.ws, enc, run, cfg, force=self.force), t0)

    def index(self) -> None:
        section = self._section("index")
        runs = self._selected_runs(section)
        cfg = _config("medsae.retrieval.config", "IndexConfig", section, "index")
        fn = _function("medsae.retrieval.index", "build_index", "index")
        for enc, run in runs:
            t0 = time.perf_counter()
            self._record("index", fn(self.ws, enc, run, cfg, force=self.force), t0)

    def report(self) -> None:
        from medsae.report import ReportConfig, build_report

        cfg = build_config(ReportConfig, self._section("report"), "report")
        t0 = time.perf_counter()
        self._record("report", build_report(self.ws, cfg, force=self.force), t0)

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
            console.rule(f"[bold]{stage}")
            self._cpu0 = time.process_time()
            getattr(self, stage)()
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


def best_run(ws: Workspace) -> tuple[str, str] | None:
    """The best (encoder, run) of ``WS/ranking/ranking.json``, if it names a run that exists."""
    p = ws.ranking / "ranking.json"
    try:
        best = (json.loads(p.read_text()) or {}).get("best") or {}
    except (OSError, json.JSONDecodeError):
        return None
    enc, run = best.get("encoder"), best.get("run")
    if enc and run and (ws.sae(enc, run) / "cfg.json").is_file():
        return str(enc), str(run)
    if enc and run and (ws.codes(enc, run) / "codes.json").is_file():
        return str(enc), str(run)
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def collect_summary(
    ws: Workspace, encoder: str | None = None, run: str | None = None
) -> dict[str, Any]:
    """The headline figures of a workspace, read from its artifacts (missing ones are None).

    * ``r2``, ``l0``, ``alive_fraction``, ``recovery_at_10``: ``WS/eval/<enc>/<run>/summary.json``
    * ``detection_balanced_accuracy``: ``WS/features/<enc>/<run>/scores.json`` (median over
      scored features)
    * ``text_precision_at_10``: ``WS/index/<enc>/<run>/text_retrieval.json``
    * ``fingerprint_agreement``: ``WS/index/<enc>/<run>/fingerprint_eval.json``
    """
    if encoder is None or run is None:
        found = best_run(ws)
        if found is None:
            runs = [(e, r) for e in ws.encoders() for r in ws.runs(e)]
            found = runs[0] if runs else None
        if found is not None:
            encoder, run = found
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    if encoder is None or run is None:
        return summary
    summary["best_config"] = f"{encoder}/{run}"
    summary["encoder"], summary["run"] = encoder, run
    ev = _read(ws.eval(encoder, run) / "summary.json")
    for key in ("r2", "l0", "alive_fraction", "recovery_at_10"):
        summary[key] = ev.get(key)
    scores = _read(ws.features(encoder, run) / "scores.json")
    dba = scores.get("detection_balanced_accuracy")
    summary["detection_balanced_accuracy"] = dba.get("median") if isinstance(dba, dict) else dba
    summary["text_precision_at_10"] = _read(ws.index(encoder, run) / "text_retrieval.json").get(
        "text_precision_at_10"
    )
    summary["fingerprint_agreement"] = _read(ws.index(encoder, run) / "fingerprint_eval.json").get(
        "fingerprint_agreement"
    )
    return summary


def write_summary(ws: Workspace) -> dict[str, Any]:
    """Write ``WS/summary.json`` (see :func:`collect_summary`) with per-stage build times."""
    summary = collect_summary(ws)
    timings: dict[str, float] = {}
    for p in sorted(ws.root.rglob("manifest.json")):
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
DEMO_CONFIG: dict[str, Any] = {
    "prepare": {"planes": ["axial", "coronal", "sagittal"], "step": 18, "size": 128},
    "split": {},
    "encode": {
        "encoder": "efficientnet-lite0",
        "batch_size": 32,
        "options": {"input_size": 128, "pooling": "multiscale"},
    },
    "train": {
        "arch": ["matryoshka", "topk"],
        "levels": [[32, 128, 512], [64, 256, 1024]],
        "k": [[4, 8, 16]],
        "epochs": 60,
        "batch_size": 256,
        "val_every_epochs": 5,
    },
    "codes": {},
    "evaluate": {
        "l2_grid": [1e-2],
        "max_iter": 60,
        "recovery_ns": [1, 2, 5, 10, 20],
        "recovery_methods": ["mean_diff"],
        "headline_method": "mean_diff",
        "mono_splits": ["val", "test"],  # the demo has few val subjects
        "mono_top_n": 5,
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
    marker = out / ".medsae-phantom.json"
    wanted = cfg.model_dump(mode="json")
    if marker.is_file() and _read(marker) == wanted:
        console.print(f"[dim]phantom: up to date, skipped ({out})[/dim]")
        return out
    t0 = time.perf_counter()
    _function("medsae.data", "make_phantom", "phantom")(out, cfg)
    write_json_atomic(marker, wanted)
    console.print(f"[green]phantom: wrote {out} in {time.perf_counter() - t0:.1f} s[/green]")
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
