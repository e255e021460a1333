"""Command-line commands of medsae.data: ``phantom``, ``prepare``, ``split``.

Flags override values from ``--config FILE`` (the ``[phantom]``, ``[prepare]`` or
``[split]`` table of a TOML/YAML/JSON file; ``workspace`` may be given at the top level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medsae.errors import InputError


def _section(config_file: Path | None, section: str) -> tuple[dict[str, Any], str | None]:
    if config_file is None:
        return {}, None
    from medsae.config import read_config_file

    data = read_config_file(config_file)
    part = data.get(section, {})
    if not isinstance(part, dict):
        raise InputError(config_file, f"[{section}] must be a table")
    ws = data.get("workspace")
    return dict(part), (str(ws) if ws else None)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _workspace(flag: Path | None, from_file: str | None) -> Path:
    if flag is not None:
        return flag
    if from_file:
        return Path(from_file)
    raise InputError(
        "--workspace", "no workspace given (use --workspace WS or `workspace` in --config)"
    )


def register(app: typer.Typer) -> None:
    """Add this subpackage's commands to the main app."""

    @app.command("phantom")
    def phantom_cmd(
        out: Path = typer.Argument(..., help="Output folder (OUT/ct and OUT/mri are written)."),
        subjects: int | None = typer.Option(
            None, "--subjects", help="Total subjects: 2/3 CT, 1/3 MRI."
        ),
        ct_subjects: int | None = typer.Option(None, "--ct-subjects", help="CT subjects."),
        mri_subjects: int | None = typer.Option(None, "--mri-subjects", help="MRI subjects."),
        seed: int | None = typer.Option(None, "--seed", help="Seed (same seed, same dataset)."),
        size: int | None = typer.Option(None, "--size", help="In-plane voxels per side."),
        slices: int | None = typer.Option(None, "--slices", help="Slices along the body axis."),
        config_file: Path | None = typer.Option(
            None, "--config", help="TOML/YAML file with a [phantom] table."
        ),
    ) -> None:
        """Write a synthetic dataset in the TotalSegmentator CT and MRI layouts."""
        from medsae.config import build_config, merge_overrides
        from medsae.data.config import PhantomConfig
        from medsae.data.phantom import make_phantom
        from medsae.progress import console

        base, _ = _section(config_file, "phantom")
        if subjects is not None:
            n_ct = round(subjects * 2 / 3)
            base.update(ct_subjects=n_ct, mri_subjects=subjects - n_ct)
        over = {
            "ct_subjects": ct_subjects,
            "mri_subjects": mri_subjects,
            "seed": seed,
            "size_xy": size,
            "n_slices": slices,
        }
        cfg = build_config(PhantomConfig, merge_overrides(base, over), config_file or "flags")
        path = make_phantom(out, cfg)
        console.print(f"phantom: {cfg.ct_subjects} CT + {cfg.mri_subjects} MRI subjects in {path}")

    @app.command("prepare")
    def prepare_cmd(
        root: Path | None = typer.Argument(
            None, help="Dataset folder, or a folder of dataset folders."
        ),
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
        source_kind: str | None = typer.Option(
            None, "--source-kind", help="auto | totalsegmentator | nifti | dicom"
        ),
        planes: str | None = typer.Option(
            None, "--planes", help="Comma list, e.g. axial,coronal,sagittal."
        ),
        mri_planes: str | None = typer.Option(
            None, "--mri-planes", help="Planes for MRI (default: --planes)."
        ),
        step: int | None = typer.Option(None, "--step", help="Keep every n-th slice."),
        size: int | None = typer.Option(None, "--size", help="Output image size (pixels)."),
        square: str | None = typer.Option(None, "--square", help="pad | crop"),
        multi_window: bool | None = typer.Option(
            None, "--multi-window/--single-window", help="CT RGB lung/soft/bone."
        ),
        restrict: bool | None = typer.Option(
            None, "--labelled-range/--all-slices", help="Keep only the labelled range."
        ),
        workers: int | None = typer.Option(None, "--workers", "-j", help="Worker processes."),
        backend: str | None = typer.Option(
            None, "--backend", help="local | ray (one Ray task per volume; see docs/data.md)."
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (default: local)."
        ),
        thumbnails: bool | None = typer.Option(
            None, "--thumbnails/--no-thumbnails", help="Write PNG thumbnails."
        ),
        label_maps: bool | None = typer.Option(
            None,
            "--label-maps/--no-label-maps",
            help="Write per-slice pixel label maps (label_maps.npy; for feature-map scores).",
        ),
        table: str | None = typer.Option(
            None, "--table", help="NIfTI folders: metadata table file name."
        ),
        modality: str | None = typer.Option(
            None, "--modality", help="NIfTI folders: CT or MR when no column says."
        ),
        allow_failures: bool = typer.Option(
            False, "--allow-failures", help="Keep the result when some inputs fail."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config_file: Path | None = typer.Option(
            None, "--config", help="TOML/YAML file with a [prepare] table."
        ),
    ) -> None:
        """Cut volumes into 2D slices with metadata and anatomy labels (WS/slices)."""
        from medsae.config import build_config, merge_overrides
        from medsae.data.config import PrepareConfig
        from medsae.data.prepare_stage import prepare

        base, ws_file = _section(config_file, "prepare")
        over = {
            "source": str(root) if root else None,
            "source_kind": source_kind,
            "planes": _csv(planes),
            "mri_planes": _csv(mri_planes),
            "step": step,
            "size": size,
            "square": square,
            "multi_window": multi_window,
            "restrict_to_labelled": restrict,
            "workers": workers,
            "backend": backend,
            "ray_address": ray_address,
            "thumbnails": thumbnails,
            "label_maps": label_maps,
            "table": table,
            "modality": modality,
        }
        cfg = build_config(PrepareConfig, merge_overrides(base, over), config_file or "flags")
        prepare(_workspace(workspace, ws_file), cfg, force=force, allow_failures=allow_failures)

    @app.command("split")
    def split_cmd(
        workspace: Path | None = typer.Option(None, "--workspace", "-w", help="Workspace folder."),
        test_institutes: str | None = typer.Option(
            None, "--test-institutes", help="Comma list (default A,D,E)."
        ),
        val_fraction: float | None = typer.Option(
            None, "--val-fraction", help="Val share of the rest."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Seed of the train/val draw."),
        force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
        config_file: Path | None = typer.Option(
            None, "--config", help="TOML/YAML file with a [split] table."
        ),
    ) -> None:
        """Assign subjects to train / val / test (held-out institutes are the test set)."""
        from medsae.config import build_config, merge_overrides
        from medsae.data.config import SplitConfig
        from medsae.data.split_stage import split

        base, ws_file = _section(config_file, "split")
        over = {
            "test_institutes": _csv(test_institutes),
            "val_fraction": val_fraction,
            "seed": seed,
        }
        cfg = build_config(SplitConfig, merge_overrides(base, over), config_file or "flags")
        split(_workspace(workspace, ws_file), cfg, force=force)
