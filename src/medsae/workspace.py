"""A workspace: one folder holding a run's artifacts, with manifests and atomic stages.

Every stage writes one artifact folder. The folder carries ``manifest.json``::

    {
      "stage": "prepare",
      "key": "<sha256 of stage + resolved config + input keys>",
      "config": {...resolved config...},
      "runtime": {"device": "cuda:0", ...where it ran; not part of the key...},
      "inputs": {"name": "<key or fingerprint of each input>"},
      "version": "<medsae version>",
      "counts": {...}, "timings": {...}, "extra": {...},
      "created": "<UTC ISO time>"
    }

:func:`run_stage` decides between three cases:

* the folder exists and its ``key`` matches: the stage is *up to date* and is skipped (it
  says so);
* the folder exists with another key: it is *stale* (the reason is printed) and rebuilt;
* the folder is missing: it is built.

A build writes into ``.<name>.partial`` next to the final folder. That folder survives an
interruption, so a build that is restarted with the same key resumes from what it left
there (stages that can resume look at what is already in it); a partial with another key
is wiped. The finished partial is renamed into place only after the build returned and the
manifest was written, and the previous artifact is removed only after that rename: an
interrupted run never leaves a half artifact that looks whole, and never loses the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from medsae import __version__
from medsae.atomic import atomic_path, is_disk_full, remove_stale_temporaries
from medsae.errors import ArtifactError

MANIFEST = "manifest.json"
"""Every artifact folder's manifest (see the module docstring)."""
PARTIAL_KEY = "partial.json"
"""The key of a build in progress, inside its ``.<name>.partial`` folder."""
SUMMARY = "summary.json"
"""A folder's headline figures: ``WS/summary.json`` (the pipeline's), and the summary of an
artifact folder (``WS/eval/<enc>/<run>/summary.json``, ``WS/ranking/summary.json``, ...)."""


def _log(message: str, style: str | None = None) -> None:
    from medsae.progress import console

    console.print(message, style=style)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form hashed into keys."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_dict(config: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    """The config as hashed into a key: runtime fields (``device``) at their defaults."""
    from medsae.config import StageConfig

    if config is None:
        return {}
    if isinstance(config, StageConfig):
        return config.key_config()
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return dict(config)


def runtime_dict(
    config: BaseModel | Mapping[str, Any] | None, runtime: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The manifest's ``runtime`` block: the config's runtime fields as set, then ``runtime``
    (what the stage resolved, e.g. the device it ran on)."""
    from medsae.config import StageConfig

    out = config.runtime_values() if isinstance(config, StageConfig) else {}
    return {**out, **(runtime or {})}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """Fingerprint of a set of files from their relative names, sizes and modification times.

    Cheap for large datasets (no content read); any edit, addition or removal changes it.
    """
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        name = str(p.relative_to(root)) if root is not None else str(p)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint_tree(root: Path) -> str:
    """Fingerprint of every file below ``root`` (see :func:`fingerprint_files`)."""
    root = Path(root)
    if root.is_file():
        return fingerprint_files([root], root.parent)
    return fingerprint_files((p for p in root.rglob("*") if p.is_file()), root)


def fingerprint_file_content(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (for small files such as weights or configs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    with atomic_path(path, needed=len(text)) as tmp:
        tmp.write_text(text)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of an artifact folder, or None when there is none.

    A manifest that exists but cannot be read raises
    :class:`medsae.artifacts.DamagedArtifact` naming it and how to rebuild it.
    """
    from medsae.artifacts import read_json_optional

    return read_json_optional(Path(folder) / MANIFEST)


def _finished_manifest(out_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The manifest of a finished artifact and "" when it and its files read; else the
    manifest (None when unreadable or absent) and why the artifact is damaged."""
    from medsae.artifacts import DamagedArtifact, damage_in

    try:
        old = read_manifest(out_dir)
        damage = damage_in(out_dir) if old is not None else None
    except DamagedArtifact as e:
        old, damage = None, e
    return old, "" if damage is None else f"{damage.path} is damaged ({damage.problem})"


def artifact_key(folder: Path) -> str:
    """The key of a finished artifact, used as the fingerprint of a downstream input."""
    m = read_manifest(folder)
    if m is None or "key" not in m:
        raise ArtifactError(
            f"{folder}: no finished artifact here (missing or unreadable {MANIFEST}); "
            "run the stage that produces it first"
        )
    return str(m["key"])


def require_artifact(folder: Path, what: str, how: str) -> Path:
    """Check that ``folder`` holds a finished artifact, or raise an error saying how to make it."""
    folder = Path(folder)
    if read_manifest(folder) is None:
        raise ArtifactError(f"{folder}: no {what} found; {how}")
    return folder


@dataclass
class StageResult:
    """What a build function reports back to :func:`run_stage`."""

    counts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageOutcome:
    """What happened when a stage was asked to run."""

    stage: str
    path: Path
    status: str  # "built", "rebuilt", "skipped"
    manifest: dict[str, Any]
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"


def _stale_reason(
    old: Mapping[str, Any], config: Mapping[str, Any], inputs: Mapping[str, str]
) -> str:
    reasons = []
    if old.get("config") != config:
        old_cfg = old.get("config") or {}
        changed = sorted(k for k in set(old_cfg) | set(config) if old_cfg.get(k) != config.get(k))
        reasons.append(
            "config changed (" + ", ".join(changed[:6]) + ")" if changed else "config changed"
        )
    old_inputs = old.get("inputs") or {}
    for name in sorted(set(old_inputs) | set(inputs)):
        if old_inputs.get(name) != inputs.get(name):
            reasons.append(f"input '{name}' changed")
    return "; ".join(reasons) or "stage definition changed"


def compute_key(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    return sha256_text(canonical_json({"stage": stage, "config": config, "inputs": inputs}))


def stage_status(
    out_dir: Path,
    stage: str,
    config: BaseModel | Mapping[str, Any] | None,
    inputs: Mapping[str, str],
) -> tuple[str, str]:
    """("up-to-date" | "stale" | "missing", reason) for an artifact folder, without building."""
    cfg = config_dict(config)
    key = compute_key(stage, cfg, inputs)
    old, damaged = _finished_manifest(out_dir)
    if damaged:
        return "stale", damaged
    if old is None:
        return "missing", ""
    if old.get("key") == key:
        return "up-to-date", ""
    return "stale", _stale_reason(old, cfg, inputs)


def run_stage(
    out_dir: Path,
    stage: str,
    config: BaseModel | Mapping[str, Any] | None,
    inputs: Mapping[str, str],
    build: Callable[[Path], StageResult | None],
    *,
    force: bool = False,
    quiet: bool = False,
    runtime: Mapping[str, Any] | None = None,
) -> StageOutcome:
    """Run ``build`` into ``out_dir`` unless the artifact there is up to date.

    Parameters
    ----------
    out_dir:
        The artifact folder (for example ``WS/slices``).
    stage:
        The stage's name, recorded in the manifest and hashed into the key.
    config:
        The stage's resolved config; any change makes the artifact stale.
    inputs:
        Name -> key of each input (``artifact_key`` of upstream artifacts, or
        ``fingerprint_tree`` of raw inputs); any change makes the artifact stale.
    build:
        Called with the partial folder to fill. It may find files from an interrupted
        earlier build with the same key there and resume from them. It returns counts
        and extra fields for the manifest.
    force:
        Rebuild even when up to date (an interrupted partial is still discarded only if its
        key differs).
    runtime:
        Where the build ran (e.g. ``describe_device``), recorded in the manifest's
        ``runtime`` block beside the config's runtime fields, never hashed into the key.
    """
    out_dir = Path(out_dir)
    cfg = config_dict(config)
    key = compute_key(stage, cfg, inputs)
    old, damaged = _finished_manifest(out_dir)  # damaged output is never up to date
    if old is not None and old.get("key") == key and not force and not damaged:
        if not quiet:
            _log(f"{stage}: up to date, skipped ({out_dir})", style="dim")
        return StageOutcome(stage, out_dir, "skipped", old)
    reason = ""
    if damaged:
        reason = damaged
    elif old is not None:
        reason = "forced" if old.get("key") == key else _stale_reason(old, cfg, inputs)
    if reason and not quiet:
        _log(f"{stage}: {reason}; rebuilding {out_dir}", style="yellow")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out_dir, stage):
        partial = out_dir.parent / f".{out_dir.name}.partial"
        marker = partial / PARTIAL_KEY
        resumable = False
        if partial.exists():
            try:
                resumable = json.loads(marker.read_text()).get("key") == key and not force
            except (OSError, json.JSONDecodeError):
                resumable = False
            if not resumable:
                shutil.rmtree(partial)
            elif not quiet:
                _log(f"{stage}: resuming an interrupted build in {partial}", style="cyan")
        partial.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"key": key, "stage": stage})

        t0 = time.perf_counter()
        started = datetime.now(UTC).isoformat()
        try:
            result = build(partial) or StageResult()
            seconds = time.perf_counter() - t0
            manifest = {
                "stage": stage,
                "key": key,
                "config": cfg,
                "runtime": runtime_dict(config, runtime),
                "inputs": dict(inputs),
                "version": __version__,
                "counts": result.counts,
                "timings": {"seconds": round(seconds, 3), "started": started},
                "extra": result.extra,
                "created": datetime.now(UTC).isoformat(),
            }
            write_json_atomic(partial / MANIFEST, manifest)
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise ArtifactError(
                f"{e.filename or partial}: {e.strerror or 'no space left'} while writing the "
                f"{stage} artifact; nothing was replaced ({out_dir} is as it was). Free space on "
                "that file system (or raise the file size limit) and run again: the build "
                f"resumes from {partial}"
            ) from e
        marker.unlink(missing_ok=True)
        remove_stale_temporaries(partial, all_of_them=True)  # none in a finished artifact
        _swap_into_place(partial, out_dir)
        status = "rebuilt" if old is not None or damaged else "built"
        if not quiet:
            _log(f"{stage}: {status} {out_dir} in {seconds:.1f} s", style="green")
        return StageOutcome(stage, out_dir, status, manifest, reason)


@contextmanager
def build_lock(out_dir: Path, stage: str) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out_dir`` exclusively while a stage builds it.

    A second process building the same artifact (the same stage started twice on one
    workspace) would share the partial folder; it gets an :class:`ArtifactError` naming the
    folder instead. The lock is an advisory ``flock``: the system releases it when its
    process ends, so a crashed build never blocks the resume. Where ``fcntl`` is missing
    (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = out_dir.parent / f".{out_dir.name}.lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ArtifactError(
                f"{out_dir}: the {stage} stage is already building this artifact ({holder}); "
                "wait for it to finish or stop it, then run again (an interrupted build resumes)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    """Rename ``partial`` to ``out_dir``; the old folder is removed only after the rename."""
    old_aside = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old_aside)
    try:
        os.replace(partial, out_dir)
    except OSError:
        if old_aside.exists() and not out_dir.exists():
            os.replace(old_aside, out_dir)
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old_aside)


class Workspace:
    """Paths of the artifacts in one workspace folder.

    ::

        WS/slices/                      prepare: slice table, images, anatomy labels
        WS/split/                       split: subject -> train/val/test
        WS/embeddings/<encoder>/        encode: embedding shards
        WS/saes/<encoder>/              train: one folder per SAE run inside
        WS/codes/<encoder>/<run>/       codes: sparse codes of every slice
        WS/eval/<encoder>/<run>/        evaluate: reconstruction, probes, recovery, ...
        WS/ranking/                     rank: Table 1 and figures
        WS/features/<encoder>/<run>/    interpret: feature statistics, descriptions, scores
        WS/index/<encoder>/<run>/       fingerprint and text indexes
        WS/report/                      report: self-contained HTML
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def slices(self) -> Path:
        return self.root / "slices"

    @property
    def split(self) -> Path:
        return self.root / "split"

    def embeddings(self, encoder: str) -> Path:
        return self.root / "embeddings" / safe_name(encoder)

    def saes(self, encoder: str) -> Path:
        return self.root / "saes" / safe_name(encoder)

    def sae(self, encoder: str, run: str) -> Path:
        return self.saes(encoder) / safe_name(run)

    def codes(self, encoder: str, run: str) -> Path:
        return self.root / "codes" / safe_name(encoder) / safe_name(run)

    def eval(self, encoder: str, run: str) -> Path:
        return self.root / "eval" / safe_name(encoder) / safe_name(run)

    @property
    def ranking(self) -> Path:
        return self.root / "ranking"

    def features(self, encoder: str, run: str) -> Path:
        return self.root / "features" / safe_name(encoder) / safe_name(run)

    def index(self, encoder: str, run: str) -> Path:
        return self.root / "index" / safe_name(encoder) / safe_name(run)

    @property
    def report(self) -> Path:
        return self.root / "report"

    def encoders(self) -> list[str]:
        """Encoders with finished embeddings in this workspace."""
        base = self.root / "embeddings"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / MANIFEST).is_file())

    def runs_with_codes(self, encoder: str | None = None) -> list[tuple[str, str]]:
        """Every finished ``(encoder, run)`` with sparse codes, optionally of one encoder."""
        base = self.root / "codes"
        if not base.is_dir():
            return []
        return sorted(
            (enc.name, run.name)
            for enc in base.iterdir()
            if enc.is_dir() and (encoder is None or enc.name == safe_name(encoder))
            for run in enc.iterdir()
            if run.is_dir() and not run.name.startswith(".") and (run / MANIFEST).is_file()
        )


def safe_name(name: str) -> str:
    """A name usable as one folder component: no separators, no leading dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_.+=," else "_" for c in str(name))
    cleaned = cleaned.lstrip(".")
    if not cleaned:
        raise ValueError(f"cannot make a folder name from {name!r}")
    return cleaned
