"""Benchmark: Orthanc pushes N CT series to ``rtseg serve`` and gets the N RTSTRUCTs back (latency, throughput).

The round trip of ``tests/test_serve_orthanc.py``: a throw-away Orthanc (loopback,
free ports) holds N copies of the shared CT series (20 slices 512x512, JPEG 2000,
new UIDs each) and starts one asynchronous ``/modalities/rtseg/store`` job per
series; the node (in this process, ``complete_on_release``) contours each and sends
its RTSTRUCT back to Orthanc. Figures: push -> RTSTRUCT in Orthanc per series
(polled every 0.2 s), the node's latency (last instance received -> delivered),
and throughput (push of the first series -> last RTSTRUCT delivered).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/serve_orthanc.py --model tiny --series 10
    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/serve_orthanc.py --model demo --series 10
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SERIES = ROOT.parent / "shared" / "data" / "dicom-ct-series"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("demo", "tiny"), default="tiny", help="model to build (benchmarks/serve.py make_model)")
    ap.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of building one")
    ap.add_argument("--demo-minutes", type=float, default=2.0, help="training budget of the demo model")
    ap.add_argument("--series", type=int, default=10, help="series Orthanc pushes")
    ap.add_argument("--workers", type=int, default=2, help="node workers")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if not SERIES.is_dir():
        raise SystemExit(f"{SERIES} not found")
    import torch

    from rtseg.serve.config import load_serve_config
    from serve import make_model
    from rtseg.serve.scp import free_port
    from rtseg.serve.service import Node
    from test_serve_load import Orthanc
    from test_serve_orthanc import node_latencies, round_trip
    from test_serve_support import copy_series

    logging.getLogger("rtseg.serve").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop Orthanc and the node
    tmp = Path(tempfile.mkdtemp(prefix="rtseg-orthanc-bench-"))
    ckpt = args.checkpoint or make_model(args.model, tmp, args.demo_minutes)
    copies = [copy_series(SERIES, tmp / "copies" / f"s{i:02d}") for i in range(args.series)]
    port = free_port()
    orthanc = Orthanc(tmp / "orthanc", port).start()
    try:
        cfg = load_serve_config(None, {"store": str(tmp / "store"), "port": port, "checkpoint": str(ckpt),
                                       "destination": [f"ORTHANC@127.0.0.1:{orthanc.dicom}"], "device": "cpu",
                                       "allow": ["ORTHANC"], "workers": args.workers, "complete_on_release": True,
                                       "series_timeout": 15.0})
        node = Node(cfg)
        node.start()
        try:
            run = round_trip(orthanc, copies)
        finally:
            node.stop()
    finally:
        orthanc.stop()
    if len(run["arrived"]) != args.series:
        raise SystemExit(f"only {len(run['arrived'])} of {args.series} RTSTRUCTs came back")
    back = [run["arrived"][s] - run["push_at"] for s in run["ct_series"]]
    jobs = node_latencies(tmp / "store")
    span = max(j["delivered_at"] for j in jobs) - run["push_at"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                   f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end",
        "model": str(args.checkpoint or args.model), "series": args.series, "workers": args.workers,
        "push_to_rtstruct_s": {"median": round(median(back), 2), "max": round(max(back), 2)},
        "node_latency_s": {"median": round(median(j["latency"] for j in jobs), 2),
                           "max": round(max(j["latency"] for j in jobs), 2)},
        "receive_s_median": round(median(j["receive"] for j in jobs), 2),
        "all_delivered_s": round(span, 2), "series_per_min": round(60 * args.series / span, 2),
    }
    print(f"\nmachine: {result['machine']}; model: {result['model']}; {args.series} series of 20 slices 512x512, "
          f"{args.workers} worker(s)")
    p, n = result["push_to_rtstruct_s"], result["node_latency_s"]
    print(f"Orthanc push -> RTSTRUCT back in Orthanc: median {p['median']:.1f} s, max {p['max']:.1f} s")
    print(f"node latency (last instance received -> delivered): median {n['median']:.1f} s, max {n['max']:.1f} s; "
          f"receive (first -> last instance) median {result['receive_s_median']:.2f} s")
    print(f"throughput: {args.series} series in {span:.1f} s ({result['series_per_min']:.1f} series/min)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
