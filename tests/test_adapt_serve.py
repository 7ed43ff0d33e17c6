"""``rtseg serve``'s adapt route: a known patient's CT goes through adapt, an unknown one through the population model,
and the RTSTRUCT says which."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtseg.adapt.api import prepare
from rtseg.adapt.finetune import FinetuneOptions
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.dicom.write import write_dicom_series
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume
from rtseg.serve.adapt_route import find_patient, route_contour
from rtseg.serve.contour import Contourer
from rtseg.synthetic.fractions import generate_fraction
from dicom_checks import assert_dciodvfy_clean
from test_adapt_patient import make_population

pytest.importorskip("itk")


@pytest.mark.slow
def test_serve_routes_a_known_patient_through_adapt_and_an_unknown_one_through_the_population_model(tmp_path: Path) -> None:
    pop = make_population(tmp_path / "pop.pt")
    plan_ct, plan_lab = generate_fraction(3, 0)
    write_dicom_series(plan_ct, tmp_path / "plan", patient_id="PAT-A")
    plan_read = read_dicom_series(tmp_path / "plan")
    assert np.allclose(plan_read.affine, plan_ct.affine) and np.array_equal(plan_read.array, plan_ct.array)
    write_nifti(Volume(plan_lab.array, plan_read.affine), tmp_path / "plan_labels.nii.gz")
    registry = tmp_path / "patients"
    pdir = prepare(pop, tmp_path / "plan", tmp_path / "plan_labels.nii.gz", registry / "p1", FinetuneOptions(minutes=0.03))
    assert pdir.patient_hash and "PAT-A" not in (registry / "p1" / "patient.json").read_text()
    frac, _ = generate_fraction(3, 1)
    write_dicom_series(frac, tmp_path / "known", patient_id="PAT-A")
    write_dicom_series(frac, tmp_path / "unknown", patient_id="PAT-B")
    assert find_patient(registry, pdir.patient_hash) == registry / "p1"
    contourer = Contourer(pop, "cpu")
    out = tmp_path / "outbox"
    out.mkdir()
    known = route_contour(contourer, str(registry), tmp_path / "known", out, "job1", ["rtstruct"], None)
    unknown = route_contour(contourer, str(registry), tmp_path / "unknown", out, "job2", ["rtstruct"], None)
    assert known.qa["route"].startswith("adapt fused") and "adapt fused" in known.seconds
    assert unknown.qa["route"].startswith("population model (no patient directory") and "population model" in unknown.seconds
    for done, word in ((known, "adapt fused"), (unknown, "population model")):
        rs = [p for p in done.outputs if p.name.endswith("_rtstruct.dcm")][0]
        assert word in pydicom.dcmread(rs).StructureSetDescription
        assert_dciodvfy_clean(rs)
    other = Contourer(make_population(tmp_path / "other.pt", seed=1), "cpu")  # the node's model changed since prepare
    refused = route_contour(other, str(registry), tmp_path / "known", out, "job4", ["rtstruct"], None)
    assert refused.qa["route"].startswith("population model (adapt refused:") and "sha256" in refused.qa["route"]
    assert str(registry) not in refused.qa["route"]  # the patient folder's name stays out of files and logs
    plain = route_contour(contourer, None, tmp_path / "known", out, "job3", ["rtstruct"], None)
    assert "route" not in plain.qa  # no registry configured: the node behaves as before
