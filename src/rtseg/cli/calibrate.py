"""``rtseg calibrate``: fit the probabilities' temperature on the validation split and store it in the checkpoint.

Predicts every case of DATASET.VAL_SPLIT (or --split) on its own grid, pools the voxels within --mm of an organ
(ground truth or prediction), fits the softmax temperature T that minimises their negative log-likelihood and
prints the expected calibration error (ECE, top-label, 15 bins) before and after. T is stored in the checkpoint
(extras.calibration; --out writes a copy instead), and rtseg predict then applies it to the probabilities (QA
uncertainty, --save-probabilities, review pages); labels never change. CKPT_calibration.json next to the output
holds the reliability diagrams. See docs/REVIEW.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rtseg.cli.common import add_checkpoint_arg, add_command, add_config_args, config_from_args, doc_body

NAME = "calibrate"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, help="fit the probabilities' temperature on the validation split (stored in the checkpoint)",
                    description=doc_body(__doc__))
    add_config_args(p)
    add_checkpoint_arg(p)
    p.add_argument("--split", metavar="NAME", help="split to fit on (default DATASET.VAL_SPLIT)")
    p.add_argument("--eval-split", metavar="NAME", help="also report ECE before/after on this held-out split, e.g. test")
    p.add_argument("--out", metavar="CKPT", help="write the calibrated checkpoint here (default: update --checkpoint in place)")
    p.add_argument("--mm", type=float, default=10.0, metavar="MM",
                   help="measure voxels within this distance of an organ (default 10 mm): far background is trivially certain")
    p.add_argument("--overlap", type=float, default=0.5, metavar="F", help="sliding-window overlap in [0, 1) (default 0.5)")
    p.add_argument("--tta", action="store_true", help="fit on mirrored-TTA probabilities (for use with rtseg predict --tta)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (GPU if available), cpu, or cuda[:N] (default auto)")


def run(args: argparse.Namespace) -> int:
    from rtseg.device import resolve_device
    from rtseg.errors import ConfigError
    from rtseg.inference.predictor import Predictor, load_model
    from rtseg.io.jsonfile import write_json
    from rtseg.review.calibrate_split import calibrate, store_calibration

    if not args.mm > 0:
        raise ConfigError(f"--mm must be > 0, got {args.mm}")
    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap}")
    cfg = config_from_args(args)
    dev = resolve_device(args.device)
    predictor = Predictor(load_model(args.checkpoint, dev), dev, overlap=args.overlap, tta=args.tta, temperature=1.0)
    result = calibrate(predictor, cfg.DATASET, args.split or cfg.DATASET.VAL_SPLIT, args.eval_split, args.mm)
    out = Path(args.out or args.checkpoint)
    store_calibration(args.checkpoint, result, out)
    report = write_json(result, out.with_name(out.stem + "_calibration.json"))
    print(f"{'split':<10}{'cases':>6}{'voxels':>10}{'ECE before':>12}{'ECE after':>11}")
    for part in (result["fit"], result.get("eval")):
        if part:
            print(f"{part['split']:<10}{part['n_cases']:>6}{part['n_voxels']:>10}{part['ece_before']:>12.4f}{part['ece_after']:>11.4f}")
    print(f"temperature {result['temperature']:.3f} (NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f}); "
          f"stored in {out}; reliability diagrams in {report}")
    return 0
