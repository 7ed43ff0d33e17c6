"""Partial labels (uncontoured organs are unknown, not background) and data-driven planning."""
import json

import numpy as np
import torch

from rtseg.config import config_from_dict
from rtseg.data.cases import prepare_cases
from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases
from rtseg.data.normalization import Normalization
from rtseg.data.plan import choose_patch, estimate_memory_gib, make_plan
from rtseg.data.survey import survey_cases
from rtseg.data.preprocess import Preprocessing
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.io.checkpoint import load_checkpoint
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.training.trainer import fit
from synth import make_nifti_dataset

NAMES = ["background", "a", "b", "c", "d", "e"]


def test_metrics_ignore_unknown_class():
    gt = torch.zeros(4, 4, 4, dtype=torch.long)
    gt[:2] = 1
    pred = gt.clone()
    pred[2:] = 2  # predicts organ 2 where the truth says background
    known = torch.tensor([True, True, False])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt, known)
    m = cm.compute(["bg", "one", "two"])
    assert m["dice"]["one"] == 1.0 and m["dice"]["bg"] == 1.0
    assert np.isnan(m["dice"]["two"])  # no metric for an organ this case does not contour
    cm2 = ConfusionMatrix(3)
    cm2.update(pred, gt)
    assert cm2.compute(["bg", "one", "two"])["dice"]["two"] == 0.0


def test_partial_label_json_and_absent_is_unknown(tmp_path):
    root = make_nifti_dataset(tmp_path / "d", n_train=2, n_val=1, shape=(16, 16, 16))
    refs = list_cases(DatasetConfig(NAME="nifti", PATH=str(root), N_CLASSES=6), "train")
    spec = Preprocessing(Normalization("none"))
    known = {refs[0].case_id: [0, 1, 2]}
    cases = prepare_cases(refs, spec, 6, known)
    assert cases[0].known.tolist() == [True, True, True, False, False, False]
    assert cases[1].known.all()
    lab = read_nifti(refs[1].label)
    arr = lab.array.copy()
    arr[arr == 5] = 0
    write_nifti(lab.with_array(arr), refs[1].label)
    cases = prepare_cases(refs, spec, 6, None, absent_is_unknown=True)
    assert not cases[1].known[5] and cases[1].known[:5].all()


def test_case_without_organ_contributes_no_loss_in_training(tmp_path):
    """Where organ 5 is unknown, saying "organ 5" costs exactly what saying "background" costs."""
    from rtseg.config.schema import LossConfig
    from rtseg.training.losses import SegmentationLoss

    loss = SegmentationLoss(LossConfig(name="dice_ce"))
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 8, 8, 8)
    target = torch.randint(0, 5, (2, 8, 8, 8))  # organ 5 never in the truth
    known = torch.ones(2, 6, dtype=torch.bool)
    known[1, 5] = False
    base = loss(logits, target, known)
    assert torch.isfinite(base)
    grad_logits = logits.clone().requires_grad_(True)
    loss(grad_logits, target, known).backward()
    g = grad_logits.grad
    # for the case with organ 5 unknown, the gradient w.r.t. organ 5 equals that of background
    # pushed by the merged probability, i.e. no separate penalty: d/d(l5) == d/d(l0) * p5/p0
    p = torch.softmax(logits, 1)
    ratio = (g[1, 5] / g[1, 0]).flatten()
    expected = (p[1, 5] / p[1, 0]).flatten()
    mask = g[1, 0].abs().flatten() > 1e-7
    assert torch.allclose(ratio[mask], expected[mask], rtol=1e-3, atol=1e-5)


def test_plan_is_deterministic_and_round_trips_through_checkpoint(tmp_path):
    root = make_nifti_dataset(tmp_path / "d", n_train=3, n_val=1, shape=(24, 24, 16), spacing=(1.5, 1.5, 2.0))
    refs = list_cases(DatasetConfig(NAME="nifti", PATH=str(root), N_CLASSES=6), "train")
    p1 = make_plan(survey_cases(refs, 6), NAMES, stride=8, memory_budget_gib=0.01, base_filters=4, batch_size=2)
    p2 = make_plan(survey_cases(refs, 6), NAMES, stride=8, memory_budget_gib=0.01, base_filters=4, batch_size=2)
    assert json.dumps(p1.to_dict(), sort_keys=True) == json.dumps(p2.to_dict(), sort_keys=True)
    assert p1.target_spacing == (1.5, 1.5, 2.0)
    assert estimate_memory_gib(p1.patch_size, 2, 4) <= 0.01 and all(s % 8 == 0 for s in p1.patch_size)
    assert p1.normalization.mode == "zscore_dataset" and p1.normalization.std > 0
    assert abs(sum(p1.class_frequencies) - 1) < 1e-9
    cfg = config_from_dict({
        "CUDA": False,
        "MODEL": {"NAME": "ResUnet_3D", "BASE_FILTERS": 4},
        "DATASET": {"NAME": "nifti", "PATH": str(root), "N_CLASSES": 6, "PLAN": "auto", "AUGMENT": False},
        "TRAINING": {"ITER_MAX": 2, "BATCH_SIZE": 2, "VAL_INTERVAL": 2, "PRINT_INTERVAL": 1, "MEMORY_BUDGET_GIB": 0.01},
    })
    fit(cfg, "plan", run_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["plan"] == saved
    assert ck["preprocessing"]["target_spacing"] == saved["target_spacing"]
    assert ck["preprocessing"]["normalization"]["mode"] == "zscore_dataset"
    assert ck["preprocessing"]["normalization"]["mean"] == saved["normalization"]["mean"]
    assert ck["patch_size"] == saved["patch_size"]


def test_choose_patch_shrinks_largest_physical_axis():
    patch = choose_patch([128, 128, 128], [1.0, 1.0, 3.0], 16, budget_gib=estimate_memory_gib([128, 128, 112], 2, 16), batch=2,
                         base_filters=16, bf16=False)
    assert patch == [128, 128, 112]


def test_old_and_hand_edited_plans_load_and_round_trip(tmp_path):
    """plan.json files (and plans inside checkpoints) written before Plan was typed read back unchanged."""
    import pytest

    from rtseg.data.plan import Plan, load_plan
    from rtseg.errors import DataError

    old = {"version": 1, "n_cases": 3, "class_names": NAMES, "target_spacing": [1.5, 1.5, 2.0], "median_shape": [24, 24, 16],
           "patch_size": [24, 24, 16], "batch_size": 2, "memory_budget_gib": 0.01, "estimated_memory_gib": 0.003,
           "normalization": {"mode": "zscore_dataset", "mean": 12.5, "std": 40.25, "window": [-100.0, 300.0]},
           "class_frequencies": [0.9, 0.02, 0.02, 0.02, 0.02, 0.02], "class_voxels": [900, 20, 20, 20, 20, 20]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(old))
    plan = load_plan(path)
    assert plan.patch_size == (24, 24, 16) and plan.normalization.window == (-100.0, 300.0)
    assert plan.to_dict() == old and list(plan.to_dict()) == list(old)  # same keys, same order, same values
    minimal = {"target_spacing": [1, 1, 3], "patch_size": [32, 32, 16], "normalization": {"mode": "ct_window"}, "note": "mine"}
    assert Plan.from_dict(minimal).to_dict() == {**minimal, "target_spacing": [1.0, 1.0, 3.0]}
    with pytest.raises(DataError, match="not an rtseg plan \\(missing 'patch_size'\\)"):
        Plan.from_dict({"target_spacing": [1, 1, 1], "normalization": {"mode": "none"}}, "x.json")
