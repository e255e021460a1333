"""Small HTML helpers and the page template of the report (inline CSS, no external files)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

CSS = """
:root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ec; --bg:#f7f8fa; --accent:#2456c9; --good:#1f8a4c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 32px; }
header h1 { margin:0; font-size:22px; } header p { margin:4px 0 0; color:var(--muted); }
nav.toc { padding:8px 32px; background:#fff; border-bottom:1px solid var(--line); position:sticky; top:0; z-index:2; font-size:13px; }
nav.toc a { margin-right:14px; color:var(--accent); text-decoration:none; }
main { max-width:1280px; margin:0 auto; padding:8px 32px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:18px 0; }
h2 { font-size:18px; margin:0 0 10px; } h3 { font-size:15px; margin:16px 0 6px; }
.muted { color:var(--muted); } .missing { color:var(--muted); font-style:italic; }
table { border-collapse:collapse; font-size:13px; margin:6px 0 10px; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.kpis { display:flex; flex-wrap:wrap; gap:12px; }
.kpi { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:150px; }
.kpi b { display:block; font-size:20px; } .kpi span { color:var(--muted); font-size:12px; }
.figs { display:flex; flex-wrap:wrap; gap:14px; } .figs figure { margin:0; max-width:560px; }
.figs img { max-width:100%; border:1px solid var(--line); border-radius:6px; }
figcaption { font-size:12px; color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(360px,1fr)); gap:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card h3 { margin:0 0 4px; }
.strip { display:grid; grid-template-columns:repeat(auto-fill,minmax(72px,1fr)); gap:4px; margin:6px 0; }
.strip img, .grid img { width:100%; aspect-ratio:1; object-fit:contain; background:#000; border-radius:3px; display:block; }
.grid { display:grid; grid-template-columns:140px repeat(auto-fill,minmax(88px,1fr)); gap:5px; align-items:start; margin:8px 0 14px; }
.grid .q { font-size:12px; } .grid .q img { outline:3px solid var(--accent); }
.tile .noimg { aspect-ratio:1; display:flex; align-items:center; justify-content:center; background:#eef0f4; border-radius:3px; font-size:10px; word-break:break-all; padding:2px; }
.tile { margin:0; min-width:0; } .tile figcaption { font-size:10px; line-height:1.2; word-break:break-word; }
.pill { display:inline-block; padding:0 7px; border-radius:9px; background:#eef2fb; color:var(--accent); font-size:12px; margin:1px 2px; }
.score { color:var(--good); font-weight:600; }
details pre { background:#f3f4f7; padding:10px; border-radius:6px; overflow:auto; font-size:12px; max-height:420px; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display (``-`` for missing or non-finite values)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return esc(value)


def missing(what: str, how: str = "") -> str:
    """The 'not computed' note a section shows when its artifact is absent."""
    extra = f" ({esc(how)})" if how else ""
    return f'<p class="missing">Not computed: {esc(what)}{extra}.</p>'


def table_html(
    rows: Sequence[Sequence[Any]], header: Sequence[str], numeric: Iterable[int] = ()
) -> str:
    nums = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{fmt(v)}</td>' if i in nums else f"<td>{fmt(v)}</td>"
            for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def frame_html(df: pd.DataFrame, max_rows: int = 50) -> str:
    """A DataFrame as a table (numbers right-aligned), at most ``max_rows`` rows."""
    shown = df.head(max_rows)
    numeric = [i for i, c in enumerate(shown.columns) if pd.api.types.is_numeric_dtype(shown[c])]
    rows = [[_py(v) for v in r] for r in shown.itertuples(index=False)]
    note = (
        f'<p class="muted">{len(df) - max_rows} more rows not shown.</p>'
        if len(df) > max_rows
        else ""
    )
    return table_html(rows, [str(c) for c in shown.columns], numeric) + note


def _py(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return str(v)
    if isinstance(v, list | tuple) or (hasattr(v, "__len__") and not isinstance(v, str)):
        return ", ".join(str(x) for x in list(v)[:6])
    return v


def kpis(items: Sequence[tuple[str, Any]]) -> str:
    return (
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{fmt(v)}</b><span>{esc(k)}</span></div>' for k, v in items)
        + "</div>"
    )


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are (anchor, title, inner HTML)."""
    toc = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(
        f'<section id="{esc(a)}"><h2>{esc(t)}</h2>{inner}</section>' for a, t, inner in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f'<nav class="toc">{toc}</nav><main>{body}</main></body></html>\n'
    )
