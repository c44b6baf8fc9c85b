"""``report.html``: one self-contained page (no network, no CDN) a person reviews after a batch.

Summary at the top (scans, ok, review, failed, in pixels, model, engine), then one card per scan with
its overlay thumbnail(s) linking the full overlays, HC/BPD/OFD to one decimal with units, GA in
weeks+days, status, flags and reasons. Scans needing review come first, then failures, then the rest;
the page sorts (file, HC) and filters by status with a few lines of inline JavaScript.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

ORDER = {"review": 0, "error": 1, "ok": 2}

CSS = """
body{font:14px system-ui,sans-serif;margin:16px;background:#f6f7f9;color:#222}
h1{font-size:20px;margin:0 0 8px}.summary{display:flex;gap:18px;flex-wrap:wrap;margin:8px 0 14px}
.summary div{background:#fff;border-radius:6px;padding:8px 12px;box-shadow:0 1px 2px #0002}
.summary b{display:block;font-size:20px}.controls{margin:8px 0 14px}.controls button{margin-right:6px}
.cards{display:grid;align-items:start;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{background:#fff;border-radius:6px;padding:10px;box-shadow:0 1px 2px #0002;border-left:6px solid #2a7}
.card[data-status=review]{border-left-color:#e90}.card[data-status=error]{border-left-color:#c33}
.card h2{font-size:14px;margin:0 0 6px;word-break:break-all}.thumbs img{max-width:100%;max-height:200px}
table{border-collapse:collapse;width:100%;margin-top:6px}
td,th{padding:2px 6px;text-align:right;white-space:nowrap}
td.err{white-space:normal}
td:first-child,th:first-child{text-align:left}.reasons{color:#a50;margin-top:4px}.err{color:#c33}
.note{color:#666;font-size:12px;margin-top:14px}
"""

JS = """
function show(s){document.querySelectorAll('.card').forEach(c=>{
 c.style.display=(s==='all'||c.dataset.status===s)?'':'none'})}
function sortBy(k){const box=document.querySelector('.cards');const cs=[...box.children];
 cs.sort((a,b)=>k==='file'?a.dataset.file.localeCompare(b.dataset.file):
  (parseFloat(a.dataset.hc)||1e9)-(parseFloat(b.dataset.hc)||1e9));cs.forEach(c=>box.appendChild(c))}
addEventListener('DOMContentLoaded',()=>{const h=new URLSearchParams(location.hash.slice(1));
 if(h.get('sort'))sortBy(h.get('sort'));if(h.get('status'))show(h.get('status'))})
"""


def weeks_days(weeks: float | None) -> str:
    """20.43 -> '20w 3d' (days rounded down, as GA is written clinically); '' when unknown."""
    weeks = _float(weeks)
    if weeks is None:
        return ""
    total = int(math.floor(weeks * 7 + 1e-9))
    return f"{total // 7}w {total % 7}d"


def _float(v: Any) -> float | None:
    """A finite number, or None (missing, '', NaN, text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _num(row: dict, key: str) -> str:
    unit = row.get("unit") or "mm"
    v = _float(row.get(f"{key}_{unit}"))
    return "" if v is None else f"{v:.1f} {unit}"


def _url(path: str) -> str:
    """A relative path as a URL (``#``, ``?``, ``%``, spaces and non-UTF-8 bytes percent-encoded)."""
    return html.escape(quote(path, errors="surrogateescape"))


def scan_status(rows: list[dict]) -> str:
    """One scan's status from its method rows: error when no method measured it, review when any row is
    review or failed, else ok."""
    statuses = {r.get("status") for r in rows}
    if statuses == {"error"}:
        return "error"
    return "review" if statuses - {"ok"} else "ok"


def _card(file: str, rows: list[dict]) -> str:
    e = html.escape
    status = scan_status(rows)
    first = next((r for r in rows if r.get("status") != "error"), rows[0])
    hc = _float(first.get(f"hc_{first.get('unit') or 'mm'}"))
    thumbs = "".join(
        f'<a href="{_url(r["overlay"])}"><img loading="lazy" src="{_url(r["overlay"])}" '
        f'alt="{e(str(r.get("method", "")))}"></a>'
        for r in rows
        if r.get("overlay")
    )
    body = []
    for r in rows:
        method = e(str(r.get("method", "")))
        if r.get("status") == "error":
            body.append(
                f'<tr><td>{method}</td><td colspan="4" class="err">{e(str(r.get("error") or ""))}</td></tr>'
            )
            continue
        ga = weeks_days(r.get("ga_hadlock_hc_weeks"))
        body.append(
            f'<tr><td>{method}</td><td class="hc">{_num(r, "hc")}</td>'
            f'<td class="bpd">{_num(r, "bpd")}</td><td class="ofd">{_num(r, "ofd")}</td>'
            f'<td class="ga">{e(ga)}</td></tr>'
        )
    # each reason once, whichever rows of the scan give it (two methods both say "the methods disagree")
    parts = (p.strip() for r in rows for p in str(r.get("review_reasons") or "").split(";"))
    reasons = "; ".join(dict.fromkeys(filter(None, parts)))
    flags = ", ".join(sorted({f for r in rows for f in str(r.get("flags") or "").split(";") if f}))
    extra = f'<div class="reasons">review: {e(reasons)}</div>' if reasons else ""
    extra += f'<div class="flags">flags: {e(flags)}</div>' if flags else ""
    # sorted by HC in mm; a scan measured in pixels only sorts last (a pixel count is no size to compare)
    hc_attr = "" if hc is None or first.get("unit") != "mm" else f"{hc:g}"
    return (
        f'<div class="card" data-file="{e(file)}" data-status="{status}" data-hc="{hc_attr}">'
        f'<h2 title="{e(file)}">{e(Path(file).name)}</h2><div class="thumbs">{thumbs}</div>'
        "<table><tr><th>method</th><th>HC</th><th>BPD</th><th>OFD</th><th>GA (Hadlock)</th></tr>"
        f"{''.join(body)}</table>"
        f'<div>status: <b class="status">{status}</b></div>{extra}</div>'
    )


def render(rows: list[dict], summary: dict[str, Any]) -> str:
    """The whole page as text."""
    e = html.escape
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(str(r["file"]), []).append(r)
    files = sorted(by_file, key=lambda f: (ORDER[scan_status(by_file[f])], f))
    tiles = [
        ("scans", summary.get("n_scans")),
        ("ok", summary.get("n_ok")),
        ("review", summary.get("n_review")),
        ("failed", summary.get("n_failed")),
        ("in pixels", summary.get("n_px")),
        ("model", summary.get("model")),
        ("engine", summary.get("engine")),
    ]
    head = "".join(f"<div>{e(k)}<b>{e(str(v))}</b></div>" for k, v in tiles if v is not None)
    when = " - ".join(str(summary[k]) for k in ("started", "finished") if summary.get(k))
    version = f"fetalbio {summary['fetalbio_version']} " if summary.get("fetalbio_version") else ""
    when = f"{version}{when}".strip()
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fetalbio report</title>'
        f"<style>{CSS}</style><script>{JS}</script></head><body>"
        f'<h1>fetalbio: {len(files)} scans</h1><div class="summary">{head}</div>'
        '<div class="controls">show <button onclick="show(\'all\')">all</button>'
        "<button onclick=\"show('review')\">review</button><button onclick=\"show('error')\">failed</button>"
        "<button onclick=\"show('ok')\">ok</button> sort <button onclick=\"sortBy('file')\">file</button>"
        "<button onclick=\"sortBy('hc')\">HC</button></div>"
        f'<div class="cards">{"".join(_card(f, by_file[f]) for f in files)}</div>'
        f'<p class="note">{e(when) + ". " if when else ""}Not a medical device: every'
        " figure must be checked by a qualified person before clinical use.</p></body></html>"
    )


def write_report(out_dir: Path, rows: list[dict], summary: dict[str, Any]) -> Path:
    """Write ``out_dir/report.html`` atomically."""
    from fetalbio.writers import write_bytes_atomic

    return write_bytes_atomic(
        Path(out_dir) / "report.html", render(rows, summary).encode("utf-8", "backslashreplace")
    )
