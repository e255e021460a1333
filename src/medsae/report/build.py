"""The report stage: ``WS/report/index.html`` plus its PNG images, one self-contained folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsae.device import describe_device, resolve_device
from medsae.frontend.view import WorkspaceView
from medsae.report import sections as sec
from medsae.report.beside import baselines_section
from medsae.report.config import ReportConfig
from medsae.report.html import page
from medsae.report.io import REPORT_PAGE
from medsae.report.organs import organs_section
from medsae.workspace import (
    MANIFEST,
    SUMMARY,
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    read_manifest,
    run_stage,
)


def _input_keys(ws: Workspace) -> dict[str, str]:
    """Keys of every finished upstream artifact (any change makes the report stale)."""
    keys: dict[str, str] = {}
    for p in sorted(ws.root.rglob(MANIFEST)):
        rel = p.parent.relative_to(ws.root)
        if rel.parts and (
            rel.parts[0] == "report" or any(part.startswith(".") for part in rel.parts)
        ):
            continue
        if read_manifest(p.parent) is not None:
            keys[str(rel)] = artifact_key(p.parent)
    summary = ws.root / SUMMARY
    if summary.is_file():
        from medsae.workspace import fingerprint_file_content

        keys[SUMMARY] = fingerprint_file_content(summary)
    return keys


def build_report(
    workspace: str | Path | Workspace,
    config: ReportConfig | dict[str, Any] | None = None,
    force: bool = False,
    search: Any = None,
    map_maker: Any = None,
) -> StageOutcome:
    """Write ``WS/report/`` (``index.html`` + ``img/`` + ``fig/``) through ``run_stage``.

    Every section reads the artifacts that exist; a missing artifact gives a "not computed"
    note instead of an error. ``search`` (a :class:`medsae.frontend.search.SearchBackend`)
    provides the fingerprint and text examples; by default the workspace's own.
    ``map_maker`` (a :class:`medsae.maps.MapMaker`) makes the feature cards' map overlays; by
    default one for the shown SAE, its encoder rebuilt from the embedding store.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cfg = config if isinstance(config, ReportConfig) else ReportConfig.model_validate(config or {})
    device = resolve_device(cfg.device, "report.device")
    inputs = _input_keys(ws)

    def build(tmp: Path) -> StageResult:
        view = WorkspaceView(ws.root, encoder=cfg.encoder, run=cfg.run, device=cfg.device)
        backend = search
        if backend is None and view.codes is not None:
            from medsae.frontend.search import WorkspaceSearch

            # one service for this view: the index and the text model are loaded once
            backend = WorkspaceSearch(view, use_interpret=cfg.text_search == "interpret")
        ctx = sec.Context(
            view=view,
            out=tmp,
            thumb_size=cfg.thumb_size,
            map_slices=cfg.map_slices,
            map_maker=map_maker,
        )
        parts = [
            ("summary", "Summary", sec.headline(ctx)),
            ("baselines", "Baselines and seeds", baselines_section(ws.root)),
            ("dataset", "Dataset", sec.dataset(ctx)),
            ("table1", "Table 1: SAE comparison", sec.table1(ctx)),
            ("frontier", "R² vs L0 frontier", sec.frontier(ctx)),
            ("recovery", "Recovery and monosemanticity", sec.recovery_and_mono(ctx)),
            ("features", "Feature cards", sec.feature_cards(ctx, cfg.n_features, cfg.top_slices)),
            ("organs", "Structures rediscovered (token SAE)", organs_section(ctx)),
            (
                "fingerprints",
                "Fingerprint retrieval",
                sec.fingerprint_section(ctx, backend, cfg.fingerprint_examples, cfg.k),
            ),
            ("text", "Text retrieval", sec.text_section(ctx, backend, cfg.k)),
            ("config", "Configuration (manifests)", sec.config_section(ctx)),
        ]
        parts = [p for p in parts if p[0] != "organs" or p[2]]  # only with a token store
        subtitle = (
            f"workspace {ws.root.name} · {len(view.table)} slices · SAE {view.encoder} / {view.run}"
        )
        (tmp / REPORT_PAGE).write_text(page(cfg.title, subtitle, parts), encoding="utf-8")
        return StageResult(
            counts={"images": len(ctx.written), "sections": len(parts)},
            extra={"encoder": view.encoder, "run": view.run},
        )

    return run_stage(
        ws.report, "report", cfg, inputs, build, force=force, runtime=describe_device(device)
    )
