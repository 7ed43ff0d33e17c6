"""``rtseg phantoms``: write a synthetic pelvic CT dataset (demo, tests, benchmarks).

Generate synthetic pelvic CTs (HU) with labels 0 background, 1 prostate, 2 bladder, 3 rectum, 4 left
/ 5 right femoral head. Case i is drawn from seed+i, so a dataset is reproducible. Layout 'nifti'
writes <out>/<split>/<id>_ct.nii.gz and <id>_labels.nii.gz; layout 'legacy_npy'
writes the original code base's <split>/CT, SEG, SEG_onehot .npy arrays in (D, H, W) =
(inferior->superior, anterior->posterior, patient right->left) order, i.e. radiological axial slices
stacked. NIfTI arrays are RAS+ (axis 0 runs towards the patient's right).
"""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_command, add_spacing_arg, doc_body
from rtseg.errors import ConfigError

HELP = "generate synthetic pelvic CT patients with labels"


def _fraction(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION (e.g. train=0.7), got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from rtseg.io.layouts.registry import LAYOUT_ALIASES
    from rtseg.synthetic import DEFAULT_SHAPE, DEFAULT_SPACING, DEFAULT_SPLIT_FRACTIONS, PHANTOM_LAYOUTS

    p = add_command(sub, "phantoms", run, HELP, doc_body(__doc__))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--cases", required=True, type=int, metavar="N", help="total number of patients over all splits")
    p.add_argument("--layout", type=lambda s: LAYOUT_ALIASES.get(s, s), choices=PHANTOM_LAYOUTS, default="nifti",
                   help="file layout: nifti or legacy_npy (the original code base's .npy layout, also spelt seed); default nifti")
    p.add_argument("--seed", type=int, default=0, help="random seed; case i uses seed+i (default 0)")
    p.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("X", "Y", "Z"),
                   help=f"voxels along left->right, posterior->anterior, inferior->superior (default {' '.join(map(str, DEFAULT_SHAPE))})")
    add_spacing_arg(p, f"voxel size in mm (default {' '.join(f'{s:g}' for s in DEFAULT_SPACING)})", DEFAULT_SPACING)
    default_fr = " ".join(f"{k}={v:g}" for k, v in DEFAULT_SPLIT_FRACTIONS.items())
    p.add_argument("--split-fractions", type=_fraction, nargs="+", metavar="NAME=FRACTION",
                   help=f"split names and their share of the cases (default {default_fr})")
    p.add_argument("--overwrite", action="store_true", help="replace split folders that already hold files")


def run(args: argparse.Namespace) -> int:
    from rtseg.synthetic import write_phantom_dataset

    fractions = None
    if args.split_fractions:
        fractions = dict(args.split_fractions)
        if len(fractions) != len(args.split_fractions):
            raise ConfigError("--split-fractions: each split name may appear only once")
    ids = write_phantom_dataset(
        args.out, args.cases, args.layout, seed=args.seed, shape=args.shape, spacing=args.spacing,
        split_fractions=fractions, overwrite=args.overwrite, progress=True,
    )
    per_split = ", ".join(f"{k} {len(v)}" for k, v in ids.items())
    grid = "x".join(map(str, args.shape))
    sp = "x".join(f"{s:g}" for s in args.spacing)
    print(f"wrote {sum(map(len, ids.values()))} phantom patients ({args.layout} layout) to {args.out}: {per_split}; "
          f"grid {grid} voxels at {sp} mm")
    return 0
