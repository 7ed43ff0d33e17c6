"""The self-contained HTML review page of one case, and the batch index that links the cases.

One file, no network: CSS, JavaScript (assets/review.js, a small 2D-canvas renderer) and the
encoded volumes (:mod:`rtseg.review.encode`) are inlined, and a Content-Security-Policy forbids
any fetch. Volumes are reoriented to RAS+ first (lossless), so the display convention is the
one of :mod:`rtseg.figures`: axial with anterior up and the patient's right on the
viewer's left, coronal and sagittal with superior up.
"""
from __future__ import annotations

import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel.orientations as nio
import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.review.encode import encode_ct, encode_labels
from rtseg.review.measures import check_grid, spacing_ras
from rtseg.review.qa import organs_for_review

#: Byte budget of the encoded CT (base64); with labels and page it keeps a 512x512x160 case under ~5 MB.
DEFAULT_CT_BUDGET = 4_000_000
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src data: blob:"
_VIEWS = ("axial", "coronal", "sagittal")
_METRIC_COLUMNS = (("dice", "Dice", "{:.3f}"), ("hd95", "HD95 mm", "{:.1f}"), ("assd", "ASSD mm", "{:.2f}"),
                   ("vol_pred_ml", "pred ml", "{:.1f}"), ("vol_gt_ml", "GT ml", "{:.1f}"))


def _asset(name: str) -> str:
    return resources.files("rtseg.review").joinpath("assets", name).read_text(encoding="utf-8")


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ornt = nio.io_orientation(affine)
    return np.ascontiguousarray(nio.apply_orientation(array, ornt))


def _start_slices(labels_ras: np.ndarray) -> dict[str, int]:
    """Slices through the median of the contoured voxels along each axis (the middle if there are none)."""
    mask = labels_ras > 0
    centre = []
    for axis in range(3):
        profile = np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis))
        cum = np.cumsum(profile)
        centre.append(int(np.searchsorted(cum, cum[-1] / 2.0)) if cum[-1] else labels_ras.shape[axis] // 2)
    return {"axial": centre[2], "coronal": centre[1], "sagittal": centre[0]}


def _organ_centres(labels_ras: np.ndarray) -> dict[str, list[int]]:
    """Voxel (RAS+ array indices) nearest each organ's centre of mass: where a click on its name jumps."""
    from scipy import ndimage

    out = {}
    for i, box in enumerate(ndimage.find_objects(labels_ras)):
        if box is not None:
            com = ndimage.center_of_mass(labels_ras[box] == i + 1)
            out[str(i + 1)] = [int(round(c)) + b.start for c, b in zip(com, box)]
    return out


def _qa_table(qa: Mapping[str, Any] | None, class_names: Sequence[str], colors: Sequence[Sequence[int]]) -> str:
    """Organ table, flagged organs first; each row carries the organ's show/hide toggle."""
    if qa is None:
        rows = [{"organ": n, "label": i, "flags": []} for i, n in enumerate(class_names) if i > 0]
    else:
        rows = list(organs_for_review(qa))

    def cell(r: Mapping[str, Any], key: str, fmt: str) -> str:
        v = r.get(key)
        return "" if v is None else fmt.format(v)

    head = ("<tr><th>show</th><th>organ</th><th>volume ml</th><th>pieces</th><th>edges touched</th><th>boundary conf.</th>"
            "<th>boundary entropy</th><th>TTA disagreement</th><th>flags</th></tr>")
    body = []
    for r in rows:
        lab = int(r["label"])
        rgb = ",".join(str(int(v)) for v in colors[lab - 1])
        flags = "; ".join(html.escape(f["text"]) for f in r["flags"])
        body.append(
            f'<tr class="{"flagged" if r["flags"] else ""}" data-label="{lab}"><td><input type="checkbox" id="toggle-{lab}" checked></td>'
            f'<td class="name"><a href="#" id="goto-{lab}" title="show this organ"><span class="swatch" style="background:rgb({rgb})">'
            f'</span>{html.escape(str(r["organ"]))}</a></td>'
            f'<td>{cell(r, "volume_ml", "{:,.1f}")}</td><td>{cell(r, "components", "{}")}</td>'
            f'<td class="name">{html.escape(", ".join(r.get("edges", [])))}</td><td>{cell(r, "boundary_confidence", "{:.3f}")}</td>'
            f'<td>{cell(r, "boundary_entropy", "{:.3f}")}</td><td>{cell(r, "tta_disagreement", "{:.3f}")}</td>'
            f'<td class="flags">{flags}</td></tr>'
        )
    inputs = [] if qa is None else [f for f in qa["flags"] if f["organ"] is None]
    input_html = "".join(f"<li>{html.escape(f['text'])}</li>" for f in inputs)
    return (f'<ul class="inputflags">{input_html}</ul>' if input_html else "") + f'<table id="qa">{head}{"".join(body)}</table>'


def _metrics_table(metrics: Sequence[Mapping[str, Any]], against: str = "ground truth") -> str:
    head = "<tr><th>organ</th>" + "".join(f"<th>{t}</th>" for _, t, _ in _METRIC_COLUMNS) + "</tr>"
    body = "".join(
        f'<tr><td class="name">{html.escape(str(m["organ"]))}</td>'
        + "".join(f"<td>{fmt.format(m[k]) if np.isfinite(m[k]) else html.escape(str(m[k]))}</td>" for k, _, fmt in _METRIC_COLUMNS)
        + "</tr>" for m in metrics)
    return f'<h2>Prediction against {html.escape(against)}</h2><table id="metrics">{head}{body}</table>'


def _views(kind: str, title: str) -> str:
    cells = "".join(
        f'<div class="view"><canvas id="view-{kind}-{v}"></canvas>'
        + (f'<input type="range" id="slider-{v}" min="0" max="0" step="1" aria-label="{v} slice">'
           f'<span>{v} <span id="pos-{v}"></span></span>' if kind == "pred" else f"<span>{v}</span>")
        + "</div>" for v in _VIEWS)
    return f'<div class="rowlabel">{title}</div><div class="views">{cells}</div>'


def _check_inputs(ct: np.ndarray, labels: np.ndarray, gt: np.ndarray | None, class_names: Sequence[str],
                  colors: Sequence[Sequence[int]]) -> None:
    if np.shape(ct) != labels.shape or (gt is not None and np.shape(gt) != labels.shape):
        raise DataError(f"CT {np.shape(ct)}, labels {labels.shape}" + ("" if gt is None else f" and ground truth {np.shape(gt)}")
                        + " must share one grid")
    if len(colors) < len(class_names) - 1:
        raise DataError(f"{len(colors)} colours for {len(class_names) - 1} organs; expected one [r, g, b] per organ")
    top = int(max(labels.max(initial=0), 0 if gt is None else np.max(gt, initial=0)))
    if top > len(class_names) - 1:
        raise DataError(f"labels contain {top} but only {len(class_names) - 1} organ names were given")


def review_page(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str],
                colors: Sequence[Sequence[int]], *, gt: np.ndarray | None = None, qa: Mapping[str, Any] | None = None,
                metrics: Sequence[Mapping[str, Any]] | None = None, title: str = "rtseg review",
                ct_budget_bytes: int = DEFAULT_CT_BUDGET, gt_title: str = "Ground truth") -> str:
    """The HTML text of one case's review page (arrays on one grid with ``affine``, voxel -> RAS+ mm); ``gt_title``
    names the second row (``rtseg adapt``: the planning contours)."""
    labels, affine = check_grid(labels, affine)
    _check_inputs(ct, labels, gt, class_names, colors)
    if gt is not None and metrics is None:
        from rtseg.evaluation.surface import case_metrics

        metrics = case_metrics(labels, gt, np.linalg.norm(affine[:3, :3], axis=0), class_names)
    ct_ras, lab_ras = _to_ras(np.asarray(ct), affine), _to_ras(labels, affine)
    data = {
        "class_names": list(class_names), "colors": [[int(v) for v in c] for c in colors],
        "spacing": spacing_ras(affine), "start": _start_slices(lab_ras), "centres": _organ_centres(lab_ras),
        "ct": encode_ct(ct_ras, ct_budget_bytes), "labels": encode_labels(lab_ras),
        "gt": None if gt is None else encode_labels(_to_ras(np.asarray(gt), affine)),
    }
    f = data["ct"]["factor"]
    note = (f"CT shown at {data['ct']['shape'][0]} x {data['ct']['shape'][1]} in-plane (means over {f:g} x {f:g} voxels) to keep the page small; "
            if f > 1 else "CT at full resolution; ") + "HU quantised (error at most 1 HU from -200 to 300 HU, 4 HU in lung and bone, 10 HU in air and dense bone); contours at full resolution."
    n_flags = "" if qa is None else f" &middot; {qa['n_flags']} flag(s), weight {qa['flag_weight']}"
    controls = (
        '<div class="controls"><span>window:</span>'
        + "".join(f'<button id="preset-{p}">{t}</button>' for p, t in (("soft", "soft tissue"), ("bone", "bone"), ("lung", "lung")))
        + '<span id="wl"></span><label>opacity <input type="range" id="opacity" min="0" max="1" step="0.05" value="0.5"></label>'
        '<label>contours <select id="style"><option value="fill">filled</option><option value="outline">outline</option></select></label></div>'
    )
    body = (f"<h1>{html.escape(title)}{n_flags}</h1><div id=\"status\" class=\"note\">{html.escape(note)}</div>{controls}"
            + _views("pred", "Prediction") + ("" if gt is None else _views("gt", html.escape(gt_title)))
            + "<h2>Contour QA</h2>" + _qa_table(qa, class_names, colors)
            + ("" if not metrics else _metrics_table(metrics, gt_title.lower())))
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{_asset("review.css")}</style></head>'
            f'<body>{body}<script type="application/json" id="rtseg-data">{payload}</script><script>{_asset("review.js")}</script></body></html>')


def write_page(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a page atomically (a reader never sees half a page)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
