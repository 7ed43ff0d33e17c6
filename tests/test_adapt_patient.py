"""``rtseg adapt``: the patient directory and its refusals, prepare (fine-tuning) and contour through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.adapt.patient import (PATIENT_MODEL, create_patient_dir, file_sha256, hash_patient_id, open_patient_dir,
                                 read_contours)
from rtseg.cli.main import main
from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import DataError
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume
from rtseg.labels import PELVIS_CLASS_NAMES
from rtseg.models.spec import build_model, model_spec
from rtseg.synthetic.fractions import generate_fraction

pytest.importorskip("itk")

COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def make_population(path: Path, names=tuple(PELVIS_CLASS_NAMES), seed: int = 0) -> Path:
    """A small untrained network standing in for the population model (its weights do not matter here)."""
    torch.manual_seed(seed)
    spec = model_spec("ResUnet_3D", 1, len(names), 4, 0.0)
    model = build_model(spec).eval()
    bundle = InferenceBundle(spec, tuple(names), tuple(COLORS[: len(names) - 1]),
                             Preprocessing(Normalization("ct_window", (-250.0, 350.0)), None), (32, 32, 16))
    save_bundle(path, bundle, model.state_dict())
    return path


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plan")
    ct, lab = generate_fraction(3, 0)
    fr, fr_lab = generate_fraction(3, 1)
    return {"ct": write_nifti(ct, d / "plan_ct.nii.gz"), "labels": write_nifti(lab, d / "plan_labels.nii.gz"),
            "fraction": write_nifti(fr, d / "fraction1_ct.nii.gz"), "fraction_labels": write_nifti(fr_lab, d / "f1_labels.nii.gz"),
            "pop": make_population(d / "pop.pt"), "other_pop": make_population(d / "other.pt", seed=1)}


def test_patient_id_is_kept_only_hashed() -> None:
    h = hash_patient_id("PAT-001")
    assert len(h) == 32 and "PAT" not in h and h == hash_patient_id("PAT-001") != hash_patient_id("PAT-002")


def test_contours_on_another_grid_are_refused(plan_files, tmp_path: Path) -> None:
    ct = read_nifti(plan_files["ct"])
    lab = read_nifti(plan_files["labels"])
    moved = lab.affine.copy()
    moved[:3, 3] += [0.0, 0.0, 25.0]  # another scan's frame: same shape, another origin
    write_nifti(Volume(lab.array, moved), tmp_path / "moved.nii.gz")
    with pytest.raises(DataError, match="another scan or frame of reference"):
        read_contours(tmp_path / "moved.nii.gz", ct, PELVIS_CLASS_NAMES)
    assert read_contours(plan_files["labels"], ct, PELVIS_CLASS_NAMES).shape == ct.shape


def test_patient_dir_of_another_population_model_or_class_list_is_refused(plan_files, tmp_path: Path) -> None:
    ct, lab = read_nifti(plan_files["ct"]), read_nifti(plan_files["labels"])
    pdir = create_patient_dir(tmp_path / "p", plan_files["pop"], ct, lab, PELVIS_CLASS_NAMES)
    again = open_patient_dir(tmp_path / "p")
    assert again.contoured == {1, 2, 3, 4, 5} and again.population_sha256 == file_sha256(plan_files["pop"])
    again.check_population(file_sha256(plan_files["pop"]), PELVIS_CLASS_NAMES, "pop.pt")
    with pytest.raises(DataError, match="population model sha256"):
        again.check_population(file_sha256(plan_files["other_pop"]), PELVIS_CLASS_NAMES, "other.pt")
    with pytest.raises(DataError, match="made for classes"):
        again.check_population(file_sha256(plan_files["pop"]), PELVIS_CLASS_NAMES[:4], "pop.pt")
    (pdir.root / "population.pt").write_bytes(Path(plan_files["other_pop"]).read_bytes())  # swapped behind our back
    with pytest.raises(DataError, match="not the recorded"):
        open_patient_dir(pdir.root)
    with pytest.raises(Exception, match="exists and is not empty"):
        create_patient_dir(tmp_path / "p", plan_files["pop"], ct, lab, PELVIS_CLASS_NAMES)


@pytest.mark.slow
def test_prepare_contour_update_through_the_cli(plan_files, tmp_path: Path, capsys) -> None:
    pdir = tmp_path / "patient"
    assert main(["adapt", "prepare", "--checkpoint", str(plan_files["pop"]), "--plan-ct", str(plan_files["ct"]),
                 "--plan-contours", str(plan_files["labels"]), "--out", str(pdir), "--minutes", "0.05"]) == 0
    manifest = json.loads((pdir / "patient.json").read_text())
    assert manifest["patient_model"]["iterations"] >= 1 and (pdir / PATIENT_MODEL).is_file()
    fusion = manifest["fusion"]  # the population model's Dice on the plan, recomputed here, and the shares it gives
    from rtseg.adapt.methods import fusion_weights

    shares = fusion_weights(fusion["mean"] if fusion["mean"] is not None else float("nan"))
    assert set(fusion["population_plan_dice"]) <= set(PELVIS_CLASS_NAMES[1:]) and fusion["weights"] == shares
    assert fusion["weight"] == shares["propagated"]
    assert manifest["planning"]["patient_hash"] is None  # NIfTI: no ID to hash, none invented
    out = tmp_path / "out"
    assert main(["adapt", "contour", "--patient", str(pdir), "--ct", str(plan_files["fraction"]), "--out", str(out),
                 "--method", "fused", "--checkpoint", str(plan_files["pop"]), "--format", "nifti", "html"]) == 0
    pred = read_nifti(out / "fraction1_pred.nii.gz").array
    page = (out / "fraction1_review.html").read_text()
    assert "(adapt: fused)" in page and "Planning contours (rigidly registered to this fraction)" in page
    qa = json.loads((out / "fraction1_qa.json").read_text())
    assert qa["adapt"]["method"] == "fused" and qa["adapt"]["problems"] == []
    assert qa["adapt"]["weights"] == shares  # the untrained population model: the plan's organs as propagated
    assert {r["organ"] for r in qa["adapt"]["agreement"]} == set(PELVIS_CLASS_NAMES[1:])
    truth = read_nifti(plan_files["fraction_labels"]).array
    bladder = 2.0 * np.count_nonzero((pred == 2) & (truth == 2)) / (np.count_nonzero(pred == 2) + np.count_nonzero(truth == 2))
    assert bladder > 0.8  # the untrained network alone finds no bladder: the propagated plan carries it
    assert main(["adapt", "contour", "--patient", str(pdir), "--ct", str(plan_files["fraction"]), "--out", str(out),
                 "--checkpoint", str(plan_files["other_pop"])]) == 2
    assert "population model sha256" in capsys.readouterr().err
    assert main(["adapt", "update", "--patient", str(pdir), "--ct", str(plan_files["fraction"]),
                 "--contours", str(plan_files["fraction_labels"]), "--minutes", "0.05"]) == 0
    manifest = json.loads((pdir / "patient.json").read_text())
    assert len(manifest["fractions"]) == 1 and manifest["patient_model"]["scans"] == 2


def test_rtstruct_on_another_frame_of_reference_is_refused(plan_files, tmp_path: Path) -> None:
    from rtseg.io.dicom.series import read_dicom_series
    from rtseg.io.dicom.write import write_dicom_series
    from rtseg.io.rtstruct import write_rtstruct

    ct, lab = read_nifti(plan_files["ct"]), read_nifti(plan_files["labels"])
    write_dicom_series(ct, tmp_path / "plan", patient_id="PAT-A")
    write_dicom_series(ct, tmp_path / "other_scan", patient_id="PAT-A")  # same pixels, another Frame of Reference
    plan, other = read_dicom_series(tmp_path / "plan"), read_dicom_series(tmp_path / "other_scan")
    assert plan.meta["dicom"]["frame_of_reference_uid"] != other.meta["dicom"]["frame_of_reference_uid"]
    rs_other = write_rtstruct(Volume(lab.array, other.affine), other, PELVIS_CLASS_NAMES, COLORS, tmp_path / "other_rs.dcm")
    with pytest.raises(DataError, match="Frame of Reference"):
        read_contours(rs_other, plan, PELVIS_CLASS_NAMES)
    rs_plan = write_rtstruct(Volume(lab.array, plan.affine), plan, PELVIS_CLASS_NAMES, COLORS, tmp_path / "plan_rs.dcm")
    got = read_contours(rs_plan, plan, PELVIS_CLASS_NAMES).array
    assert np.array_equal(got, lab.array)  # the approved contours come back voxel for voxel


def test_a_dicom_fraction_of_another_patient_id_is_refused_before_registration(plan_files, tmp_path: Path) -> None:
    from rtseg.adapt.api import check_fraction_patient
    from rtseg.io.dicom.series import PatientStudyAttributes

    ct, lab = read_nifti(plan_files["ct"]), read_nifti(plan_files["labels"])
    pdir = create_patient_dir(tmp_path / "p", plan_files["pop"], ct, lab, PELVIS_CLASS_NAMES)
    pdir.manifest["planning"]["patient_hash"] = hash_patient_id("PAT-A")

    def fraction(pid: str) -> Volume:
        return Volume(ct.array, ct.affine, {"dicom": {"patient_study": PatientStudyAttributes({"PatientID": pid})}})

    check_fraction_patient(pdir, fraction("PAT-A"), "f1")
    with pytest.raises(DataError, match="another patient") as exc:
        check_fraction_patient(pdir, fraction("PAT-B"), "f2")
    assert "PAT-" not in str(exc.value)


def test_the_population_model_runs_in_fused_only_where_it_has_a_share(plan_files, tmp_path: Path) -> None:
    """A population model poor on the plan (this untrained one) gets no share and is not even loaded; one given a
    share (as ``prepare`` gives a network as good as registration) is loaded and run beside the patient model."""
    from rtseg.adapt.api import prepare
    from rtseg.adapt.finetune import FinetuneOptions
    from rtseg.adapt.methods import AdaptOptions, AdaptPredictor, fusion_weights

    pdir = prepare(plan_files["pop"], plan_files["ct"], plan_files["labels"], tmp_path / "p", FinetuneOptions(minutes=0.02))
    assert pdir.manifest["fusion"]["weights"]["population"] == 0.0  # untrained: Dice far below 0.85
    assert set(AdaptPredictor(pdir, AdaptOptions()).nets) == {"finetuned"}
    pdir.manifest["fusion"]["weights"] = fusion_weights(0.95)
    pdir.save()
    pred = AdaptPredictor(open_patient_dir(tmp_path / "p"), AdaptOptions())
    assert set(pred.nets) == {"finetuned", "population"} and pred.fusion_weights["population"] == pytest.approx(1 / 3, abs=1e-3)
    old = dict(pdir.manifest["fusion"], weights=None, weight=0.8)  # a directory from before the population joined
    pdir.manifest["fusion"] = old
    assert AdaptPredictor(pdir, AdaptOptions()).fusion_weights == {"propagated": 0.8, "finetuned": pytest.approx(0.2),
                                                                    "population": 0.0}
