"""Screenshots of the browser's feature-map overlay for docs/screenshots/.

Builds a small phantom workspace with the demo's settings (EfficientNet-Lite0 multiscale at
128 px, pixel label maps, the offline describer) but fewer subjects and one SAE, serves it on
127.0.0.1 and drives headless Chromium (``/usr/bin/chromium``, through playwright):

* ``feature-map.png``: the feature page of a feature that names a structure, overlay on;
* ``slice-map.png``: the slice page of its top slice, overlay on, mapping that feature when
  it is among the slice's strongest features (the page's choice), else the strongest one.

Usage::

    .venv/bin/python scripts/map_screenshots.py [--workspace DIR] [--out DIR] [--latent J]

A rerun reuses the workspace (every stage is skipped when up to date).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

CHROMIUM = Path("/usr/bin/chromium")


def build_workspace(root: Path) -> tuple[str, str]:
    """The small workspace under ``root``; returns the (encoder, run) it interpreted."""
    from medsae.pipeline import Pipeline, demo_config, make_demo_data

    config, phantom = demo_config(
        root,
        phantom={"ct_subjects": 16, "mri_subjects": 8},
        prepare={"step": 9},
        train={"arch": ["matryoshka"], "levels": [[32, 128, 512]], "k": [[4, 8, 16]]},
        evaluate={"recovery_ns": [1, 5, 10]},
    )
    pipeline = Pipeline(config, root, False)
    make_demo_data(pipeline.ws, phantom)
    pipeline.run(["prepare", "split", "encode", "train", "codes", "evaluate", "rank", "interpret"])
    return pipeline.ws.resolve_run(None, None)


def pick_feature(root: Path, encoder: str, run: str) -> int:
    """A feature whose map was scored on its named structure: the best pointing score, then
    the best detection score."""
    from medsae.interpret.io import FEATURES
    from medsae.workspace import Workspace

    table = pd.read_parquet(Workspace(root).features(encoder, run) / FEATURES)
    scored = table[table["pointing"].notna() & (table["localisation_slices"] >= 3)]
    if scored.empty:
        raise SystemExit(
            "no feature has localisation scores; was the workspace prepared with maps?"
        )
    best = scored.sort_values(
        ["pointing", "energy_in_mask", "detection_balanced_accuracy"], ascending=False
    )
    return int(best["latent"].iloc[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(root: Path) -> tuple[str, Any]:
    """Start the browser's server on a free local port; (base URL, server)."""
    import uvicorn

    from medsae.retrieval.service import WorkspaceSearch
    from medsae.serve import create_app
    from medsae.view import WorkspaceView

    view = WorkspaceView(root)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise SystemExit("the server did not start")
    return f"http://127.0.0.1:{port}", server


SHOWN = """sel => { const i = [...document.querySelectorAll(sel)];
  return i.length > 0 && i.every(x => x.style.display === 'block' && x.complete && x.naturalWidth > 0); }"""


def shoot(base: str, latent: int, out: Path) -> list[Path]:
    """Take the two screenshots; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    feature_png, slice_png = out / "feature-map.png", out / "slice-map.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/#/feature/{latent}")
        page.wait_for_selector("#top-slices a.tile img.map-overlay", state="attached")
        page.set_checked("#map-toggle", True)
        page.wait_for_function(SHOWN, arg="#top-slices img.map-overlay", timeout=120_000)
        page.wait_for_function("() => /map/.test(document.getElementById('map-label').textContent)")
        page.screenshot(path=str(feature_png), full_page=True)
        first = page.get_attribute("#top-slices a.tile", "data-slice")
        page.goto(f"{base}/#/slice/{first}")
        page.wait_for_selector(".big img.map-overlay", state="attached")
        options = page.eval_on_selector_all("#map-latent option", "os => os.map(o => o.value)")
        if str(latent) in options:
            page.select_option("#map-latent", str(latent))
        page.set_checked("#map-toggle", True)
        page.wait_for_function(SHOWN, arg=".big img.map-overlay", timeout=120_000)
        page.wait_for_selector("#similar .tile img")
        page.wait_for_function("() => /map/.test(document.getElementById('map-label').textContent)")
        page.screenshot(path=str(slice_png), full_page=True)
        browser.close()
    return [feature_png, slice_png]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/map-shots-ws"))
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--latent", type=int, default=None, help="Feature to show.")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found (scripts/ensure-chromium.sh installs it)")
    encoder, run = build_workspace(args.workspace)
    latent = args.latent if args.latent is not None else pick_feature(args.workspace, encoder, run)
    base, server = serve(args.workspace)
    try:
        for path in shoot(base, latent, args.out):
            print(f"wrote {path} (feature #{latent})")
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
