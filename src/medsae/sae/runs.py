"""Runs of a workspace: which exist, which are gone, and the lookups a user needs.

A *run* is one trained SAE of one encoder's grid, named from its config as
``<arch>_D<levels>_K<k>`` (``matryoshka_D32-128-512_K16``, ``topk_D512_K16``; see
:func:`medsae.sae.config.run_name`); it lives in ``WS/saes/<encoder>/<run>/`` and every later
stage writes ``WS/<stage>/<encoder>/<run>/``.

A run is *gone* when its checkpoint no longer exists (``medsae train`` replaced the grid)
while codes, evaluations, features or indexes of it are still in the workspace. ``train`` removes those leftovers
when it replaces a grid; a workspace left from before is handled by every stage that picks
runs (evaluate, rank, interpret, index, report, the browser): gone runs are left out with a
warning naming them. Artifacts made without a checkpoint (no ``saes`` input in the manifests of
their codes and evaluation: baselines, test fixtures) are runs of their own and stay.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

from medsae.errors import InputError
from medsae.workspace import Workspace, read_manifest

DOWNSTREAM = ("codes", "eval", "features", "index")
"""Workspace folders holding one artifact per ``<encoder>/<run>``."""


@dataclass(frozen=True)
class GoneRun:
    """A run whose checkpoint no longer exists, and the artifacts of it left behind."""

    encoder: str
    run: str
    artifacts: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.encoder}/{self.run} ({', '.join(self.artifacts)})"


def _ws(workspace: Workspace | str | Path) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def run_exists(ws: Workspace, encoder: str, run: str) -> bool:
    """Whether ``encoder/run`` is a run of this workspace (see the module docstring).

    A run is gone when its checkpoint is missing while its codes or its evaluation were
    made from one (a ``saes`` input in their manifest); artifacts made without a checkpoint
    (codes of their own: baselines, test fixtures) are runs of their own.
    """
    from medsae.sae.io import CFG

    if (ws.sae(encoder, run) / CFG).is_file():
        return True
    for folder in (ws.codes(encoder, run), ws.eval(encoder, run)):
        manifest = read_manifest(folder)
        if manifest is not None and "saes" in (manifest.get("inputs") or {}):
            return False
    return True


def gone_runs(workspace: Workspace | str | Path, encoder: str | None = None) -> list[GoneRun]:
    """Every run with artifacts in the workspace but no checkpoint (see the module docstring)."""
    ws = _ws(workspace)
    found: dict[tuple[str, str], list[str]] = {}
    for kind in DOWNSTREAM:
        base = ws.root / kind
        if not base.is_dir():
            continue
        for folder in sorted(base.glob("*/*")):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            enc, run = folder.parent.name, folder.name
            if encoder is None or enc == encoder:
                found.setdefault((enc, run), []).append(kind)
    return [
        GoneRun(enc, run, tuple(kinds))
        for (enc, run), kinds in sorted(found.items())
        if not run_exists(ws, enc, run)
    ]


def warn_gone(workspace: Workspace | str | Path, stage: str) -> list[GoneRun]:
    """Print the named warning of ``stage`` listing the gone runs it leaves out."""
    gone = gone_runs(workspace)
    if gone:
        from medsae.progress import console

        console.print(
            f"{stage}: left out {len(gone)} run(s) whose SAE checkpoint no longer exists "
            f"(their encoder's grid was retrained): {'; '.join(str(g) for g in gone)}. "
            "`medsae train` removes such leftovers when it replaces a grid.",
            style="yellow",
            markup=False,
            highlight=False,
        )
    return gone


def remove_gone(ws: Workspace, encoder: str) -> list[GoneRun]:
    """Remove the artifacts of ``encoder``'s gone runs (after ``train`` replaced its grid)."""
    gone = gone_runs(ws, encoder)
    for g in gone:
        for kind in g.artifacts:
            shutil.rmtree(ws.root / kind / g.encoder / g.run, ignore_errors=True)
    if gone:
        from medsae.progress import console

        console.print(
            f"train: removed the artifacts of {len(gone)} run(s) no longer in the grid of "
            f"{encoder}: {'; '.join(str(g) for g in gone)}",
            style="yellow",
            markup=False,
            highlight=False,
        )
    return gone


def runs_with_codes(ws: Workspace, encoder: str | None = None) -> list[tuple[str, str]]:
    """:meth:`Workspace.runs_with_codes` less the gone runs (:func:`run_exists`)."""
    return [(e, r) for e, r in ws.runs_with_codes(encoder) if run_exists(ws, e, r)]


def all_runs(ws: Workspace) -> list[tuple[str, str]]:
    """Every existing ``(encoder, run)``: trained runs and runs with codes of their own."""
    from medsae.sae.io import trained_runs

    found = {(e, r) for e in ws.encoders() for r in trained_runs(ws, e)}
    found |= set(runs_with_codes(ws))
    return sorted(found)


def nearest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (for "did you mean" hints)."""
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    return close or candidates[:n]


def not_found_hint(name: str, candidates: list[str], lookup: str) -> str:
    """``"nearest: a, b, c; list them with `lookup`"``."""
    near = nearest(name, candidates)
    shown = f"nearest: {', '.join(near)}; " if near else "there are none; "
    return f"{shown}list them with `{lookup}`"


def check_run(workspace: Workspace | str | Path, encoder: str | None, run: str) -> None:
    """Raise :class:`InputError` when no existing run of ``encoder`` is named ``run``."""
    ws = _ws(workspace)
    runs = [r for e, r in all_runs(ws) if encoder in (None, e)]
    if run in runs:
        return
    gone = [g for g in gone_runs(ws) if g.run == run and encoder in (None, g.encoder)]
    why = " (its checkpoint no longer exists: the grid was retrained)" if gone else ""
    raise InputError(
        f"--run {run}",
        f"no such run{why}; "
        + not_found_hint(run, sorted(set(runs)), f"medsae runs --workspace {ws.root}"),
    )


def check_encoder(workspace: Workspace | str | Path, encoder: str) -> None:
    """Raise :class:`InputError` when the workspace has no embeddings of ``encoder``."""
    ws = _ws(workspace)
    encoders = sorted({e for e, _ in all_runs(ws)} | set(ws.encoders()))
    if encoder not in encoders:
        raise InputError(
            f"--encoder {encoder}",
            "no such encoder in this workspace; "
            + not_found_hint(encoder, encoders, f"medsae runs --workspace {ws.root}"),
        )


def nearest_slice_ids(wanted: str, ids: list[str], n: int = 3) -> list[str]:
    """The slice ids closest to ``wanted`` (``MODALITY:subject:plane:index``).

    Ids sharing the longest leading ``:``-parts come first, the nearest slice index among
    them; a million ids cost one pass.
    """
    parts = str(wanted).split(":")
    for depth in range(min(len(parts), 4) - 1, -1, -1):
        prefix = ":".join(parts[:depth]) + ":" if depth else ""
        same = [i for i in ids if i.startswith(prefix)] if depth else list(ids[:10_000])
        if not same:
            continue
        try:
            target = int(parts[-1])
        except ValueError:
            return nearest(str(wanted), same, n)

        def distance(i: str, target: int = target) -> tuple[int, str]:
            tail = i.rsplit(":", 1)[-1]
            return (abs(int(tail) - target) if tail.isdigit() else 1 << 30), i

        return sorted(same, key=distance)[:n]
    return []


def slice_not_found(wanted: str, ids: list[str], workspace: Path | str) -> str:
    """The message of a slice id that is not in the slice table, with the nearest ids."""
    near = nearest_slice_ids(wanted, ids)
    hint = f"nearest: {', '.join(near)}; " if near else ""
    return (
        f"not in the slice table of this workspace; {hint}"
        f"find ids with `medsae slices --workspace {workspace}`"
    )
