"""``rtseg adapt prepare | contour | update``: contours for a patient's new CT from the patient's own plan."""
from __future__ import annotations

import argparse
import json

from rtseg.cli.common import add_command
from rtseg.inference.outputs import output_help, output_names

NAME = "adapt"
METHODS = ("fused", "finetuned", "propagated", "population", "rigid")


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub, NAME, lambda args: 2, help="adaptive radiotherapy: contour a fraction from the patient's own plan",
        description="Adaptive radiotherapy. 'prepare' makes a patient directory (planning CT + approved contours + a "
        "patient model fine-tuned from the population model) between planning and the first fraction; 'contour' "
        "contours a fraction (registration of the plan with elastix and/or the patient model); 'update' adds a "
        "fraction's approved contours and refreshes the patient model. See docs/ADAPT.md.",
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP")
    steps.required = True
    p = add_command(steps, "prepare", _prepare, help="make PATIENT_DIR from the plan (fine-tunes the patient model)",
                    description="Copy the planning CT, its approved contours and the population model into a new patient "
                    "directory with provenance (population model sha256, planning UIDs, hashed patient ID; never names "
                    "or IDs in clear), then fine-tune the patient model within --minutes.")
    p.add_argument("--checkpoint", required=True, metavar="POP", help="the population model (checkpoint of 'rtseg train')")
    p.add_argument("--plan-ct", required=True, metavar="CT", help="planning CT: NIfTI file or DICOM series folder")
    p.add_argument("--plan-contours", required=True, metavar="RS|LABELS",
                   help="approved contours: an RTSTRUCT on the planning series (same Frame of Reference) or a NIfTI label "
                   "file on the planning CT's grid; organs it does not contour stay unknown")
    p.add_argument("--out", required=True, metavar="PATIENT_DIR", help="new (or empty) patient directory")
    _finetune_args(p, 8.0)
    p = add_command(steps, "contour", _contour, help="contour a fraction CT from PATIENT_DIR",
                    description="Contour one fraction (NIfTI or DICOM series folder) and write what 'rtseg predict' "
                    "writes (--format), CASE_qa.json with an 'adapt' section (registration quality, per-organ agreement "
                    "of the methods) and, with --format html, the review page. A fraction whose registration to the "
                    "plan is implausible (another patient?) is refused.")
    p.add_argument("--patient", required=True, metavar="PATIENT_DIR", help="made by 'rtseg adapt prepare'")
    p.add_argument("--ct", required=True, metavar="FRACTION", help="the fraction CT: NIfTI file or DICOM series folder")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--method", default="fused", choices=METHODS,
                   help="fused (default: patient model and propagated contours, weighted as prepare chose), "
                   "finetuned (patient model), "
                   "propagated (elastix rigid + B-spline, SimpleITK demons), population (population model), rigid (rigid registration)")
    p.add_argument("--format", nargs="+", default=["nifti"], choices=output_names(), metavar="FMT",
                   help=f"outputs: {output_help()}; default nifti")
    p.add_argument("--checkpoint", metavar="POP", help="the node's population model: refused unless PATIENT_DIR was "
                   "made from it (same sha256 and class list)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu (default), auto, or cuda[:N]")
    p.add_argument("--qa-policy", default="clinical", choices=("clinical", "research"),
                   help="QA gate: clinical (default) holds a fraction whose registration to the plan is doubtful or "
                   "whose CT is unlike the training CTs (its RTSTRUCT/SEG go to OUT/held/, exit code 1) and delivers "
                   "organ-level flags attached; research delivers everything with its flags (docs/REVIEW.md, 'QA gate')")
    p = add_command(steps, "update", _update, help="add a fraction's approved contours and refresh the patient model",
                    description="The approved contours of a fraction join the patient's training set; the patient model "
                    "is fine-tuned further on every scan so far within --minutes.")
    p.add_argument("--patient", required=True, metavar="PATIENT_DIR", help="made by 'rtseg adapt prepare'")
    p.add_argument("--ct", required=True, metavar="FRACTION", help="the fraction CT: NIfTI file or DICOM series folder")
    p.add_argument("--contours", required=True, metavar="APPROVED",
                   help="its approved contours: RTSTRUCT on that series or NIfTI labels on its grid")
    _finetune_args(p, 4.0)


def _finetune_args(p: argparse.ArgumentParser, minutes: float) -> None:
    p.add_argument("--minutes", type=float, default=minutes, metavar="M",
                   help=f"fine-tuning time budget in minutes (default {minutes:g}; 0: no patient model)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for fine-tuning (default: torch's)")


def _prepare(args: argparse.Namespace) -> int:
    from rtseg.adapt.api import prepare
    from rtseg.adapt.finetune import FinetuneOptions

    pdir = prepare(args.checkpoint, args.plan_ct, args.plan_contours, args.out,
                   FinetuneOptions(minutes=args.minutes, threads=args.threads))
    print(f"patient directory {pdir.root}: organs {', '.join(pdir.class_names[c] for c in sorted(pdir.contoured))}; "
          f"patient model: {json.dumps(pdir.manifest['patient_model'])}")
    return 0


def _contour(args: argparse.Namespace) -> int:
    from rtseg.adapt.api import contour
    from rtseg.adapt.methods import AdaptOptions

    formats = [f for f in args.format if f != "html"]
    res = contour(args.patient, args.ct, args.out, AdaptOptions(method=args.method, device=args.device),
                  formats=formats or ["nifti"], html="html" in args.format, population=args.checkpoint,
                  qa_policy=args.qa_policy)
    checks = [r["text"] for r in res.facts.get("agreement", []) if r.get("check")]
    print(f"{args.method}: {len(res.run.outputs)} file(s) in {args.out} ({res.seconds:.1f} s)"
          + (f"; check: {'; '.join(checks)}" if checks else ""))
    verdict = res.run.verdict
    if verdict.held:
        print(f"held by the QA gate ({verdict.policy}): {'; '.join(verdict.reasons)}; its DICOM outputs are in "
              f"{args.out}/held/ for review")
        return 1
    return 0


def _update(args: argparse.Namespace) -> int:
    from rtseg.adapt.api import update
    from rtseg.adapt.finetune import FinetuneOptions

    pdir = update(args.patient, args.ct, args.contours, FinetuneOptions(minutes=args.minutes, threads=args.threads))
    print(f"patient directory {pdir.root}: {len(pdir.manifest['fractions'])} approved fraction(s); "
          f"patient model: {json.dumps(pdir.manifest['patient_model'])}")
    return 0
