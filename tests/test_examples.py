"""The runnable examples run: ``examples/train_on_embeddings.py`` on its small array."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from medsae.sae import load_sae

ROOT = Path(__file__).resolve().parents[1]


def test_train_on_embeddings_example(tmp_path: Path) -> None:
    env = {**os.environ, "MEDSAE_PROGRESS": "0", "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "saes"
    script = ROOT / "examples" / "train_on_embeddings.py"
    done = subprocess.run(
        [sys.executable, str(script), "--demo", "--out", str(out), "--epochs", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    line = re.search(r"(\S+): test R2 (-?[\d.]+), L0 ([\d.]+)", done.stdout)
    assert line is not None, done.stdout
    sae = load_sae(out / line.group(1))
    assert sae.cfg.levels == [32, 128] and float(line.group(3)) > 0
