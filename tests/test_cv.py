"""rtseg cv: the post-processing choice on constructed cases with hand-computed Dice, the printed fold commands
(parsed back by rtseg's own parser), and one-line errors."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from rtseg.cli.main import build_parser, main
from rtseg.inference.cv_postprocess import PostprocessScores, choose_postprocessing, dice

NAMES = ["background", "prostate", "femoral_heads"]


def _cube(shape: tuple[int, int, int], lo: int, hi: int, label: int, out: np.ndarray | None = None) -> np.ndarray:
    arr = np.zeros(shape, np.uint8) if out is None else out
    arr[lo:hi, lo:hi, lo:hi] = label
    return arr


def test_dice_by_hand() -> None:
    a = _cube((10, 10, 10), 0, 4, 1) == 1  # 64 voxels
    b = _cube((10, 10, 10), 2, 6, 1) == 1  # 64 voxels, overlap 2^3 = 8
    assert dice(a, b) == pytest.approx(2 * 8 / 128)
    assert np.isnan(dice(a & False, b & False))


def test_largest_component_on_where_a_stray_blob_costs_dice() -> None:
    shape = (40, 40, 40)
    gt = _cube(shape, 5, 15, 1)  # one 10^3 prostate
    pred = gt.copy()
    pred[30:33, 30:33, 30:33] = 1  # a 27-voxel stray blob far away
    scores = PostprocessScores(NAMES)
    scores.add(pred, gt)
    means = scores.means()["prostate"]
    assert means["none"] == pytest.approx(2 * 1000 / (1027 + 1000))
    assert means["largest_component"] == pytest.approx(1.0)
    assert means["fill_holes"] == means["none"]  # nothing to fill
    chosen = choose_postprocessing(scores)["prostate"]
    assert chosen.largest_component and not chosen.fill_holes  # "both" ties largest alone: the simpler choice


def test_largest_component_off_for_an_organ_in_two_parts() -> None:
    """Two femoral heads under one label, predicted exactly: keeping one would halve the overlap."""
    shape = (40, 40, 40)
    gt = np.zeros(shape, np.uint8)
    gt[5:13, 5:13, 5:13] = 2  # 512 voxels
    gt[25:31, 25:31, 25:31] = 2  # 216 voxels
    pred = gt.copy()
    pred[20, 20, 20] = 2  # one stray voxel: not enough to pay for losing the smaller head
    scores = PostprocessScores(NAMES)
    scores.add(pred, gt)
    means = scores.means()["femoral_heads"]
    assert means["none"] == pytest.approx(2 * 728 / (729 + 728))
    assert means["largest_component"] == pytest.approx(2 * 512 / (512 + 728))
    chosen = choose_postprocessing(scores)["femoral_heads"]
    assert not chosen.largest_component and not chosen.fill_holes


def test_hole_filling_on_where_the_prediction_has_a_cavity_and_known_organs_respected() -> None:
    shape = (30, 30, 30)
    gt = _cube(shape, 5, 15, 1)  # 1000 voxels
    pred = gt.copy()
    pred[9:11, 9:11, 9:11] = 0  # an enclosed 8-voxel cavity
    scores = PostprocessScores(NAMES)
    scores.add(pred, gt)
    scores.add(np.zeros(shape, np.uint8), gt, known={0, 2})  # prostate not contoured in this case: not counted
    means = scores.means()["prostate"]
    assert means["none"] == pytest.approx(2 * 992 / 1992) and means["fill_holes"] == pytest.approx(1.0)
    assert len(scores.dice["prostate"]["none"]) == 1
    chosen = choose_postprocessing(scores)["prostate"]
    assert chosen.fill_holes and not chosen.largest_component


def test_print_lists_every_fold_and_the_commands_parse_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"DATASET: {{NAME: nifti, PATH: {tmp_path}, N_CLASSES: 3}}\n")
    out = tmp_path / "my cv"
    assert main(["cv", "-c", str(cfg), "--folds", "4", "--print", "--out", str(out), "--set", "TRAINING.ITER_MAX=7"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("#")]
    plain = [ln for ln in lines if ln.startswith("rtseg train")]
    torchrun = [ln for ln in lines if ln.startswith("torchrun")]
    slurm = [ln for ln in lines if ln.startswith("sbatch")]
    assert len(plain) == 4 and len(torchrun) == 4 and len(slurm) == 1 and "--array=0-3" in slurm[0]
    parser = build_parser()
    for k, line in enumerate(plain):
        args = parser.parse_args(shlex.split(line)[1:])
        assert (args.fold, args.folds, Path(args.run_dir), args.overrides) == (k, 4, out / f"fold_{k}", ["TRAINING.ITER_MAX=7"])
    wrapped = shlex.split(slurm[0])[-1].replace("$SLURM_ARRAY_TASK_ID", "2")  # as SLURM's shell expands it in task 2
    task = parser.parse_args(shlex.split(wrapped)[3:])  # after 'python -m rtseg'
    assert (task.fold, Path(task.run_dir)) == (2, out / "fold_2")


def test_gather_without_trained_folds_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"CUDA: false\nDATASET: {{NAME: nifti, PATH: {tmp_path}, N_CLASSES: 3}}\n")
    assert main(["cv", "-c", str(cfg), "--out", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fold checkpoint(s) missing" in err[0] and "rtseg cv --run" in err[0]
