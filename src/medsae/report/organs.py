"""The report's "Structures rediscovered" section: a token SAE scored against organ masks.

It reads the organ rediscovery of the workspace's token SAE (``organs.json`` and
``organ_structures.parquet`` of ``WS/eval/<enc>-tokens/<run>/``, docs/evaluate.md): one
table of every method (token SAE, the image-level SAE's attribution maps, PCA, k-means,
chance) on the same slices and masks, the structures with their best token-SAE feature, AP,
chance AP and description, and cards with the feature's native token map over a test slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medsae.data.io import has_label_maps, label_id, open_label_maps
from medsae.errors import MedsaeError
from medsae.evaluate.io import ORGAN_STRUCTURES, ORGANS, organ_runs
from medsae.frontend.parts import read_json, read_parquet
from medsae.interpret.io import FEATURES
from medsae.report.html import esc, fmt, missing, table_html

METHODS = (
    ("token_sae", "token SAE (native token maps)"),
    ("attribution", "image-level SAE (exact attribution maps)"),
    ("pca", "PCA of tokens"),
    ("kmeans", "k-means of tokens"),
    ("chance", "chance (masks shuffled across slices)"),
)
N_CARDS = 6


def organs_section(ctx: Any) -> str:
    """HTML of the section: empty for a workspace without a token store (the report then
    has no such section), a "not computed" note without a token SAE or its scores."""
    from medsae.encode.tokens import is_token_store

    ws = ctx.view.ws
    if not any(is_token_store(ws.embeddings(e)) for e in ws.encoders()):
        return ""
    runs = organ_runs(ws)
    if not runs:
        return missing(
            "organ rediscovery",
            "train an SAE on a token store (`medsae encode --tokens`, then `medsae train "
            "--encoder <name>-tokens`) and evaluate it",
        )
    enc, run = runs[0]
    organs = read_json(ws.eval(enc, run) / ORGANS) or {}
    if organs.get("status") != "computed":
        return missing("organ rediscovery", str(organs.get("reason") or ""))
    parts = [
        f'<p class="muted">SAE {esc(enc)} / {esc(run)} on {organs.get("grid")} x '
        f"{organs.get('grid')} tokens; best latent of each structure chosen on "
        f"{organs.get('n_select_slices')} validation slices, scored on "
        f"{organs.get('n_scored_slices')} test slices ({organs.get('n_structures')} "
        "structures; a token belongs to a structure when half its pixels do).</p>"
    ]
    rows = []
    for key, label in METHODS:
        m = organs.get(key) or {}
        rows.append(
            (label, m.get("map"), m.get("purity_at_16"), m.get("coverage_at_0_3"),
             m.get("pointing_game"))
        )  # fmt: skip
    header = ["method", "mAP", "Purity@16", "Coverage@0.3", "pointing game"]
    parts.append('<div id="organ-methods">' + table_html(rows, header, [1, 2, 3, 4]) + "</div>")
    per = read_parquet(ws.eval(enc, run) / ORGAN_STRUCTURES)
    if per is None:
        return "".join(parts)
    mine = per[per["method"] == "token_sae"].sort_values("ap", ascending=False)
    described = read_parquet(ws.features(enc, run) / FEATURES)
    desc: dict[int, str] = {}
    if described is not None and "description" in described.columns:
        desc = dict(zip(described["latent"].astype(int), described["description"], strict=True))
    table = [
        (
            r.structure.replace("_", " "),
            f"#{int(r.best_latent)}",
            r.ap,
            r.chance_ap,
            r.pointing,
            desc.get(int(r.best_latent), "not described (interpret this SAE)"),
        )
        for r in mine.itertuples()
    ]
    parts.append("<h3>Structures rediscovered</h3>")
    columns = ["structure", "best feature", "AP", "chance AP", "pointing", "description"]
    parts.append(
        '<div id="structures-rediscovered">' + table_html(table, columns, [2, 3, 4]) + "</div>"
    )
    parts.append(_cards(ctx, enc, run, mine.head(N_CARDS)))
    return "".join(parts)


def _cards(ctx: Any, enc: str, run: str, rows: pd.DataFrame) -> str:
    """One card per structure: its best feature's native token map over a test slice."""
    ws = ctx.view.ws
    if not has_label_maps(ws.slices) or ctx.view.images is None or rows.empty:
        return ""
    try:
        from medsae.encode.tokens import TokenStore
        from medsae.maps.render import composite_png
        from medsae.maps.token_map import native_token_map
        from medsae.sae import load_sae
        from medsae.sae.codes_io import load_codes

        store = TokenStore(ws.embeddings(enc))
        sae = load_sae(ws.sae(enc, run))
        codes = load_codes(ws.codes(enc, run)).tocsc()
    except MedsaeError as e:
        return missing("token maps", str(e))
    labels = open_label_maps(ws.slices)
    test = np.flatnonzero(ctx.view.table["split"].to_numpy() == "test")
    images = ctx.view.images
    (ctx.out / "img").mkdir(exist_ok=True)
    cards = []
    for r in rows.itertuples():
        j, value = int(r.best_latent), label_id(str(r.structure))
        col = codes[:, j].toarray().ravel()
        held = [t for t in test[np.argsort(-col[test], kind="stable")][:64] if col[t] > 0]
        row = next((int(t) for t in held if (np.asarray(labels[t]) == value).any()), None)
        if row is None:
            continue
        smap = native_token_map(store, sae, row, j, int(images.shape[1]))
        name = f"img/token-map-{j}-{row}.png"
        (ctx.out / name).write_bytes(composite_png(np.asarray(images[row]), smap.values))
        cards.append(
            f'<div class="card token-card" data-latent="{j}"><h3>Feature #{j}: '
            f"{esc(str(r.structure).replace('_', ' '))}</h3>"
            f'<img class="token-map" src="{name}" alt="native token map of feature #{j}">'
            f"<p>token AP {fmt(r.ap)} (chance {fmt(r.chance_ap)}) · pointing game "
            f'{fmt(r.pointing)}</p><p class="muted">native token map (the feature\'s code '
            f"on each token, not an attribution) on test slice "
            f"{esc(ctx.view.table['slice_id'].iloc[row])}</p></div>"
        )
    return '<div class="cards">' + "".join(cards) + "</div>" if cards else ""
