"""``rtseg evaluate`` and ``evaluate_folders``: pairing, outputs, summaries, user errors."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtseg.cli import main as cli_main
from rtseg.evaluation.report import evaluate_folders
from rtseg.evaluation.surface import METRIC_KEYS, case_metrics
from rtseg.io.naming import label_case_id as case_id
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume, affine_from_spacing

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SPACING = (1.2, 1.2, 2.5)
NAMES = ["prostate", "bladder"]


@pytest.fixture(autouse=True)
def only_evaluate_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register just our subcommand so this test does not depend on the other commands' modules."""
    assert "rtseg.cli.evaluate" in cli_main.COMMAND_MODULES
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("rtseg.cli.evaluate",))


def labels(seed: int, shift: int = 0, shape=(24, 22, 12)) -> np.ndarray:
    arr = np.zeros(shape, np.uint8)
    arr[4 + shift : 10 + shift, 5:12, 3:8] = 1
    arr[13:20, 8 + shift : 18, 2 + seed % 2 : 10] = 2
    return arr


def save(arr: np.ndarray, path: Path, spacing=SPACING) -> None:
    write_nifti(Volume(arr, affine_from_spacing(spacing)), path, dtype=np.uint8)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(labels(0), gt / "c01_labels.nii.gz")
    save(labels(1), gt / "c02.nii.gz")
    save(labels(2), gt / "c03_labels.nii.gz")
    save(np.zeros((24, 22, 12), np.uint8), gt / "c01_ct.nii.gz")  # an image beside the labels: ignored
    (gt / "notes.txt").write_text("not a label file")
    save(labels(0, shift=1), pred / "c01_pred.nii.gz")
    save(labels(1), pred / "c02_pred.nii.gz")
    p3 = labels(2, shift=2)
    p3[p3 == 1] = 0  # prostate missed entirely: infinite distances for this case
    save(p3, pred / "c03.nii.gz")
    return pred, gt


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli_main.main(["evaluate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_case_id_strips_known_suffixes() -> None:
    assert case_id("a/p001_labels.nii.gz") == "p001"
    assert case_id("p001_pred.nii") == "p001"
    assert case_id("p001.nii.gz") == "p001"
    assert case_id("p001_ct.nii.gz") is None
    assert case_id("p001.npy") is None
    assert case_id("_pred.nii.gz") == "_pred"


def test_evaluate_writes_csv_json_plots_report(folders, tmp_path: Path, capsys) -> None:
    pred, gt = folders
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--labels", *NAMES, "--out", str(out)], capsys)
    assert rc == 0, err

    # Long-format CSV with every metric for every case and organ, equal to the library's values.
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["case", "organ", "metric", "value"]
    assert {r["case"] for r in rows} == {"c01", "c02", "c03"}
    assert len(rows) == 3 * 2 * (len(METRIC_KEYS) + 2)
    got = {(r["case"], r["organ"], r["metric"]): float(r["value"]) for r in rows}
    for cid, p_name, g_name in [("c01", "c01_pred", "c01_labels"), ("c03", "c03", "c03_labels")]:
        p, g = read_nifti(pred / f"{p_name}.nii.gz"), read_nifti(gt / f"{g_name}.nii.gz")
        for row in case_metrics(p.array, g.array, SPACING, ["background", *NAMES]):
            for m in METRIC_KEYS:
                want = row[m]
                assert got[(cid, row["organ"], m)] == pytest.approx(want) or (math.isinf(want) and math.isinf(got[(cid, row["organ"], m)]))
    assert got[("c02", "bladder", "dice")] == 1.0
    assert math.isinf(got[("c03", "prostate", "hd95")]) and got[("c03", "prostate", "empty_pred")] == 1.0

    # JSON summary: strict JSON, finite statistics, infinities counted not averaged.
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))
    pro = summary["organs"]["prostate"]
    assert summary["n_cases"] == 3 and pro["n_cases"] == 3 and pro["n_empty_pred"] == 1
    hd95 = pro["metrics"]["hd95"]
    assert hd95["n"] == 2 and hd95["n_nonfinite"] == 1
    finite = [got[(c, "prostate", "hd95")] for c in ("c01", "c02")]
    assert hd95["mean"] == pytest.approx(np.mean(finite))
    assert hd95["median"] == pytest.approx(np.median(finite))
    assert hd95["std"] == pytest.approx(np.std(finite, ddof=1))
    dice = pro["metrics"]["dice"]
    assert dice["n"] == 3 and dice["mean"] == pytest.approx(np.mean([got[(c, "prostate", "dice")] for c in ("c01", "c02", "c03")]))

    # One valid PNG per metric, and the Markdown report.
    for m in METRIC_KEYS:
        with Image.open(out / f"boxplot_{m}.png") as im:
            assert im.format == "PNG" and im.size[0] > 100
    report = (out / "report.md").read_text()
    assert "| prostate | 3 |" in report and "| bladder | 3 |" in report and "boxplot_dice.png" in report
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind

    # Printed table: aligned columns, one row per organ, footnote about non-finite values.
    lines = stdout.splitlines()
    table = lines[: 2 + 2]
    assert table[0].split()[:3] == ["organ", "n", "Dice"]
    assert len({len(line) for line in table}) == 1
    assert any(line.startswith("prostate") and "*" in line for line in table)
    assert "counted, not averaged" in stdout


def test_library_function_returns_summary_without_writing(folders) -> None:
    pred, gt = folders
    summary = evaluate_folders(pred, gt, ["background", *NAMES], None, tolerance_mm=1.0, plots=False)
    assert summary["tolerance_mm"] == 1.0 and summary["cases"] == ["c01", "c02", "c03"]
    assert set(summary["organs"]) == set(NAMES)


def test_default_names_and_background_in_labels(folders, tmp_path: Path, capsys) -> None:
    pred, gt = folders
    rc, stdout, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--no-plots"], capsys)
    assert rc == 0, err
    assert "class_1" in stdout and "class_2" in stdout
    rc, stdout, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--labels", "background", *NAMES, "--no-plots"], capsys)
    assert rc == 0 and "prostate" in stdout


def test_unpaired_files_are_listed(folders, tmp_path: Path, capsys) -> None:
    pred, gt = folders
    (pred / "c02_pred.nii.gz").unlink()
    save(labels(0), pred / "extra_pred.nii.gz")
    out = tmp_path / "out"
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys)
    assert rc == 2
    assert err.startswith("rtseg evaluate: error: unpaired files") and len(err.strip().splitlines()) == 1
    assert "extra_pred.nii.gz" in err and "c02.nii.gz" in err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["shape", "affine"])
def test_grid_mismatch_is_refused(folders, tmp_path: Path, capsys, kind: str) -> None:
    pred, gt = folders
    if kind == "shape":
        save(labels(0, shape=(24, 22, 13)), pred / "c01_pred.nii.gz")
    else:
        save(labels(0), pred / "c01_pred.nii.gz", spacing=(1.2, 1.2, 3.0))
    out = tmp_path / "out"
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys)
    assert rc == 2 and "c01_pred.nii.gz" in err and ("grid" in err if kind == "shape" else "affine differs" in err)
    assert not out.exists()


def test_unknown_label_and_bad_arguments(folders, tmp_path: Path, capsys) -> None:
    pred, gt = folders
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--labels", "prostate"], capsys)
    assert rc == 2 and "label(s) [2]" in err and "c01" in err
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--labels", "a", "a"], capsys)
    assert rc == 2 and "--labels" in err
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--tolerance", "-1"], capsys)
    assert rc == 2 and "tolerance" in err
    rc, _, err = run_cli(["--pred", str(tmp_path / "nope"), "--gt", str(gt)], capsys)
    assert rc == 2 and "not found" in err


def test_openkbp_partial_labels_skip_absent(tmp_path: Path, capsys) -> None:
    train = DATA / "openkbp" / "train"
    if not (train / "train.json").exists():
        pytest.skip(f"shared OpenKBP data not found at {train}")
    meta = json.loads((train / "train.json").read_text())
    names = [meta["labels"][str(i)] for i in range(1, len(meta["labels"]))]
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    expected = {}
    for case in meta["cases"][:2]:
        src = train / f"{case['id']}_labels.nii.gz"
        (gt / src.name).symlink_to(src.resolve())
        vol = read_nifti(src)
        write_nifti(vol.with_array(np.roll(vol.array, 1, axis=0)), pred / f"{case['id']}_pred.nii.gz", dtype=np.uint8)
        expected[case["id"]] = set(case["organs"])
    out = tmp_path / "out"
    rc, _, err = run_cli(["--pred", str(pred), "--gt", str(gt), "--labels", *names, "--out", str(out), "--skip-absent", "--no-plots"], capsys)
    assert rc == 0, err
    with open(out / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "dice"]
    assert {cid: {r["organ"] for r in rows if r["case"] == cid} for cid in expected} == expected
    assert all(0.3 < float(r["value"]) < 1.0 for r in rows)  # a one-voxel shift: good, not perfect
