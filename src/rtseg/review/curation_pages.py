"""Curation results a person opens: one review page per flagged case and an index, most flagged first.

The pages are the prediction review pages (``review.page``) showing the training contours and their
flags; each flag comes with the command that excludes it from training.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

from rtseg.io.jsonfile import write_json
from rtseg.io.naming import ct_file, labels_file, review_files
from rtseg.io.nifti import read_nifti
from rtseg.labels import default_colors
from rtseg.review.index import batch_index
from rtseg.review.page import review_page, write_page

CURATION_DIR, CURATION_JSON, INDEX = "curation", "curation.json", "index.html"


def exclude_command(dataset_json: Path, case: str, organ: str | None) -> str:
    organ_part = f" --organ {organ}" if organ else ""
    return f"rtseg convert exclude --dataset {dataset_json} --case {case}{organ_part} --reason '...'"


def write_curation(result: Mapping[str, Any], dataset_json: str | Path) -> dict[str, Path]:
    """``OUT/curation/curation.json``, ``<case>_review.html`` for each flagged case and ``index.html``."""
    path = Path(dataset_json)
    folder = path.parent / CURATION_DIR
    names = result["class_names"]
    colors = default_colors(len(names))
    links = {}
    for case, qa in result["cases"].items():
        for f in qa["flags"]:
            f["exclude"] = exclude_command(path, case, f["organ"])
        if not qa["flags"]:
            continue
        ct, lab = read_nifti(path.parent / ct_file(case)), read_nifti(path.parent / labels_file(case))
        page = review_page(ct.array, lab.array, ct.affine, names, colors, qa=qa,
                           title=f"rtseg curation: {case} (training contours)")
        name = review_files(case)[2]
        write_page(page, folder / name)
        links[case] = name
    write_json(result, folder / CURATION_JSON)
    index = batch_index(list(result["cases"].values()), links, title="rtseg curation: training contours to check")
    note = (f"<p>Exclude a case or an organ of a case from training with <code>"
            f"{html.escape(exclude_command(path, '<case>', '<organ>'))}</code> (without --organ: the whole case).</p>")
    write_page(index.replace("</h1>", "</h1>" + note, 1), folder / INDEX)
    return {"json": folder / CURATION_JSON, "index": folder / INDEX}
