"""Ensembles: the mean of the members' probabilities (checked against numpy's mean of each member's own
probabilities), the per-organ post-processing of the ensemble file, one-line errors, and predict / export /
serve reading the same file."""
from __future__ import annotations

import json

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rtseg.cli.main import main
from rtseg.errors import ConfigError, DataError
from rtseg.inference.bundle import load_bundle, save_bundle
from rtseg.inference.ensemble import (ENSEMBLE_NAME, EnsemblePredictor, OrganPostprocessing, load_predictor,
                                      read_ensemble, write_ensemble)
from rtseg.inference.export import export_model
from rtseg.inference.postprocess import postprocess_organs
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume, affine_from_spacing
from predict_helpers import make_checkpoint, phantom


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("members")
    return [make_checkpoint(folder / f"m{s}.pt", seed=s) for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def volume() -> Volume:
    return Volume(phantom(), affine_from_spacing((1.0, 1.0, 1.0)))


def _numpy_mean(paths: list[Path], volume: Volume) -> np.ndarray:
    """Each member alone, as rtseg predict would run it, then numpy's mean."""
    return np.mean([Predictor(load_model(p)).predict_with_probabilities(volume)[1] for p in paths], axis=0)


def test_mean_on_the_shared_network_grid_equals_the_numpy_mean(members: list[Path], volume: Volume) -> None:
    ens = load_predictor(members)
    assert isinstance(ens, EnsemblePredictor) and ens.shared_grid
    labels, prob = ens.predict_with_probabilities(volume)
    mean = _numpy_mean(members, volume)
    np.testing.assert_allclose(prob, mean, atol=2e-6)
    np.testing.assert_array_equal(labels, mean.argmax(0))
    assert len(np.unique(labels)) >= 2  # structured maps, not all background
    single = [Predictor(load_model(p)).predict_labels(volume) for p in members]
    assert any((s != labels).any() for s in single)  # the members disagree somewhere: the mean matters


def test_members_on_other_grids_are_averaged_on_the_input_grid(members: list[Path], volume: Volume, tmp_path: Path) -> None:
    coarse = make_checkpoint(tmp_path / "coarse.pt", target_spacing=(2.0, 2.0, 2.0), seed=4)
    ens = load_predictor([members[0], coarse])
    assert isinstance(ens, EnsemblePredictor) and not ens.shared_grid
    labels, prob = ens.predict_with_probabilities(volume)
    mean = _numpy_mean([members[0], coarse], volume)
    np.testing.assert_allclose(prob, mean, atol=1e-6)
    np.testing.assert_array_equal(labels, mean.argmax(0))


def test_members_must_predict_the_same_classes(members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, weights, _ = load_bundle(members[0])
    other = tmp_path / "other.pt"
    save_bundle(other, dataclasses.replace(bundle, class_names=("background", "liver", "kidney")), weights)
    with pytest.raises(DataError, match="ensemble members must predict the same classes"):
        load_predictor([members[1], other])
    ct = tmp_path / "ct.nii.gz"
    write_nifti(Volume(phantom(), affine_from_spacing((1.0, 1.0, 1.0))), ct)
    assert main(["predict", "--checkpoint", str(members[1]), str(other), "--input", str(ct), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must predict the same classes" in err[0]


def test_ensemble_file_predict_applies_the_chosen_postprocessing(members: list[Path], tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    cv.mkdir()
    write_ensemble(cv / ENSEMBLE_NAME, members, {"prostate": OrganPostprocessing(largest_component=True),
                                                  "bladder": OrganPostprocessing(fill_holes=True)})
    spec = read_ensemble(cv / ENSEMBLE_NAME)
    assert spec.members == tuple(m.resolve() for m in members)
    vol = Volume(phantom(), affine_from_spacing((1.0, 1.0, 1.0)))
    ct = tmp_path / "case_ct.nii.gz"
    write_nifti(vol, ct)
    assert main(["predict", "--checkpoint", str(cv), "--input", str(ct), "--output", str(tmp_path / "out")]) == 0
    got = read_nifti(tmp_path / "out" / "case_pred.nii.gz").array
    mean_argmax = _numpy_mean(members, vol).argmax(0).astype(np.uint8)
    expected = postprocess_organs(mean_argmax, [1], [2])
    np.testing.assert_array_equal(got, expected)
    # the QA's argmax agreement is against the mean probabilities' argmax, not the ensemble's post-processed labels
    qa = json.loads((tmp_path / "out" / "case_qa.json").read_text())
    assert qa["argmax_agreement"] == round(float((got == mean_argmax).mean()), 5) < 1.0


def test_bad_ensemble_inputs_are_one_line_errors(members: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="found a folder with no checkpoint in it"):
        load_predictor(tmp_path)
    (tmp_path / "e.json").write_text('{"members": ["a.pt"]}')
    with pytest.raises(DataError, match="not an rtseg ensemble file"):
        load_predictor(tmp_path / "e.json")
    write_ensemble(tmp_path / "e.json", members, {"liver": OrganPostprocessing(largest_component=True)})
    with pytest.raises(DataError, match=r"post-processing for unknown organ\(s\) \['liver'\]"):
        load_predictor(tmp_path / "e.json")
    with pytest.raises(DataError, match="cannot be combined"):
        load_predictor([tmp_path / "e.json", members[0]])


def test_export_refuses_an_ensemble_and_serve_loads_it(members: list[Path], tmp_path: Path) -> None:
    write_ensemble(tmp_path / ENSEMBLE_NAME, members[:2], {})
    with pytest.raises(ConfigError, match="export writes one network per file: export each member"):
        export_model(tmp_path / ENSEMBLE_NAME, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    from rtseg.serve.contour import Contourer

    contourer = Contourer(tmp_path, "cpu")
    assert isinstance(contourer.predictor, EnsemblePredictor) and len(contourer.predictor.members) == 2
    assert isinstance(Contourer(members[0], "cpu").predictor, Predictor)  # one checkpoint: as before
