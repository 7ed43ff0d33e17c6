"""Benchmark: ``rtseg serve`` latency (last CT instance received -> RTSTRUCT delivered) and throughput.

A node runs in this process (the real ``Node``: pynetdicom SCP, SQLite queue,
worker, sender) with dcmtk ``storescp`` as the TPS. Copies of the shared CT
series (../shared/data/dicom-ct-series, 20 slices 512x512, JPEG 2000), each with
new Study/Series/SOP UIDs, are sent with dcmtk ``storescu``.

* latency: ``--series`` copies one after the other; each job's timestamps in the
  queue split it into receive (first -> last instance), wait (completion +
  queue), read, inference, write (RTSTRUCT) and send (C-STORE to the TPS). The
  node completes a series when its association is released
  (``complete_on_release``); with only ``series_timeout`` the timeout adds to the
  latency.
* baseline: ``rtseg predict --format rtstruct`` on the same series as a fresh
  process (what a person runs by hand once the files are copied), same model.
* throughput: ``--series`` copies sent at once by as many ``storescu`` processes.

Model: ``--model demo`` trains the ``rtseg demo`` network (ResUnet_3D, base
filters 8, 4x4x5 mm grid, patch 64x64x32) for ``--demo-minutes`` on synthetic
pelvic CTs; ``--model tiny`` is the tests' 4-filter network on a 4 mm grid;
``--checkpoint`` any checkpoint.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/serve.py --model demo --series 5
    # a 512x512x160 series and model (benchmarks/predict_dicom.py --keep DIR writes both), latency only:
    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/serve.py --series-dir DIR/ct --checkpoint DIR/bench.pt \
        --series 2 --no-throughput --no-baseline
    PYTHONPATH=src .venv/bin/python benchmarks/serve.py --model tiny --series 3      # quick
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SERIES = ROOT.parent / "shared" / "data" / "dicom-ct-series"


def make_model(kind: str, out: Path, minutes: float) -> Path:
    if kind == "tiny":
        from predict_helpers import make_checkpoint

        return make_checkpoint(out / "tiny.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    from rtseg.apps.demo import run_demo

    result = run_demo(out / "demo", cases=12, minutes=minutes, cuda=False)
    print(f"demo model: {result['iterations']} iterations in {result['minutes_training']:.1f} min, "
          f"mean Dice on synthetic test CTs {result['mean_dice']:.2f}")
    return out / "demo" / "run" / "checkpoints" / "best.pt"


def job_times(db: Path) -> list[dict]:
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        con.close()
    out = []
    for r in rows:
        t = json.loads(r["timings"] or "{}")
        out.append({
            "state": r["state"],
            "receive": r["last_received_at"] - r["first_received_at"],
            "wait": r["contour_started_at"] - r["last_received_at"],
            "read": t.get("read", 0.0), "inference": t.get("inference", 0.0), "write": t.get("write", 0.0),
            "send": r["delivered_at"] - r["contour_finished_at"],
            "latency": r["delivered_at"] - r["last_received_at"],
            "first": r["first_received_at"], "delivered": r["delivered_at"],
        })
    return out


def storescu_cmd(port: int, folder: Path) -> list[str]:
    return ["storescu", "-xv", "-R", "-aet", "SCANNER1", "-aec", "RTSEG", "+sd", "127.0.0.1", str(port), str(folder)]


def wait_done(db: Path, n: int, timeout: float = 1800) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = []
        if db.is_file():
            con = sqlite3.connect(str(db))
            states = [r[0] for r in con.execute("SELECT state FROM jobs ORDER BY id")]
            con.close()
        if len(states) >= n and all(s in ("done", "failed") for s in states[:n]):
            if "failed" in states:
                raise SystemExit(f"a job failed: {states}")
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for the jobs")


def run_node(ckpt: Path, tmp: Path, tps: str, workers: int, precision: str | None = None):  # -> (Node, port)
    from rtseg.serve.config import load_serve_config
    from rtseg.serve.service import Node

    keys = {"store": str(tmp), "port": 0, "checkpoint": str(ckpt), "destination": [tps], "device": "cpu",
            "complete_on_release": True, "series_timeout": 10.0, "workers": workers, "allow": ["SCANNER1"]}
    cfg = load_serve_config(None, keys if precision is None else {**keys, "precision": precision})
    node = Node(cfg)
    return node, node.start()[1]


def baseline(ckpt: Path, series: Path, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rtseg", "predict", "--checkpoint", str(ckpt), "--input", str(series),
                    "--output", str(out), "--format", "rtstruct", "--device", "cpu"], check=True, env=env,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("demo", "tiny"), default="demo", help="which model to build (see above)")
    ap.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of building one")
    ap.add_argument("--demo-minutes", type=float, default=2.0, help="training budget of the demo model")
    ap.add_argument("--series", type=int, default=5, help="series copies (latency run and throughput run)")
    ap.add_argument("--workers", type=int, default=1, help="node workers in the throughput run")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--series-dir", type=Path, default=SERIES, help="the series to send copies of (default the shared "
                    "20-slice CT)")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), help="the node's precision key (default: not set)")
    ap.add_argument("--no-throughput", action="store_true", help="latency only (skip the series-at-once run)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the 'rtseg predict' process baseline")
    args = ap.parse_args()
    if not args.series_dir.is_dir():
        raise SystemExit(f"{args.series_dir} not found")
    import torch

    from rtseg.device import retain_freed_memory
    from rtseg.serve.scp import free_port

    retain_freed_memory()  # what every `rtseg` process does (cli/main.py): the node in this process as `rtseg serve`
    from test_serve_support import StoreSCP, copy_series

    logging.getLogger("rtseg.serve").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop storescp and the node
    tmp = Path(tempfile.mkdtemp(prefix="rtseg-serve-bench-"))
    ckpt = args.checkpoint or make_model(args.model, tmp, args.demo_minutes)
    n_copies = args.series * (1 if args.no_throughput else 2)
    copies = [copy_series(args.series_dir, tmp / "copies" / f"s{i:02d}") for i in range(n_copies)]
    tps = StoreSCP(tmp / "tps", port=free_port()).start()
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                    f"torch threads {torch.get_num_threads()}", "model": str(args.checkpoint or args.model)}
    try:
        node, port = run_node(ckpt, tmp / "store-latency", tps.destination, 1, args.precision)
        try:
            for i, c in enumerate(copies[: args.series]):
                subprocess.run(storescu_cmd(port, c), check=True, capture_output=True)
                wait_done(tmp / "store-latency" / "jobs.sqlite", i + 1)
        finally:
            node.stop()
        lat = job_times(tmp / "store-latency" / "jobs.sqlite")
        keys = ("receive", "wait", "read", "inference", "write", "send", "latency")
        result["latency_median_s"] = {k: round(median(j[k] for j in lat), 3) for k in keys}
        if not args.no_baseline:
            result["baseline_predict_s"] = round(median(baseline(ckpt, c, tmp / "predict" / c.name)
                                                        for c in copies[: min(3, args.series)]), 3)
        if args.no_throughput:
            return report(result, args, keys)
        node, port = run_node(ckpt, tmp / "store-load", tps.destination, args.workers)
        try:
            t0 = time.time()
            procs = [subprocess.Popen(storescu_cmd(port, c), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for c in copies[args.series:]]
            for p in procs:
                p.wait()
            wait_done(tmp / "store-load" / "jobs.sqlite", args.series)
        finally:
            node.stop()
        load = job_times(tmp / "store-load" / "jobs.sqlite")
        span = max(j["delivered"] for j in load) - t0
        result["throughput"] = {"series": args.series, "workers": args.workers, "seconds": round(span, 2),
                                "series_per_min": round(60 * args.series / span, 2),
                                "latency_max_s": round(max(j["latency"] for j in load), 2)}
    finally:
        tps.stop()
    return report(result, args, keys)


def report(result: dict, args: argparse.Namespace, keys: tuple[str, ...]) -> int:
    m = result["latency_median_s"]
    n_slices = len([f for f in args.series_dir.iterdir() if f.is_file()])
    print(f"\nmachine: {result['machine']}; model: {result['model']}; {args.series} series of {n_slices} slices; "
          f"precision key {args.precision or 'not set'}; load average {os.getloadavg()[0]:.2f}")
    print("latency (median, s): " + ", ".join(f"{k} {m[k]:.2f}" for k in keys))
    if "baseline_predict_s" in result:
        print(f"baseline 'rtseg predict --format rtstruct' process: {result['baseline_predict_s']:.2f} s; "
              f"ratio baseline / node latency: {result['baseline_predict_s'] / m['latency']:.2f}x")
    if "throughput" in result:
        t = result["throughput"]
        print(f"throughput: {t['series']} series at once, {t['workers']} worker(s): {t['seconds']:.1f} s, "
              f"{t['series_per_min']:.1f} series/min, worst latency {t['latency_max_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
