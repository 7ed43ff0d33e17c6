"""The prior correction of a class-weighted model, on and off, on the same checkpoint and validation split.

A model trained with `dice_ce_weighted` over-segments (its softmax estimates w_c p_c, not p_c);
`TRAINING.LOSS_FUNC.prior_correction` (default on) stores logits - log(w_c) in the checkpoint. This
scores one checkpoint both ways with `rtseg val`'s loop (same cases, grids, overlap, clean-up): as
saved, and with the correction toggled (removed if present, added from the plan's class voxel
counts if absent). Prints per-organ mean Dice and median predicted/true volume ratio.

    python benchmarks/prior_correction.py -c configs/openkbp_cpu.yml \
        --checkpoint runs/openkbp-cpu/checkpoints/best.pt --overlap 0.25 --largest-component
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from statistics import mean, median

import torch

from rtseg.config import load_config
from rtseg.device import select_device
from rtseg.inference.bundle import PRIOR_KEY
from rtseg.inference.evaluate_split import predict_and_score
from rtseg.inference.predictor import LoadedModel, Predictor, load_model
from rtseg.training.losses import frequency_weights


def toggled(loaded: LoadedModel) -> LoadedModel:
    """The same weights with the prior correction removed (if the bundle has it) or added (if not)."""
    bundle = loaded.bundle
    if bundle.logit_offset is not None:
        other = replace(bundle, extras={k: v for k, v in bundle.extras.items() if k != PRIOR_KEY})
    else:
        voxels = (bundle.plan or {}).get("class_voxels")
        if not voxels:
            raise SystemExit("prior_correction: the checkpoint's plan has no class_voxels to derive the weights from")
        other = bundle.with_prior_correction(frequency_weights(torch.tensor(voxels)), "dice_ce_weighted")
    net = loaded.model.backbone if bundle.logit_offset is not None else loaded.model  # type: ignore[union-attr]
    state = net.state_dict()
    return LoadedModel(other.build(state).to(next(net.parameters()).device), other, loaded.source)


def summary(predictor: Predictor, cfg, args: argparse.Namespace) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    scores = predict_and_score(predictor, cfg.DATASET, cfg.DATASET.VAL_SPLIT, largest_component=args.largest_component)
    dice: dict[str, list[float]] = {}
    ratio: dict[str, list[float]] = {}
    for r in scores.rows:
        dice.setdefault(r["organ"], []).append(float(r["dice"]))
        if r["vol_gt_ml"] > 0:
            ratio.setdefault(r["organ"], []).append(float(r["vol_pred_ml"]) / float(r["vol_gt_ml"]))
    return {o: (mean(d), median(ratio.get(o, [float("nan")]))) for o, d in dice.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", required=True, help="the YAML config the checkpoint was trained with")
    ap.add_argument("--checkpoint", required=True, help="checkpoint of a class-weighted run")
    ap.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    ap.add_argument("--largest-component", action="store_true", help="score each organ's largest component")
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    device = select_device(cfg.CUDA)
    saved = load_model(args.checkpoint, device)
    runs = {("corrected" if saved.bundle.logit_offset is not None else "uncorrected"): saved}
    other = toggled(saved)
    runs["corrected" if other.bundle.logit_offset is not None else "uncorrected"] = other
    results = {name: summary(Predictor(m, device, overlap=args.overlap), cfg, args) for name, m in sorted(runs.items(),
                                                                                                         reverse=True)}
    organs = list(next(iter(results.values())))
    print("| scoring | mean Dice | " + " | ".join(organs) + " |")
    print("|---|---:|" + "---:|" * len(organs))
    for name, res in results.items():
        cells = [f"{res[o][0]:.3f} ({res[o][1]:.2f}x)" for o in organs]
        print(f"| {name} | {mean(v[0] for v in res.values()):.3f} | " + " | ".join(cells) + " |")
    print("cells: mean Dice (median predicted / true volume)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
