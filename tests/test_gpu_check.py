"""The prepared GPU check (benchmarks/gpu_check.sh) in its CPU dry run: every step runs and records its figures.

A GPU is lent for minutes, so the check must be known to work before one is at hand: this runs
every step tiny on the CPU (on 4 + 2 real OpenKBP cases from ../shared/data) and checks that
figures.jsonl holds every expected record as strict JSON with name, value, unit, command, seconds.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPENKBP = REPO.parent / "shared" / "data" / "openkbp" / "train"

EXPECTED = {
    "train_step": ["train_step.ResUnet_3D.seed.s_per_step", "train_step.ResUnet_3D.rtseg.s_per_step",
                   "train_step.ResUnet_3D.rtseg.peak_memory", "train_step.ResUnet_3D.ratio_vs_seed"],
    "predict": ["predict.monai.total", "predict.monai.network", "predict.rtseg.total", "predict.rtseg.network",
                "predict.speedup_vs_monai", "predict.equal_voxels_vs_monai"],
    "dicom_rtstruct": ["dicom_rtstruct.process", "dicom_rtstruct.case", "dicom_rtstruct.min_dice_vs_nifti",
                       "dicom_rtstruct.mean_dice_vs_truth"],
    "openkbp": ["openkbp.train.iterations", "openkbp.train.seconds", "openkbp.val.mean_dice",
                "openkbp.val.dice.Brainstem", "openkbp.val.dice.Mandible"],
}


def _strict(obj: object) -> object:
    raise ValueError(f"not strict JSON: {obj}")


@pytest.mark.slow
@pytest.mark.skipif(not (OPENKBP / "train.json").is_file(), reason="../shared/data/openkbp absent (OpenKBP cases)")
def test_gpu_check_dry_run_records_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run",
                           "--work", str(tmp_path / "work"), "--data", str(OPENKBP)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (out / "figures.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_strict) for line in lines]
    by_name = {r["name"]: r for r in records}
    for r in records:
        assert set(r) >= {"name", "value", "unit", "command", "seconds"}, r
    for step, names in EXPECTED.items():
        assert by_name[f"step.{step}"]["status"] == "ok", (step, (out / f"{step}.log").read_text()[-2000:])
        for name in names:
            value = by_name[name]["value"]
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
            assert "benchmarks/" in by_name[name]["command"] or "rtseg" in by_name[name]["command"]
    # the checks inside the steps: RTSTRUCT read back equals the labels, rtseg's labels equal MONAI's
    assert by_name["dicom_rtstruct.min_dice_vs_nifti"]["value"] >= 0.95
    assert by_name["predict.equal_voxels_vs_monai"]["value"] >= 99.9
    assert by_name["openkbp.train.iterations"]["value"] == 2
    for step in ("train_step_compile", "nnunet"):  # GPU-only steps: skipped with their reason, not silently absent
        assert by_name[f"step.{step}"]["status"] == "skipped" and by_name[f"step.{step}"]["reason"]
    assert len(list(out.iterdir())) <= 8  # a device call brings back at most 8 files
    from rtseg.inference.bundle import load_bundle  # the trained population model comes back, as adapt loads it

    bundle, weights, _ = load_bundle(out / "openkbp_population.pt")
    assert bundle.class_names[1:] == ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus",
                                      "Larynx", "Mandible") and weights


def test_gpu_check_refuses_a_missing_outdir() -> None:
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_step_over_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_check import run_limited

    pidfile = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    rc = run_limited([sys.executable, "-c", script], tmp_path / "log", 2.0, dict(os.environ))
    assert rc == 124 and "killed after 2 s" in (tmp_path / "log").read_text()
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")
    for _ in range(50):  # killed at once; reaped by init shortly after (a zombie meanwhile)
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
