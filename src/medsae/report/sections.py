"""The report's sections: each returns inner HTML, or a "not computed" note when its artifact
is missing. Slice images and figures are written into the report folder as PNG files."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medsae.evaluate.io import MONOSEMANTICITY, RECOVERY, TABLE1_CSV
from medsae.frontend.parts import read_json, read_parquet
from medsae.frontend.view import WorkspaceView
from medsae.report import figures
from medsae.report.beside import with_spread
from medsae.report.html import esc, fmt, frame_html, kpis, missing, table_html
from medsae.report.io import FIGURES, FRONTIER_FIGURE, RECOVERY_FIGURE
from medsae.report.maps import MAP_SLICES, CardMaps
from medsae.workspace import MANIFEST, SUMMARY, read_manifest

DEFAULT_QUERIES = (
    "axial CT slice of the liver",
    "sagittal MRI of the spine",
    "coronal CT of the lungs",
    "axial MRI of the brain",
)


@dataclass
class Context:
    """What every section needs: the view, the output folder, and written images."""

    view: WorkspaceView
    out: Path
    thumb_size: int = 128
    written: set[int] = field(default_factory=set)
    map_slices: int = MAP_SLICES  # top slices per feature card with a map overlay
    map_maker: Any = None  # a medsae.maps.MapMaker (default: one for the view's SAE)

    def thumb(self, row: int) -> str:
        """Relative path of slice ``row``'s PNG in the report (written on first use)."""
        name = f"img/slice-{row}.png"
        if row not in self.written:
            (self.out / "img").mkdir(exist_ok=True)
            (self.out / name).write_bytes(self.view.slice_png(row, self.thumb_size))
            self.written.add(row)
        return name

    def tile(self, row: int, caption: str = "") -> str:
        """A slice's figure: its image, or its id where the workspace has no images
        (imported embeddings)."""
        meta = self.view.table.iloc[row]
        known = [str(meta.get(c)) for c in ("modality", "plane") if pd.notna(meta.get(c))]
        label = caption or " ".join(known)
        sid = esc(meta["slice_id"])
        if self.view.images is None:
            return (
                f'<figure class="tile" title="{sid}"><div class="noimg">{sid}</div>'
                f"<figcaption>{esc(label)}</figcaption></figure>"
            )
        return (
            f'<figure class="tile" title="{sid}"><img src="{self.thumb(row)}" '
            f'alt="{sid}"><figcaption>{esc(label)}</figcaption></figure>'
        )


def headline(ctx: Context) -> str:
    summary = read_json(ctx.view.ws.root / SUMMARY)
    if not isinstance(summary, dict):
        if ctx.view.encoder and ctx.view.run:
            summary = ctx.view.eval_summary(ctx.view.encoder, ctx.view.run) or {}
        else:
            summary = {}
    if not summary:
        return missing("headline figures", "run the evaluate stage")
    labels = {
        "best_config": "best SAE",
        "r2": "R² (test)",
        "l0": "L0",
        "alive_fraction": "alive fraction",
        "recovery_at_10": "recovery at 10 (shared: ≤ 10 latents per task)",
        "recovery_at_10_per_class": "recovery at 10 (per class: ≤ 10 per class)",
        "auc_at_10_mean_val": "ROC-AUC at 10, paper targets (val, Fig. 2G)",
        "r2_grand_mean_val_paper": "R², the paper's form (val)",
        "detection_balanced_accuracy": "detection score (median)",
        "text_precision_at_10": "text retrieval P@10",
        "fingerprint_agreement": "fingerprint agreement",
        "monosemanticity": "monosemanticity",
    }
    items = [(labels[k], with_spread(summary, k)) for k in labels if k in summary]
    n = summary.get("n_seeds") or 1
    seeds = f"; mean ± sd over {n} seeds" if n > 1 else ""
    return (
        kpis(items)
        + f'<p class="muted">SAE shown: {esc(ctx.view.encoder)} / {esc(ctx.view.run)}{seeds}</p>'
    )


def dataset(ctx: Context) -> str:
    t = ctx.view.table
    parts = [
        kpis(
            [
                ("slices", len(t)),
                ("subjects", int(t["subject_key"].nunique())),
                ("institutes", int(t["institute"].nunique()) if "institute" in t else None),
            ]
        )
    ]
    cols = [c for c in ("modality", "plane", "split") if c in t.columns]
    if len(cols) >= 2:
        idx = cols[:-1]
        pivot = t.pivot_table(
            index=idx, columns=cols[-1], values="slice_id", aggfunc="count", fill_value=0
        )
        pivot["total"] = pivot.sum(axis=1)
        parts.append(
            "<h3>Slices per " + " × ".join(cols) + "</h3>" + frame_html(pivot.reset_index())
        )
    subj = t.drop_duplicates("subject_key")
    group = [c for c in ("modality", "split") if c in subj.columns]
    if group:
        counts = subj.groupby(group).size().reset_index(name="subjects")
        parts.append("<h3>Subjects</h3>" + frame_html(counts))
    if "institute" in t.columns:
        inst = subj.groupby(subj["institute"].fillna("unknown")).size().reset_index(name="subjects")
        parts.append("<h3>Institutes</h3>" + frame_html(inst))
    if "split" not in t.columns:
        parts.append(missing("split", "run `medsae split`"))
    return "".join(parts)


def table1(ctx: Context) -> str:
    p = ctx.view.ws.ranking / TABLE1_CSV
    if not p.is_file():
        return missing("Table 1", "run `medsae rank`")
    df = pd.read_csv(p)
    ranking = ctx.view.ranking or {}
    best = ranking.get("best")
    note = (
        f'<p>Best: <span class="pill">{esc(best.get("encoder"))} / {esc(best.get("run"))}</span></p>'
        if isinstance(best, dict)
        else ""
    )
    if ranking.get("rule"):
        note += f"<p>Rule: {esc(ranking['rule'])}.</p>"
    tie = ranking.get("tie_break") or {}
    if tie.get("sail_tied"):
        tied = tie["sail_tied"]
        note += (
            "<p>Column <code>sail_final_rank</code> is the paper's own final rank (method "
            '"min", no tie-break: tied configurations share it). '
            + (
                f"{len(tied)} configurations share sail's final rank {tie.get('sail_final_rank')}"
                f" ({esc(', '.join(tied))}); this package's order chose the run by: "
                f"<b>{esc(tie.get('decided_by'))}</b>.</p>"
                if len(tied) > 1
                else "The chosen run is sail's unique first.</p>"
            )
        )
    alternative = ranking.get("alternative") or {}
    if alternative.get("column"):
        note += (
            f"<p>Alternative rule ({esc(alternative.get('performance_term'))} as the performance "
            f"term): column <code>{esc(alternative['column'])}</code>. Columns prefixed "
            f"<code>selection_</code> are the {esc(ranking.get('selection_split', 'val'))} "
            "figures the ranks use; the others are reported on the test split.</p>"
        )
    return note + frame_html(df, max_rows=100)


def frontier(ctx: Context) -> str:
    best = (ctx.view.encoder, ctx.view.run)
    points = []
    for enc, run in ctx.view.eval_runs():
        s = ctx.view.eval_summary(enc, run)
        if s:
            points.append(
                {
                    "run": run
                    if len({e for e, _ in ctx.view.eval_runs()}) == 1
                    else f"{enc}/{run}",
                    "r2": s.get("r2"),
                    "l0": s.get("l0"),
                    "best": (enc, run) == best,
                }
            )
    (ctx.out / FIGURES).mkdir(exist_ok=True)
    fig = figures.frontier_figure(points, ctx.out / FIGURES / FRONTIER_FIGURE)
    if fig is None:
        return missing("R²-vs-L0 frontier", "run `medsae evaluate`")
    rows = [[p["run"], p["r2"], p["l0"]] for p in points]
    return f'<div class="figs"><figure><img src="fig/frontier.png" alt="R² against L0"></figure><div>{table_html(rows, ["run", "R²", "L0"], [1, 2])}</div></div>'


def recovery_and_mono(ctx: Context) -> str:
    curves: dict[str, pd.DataFrame] = {}
    mono_parts = []
    for enc, run in ctx.view.eval_runs():
        df = read_parquet(ctx.view.ws.eval(enc, run) / RECOVERY)
        if df is not None:
            curves[run] = df
        if (enc, run) == (ctx.view.encoder, ctx.view.run):
            mono = read_parquet(ctx.view.ws.eval(enc, run) / MONOSEMANTICITY)
            if mono is not None:
                mono_parts.append(f"<h3>Monosemanticity ({esc(run)})</h3>" + frame_html(mono, 30))
    parts = []
    (ctx.out / FIGURES).mkdir(exist_ok=True)
    if figures.recovery_figure(curves, ctx.out / FIGURES / RECOVERY_FIGURE) is not None:
        parts.append(
            '<div class="figs"><figure><img src="fig/recovery.png" alt="recovery curves"></figure></div>'
        )
    elif curves:
        name, df = next(iter(curves.items()))
        parts.append(f"<h3>Recovery ({esc(name)})</h3>" + frame_html(df, 30))
    else:
        parts.append(missing("recovery", "run `medsae evaluate`"))
    parts.extend(mono_parts or [missing("monosemanticity", "run `medsae evaluate`")])
    rank_figs = (
        sorted((ctx.view.ws.ranking / "figures").glob("*.png"))
        if (ctx.view.ws.ranking / "figures").is_dir()
        else []
    )
    if rank_figs:
        (ctx.out / FIGURES / "ranking").mkdir(parents=True, exist_ok=True)
        items = []
        for f in rank_figs:
            shutil.copyfile(f, ctx.out / FIGURES / "ranking" / f.name)
            items.append(
                f'<figure><img src="fig/ranking/{esc(f.name)}" alt="{esc(f.stem)}"><figcaption>{esc(f.stem)}</figcaption></figure>'
            )
        parts.append(
            '<h3>Figures from the ranking stage</h3><div class="figs">' + "".join(items) + "</div>"
        )
    return "".join(parts)


def feature_cards(ctx: Context, n_cards: int, n_top: int) -> str:
    view = ctx.view
    if view.codes is None:
        return missing("feature cards", "no SAE codes in this workspace")
    df = view.feature_table[view.feature_table["frequency"] > 0]
    key = (
        "detection_balanced_accuracy"
        if "detection_balanced_accuracy" in df and df["detection_balanced_accuracy"].notna().any()
        else "frequency"
    )
    df = df.sort_values(key, ascending=False, kind="stable").head(n_cards)
    note = (
        ""
        if view.features_file is not None
        else missing("descriptions and scores", "run `medsae interpret`")
    )
    cards = []
    maps = CardMaps(view, ctx.out, ctx.thumb_size, ctx.map_slices, ctx.map_maker)
    tops = {int(latent): view.top_rows(int(latent), n_top) for latent in df["latent"]}
    maps.prepare(tops)
    for latent in df["latent"]:
        f = view.feature_row(int(latent))
        top = tops[int(latent)]
        strip = "".join(ctx.tile(r) for r in top)
        enr = ", ".join(
            f'<span class="pill">{esc(e["label"])} ×{e["lift"]:.1f}</span>'
            for e in view.enrichment(int(latent), top=3)
        )
        cards.append(
            f'<div class="card"><h3>Feature #{int(latent)} <span class="muted">level {fmt(f.get("level"))}</span></h3>'
            f"<p><b>{esc(f.get('description') or 'no description')}</b></p>"
            f'<p class="muted">detection score <span class="score">{fmt(f.get("detection_balanced_accuracy"))}</span> · '
            f"frequency {fmt(100 * float(f.get('frequency') or 0), 2)}% · concept {esc(f.get('concept') or '–')}</p>"
            + _seed_line(f)
            + maps.localisation(f)
            + f'<div class="strip">{strip}</div>'
            + maps.overlays(int(latent), top)
            + f"<p>{enr or '<span class=muted>no enrichment</span>'}</p></div>"
        )
    sorted_by = (
        f'<p class="muted">{len(cards)} features with the highest {esc(key.replace("_", " "))}.</p>'
    )
    return (
        note
        + _detection_kinds(view.scores)
        + _acquisition_features(view.features_file)
        + maps.legend()
        + sorted_by
        + f'<div class="cards">{"".join(cards)}</div>'
    )


def _seed_line(f: dict[str, Any]) -> str:
    """ "found again in 2 of 2 other seeds, cosine 0.97" (empty for a run trained once)."""
    others = f.get("seed_others")
    if not others or pd.isna(others):
        return ""
    n = int(others)
    return (
        f'<p class="muted seed-stability">found again in {int(f.get("seed_found") or 0)} of {n} '
        f"other seed{'s' if n != 1 else ''}, cosine {fmt(f.get('seed_cosine'), 2)}</p>"
    )


SCANNER_FACETS = ("manufacturer", "kvp", "field_strength")
"""Label facets of a rule that name the scanner or its setting."""
CONTEXT_FACETS = ("study", "pathology")
"""Label facets of a rule that name why the scan was made: the study, the recorded finding."""


def _acquisition_features(features: pd.DataFrame | None, n_rows: int = 12) -> str:
    """Features whose description rule names the scanner (manufacturer, tube voltage, field
    strength), the study or the recorded finding rather than only the anatomy; those naming
    the scanner first (the likeliest shortcuts), then by detection score."""
    if features is None or "rule" not in features.columns:
        return ""
    rows = []
    counts = {"scanner": 0, "study": 0, "pathology": 0}
    for f in features.itertuples(index=False):
        rule = [] if f.rule is None else [str(x) for x in f.rule]
        facets = {x.split("=", 1)[0] for x in rule}
        scanner = bool(facets & set(SCANNER_FACETS))
        if not scanner and not facets & set(CONTEXT_FACETS):
            continue
        counts["scanner"] += scanner
        counts["study"] += "study" in facets
        counts["pathology"] += "pathology" in facets
        score = pd.to_numeric(f.detection_balanced_accuracy, errors="coerce")
        rows.append(
            [int(f.latent), f.description, ", ".join(rule), 100 * f.frequency, score, scanner]
        )
    if not rows:
        return ""
    rows.sort(key=lambda r: (not r[5], -(r[4] if pd.notna(r[4]) else -1.0), r[0]))
    shown = [r[:5] for r in rows[:n_rows]]
    return (
        "<h3>Features that follow the scanner, the study or a recorded finding</h3>"
        f'<p class="muted">Described features ({len(features)}) whose rule names the scanner '
        f"(manufacturer, tube voltage, field strength): {counts['scanner']}, what a model can "
        "learn as a shortcut instead of the anatomy; the study (its body coverage and field "
        f"of view): {counts['study']}; the patient's recorded finding: {counts['pathology']}. "
        f"The first {len(shown)}, those naming the scanner first, then by detection score:</p>"
        + table_html(
            shown,
            ["feature", "description", "labels of its rule", "frequency %", "detection"],
            [0, 3, 4],
        )
    )


_KIND_NAMES = {
    "tpr_strong": "strong activations judged to match",
    "tpr_weak": "weak activations judged to match",
    "tnr_hard": "similar non-activating slices judged not to match",
    "tnr_random": "random non-activating slices judged not to match",
}


def _detection_kinds(scores: Any) -> str:
    """Where the detection scorer's decisions go right (median over the scored features)."""
    by_kind = ((scores or {}).get("detection") or {}).get("by_kind")
    if not isinstance(by_kind, dict):
        return ""
    rows = [
        [text, (by_kind.get(key) or {}).get("median"), (by_kind.get(key) or {}).get("mean")]
        for key, text in _KIND_NAMES.items()
        if isinstance(by_kind.get(key), dict)
    ]
    if not rows:
        return ""
    return "<h3>Where the detection scorer is right</h3>" + table_html(
        rows, ["slices of the detection sample", "median", "mean"], [1, 2]
    )


def fingerprint_section(ctx: Context, search: Any, n_examples: int, k: int) -> str:
    view = ctx.view
    parts = []
    fe = view.fingerprint_eval
    if isinstance(fe, dict):
        head = [
            (k2, fe[k2])
            for k2 in ("fingerprint_agreement", "modality_agreement", "plane_agreement", "k", "n")
            if k2 in fe
        ]
        parts.append(kpis(head) if head else "")
        methods = fe.get("methods")
        if isinstance(methods, dict) and methods:
            metrics = sorted(
                {
                    m2
                    for v in methods.values()
                    if isinstance(v, dict)
                    for m2, x in v.items()
                    if isinstance(x, int | float)
                }
            )
            rows = [[name, *[(v or {}).get(m2) for m2 in metrics]] for name, v in methods.items()]
            parts.append(table_html(rows, ["method", *metrics], range(1, len(metrics) + 1)))
        elif not head:
            flat = {k2: v for k2, v in _flatten(fe).items() if isinstance(v, int | float)}
            parts.append(table_html(sorted(flat.items()), ["measure", "value"], [1]))
    else:
        parts.append(missing("fingerprint evaluation", "run the index stage"))
    if view.codes is None or search is None:
        return "".join(parts)
    t = view.table
    queries = (
        t.groupby([c for c in ("modality", "plane") if c in t.columns], sort=True)
        .head(1)
        .index[:n_examples]
    )
    for row in queries:
        try:
            hits = search.similar(int(row), k)
        except Exception as e:  # the examples are illustrations: show why they are missing
            parts.append(missing("fingerprint examples", str(e)))
            break
        tiles = "".join(
            ctx.tile(r, f"{s:.2f}") for r, s in zip(hits.rows, hits.scores, strict=False)
        )
        parts.append(
            f'<div class="grid"><div class="q">{ctx.tile(int(row), "query: " + str(t.at[row, "slice_id"]))}</div>{tiles}</div>'
        )
    return "".join(parts)


def text_section(ctx: Context, search: Any, k: int, n_examples: int = 4) -> str:
    view = ctx.view
    tr = view.text_retrieval
    parts = []
    queries: list[dict[str, Any]] = []
    if isinstance(tr, dict):
        queries = [q for q in tr.get("queries", []) if isinstance(q, dict)]
        mean = tr.get("text_precision_at_10", tr.get("precision_at_n"))
        if mean is not None:
            parts.append(kpis([("mean precision@10", mean)]))
        aspects = tr.get("aspects")
        if isinstance(aspects, dict) and aspects:
            parts.append(table_html(sorted(aspects.items()), ["aspect", "precision@10"], [1]))
        if queries:
            rows = [
                [
                    q.get("text", q.get("query")),
                    q.get("precision_at_n", q.get("precision_at_10"))
                    if q.get("answerable", True)
                    else "no relevant slice in the gallery (not scored)",
                    _feature_names(q),
                ]
                for q in queries
            ]
            parts.append(table_html(rows, ["query", "precision@10", "features used"], [1]))
    else:
        parts.append(missing("text retrieval evaluation", "run the index stage"))
    if search is None:
        return "".join(parts)
    examples = [str(q.get("text", q.get("query", ""))) for q in queries[:n_examples]] or list(
        DEFAULT_QUERIES[:n_examples]
    )
    for text in examples:
        try:
            hits = search.text(text, k)
        except Exception as e:  # the examples are illustrations: show why they are missing
            parts.append(missing(f"text search examples ({text})", str(e)))
            break
        tiles = "".join(
            ctx.tile(r, f"{s:.2f}") for r, s in zip(hits.rows, hits.scores, strict=False)
        )
        reading = getattr(hits, "reading", None) or {}
        read_as = (
            f'<br><span class="muted">read as: {esc(reading["summary"])}</span>' if reading else ""
        )
        parts.append(
            f'<div class="grid"><div class="q"><b>“{esc(text)}”</b><br><span class="muted">{esc(hits.method)}</span>{read_as}</div>{tiles or "<p class=missing>no results</p>"}</div>'
        )
    return "".join(parts)


def _feature_names(q: dict[str, Any]) -> str:
    feats = q.get("features") or []
    return "; ".join(
        f"#{f.get('latent')} {f.get('description', '')}" for f in feats if isinstance(f, dict)
    )


def config_section(ctx: Context) -> str:
    from medsae.sae.runs import gone_runs

    ws = ctx.view.ws
    gone = {ws.root / kind / g.encoder / g.run for g in gone_runs(ws) for kind in g.artifacts}
    manifests = sorted(
        p
        for p in ws.root.rglob(MANIFEST)
        if not any(part.startswith(".") for part in p.relative_to(ws.root).parts)
        and p.parent not in gone
    )
    rows, blocks = [], []
    for p in manifests:
        folder = p.parent
        if folder == ws.report:
            continue
        m = read_manifest(folder) or {}
        rel = str(folder.relative_to(ws.root))
        rows.append(
            [
                rel,
                m.get("stage"),
                (m.get("timings") or {}).get("seconds"),
                m.get("version"),
                m.get("created"),
            ]
        )
        cfg = json.dumps(m.get("config", {}), indent=2, sort_keys=True, default=str)
        blocks.append(
            f"<details><summary>{esc(rel)} ({esc(m.get('stage'))})</summary><pre>{esc(cfg)}</pre></details>"
        )
    if not rows:
        return missing("manifests")
    return table_html(rows, ["artifact", "stage", "seconds", "version", "created"], [2]) + "".join(
        blocks
    )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
