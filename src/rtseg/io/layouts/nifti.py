"""The ``nifti`` dataset layout: ``PATH/<split>/<id>_ct.nii.gz`` + ``<id>_labels.nii.gz``, or a flat
folder ``PATH`` whose splits a ``DATASET.SPLITS`` file (or rtseg's dataset JSON) lists."""
from __future__ import annotations

from pathlib import Path

from rtseg.errors import DataError
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.layouts.dataset_json import read_split_ids
from rtseg.io.naming import CT_SUFFIX, LABELS_SUFFIX, cases_in, ct_file, labels_file

NAME = "nifti"


def _listed(root: Path, split: str, splits_file: Path) -> list[CaseRef]:
    refs = []
    for cid in read_split_ids(splits_file, split):
        ct, lab = root / ct_file(cid), root / labels_file(cid)
        if not ct.exists() or not lab.exists():
            raise DataError(f"{splits_file}: case {cid} listed in split {split!r} but "
                            f"{ct.name if not ct.exists() else lab.name} is missing in {root}")
        refs.append(CaseRef(cid, ct, lab, NAME))
    return refs


def list_nifti_split(q: SplitQuery) -> list[CaseRef]:
    if q.splits_file is not None:
        return _listed(q.root, q.split, q.splits_file)
    d = q.root / q.split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (NIfTI layout is PATH/<split>/<id>_ct.nii.gz + <id>_labels.nii.gz)")
    cts, labs = cases_in(d, CT_SUFFIX), cases_in(d, LABELS_SUFFIX)
    if not cts:
        raise DataError(f"{d}: no *{ct_file('')} files found")
    only_ct, only_lab = sorted(set(cts) - set(labs)), sorted(set(labs) - set(cts))
    if only_lab:
        raise DataError(f"{d}: labels without CT: {', '.join(only_lab[:5])}")
    if only_ct:
        raise DataError(f"{d}: CT without labels: {', '.join(only_ct[:5])} (expected {labels_file('<id>')} beside each {ct_file('<id>')})")
    return [CaseRef(cid, cts[cid], labs[cid], NAME) for cid in sorted(cts)]


LAYOUT = Layout(NAME, list_nifti_split, "PATH/<split>/<id>_ct.nii.gz + <id>_labels.nii.gz, or a flat PATH with DATASET.SPLITS")
