"""Training records organ statistics in plan.json and the checkpoint; ``rtseg calibrate`` fits and stores T (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synth import make_nifti_dataset

from rtseg.cli.main import main
from rtseg.config import load_config
from rtseg.inference.bundle import load_bundle
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.nifti import read_nifti
from rtseg.review.calibration import near_organs, nll
from rtseg.review.training_stats import training_organ_stats

pytestmark = pytest.mark.slow

CONFIG = """
CUDA: false
MODEL: {{NAME: ResUnet_3D, BASE_FILTERS: 2, DROPOUT: 0.0}}
DATASET: {{NAME: nifti, PATH: {path}, N_CLASSES: 3, CLASS_NAMES: [background, prostate, bladder], NORMALIZE: ct_window,
          HU_WINDOW: [-200, 500], PATCH_SIZE: [16, 16, 16], PARTIAL_LABELS: {partial}}}
TRAINING: {{ITER_MAX: 4, BATCH_SIZE: 1, WORKERS: 0, VAL_INTERVAL: 4, PRINT_INTERVAL: 2, OPTIM: {{name: adam, lr: 0.003}},
           LOSS_FUNC: {{name: dice_ce}}}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, run dir) of a 4-iteration training on blob phantoms; case000 has only the prostate contoured."""
    root = tmp_path_factory.mktemp("calib")
    data = make_nifti_dataset(root / "data", n_train=3, n_val=2, n_classes=3)
    partial = root / "partial.json"
    partial.write_text(json.dumps({"case000": ["prostate"]}))
    cfg = root / "cfg.yml"
    cfg.write_text(CONFIG.format(path=data, partial=partial))
    assert main(["train", "-c", str(cfg), "--run-dir", str(root / "run")]) == 0
    return cfg, root / "run"


def test_training_stores_organ_stats_of_the_training_cases_in_plan_json_and_checkpoints(run):
    cfg, run_dir = run
    plan = json.loads((run_dir / "plan.json").read_text())
    stats = plan["organ_stats"]
    for name in ("best.pt", "last.pt"):
        assert load_bundle(run_dir / "checkpoints" / name)[0].organ_stats == stats
    assert stats == training_organ_stats(load_config(cfg))
    data = Path(load_config(cfg).DATASET.PATH) / "train"
    vols = {}
    for c, organ in ((1, "prostate"), (2, "bladder")):
        vols[organ] = []
        for i in range(3):
            if organ == "bladder" and i == 0:
                continue  # not contoured in case000 (partial labels)
            lab = read_nifti(data / f"case{i:03d}_labels.nii.gz")
            vols[organ].append(np.count_nonzero(lab.array == c) * abs(np.linalg.det(lab.affine[:3, :3])) / 1000)
    assert stats["n_cases"] == 3
    assert stats["organs"]["prostate"]["n_cases"] == 3 and stats["organs"]["bladder"]["n_cases"] == 2
    for organ, v in vols.items():
        assert stats["organs"][organ]["volume_ml"]["p50"] == pytest.approx(float(np.median(v)), abs=1e-3)
        assert stats["organs"][organ]["volume_ml"]["max"] == pytest.approx(max(v), abs=1e-3)
    ct = read_nifti(data / "case001_ct.nii.gz").array
    p01 = [float(np.percentile(np.rint(read_nifti(data / f"case{i:03d}_ct.nii.gz").array), 1, method="lower")) for i in range(3)]
    assert stats["input"]["hu_p01"] == [min(p01), max(p01)] and ct.shape == (32, 32, 24)


def test_calibrate_fits_the_nll_minimising_temperature_and_predict_applies_it(run, tmp_path, capsys):
    cfg, run_dir = run
    best = run_dir / "checkpoints" / "best.pt"
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "-c", str(cfg), "--checkpoint", str(best), "--out", str(out), "--eval-split", "test",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "calibrated_calibration.json").read_text())
    t = load_bundle(out)[0].temperature
    assert t == pytest.approx(report["temperature"]) and t != 1.0 and "temperature" in printed
    assert load_bundle(best)[0].temperature == 1.0  # --out left the original alone
    assert report["eval"]["split"] == "test" and 0 <= report["fit"]["ece_after"] <= 1  # ECE need not fall: NLL is fitted
    # independently: pool the validation voxels near organs and check T is where the NLL is lowest
    dcfg = load_config(cfg).DATASET
    predictor = Predictor(load_model(best), temperature=1.0)
    logs, ys = [], []
    for i in range(2):
        ct = read_nifti(Path(dcfg.PATH) / "val" / f"case{i:03d}_ct.nii.gz")
        gt = read_nifti(Path(dcfg.PATH) / "val" / f"case{i:03d}_labels.nii.gz").array
        labels, prob = predictor.predict_with_probabilities(ct)
        mask = near_organs(gt, labels, ct.spacing, 10.0)
        logs.append(np.log(np.clip(prob[:, mask], 1e-12, None)))
        ys.append(gt[mask].astype(np.int64))
    z, y = np.concatenate(logs, axis=1), np.concatenate(ys)
    assert report["fit"]["n_voxels"] == y.size
    at = nll(z, y, t)
    assert at == pytest.approx(report["nll_after"], abs=1e-4)
    assert at <= nll(z, y, t * 1.05) and at <= nll(z, y, t / 1.05) and at <= nll(z, y, 1.0)
    # rtseg predict uses it for the probabilities (labels unchanged)
    ct_path = Path(dcfg.PATH) / "test" / "case000_ct.nii.gz"
    for ck, name in ((best, "raw"), (out, "cal")):
        assert main(["predict", "--checkpoint", str(ck), "--input", str(ct_path), "--output", str(tmp_path / name),
                     "--device", "cpu"]) == 0
    qa = json.loads((tmp_path / "cal" / "case000_qa.json").read_text())
    assert qa["temperature"] == pytest.approx(t)
    np.testing.assert_array_equal(read_nifti(tmp_path / "raw" / "case000_pred.nii.gz").array,
                                  read_nifti(tmp_path / "cal" / "case000_pred.nii.gz").array)
