"""``rtseg export``: a trained network as ONNX or TorchScript for deployment."""
from __future__ import annotations

import argparse

NAME = "export"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help="export a checkpoint's network to ONNX or TorchScript",
        description="Write the network of a checkpoint as ONNX (dynamic batch and spatial axes; spatial sizes must "
        "be multiples of the network's stride) or TorchScript (traced), checked against PyTorch on a random input. "
        "The inference metadata (class names, colours, preprocessing, patch size, input/output description) is "
        "embedded in the file and written beside it as OUT.json. See docs/PREDICT.md.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint written by 'rtseg train' (.pt)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx or torchscript")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, e.g. model.onnx or model.ts")
    p.add_argument("--no-check", action="store_true",
                   help="skip the parity check of the exported model against PyTorch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.inference.export import export_model

    out = export_model(args.checkpoint, args.out, format=args.format, check=not args.no_check)
    print(f"wrote {out} and {out.name}.json")
    return 0
