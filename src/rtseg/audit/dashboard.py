"""The audit dashboard's HTML (one file, inline SVG, no script): drift banner, table, box plots, trend, largest edits."""
from __future__ import annotations

import html
import math
from typing import Any, Mapping

from rtseg.audit.summary import MEDIANS, STATUSES_ORDER, AuditReport
from rtseg.figures.audit_plots import box_plot_svg, trend_svg

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td.name,th.name{text-align:left}"
        ".alarm{color:#a00;font-weight:bold}.ok{color:#060}.figs{display:flex;flex-wrap:wrap;gap:12px}"
        ".note{color:#555;font-size:12px}")
_BOXES = (("surface_dice_2mm", "Surface Dice at 2 mm (1 = untouched)"), ("apl_mm", "Added path length (mm)"),
          ("dice", "Dice"), ("hd95_mm", "HD95 (mm)"))
_LARGEST = (("dice", "{:.3f}"), ("surface_dice_2mm", "{:.3f}"), ("apl_mm", "{:.0f}"), ("hd95_mm", "{:.1f}"),
            ("volume_ratio", "{:.3f}"))


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    return fmt.format(f) if math.isfinite(f) else _e(v)


def _drift(rep: AuditReport, window: int, margin: float) -> str:
    alarms = rep.alarms
    head = (f'<h2 id="drift-status" class="{"alarm" if alarms else "ok"}">'
            + (f"Drift alarm: {len(alarms)} organ(s)" if alarms else "No drift alarm") + "</h2>")
    items = "".join(f'<li class="{"alarm" if d.alarm else ""}" data-organ="{_e(d.organ)}">{_e(d.text(margin))}</li>'
                    for d in rep.drift)
    return (head + f'<p class="note">Rolling median of surface Dice at 2 mm over {window} cases against the baseline '
            f'minus {margin:g}.</p><ul id="drift">{items}</ul>')


def _summary(rep: AuditReport) -> str:
    head = ('<tr><th class="name">organ</th><th>n</th>' + "".join(f"<th>{s}</th>" for s in STATUSES_ORDER)
            + "".join(f"<th>median {t}</th>" for _, t, _ in MEDIANS) + "</tr>")
    body = "".join(
        f'<tr data-organ="{_e(s["organ"])}"><td class="name">{_e(s["organ"])}</td><td>{s["n"]}</td>'
        + "".join(f"<td>{s[st]}</td>" for st in STATUSES_ORDER)
        + "".join(f"<td>{'-' if s[k] is None else f.format(s[k])}</td>" for k, _, f in MEDIANS) + "</tr>"
        for s in rep.summary)
    return f'<h2>Per organ</h2><table id="summary">{head}{body}</table>'


def _largest(rep: AuditReport, pages: Mapping[str, str], n: int) -> str:
    edited = [r for r in rep.rows if r["status"] != "unchanged"]
    edited.sort(key=lambda r: (-float(r["apl_mm"]), float(r["surface_dice_2mm"])))
    head = ('<tr><th class="name">case (CT series)</th><th class="name">organ</th><th class="name">status</th>'
            + "".join(f"<th>{k}</th>" for k, _ in _LARGEST) + '<th class="name">date</th><th class="name">model</th></tr>')
    body = []
    for r in edited[:n]:
        case = _e(r["case"])
        link = f'<a href="{_e(pages[r["case"]])}">{case}</a>' if r["case"] in pages else case
        body.append(f'<tr><td class="name">{link}</td><td class="name">{_e(r["organ"])}</td><td class="name">{_e(r["status"])}'
                    "</td>" + "".join(f"<td>{_num(r[k], f)}</td>" for k, f in _LARGEST)
                    + f'<td class="name">{_e(r.get("date", ""))}</td><td class="name">{_e(r.get("model", ""))}</td></tr>')
    return (f"<h2>Largest edits</h2><p class=\"note\">By added path length; the case links open the review page with the "
            f"auto contours (top) and the approved ones (bottom).</p><table id=\"largest\">{head}{''.join(body)}</table>")


def dashboard_html(rep: AuditReport, pages: Mapping[str, str], window: int, margin: float, largest: int) -> str:
    n_cases = len({r["case"] for r in rep.rows})
    boxes = "".join(f'<div class="fig" id="box-{k}">{box_plot_svg(rep.rows, k, t)}</div>' for k, t in _BOXES)
    trend = trend_svg(rep.rows, "surface_dice_2mm", "Mean surface Dice (2 mm) over the organs of each case, by model version")
    body = (f"<h1>rtseg audit: what physicians changed</h1><p class=\"note\">{n_cases} case(s), {len(rep.rows)} organ row(s)."
            "</p>" + _drift(rep, window, margin) + _summary(rep) + f'<h2>Distributions</h2><div class="figs">{boxes}</div>'
            + f'<h2>Over time</h2><div class="fig" id="trend">{trend}</div>' + _largest(rep, pages, largest))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{_CSP}"><link rel="icon" href="data:,"><title>rtseg audit</title><style>{_CSS}</style></head>'
            f"<body>{body}</body></html>")
