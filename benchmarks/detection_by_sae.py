"""Detection of the offline describer against SAE sparsity and dictionary size, on a workspace.

Copies a finished workspace's slices, split and embeddings into a scratch workspace, trains a
grid of SAEs there on one encoder's embeddings (``medsae train``), writes their codes,
evaluates them with the ``[evaluate]`` settings of ``--config`` (default: the demo's) and runs
the offline ``interpret`` stage on every run: the same describer and scorer as the demo, only
the SAE changes. Reports per run R², L0, recovery with 10 features, the mean monosemanticity
over all scored features, the median and mean detection balanced accuracy, the number of
scored features and the ranking protocol's top-2 rate. The workspace itself is not touched.
``--epochs`` takes a list: the grid is trained once per value, each in its own scratch
workspace, so that the cost of training longer shows beside its gain in reconstruction.

Prints JSON and writes ``benchmarks/results/detection_by_sae.json``.

    python benchmarks/detection_by_sae.py --workspace demo-workspace            # 12 SAEs
    python benchmarks/detection_by_sae.py --workspace demo-workspace --quick    # 2 SAEs
    python benchmarks/detection_by_sae.py --workspace demo-workspace --arch matryoshka \
        --levels 64,256,1024 --k 16 --epochs 60,120,240 \
        --out benchmarks/results/detection_by_training.json   # the demo's SAE, trained longer
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _workspace import RESULTS, write_result
from medsae.evaluate.io import resolve_run
from medsae.interpret.io import read_scores
from medsae.workspace import Workspace

MEDSAE = str(Path(sys.executable).with_name("medsae"))
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


def medsae(*args: str) -> None:
    """Run one ``medsae`` command; its output goes to the log only on failure."""
    done = subprocess.run([MEDSAE, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"medsae {' '.join(args)} failed with exit code {done.returncode}")


def epoch_list(text: str) -> list[int]:
    """``"60,120,240"`` -> ``[60, 120, 240]``; anything else is refused, naming the value."""
    try:
        values = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"--epochs {text!r}: expected positive whole numbers separated by commas"
        )
    return values


def grid_rows(
    source: Workspace, encoder: str, args: argparse.Namespace, n_epochs: int
) -> list[dict[str, Any]]:
    """Train, code, evaluate and interpret the grid for one epoch count; one row per run."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medsae-sae-grid-") as tmp:
        root = Path(tmp)
        for part in ("slices", "split", f"embeddings/{encoder}"):
            shutil.copytree(source.root / part, root / part)
        ws = str(root)
        medsae(
            "train", "-w", ws, "--encoder", encoder, "--arch", args.arch, "--levels",
            args.levels, "--k", args.k, "--epochs", str(n_epochs), "--batch-size",
            str(args.batch_size),
        )  # fmt: skip
        medsae("codes", "-w", ws, "--encoder", encoder)
        medsae("evaluate", "-w", ws, "--encoder", encoder, "--config", str(args.config))
        runs = sorted(
            p.name
            for p in (root / "saes" / encoder).iterdir()
            if p.is_dir() and not p.name.startswith(".")
        )
        for run in runs:
            medsae("interpret", "-w", ws, "--encoder", encoder, "--run", run)
            ev = json.loads((root / "eval" / encoder / run / "summary.json").read_text())
            sc = read_scores(root / "features" / encoder / run)
            det = sc["detection"]["balanced_accuracy"]
            kinds = sc["detection"]["by_kind"]
            rows.append(
                {
                    "run": run,
                    "epochs": n_epochs,
                    "r2": ev.get("r2"),
                    "l0": ev.get("l0"),
                    "alive_fraction": ev.get("alive_fraction"),
                    "recovery_at_10": ev.get("recovery_at_10"),
                    "monosemanticity_mean": ev.get("monosemanticity_mean"),
                    "detection_median": det["median"],
                    "detection_mean": det["mean"],
                    "detection_by_kind_mean": {k: v["mean"] for k, v in kinds.items()},
                    "scored": det["n"],
                    "ranking_top2": sc["ranking"]["top2"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--encoder", default=None, help="Default: the ranking's best encoder.")
    parser.add_argument("--arch", default="topk,matryoshka")
    parser.add_argument("--levels", default="64,256,1024;128,512,2048")
    parser.add_argument("--k", default="8;16;32")
    parser.add_argument(
        "--epochs", type=epoch_list, default=[60], help="One or more, comma-separated."
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="[evaluate] settings.")
    parser.add_argument("--quick", action="store_true", help="TopK, 1,024 latents, k 8 and 16.")
    parser.add_argument("--out", type=Path, default=RESULTS / "detection_by_sae.json")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.levels, args.k = "topk", "64,256,1024", "8;16"
    os.environ.setdefault("MEDSAE_PROGRESS", "0")
    source = Workspace(args.workspace)
    encoder = args.encoder or resolve_run(source)[0]
    epochs: list[int] = args.epochs
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for n_epochs in epochs:
        rows += grid_rows(source, encoder, args, n_epochs)
    report = {
        "benchmark": "detection_by_sae",
        "workspace": str(args.workspace),
        "encoder": encoder,
        "grid": {"arch": args.arch, "levels": args.levels, "k": args.k, "epochs": epochs},
        "evaluate_config": str(args.config),
        "seconds": round(time.perf_counter() - t0, 1),
        "runs": rows,
    }
    write_result(report, args.out)


if __name__ == "__main__":
    main()
