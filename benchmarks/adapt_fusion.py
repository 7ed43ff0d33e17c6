"""How much each method counts in ``fused``: the study behind ``methods.fusion_weights`` (docs/ADAPT.md, "How the
shares were chosen"). Every fraction here is SIMULATED.

Per patient, one ``adapt prepare`` and one run of the product's predictor per simulated fraction save the
propagated, patient-model and population-model probabilities (``--out``, one .npz per fraction); then every pair
(propagated share w, the population model's part of the networks' share) is fused offline, as ``fused`` fuses,
and scored (mean Dice over the organs the plan contours). Saved fractions are reused: ``--cases`` only those.

    # networks much worse than registration: OpenKBP training patients (indices into the split)
    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/adapt_fusion.py --set openkbp \\
        --cases 72 103 125 126 128 131 --population /work/runs/okbp/checkpoints/best.pt --minutes 3 \\
        --fractions 1 --out runs/fusion-openkbp
    # networks as good or better: phantoms neither the benchmark (1000-1002) nor the population model (0-23) uses
    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/adapt_fusion.py --set phantom \\
        --cases 2000 2001 2002 2003 2004 --population runs/phantom-demo/run/checkpoints/best.pt --minutes 2 \\
        --fractions 2 --out runs/fusion-phantom
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from rtseg.adapt.api import prepare
from rtseg.adapt.finetune import FinetuneOptions
from rtseg.adapt.methods import AdaptOptions, AdaptPredictor, fuse, fused_labels, networks
from rtseg.adapt.patient import open_patient_dir
from rtseg.errors import DataError
from rtseg.io.nifti import write_nifti
from rtseg.synthetic.fractions import generate_fraction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt import OPENKBP, openkbp_cases  # noqa: E402  (the benchmark's fraction simulator and patients)

SHARES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 1 / 3, 0.25, 0.2, 0.0)  # the propagated contours' share w
PARTS = (0.0, 0.25, 0.5, 0.75)  # the population model's part of the networks' share (1 - w)


def cases(kind: str, ids: list[int], n_fractions: int, data: Path):
    """(name, (plan CT, plan labels), [(fraction CT, its true labels), ...]) per requested patient."""
    for i in ids:
        if kind == "phantom":
            yield f"phantom{i}", generate_fraction(i, 0), [generate_fraction(i, f) for f in range(1, n_fractions + 1)]
        else:
            for name, plan, fractions in openkbp_cases(data, 1, n_fractions, "train", skip=i):
                yield name, plan, [(ct, lab) for ct, lab, _ in fractions]


def save_probabilities(name: str, plan, fractions, population: Path, minutes: float, out: Path) -> None:
    """One ``prepare``, then per fraction the three methods' probabilities on the fraction's grid."""
    work = Path(tempfile.mkdtemp(prefix="rtseg-fusion-"))
    write_nifti(plan[0], work / "ct.nii.gz")
    write_nifti(plan[1], work / "labels.nii.gz", dtype=np.uint8)
    prepare(population, work / "ct.nii.gz", work / "labels.nii.gz", work / "p", FinetuneOptions(minutes=minutes))
    pdir = open_patient_dir(work / "p")
    pred = AdaptPredictor(pdir, AdaptOptions(method="fused", check_registration=False))
    pop = AdaptPredictor(pdir, AdaptOptions(method="population"))
    for k, (ct, truth) in enumerate(fractions, 1):
        try:
            probs = pred.method_probabilities(ct)
        except DataError as exc:  # registration failed: no fraction to score
            print(f"{name} fraction {k}: {exc}", flush=True)
            continue
        if "population" not in probs:
            probs["population"] = pop.method_probabilities(ct)["population"]
        np.savez_compressed(out / f"{name}_f{k}.npz", truth=np.asarray(truth.array, np.uint8),
                            contoured=np.array(sorted(pdir.contoured)), plan_dice=pdir.manifest["fusion"]["mean"],
                            **{m: probs[m].astype(np.float16) for m in ("propagated", "finetuned", "population")})
        print(f"{name} fraction {k} saved (plan Dice {pdir.manifest['fusion']['mean']})", flush=True)


def mean_dice(labels: np.ndarray, truth: np.ndarray, organs: list[int]) -> float:
    return float(np.mean([2.0 * np.count_nonzero((labels == c) & (truth == c))
                          / max(np.count_nonzero(labels == c) + np.count_nonzero(truth == c), 1) for c in organs]))


def evaluate(files: list[Path]) -> dict[str, list[float]]:
    """Per fraction: each single method's and every (w, part) fusion's mean Dice."""
    rows: dict[str, list[float]] = {}
    for f in files:
        data = np.load(f)
        probs = {m: data[m].astype(np.float32) for m in ("propagated", "finetuned", "population")}
        truth, contoured = data["truth"], {int(c) for c in data["contoured"]}
        organs = [c for c in sorted(contoured) if (truth == c).any()]
        for m, p in probs.items():
            rows.setdefault(m, []).append(mean_dice(np.argmax(p, axis=0), truth, organs))
        for w in SHARES:
            for part in PARTS:
                net = networks(probs, {"finetuned": 1.0 - part, "population": part})
                labels = fused_labels(fuse(net, probs["propagated"], contoured, w), contoured)
                rows.setdefault(f"{w:.2f}/{part:.2f}", []).append(mean_dice(labels, truth, organs))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=("phantom", "openkbp"), required=True, help="which simulated fractions")
    ap.add_argument("--cases", type=int, nargs="+", required=True,
                    help="phantom seeds, or indices into the OpenKBP training split")
    ap.add_argument("--population", required=True, help="population model checkpoint")
    ap.add_argument("--minutes", type=float, default=3.0, help="adapt prepare fine-tuning budget")
    ap.add_argument("--fractions", type=int, default=1, help="simulated fractions per patient")
    ap.add_argument("--data", default=str(OPENKBP), help="OpenKBP NIfTI folder")
    ap.add_argument("--out", required=True, help="folder of the saved probabilities (reused when present)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.set == "openkbp" and not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data}: folder not found (the OpenKBP NIfTI files of ../shared/data)")
    wanted = []
    for name, plan, fractions in cases(args.set, args.cases, args.fractions, Path(args.data)):
        have = [out / f"{name}_f{k}.npz" for k in range(1, len(fractions) + 1)]
        if not any(p.is_file() for p in have):
            save_probabilities(name, plan, fractions, Path(args.population), args.minutes, out)
        wanted += [p for p in have if p.is_file()]
    rows = evaluate(wanted)
    print(f"SIMULATED fractions ({args.set}, {len(wanted)}); mean Dice:")
    for m in ("propagated", "finetuned", "population"):
        print(f"  {m:10s} {np.mean(rows[m]):.4f}")
    print("  propagated share w | population part of the networks: " + "  ".join(f"{p:.2f}" for p in PARTS))
    for w in SHARES:
        print(f"  {w:.2f}" + "".join(f"  {np.mean(rows[f'{w:.2f}/{p:.2f}']):.4f}" for p in PARTS))


if __name__ == "__main__":
    main()
