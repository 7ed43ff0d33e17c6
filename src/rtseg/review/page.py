"""The self-contained HTML review page of one case, and the batch index that links the cases.

One file, no network: CSS, JavaScript (assets/review.js, a small 2D-canvas renderer) and the
encoded volumes (:mod:`rtseg.review.encode`) are inlined, and a Content-Security-Policy forbids
any fetch. Volumes are reoriented to RAS+ first (lossless), so the display convention is the
one of :mod:`rtseg.figures`: axial with anterior up and the patient's right on the
viewer's left, coronal and sagittal with superior up. Each view's edges carry the patient's
directions (R/L, A/P, S/I) computed from the affine, so an oblique scan shows e.g. "RA".
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
from rtseg.review.qa import WEIGHTS, organs_for_review

#: Byte budget of the encoded CT (base64); with labels and page it keeps a 512x512x160 case under ~5 MB.
DEFAULT_CT_BUDGET = 4_000_000
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src data: blob:"
_VIEWS = ("axial", "coronal", "sagittal")
_METRIC_COLUMNS = (("dice", "Dice", "{:.3f}"), ("hd95", "HD95 mm", "{:.1f}"), ("assd", "ASSD mm", "{:.2f}"),
                   ("vol_pred_ml", "pred ml", "{:.1f}"), ("vol_gt_ml", "GT ml", "{:.1f}"))


#: A direction's secondary letters are shown from this share of its unit vector on (about 15 degrees of obliquity).
OBLIQUE_LETTER = 0.25
#: Screen edge -> (array axis of the RAS+ volume, sign) per view: the display convention of review.js's GEOM.
_EDGES = {
    "axial": {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)},
    "coronal": {"left": (0, 1), "right": (0, -1), "top": (2, 1), "bottom": (2, -1)},
    "sagittal": {"left": (1, 1), "right": (1, -1), "top": (2, 1), "bottom": (2, -1)},
}
_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))  # RAS+ world axes: (+, -)
#: Why an optional QA column is empty, from qa.json's ``rules_skipped`` (rule name -> the words in the cell).
_EMPTY_BECAUSE = {"tta_disagreement": ("tta", "TTA off"), "boundary_confidence": ("uncertain", "no probabilities"),
                  "boundary_entropy": ("uncertain", "no probabilities")}


def direction_letters(vector: Sequence[float]) -> str:
    """Patient directions of a RAS+ world vector, largest component first: (1, 0, 0) -> "R", (0.9, -0.4, 0) -> "RP"."""
    v = np.asarray(vector, dtype=float)
    v = v / np.linalg.norm(v)
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(_LETTERS[a][0 if v[a] > 0 else 1] for i, a in enumerate(order) if i == 0 or abs(v[a]) >= OBLIQUE_LETTER)


def orientation_markers(affine: np.ndarray, shape: Sequence[int]) -> dict[str, dict[str, str]]:
    """Letters at each view's left, right, top and bottom edge, from the directions of the displayed (RAS+
    reoriented) array axes in the world: what a viewer writes at the image edges."""
    ornt = nio.io_orientation(affine)
    shown = np.asarray(affine, dtype=float) @ nio.inv_ornt_aff(ornt, tuple(int(n) for n in shape))
    axes = shown[:3, :3]
    return {view: {edge: direction_letters(sign * axes[:, axis]) for edge, (axis, sign) in edges.items()}
            for view, edges in _EDGES.items()}


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


def _weights_text() -> str:
    by_weight: dict[int, list[str]] = {}
    for kind, w in WEIGHTS.items():
        by_weight.setdefault(int(w), []).append(kind.replace("_", " "))
    return ", ".join(f"{' / '.join(sorted(kinds))} {w}" for w, kinds in sorted(by_weight.items(), reverse=True))


def _legend(qa: Mapping[str, Any] | None) -> str:
    """What the columns and the page title's "weight" mean, in the page itself."""
    if qa is None:
        return '<p class="note legend">QA was off for this case: no measures and no flags.</p>'
    skipped = "; ".join(str(r) for r in qa.get("rules_skipped", []))
    items = [
        ("weight", "each flag counts by its kind (" + _weights_text() + "); the case's weight is their sum, and the "
         "batch index lists the heaviest cases first. It orders the review; it is not a probability of error."),
        ("pieces", "separate 26-connected parts of the organ (1 is usual)"),
        ("edges touched", "scan edges the organ's bounding box reaches: it may be cut off there"),
        ("boundary conf.", "mean largest class probability in a band one voxel either side of the organ's surface "
         "(1 = certain)"),
        ("boundary entropy", "mean entropy over that band, 0 certain to 1 uniform; flagged above the QA threshold"),
        ("TTA disagreement", "1 - |intersection| / |union| of the organ's masks over mirrored test-time-augmentation "
         "passes (0 = they agree); only with rtseg predict --tta, so 'TTA off' without it"),
    ]
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    note = f'<p class="note">Not measured here: {html.escape(skipped)}.</p>' if skipped else ""
    return f'<details class="legend" open><summary>What the columns mean</summary><dl>{rows}</dl>{note}</details>'


def _empty_because(qa: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Column -> the words its cells show when no organ has a value ("TTA off", "no probabilities")."""
    if qa is None:
        return {}
    skipped = [str(r) for r in qa.get("rules_skipped", [])]
    out = {}
    for key, (rule, words) in _EMPTY_BECAUSE.items():
        if rows and all(r.get(key) is None for r in rows):
            out[key] = words if any(s.split(" ")[0] == rule for s in skipped) else "not measured"
    return out


def _qa_table(qa: Mapping[str, Any] | None, class_names: Sequence[str], colors: Sequence[Sequence[int]]) -> str:
    """Organ table, flagged organs first; each row carries the organ's show/hide toggle; a column no organ has a
    value in says why in its cells ("TTA off"); a legend explains the columns and the weight."""
    if qa is None:
        rows = [{"organ": n, "label": i, "flags": []} for i, n in enumerate(class_names) if i > 0]
    else:
        rows = list(organs_for_review(qa))
    empty = _empty_because(qa, rows)

    def cell(r: Mapping[str, Any], key: str, fmt: str) -> str:
        v = r.get(key)
        if v is None:
            return f'<td class="why">{html.escape(empty[key])}</td>' if key in empty else "<td></td>"
        return f"<td>{fmt.format(v)}</td>"

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
            f'{cell(r, "volume_ml", "{:,.1f}")}{cell(r, "components", "{}")}'
            f'<td class="name">{html.escape(", ".join(r.get("edges", [])))}</td>{cell(r, "boundary_confidence", "{:.3f}")}'
            f'{cell(r, "boundary_entropy", "{:.3f}")}{cell(r, "tta_disagreement", "{:.3f}")}'
            f'<td class="flags">{flags}</td></tr>'
        )
    inputs = [] if qa is None else [f for f in qa["flags"] if f["organ"] is None]
    input_html = "".join(f"<li>{html.escape(f['text'])}</li>" for f in inputs)
    return ((f'<ul class="inputflags">{input_html}</ul>' if input_html else "")
            + f'<table id="qa">{head}{"".join(body)}</table>' + _legend(qa))


def _metrics_table(metrics: Sequence[Mapping[str, Any]], against: str = "ground truth") -> str:
    head = "<tr><th>organ</th>" + "".join(f"<th>{t}</th>" for _, t, _ in _METRIC_COLUMNS) + "</tr>"
    body = "".join(
        f'<tr><td class="name">{html.escape(str(m["organ"]))}</td>'
        + "".join(f"<td>{fmt.format(m[k]) if np.isfinite(m[k]) else html.escape(str(m[k]))}</td>" for k, _, fmt in _METRIC_COLUMNS)
        + "</tr>" for m in metrics)
    return f'<h2>Prediction against {html.escape(against)}</h2><table id="metrics">{head}{body}</table>'


def _views(kind: str, title: str, markers: Mapping[str, Mapping[str, str]]) -> str:
    def frame(v: str) -> str:
        edges = "".join(f'<span class="orient {e}" id="orient-{kind}-{v}-{e}">{html.escape(t)}</span>'
                        for e, t in markers[v].items())
        return f'<div class="frame"><canvas id="view-{kind}-{v}"></canvas>{edges}</div>'

    cells = "".join(
        f'<div class="view">{frame(v)}'
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
    markers = orientation_markers(affine, labels.shape)
    data = {
        "class_names": list(class_names), "colors": [[int(v) for v in c] for c in colors],
        "spacing": spacing_ras(affine), "start": _start_slices(lab_ras), "centres": _organ_centres(lab_ras),
        "ct": encode_ct(ct_ras, ct_budget_bytes), "labels": encode_labels(lab_ras),
        "gt": None if gt is None else encode_labels(_to_ras(np.asarray(gt), affine)),
    }
    f = data["ct"]["factor"]
    note = (f"CT shown at {data['ct']['shape'][0]} x {data['ct']['shape'][1]} in-plane (means over {f:g} x {f:g} voxels) to keep the page small; "
            if f > 1 else "CT at full resolution; ") + "HU quantised (error at most 1 HU from -200 to 300 HU, 4 HU in lung and bone, 10 HU in air and dense bone); contours at full resolution."
    n_flags = "" if qa is None else (f' &middot; {qa["n_flags"]} flag(s), <span title="the flags\' summed weight: '
                                     f'see &quot;What the columns mean&quot; below">weight {qa["flag_weight"]}</span>')
    controls = (
        '<div class="controls"><span>window:</span>'
        + "".join(f'<button id="preset-{p}">{t}</button>' for p, t in (("soft", "soft tissue"), ("bone", "bone"), ("lung", "lung")))
        + '<span id="wl"></span><label>opacity <input type="range" id="opacity" min="0" max="1" step="0.05" value="0.5"></label>'
        '<label>contours <select id="style"><option value="fill">filled</option><option value="outline">outline</option></select></label></div>'
    )
    body = (f"<h1>{html.escape(title)}{n_flags}</h1><div id=\"status\" class=\"note\">{html.escape(note)}</div>{controls}"
            + _views("pred", "Prediction", markers)
            + ("" if gt is None else _views("gt", html.escape(gt_title), markers))
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
