"""Train sparse autoencoders on your own embeddings: from a .npy file to saved SAEs and their R².

    python examples/train_on_embeddings.py embeddings.npy --out saes/
    python examples/train_on_embeddings.py --demo --out /tmp/saes    # a small generated array

No workspace is needed: ``medsae.sae.fit`` trains the grid (the train stage's own path),
``TrainedGrid.save`` writes one loadable folder per run, and
``medsae.evaluate.reconstruction_report`` scores held-out rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medsae.evaluate import reconstruction_report
from medsae.sae import TrainConfig, fit, load_sae


def demo_array(n: int = 3000, d: int = 32, n_features: int = 96, seed: int = 0) -> np.ndarray:
    """Rows made of 4 of ``n_features`` random directions each, plus a little noise."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_features, d))
    weights = np.zeros((n, n_features))
    for row in weights:
        row[rng.choice(n_features, size=4, replace=False)] = rng.uniform(0.5, 1.5, size=4)
    return (weights @ directions + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="an (N, d) float .npy file")
    parser.add_argument("--demo", action="store_true", help="use a small generated array")
    parser.add_argument("--out", default="saes", help="folder of the trained SAEs")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    if args.demo:
        x = demo_array()
    elif args.file:
        x = np.load(args.file, mmap_mode="r")  # memory-mapped: rows are read in chunks
    else:
        parser.error("give a .npy file or --demo")

    order = np.random.default_rng(0).permutation(len(x))  # 80% train, 10% val, 10% test
    cut1, cut2 = int(0.8 * len(x)), int(0.9 * len(x))
    train, val, test = np.sort(order[:cut1]), np.sort(order[cut1:cut2]), np.sort(order[cut2:])

    config = TrainConfig(
        arch=["matryoshka"],
        levels=[[32, 128]],  # nested dictionaries of 32 and 128 latents
        k=[[4, 8]],
        epochs=args.epochs,
        batch_size=256,
        dead_after_samples=5 * len(train),  # AuxK revives latents silent for 5 epochs
    )
    grid = fit(x[train], config, val=x[val], save_to=args.out)
    for run in grid.saes:
        sae = load_sae(Path(args.out) / run)  # the saved SAE, as a later session loads it
        report = reconstruction_report(sae, x[test])["all"]
        full = report[str(sae.cfg.n_latents)]
        print(f"{run}: test R2 {full['r2']:.3f}, L0 {full['l0']:.1f} ({Path(args.out) / run})")


if __name__ == "__main__":
    main()
