"""``rtseg export``: a trained network as ONNX or TorchScript for deployment.

Write the network of a checkpoint as ONNX (dynamic batch and spatial axes; spatial sizes must be
multiples of the network's stride) or TorchScript (traced), checked against PyTorch on a random
input. The inference metadata (class names, colours, preprocessing, patch size, input/output
description) is embedded in the file and written beside it as OUT.json. See docs/PREDICT.md.
"""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_checkpoint_arg, add_command, doc_body

NAME = "export"
HELP = "export a checkpoint's network to ONNX or TorchScript"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, HELP, doc_body(__doc__))
    add_checkpoint_arg(p)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx or torchscript")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, e.g. model.onnx or model.ts")
    p.add_argument("--no-check", action="store_true",
                   help="skip the parity check of the exported model against PyTorch")


def run(args: argparse.Namespace) -> int:
    from rtseg.inference.export import export_model

    out = export_model(args.checkpoint, args.out, format=args.format, check=not args.no_check)
    print(f"wrote {out} and {out.name}.json")
    return 0
