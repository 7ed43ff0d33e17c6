"""``rtseg compare-models``: score the current and a new model on held-out approved cases, paired test per organ."""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_command

NAME = "compare-models"


def run(args: argparse.Namespace) -> int:
    from rtseg.audit.models import compare_models

    verdicts, _ = compare_models(args.a, args.b, args.data, args.split, args.device, args.alpha, args.out)
    for v in verdicts:
        print(v.text())
    better = [v.organ for v in verdicts if v.verdict == "B better"]
    worse = [v.organ for v in verdicts if v.verdict == "A better"]
    print(f"B better on {len(better)} organ(s){': ' + ', '.join(better) if better else ''}; "
          f"worse on {len(worse)}{': ' + ', '.join(worse) if worse else ''}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, "is a new model better than the current one, per organ (paired test)?",
                    "Contour every case of a dataset split (e.g. 'rtseg audit export-dataset' of approved cases) with "
                    "both models and compare surface Dice at 2 mm per organ with a paired Wilcoxon signed-rank test. "
                    "See docs/AUDIT.md.")
    p.add_argument("--a", required=True, metavar="CUR", help="the current model's checkpoint")
    p.add_argument("--b", required=True, metavar="NEW", help="the new model's checkpoint")
    p.add_argument("--data", required=True, metavar="DIR", help="a dataset folder with rtseg_dataset.json (held-out "
                   "approved cases)")
    p.add_argument("--split", default="val,test", metavar="NAMES", help="which splits of the dataset, comma-separated "
                   "(default val,test: the cases fine-tuning did not train on; all: every case)")
    p.add_argument("--alpha", type=float, default=0.05, metavar="P", help="significance level (default 0.05)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write compare_models.csv and compare_models.json here")
