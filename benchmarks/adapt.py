"""Benchmark: ``rtseg adapt`` methods on SIMULATED fractions (no repeated-scan data is available here).

(a) phantom fractions: ``rtseg.synthetic.fractions`` (setup, bladder x0.5..x2, rectal content and diameter,
    prostate motion, weight change, noise; exact labels); (b) simulated fractions of OpenKBP validation patients:
    ``rtseg.synthetic.hn_fractions`` (setup error, articulated head motion about the lower neck, weight loss,
    smooth non-B-spline change, parotid shrinkage 10-30 %, noise; truth = planning labels warped the same way).

Per organ Dice, HD95 and surface Dice at 2 mm for: copy (planning contours as they are), rigid, propagated
(elastix rigid + B-spline), population, finetuned (patient model of ``adapt prepare``), fused. Times of
``prepare`` (fine-tuning) and of a whole ``adapt contour`` (fused, read to written files) are measured too.
On OpenKBP, where the simulated motion is known (``simulate_hn_fraction_and_motion``), also: ``ideal`` (the planning
contours warped by the true motion, the way ``propagated`` warps them: what a perfect registration scores)
and each registration's error in mm (mean distance from the true position over the organ's voxels).

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/adapt.py --set phantom \\
        --population runs/phantom-pop/checkpoints/last.pt --patients 3 --fractions 2 --minutes 3
    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/adapt.py --set openkbp \\
        --population runs/openkbp-cpu/checkpoints/best.pt --patients 4 --fractions 1 --minutes 3
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from rtseg.adapt.api import contour, prepare
from rtseg.adapt.finetune import FinetuneOptions
from rtseg.adapt.methods import AdaptOptions, AdaptPredictor, fuse, fused_labels
from rtseg.adapt.patient import open_patient_dir
from rtseg.adapt.register import Registration, warp_probabilities
from rtseg.evaluation.surface import organ_metrics
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.synthetic.fractions import generate_fraction
from rtseg.synthetic.hn_fractions import simulate_hn_fraction_and_motion

METHODS = ["copy", "rigid", "propagated", "ideal", "population", "finetuned", "fused"]
FIXED_WEIGHTS = (0.5, 0.85)  # fused_wW: the same run's propagated and patient-model probabilities, propagated share W
OPENKBP = Path(__file__).resolve().parents[1] / "../shared/data/openkbp/train"


def phantom_cases(n_patients: int, n_fractions: int):
    for seed in range(1000, 1000 + n_patients):
        plan = generate_fraction(seed, 0)  # the phantoms' default grid: 64x64x32 voxels at 4x4x5 mm
        yield f"phantom{seed}", plan, [(*generate_fraction(seed, f), None) for f in range(1, n_fractions + 1)]


def openkbp_cases(root: Path, n_patients: int, n_fractions: int, split: str = "val", skip: int = 0):
    """The first ``n_patients`` of ``split`` after ``skip`` (the done-when run: the validation split's first six;
    choosing settings: train-split patients, which the population model has seen, so its networks look better)."""
    splits = json.loads((Path(__file__).resolve().parents[1] / "configs/openkbp_splits.json").read_text())
    for i, case in enumerate(splits[split][skip:skip + n_patients], start=skip):  # seeds: the patient's place
        ct = read_nifti(root / f"{case}_ct.nii.gz")
        lab = read_nifti(root / f"{case}_labels.nii.gz")
        yield case, (ct, lab), [simulate_hn_fraction_and_motion(ct, lab, seed=i, fraction=f)
                                for f in range(1, n_fractions + 1)]


def score(pred: np.ndarray, truth: np.ndarray, spacing, organs) -> dict[int, dict[str, float]]:
    out = {}
    for c in organs:
        m = organ_metrics(pred == c, truth == c, spacing)
        out[c] = {"dice": m["dice"], "hd95": m["hd95"], "surface_dice": m["surface_dice"]}
    return out


def fused_at(probs: dict[str, np.ndarray], contoured: set[int], weight: float) -> np.ndarray:
    """The two-method fusion's labels (propagated share ``weight``, the patient model alone on the networks' side)
    from one run's probabilities: the fixed-weight comparison columns ``fused_wW``."""
    return fused_labels(fuse(probs["finetuned"], probs["propagated"], contoured, weight), contoured)


class KeepingPredictor(AdaptPredictor):
    """The product's predictor, keeping its last registrations (the benchmark compares them with the true motion)."""

    def __init__(self, patient, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(patient, options)
        self.regs: dict[str, Registration] = {}

    def _register(self, volume, deformable):  # type: ignore[no-untyped-def]
        self.regs = super()._register(volume, deformable)
        return self.regs


def against_motion(per: dict, labels: dict, regs: dict[str, Registration], motion, plan_labels: np.ndarray,
                   truth: np.ndarray, spacing, organs, n_classes: int) -> None:
    """Adds ``ideal`` (the plan warped by the true motion, as ``propagated`` is warped) to ``labels``/``per`` and each
    registration's error (mm, mean over the organ's true voxels) to ``per``'s rigid and propagated rows."""
    if motion is None:
        return
    ideal = Registration("deformable", motion, 1.0, {}, 0.0)
    labels["ideal"] = np.argmax(warp_probabilities(ideal, plan_labels, n_classes, set(organs)), axis=0)
    per["ideal"] = score(labels["ideal"], truth, spacing, organs)
    step = np.asarray(spacing, np.float32)[:, None, None, None]
    for method, kind in (("rigid", "rigid"), ("propagated", "deformable")):
        if kind in regs and method in per:
            err = np.linalg.norm((regs[kind].coords - motion) * step, axis=0)
            for c in organs:
                per[method][c]["error_mm"] = float(err[truth == c].mean())


def stand_in_population(path: Path, class_names) -> Path:
    """An untrained 4-filter network with the set's class list: the patient directory needs a population model,
    the registration-only run (``--population none``) never uses its predictions."""
    import torch

    from rtseg.data.normalization import Normalization
    from rtseg.data.preprocess import Preprocessing
    from rtseg.inference.bundle import InferenceBundle, save_bundle
    from rtseg.models.spec import build_model, model_spec

    spec = model_spec("ResUnet_3D", 1, len(class_names), 4, 0.0)
    colors = tuple((200, 40 * i % 255, 90) for i in range(1, len(class_names)))
    bundle = InferenceBundle(spec, tuple(class_names), colors,
                             Preprocessing(Normalization("ct_window", (-250.0, 350.0)), None), (32, 32, 32))
    torch.manual_seed(0)
    save_bundle(path, bundle, build_model(spec).state_dict())
    return path


def run_registration_only(name, plan, fractions, population: Path, work: Path) -> dict:
    ct, lab = plan
    write_nifti(ct, work / f"{name}_plan_ct.nii.gz")
    write_nifti(lab, work / f"{name}_plan_labels.nii.gz", dtype=np.uint8)
    prepare(population, work / f"{name}_plan_ct.nii.gz", work / f"{name}_plan_labels.nii.gz", work / name,
            FinetuneOptions(minutes=0))
    pdir = open_patient_dir(work / name)
    prop = KeepingPredictor(pdir, AdaptOptions(method="propagated", check_registration=False))
    rows = []
    for k, (fct, flab, motion) in enumerate(fractions, 1):
        t0 = time.perf_counter()
        prop.predict_full(fct)
        seconds = time.perf_counter() - t0
        labels = dict(prop.last["labels"], copy=np.asarray(lab.array))
        spacing = tuple(np.linalg.norm(fct.affine[:3, :3], axis=0))
        truth = np.asarray(flab.array)
        organs = [c for c in sorted(pdir.contoured) if (truth == c).any()]
        per = {m: score(labels[m], truth, spacing, organs) for m in ("copy", "rigid", "propagated")}
        against_motion(per, labels, prop.regs, motion, np.asarray(lab.array), truth, spacing, organs,
                       len(pdir.class_names))
        rows.append({"fraction": k, "metrics": per, "registration": prop.last["registration"],
                     "problems": prop.last["problems"], "register_and_warp_s": seconds})
    return {"patient": name, "prepare_s": 0.0, "contour_s": None, "class_names": list(pdir.class_names), "fractions": rows}


def run_patient(name, plan, fractions, population: Path, minutes: float, work: Path,
                weights=FIXED_WEIGHTS) -> dict:
    ct, lab = plan
    write_nifti(ct, work / f"{name}_plan_ct.nii.gz")
    write_nifti(lab, work / f"{name}_plan_labels.nii.gz", dtype=np.uint8)
    t0 = time.perf_counter()
    prepare(population, work / f"{name}_plan_ct.nii.gz", work / f"{name}_plan_labels.nii.gz", work / name,
            FinetuneOptions(minutes=minutes))
    prep_s = time.perf_counter() - t0
    pdir = open_patient_dir(work / name)
    organs = sorted(pdir.contoured)
    fused = KeepingPredictor(pdir, AdaptOptions(method="fused", check_registration=False))
    pop = AdaptPredictor(pdir, AdaptOptions(method="population"))
    rows, contour_s = [], None
    for k, (fct, flab, motion) in enumerate(fractions, 1):
        probs = fused.method_probabilities(fct)  # rigid, propagated, finetuned (and population) of this one run
        labels = {k: np.argmax(v, axis=0) for k, v in probs.items()}
        labels["fused"] = fused_labels(fused.fused(probs), pdir.contoured)
        labels.update({f"fused_w{w:g}": fused_at(probs, pdir.contoured, w) for w in weights})
        if "population" not in labels:  # the fused predictor ran it only where it has a share
            labels["population"] = pop.predict_full(fct).labels
        labels["copy"] = np.asarray(lab.array)
        spacing = tuple(np.linalg.norm(fct.affine[:3, :3], axis=0))
        truth = np.asarray(flab.array)
        present = [c for c in organs if (truth == c).any()]
        per = {m: score(labels[m], truth, spacing, present) for m in labels}
        against_motion(per, labels, fused.regs, motion, np.asarray(lab.array), truth, spacing, present,
                       len(pdir.class_names))
        rows.append({"fraction": k, "metrics": per, "registration": fused.last["registration"],
                     "problems": fused.last["problems"], "fusion": pdir.manifest.get("fusion")})
        if k == 1:
            path = write_nifti(fct, work / f"{name}_f1_ct.nii.gz")
            t1 = time.perf_counter()
            contour(work / name, path, work / f"{name}_out", AdaptOptions(method="fused", check_registration=False),
                    formats=("nifti",))
            contour_s = time.perf_counter() - t1
    return {"patient": name, "prepare_s": prep_s, "contour_s": contour_s, "class_names": list(pdir.class_names),
            "fractions": rows}


def summarise(results: list[dict]) -> dict:
    names = results[0]["class_names"]
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in results:
        for fr in r["fractions"]:
            for m, per in fr["metrics"].items():
                for c, vals in per.items():
                    d = table.setdefault(m, {}).setdefault(names[int(c)], {})
                    for key, v in vals.items():
                        d.setdefault(key, []).append(float(v))
    out = {}
    for m, organs in table.items():
        out[m] = {o: {k: (float(np.mean([v for v in vs if np.isfinite(v)])) if any(np.isfinite(vs)) else None)
                      for k, vs in d.items()} for o, d in organs.items()}
        out[m]["mean_dice"] = float(np.mean([d["dice"] for d in out[m].values() if isinstance(d, dict)]))
    return out


def figure(summary: dict, path: Path, methods: list[str], title: str) -> None:
    """Per-organ Dice of each method (bars), the set's name and 'simulated' in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    organs = [o for o in summary["copy"] if isinstance(summary["copy"][o], dict)]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(organs), 3.6))
    methods = [m for m in methods if m in summary]
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [summary.get(m, {}).get(o, {}).get("dice") or 0.0 for o in organs]
        ax.bar(np.arange(len(organs)) + i * width, vals, width, label=f"{m} ({summary.get(m, {}).get('mean_dice', 0):.2f})")
    ax.set_xticks(np.arange(len(organs)) + 0.4 - width / 2, organs, rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("phantom", "openkbp"), required=True, help="which simulated fractions")
    ap.add_argument("--population", required=True,
                    help="population model checkpoint, or 'none': registration methods only (copy, rigid, propagated)")
    ap.add_argument("--patients", type=int, default=3, help="patients")
    ap.add_argument("--fractions", type=int, default=2, help="simulated fractions per patient")
    ap.add_argument("--minutes", type=float, default=3.0, help="adapt prepare fine-tuning budget")
    ap.add_argument("--data", default=str(OPENKBP), help="OpenKBP NIfTI folder")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--figure", default=None, help="write the per-organ Dice bar chart here (PNG)")
    ap.add_argument("--weights", type=float, nargs="*", default=list(FIXED_WEIGHTS),
                    help="fixed fusion weights also scored (fused_wW), beside the patient's own")
    ap.add_argument("--split", default="val", choices=("val", "train"),
                    help="OpenKBP split the patients come from (default val: the done-when run)")
    ap.add_argument("--skip", type=int, default=0, help="OpenKBP: start after this many patients of the split")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = METHODS + [f"fused_w{w:g}" for w in args.weights]
    cases = phantom_cases(args.patients, args.fractions) if args.set == "phantom" else \
        openkbp_cases(Path(args.data), args.patients, args.fractions, args.split, args.skip)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.population == "none":
            import yaml

            from rtseg.labels import PELVIS_CLASS_NAMES

            config = Path(__file__).resolve().parents[1] / "configs/openkbp_cpu.yml"
            names = PELVIS_CLASS_NAMES if args.set == "phantom" else \
                yaml.safe_load(config.read_text())["DATASET"]["CLASS_NAMES"]
            pop = stand_in_population(Path(tmp) / "stand_in.pt", names)
        for name, plan, fractions in cases:
            if args.population == "none":
                results.append(run_registration_only(name, plan, fractions, pop, Path(tmp)))
            else:
                results.append(run_patient(name, plan, fractions, Path(args.population), args.minutes, Path(tmp),
                                           args.weights))
            per_method = {m: round(float(np.mean([v["dice"] for fr in results[-1]["fractions"]
                                                  for v in fr["metrics"].get(m, {}).values()] or [np.nan])), 3)
                          for m in methods if m in results[-1]["fractions"][0]["metrics"]}
            print(json.dumps({"patient": name, "prepare_s": round(results[-1]["prepare_s"], 1),
                              "contour_s": round(results[-1]["contour_s"] or 0, 1), "mean_dice": per_method}), flush=True)
    summary = summarise(results)
    report = {"simulated": True, "set": args.set, "split": args.split, "skip": args.skip, "weights": args.weights,
              "population": args.population, "patients": args.patients,
              "fractions": args.fractions, "minutes": args.minutes, "summary": summary,
              "prepare_s": [r["prepare_s"] for r in results], "contour_s": [r["contour_s"] for r in results],
              "cases": results}
    print(f"SIMULATED fractions ({args.set}); mean Dice per method:")
    for m in [m for m in methods if m in summary]:
        s = summary.get(m, {})
        organs = ", ".join(f"{o} {d['dice']:.3f}" for o, d in s.items() if isinstance(d, dict))
        print(f"  {m:11s} {s.get('mean_dice', float('nan')):.3f}  ({organs})")
    for m in ("rigid", "propagated"):
        errors = {o: d["error_mm"] for o, d in summary.get(m, {}).items() if isinstance(d, dict) and d.get("error_mm")}
        if errors:
            print(f"  {m} error (mm from the true motion): " + ", ".join(f"{o} {e:.2f}" for o, e in errors.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    if args.figure:
        model = "registration methods only" if args.population == "none" else \
            f"population model {Path(args.population).name}, prepare {args.minutes:g} min"
        figure(summary, Path(args.figure), methods, f"SIMULATED {args.set} fractions: {args.patients} patients x {args.fractions}, {model}")


if __name__ == "__main__":
    main()
