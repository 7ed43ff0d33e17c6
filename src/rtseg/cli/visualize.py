"""``rtseg visualize``: GIF or PNG montage of CT | ground truth | prediction.

Show a CT with its ground-truth (and optionally predicted) labels side by side: an animated GIF
through the slices (--out FILE.gif) or a PNG grid of evenly spaced slices containing organs (--out
FILE.png). Volumes are shown in RAS orientation (axial: anterior up, patient's right on the left).
All volumes must be on the same grid.
"""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_command, doc_body

HELP = "animated GIF or PNG montage of CT, ground truth and prediction"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "visualize", run, HELP, doc_body(__doc__))
    p.add_argument("--ct", required=True, metavar="CT", help="CT volume (NIfTI, HU)")
    p.add_argument("--labels", required=True, metavar="GT", help="ground-truth label volume (NIfTI) on the CT grid")
    p.add_argument("--pred", metavar="PRED", help="predicted label volume (NIfTI) on the CT grid")
    p.add_argument("--out", required=True, metavar="FILE", help="output .gif (animated slices) or .png (montage)")
    p.add_argument("--colors", metavar="JSON",
                   help="RGB per label 1..N-1 as a JSON list [[r,g,b],...], a .json file or a config .yml (DATASET.COLOR_MAP); "
                   "default: the original code base's COLOR_MAP")
    p.add_argument("--window", type=float, nargs=2, default=[-160.0, 240.0], metavar=("L", "H"),
                   help="display window in HU (default -160 240, soft tissue)")
    p.add_argument("--stride", type=int, default=1, help="GIF: show every N-th slice (default 1)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2,
                   help="slice axis after RAS reorientation: 0 sagittal, 1 coronal, 2 axial (default 2)")
    p.add_argument("--labelled-only", action="store_true", help="GIF: only slices containing a label")
    p.add_argument("--n-slices", type=int, default=6, help="PNG montage: number of rows/slices (default 6)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--duration-ms", type=int, default=150, help="GIF: milliseconds per frame (default 150)")


def run(args: argparse.Namespace) -> int:
    from rtseg.figures import save_volume_figure
    from rtseg.config.colors import parse_colors
    from rtseg.errors import ConfigError
    from rtseg.io.nifti import read_nifti

    suffix = args.out.lower().rsplit(".", 1)[-1]
    if suffix not in ("gif", "png"):
        raise ConfigError(f"--out {args.out}: must end in .gif (animated slices) or .png (montage)")
    colors = parse_colors(args.colors) if args.colors else None
    ct = read_nifti(args.ct)
    labels = read_nifti(args.labels)
    pred = read_nifti(args.pred) if args.pred else None
    window = (args.window[0], args.window[1])
    if suffix == "gif":
        opts = dict(window=window, stride=args.stride, axis=args.axis, labelled_only=args.labelled_only,
                    alpha=args.alpha, duration_ms=args.duration_ms)
    else:
        opts = dict(window=window, axis=args.axis, alpha=args.alpha, n_slices=args.n_slices)
    out = save_volume_figure(ct, labels, pred, args.out, colors, **opts)
    print(f"wrote {out}")
    return 0
