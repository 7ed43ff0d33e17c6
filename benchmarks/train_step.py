"""Training-step throughput: rtseg's way vs the seed's way (fp32, eager, default memory format), same model.

CPU: 64^3, batch 1.  GPU: 128^3, batch 2 (bf16 autocast, channels-last 3D, optional torch.compile).
Prints voxels/s, peak memory and the ratio per model.

    python benchmarks/train_step.py                 # auto device
    python benchmarks/train_step.py --compile       # also torch.compile on GPU
    python benchmarks/train_step.py --figures figures.jsonl   # also one JSON line per figure
    python benchmarks/train_step.py --base-filters 8 --batch 2 --channels-last always   # CPU NDHWC (TRAINING.CHANNELS_LAST)
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rtseg.models import create_model
from rtseg.device import autocast, memory_format

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402


def peak_mem_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, rtseg_way: bool, steps: int,
               warmup: int, channels_last: "bool | str" = True) -> float:
    fmt = memory_format(device, channels_last if rtseg_way else False)
    model = model.to(device).to(memory_format=fmt).train()
    if rtseg_way and device.type == "cuda":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = x.to(device).contiguous(memory_format=fmt)
    y = y.to(device)

    def step() -> None:
        with autocast(device, rtseg_way):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=250)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--size", type=int, default=None, help="cube edge (default 64 on CPU, 128 on GPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 1 on CPU, 2 on GPU)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the rtseg model (GPU)")
    ap.add_argument("--models", nargs="+", default=["ResUnet_3D", "Deeper_ResUnet_3D"])
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    ap.add_argument("--channels-last", choices=["true", "always"], default="true",
                    help="rtseg's TRAINING.CHANNELS_LAST: true (GPU path only, the default) or always (the CPU too)")
    args = ap.parse_args()
    channels_last: "bool | str" = True if args.channels_last == "true" else "always"
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    size = args.size or (128 if device.type == "cuda" else 64)
    batch = args.batch or (2 if device.type == "cuda" else 1)
    steps = args.steps or (20 if device.type == "cuda" else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; input {batch}x1x{size}^3; base filters {args.base_filters}; torch {torch.__version__}")
    print(f"{'model':<20}{'way':<8}{'s/step':>9}{'Mvox/s':>9}{'peak GiB':>10}")
    for mname in args.models:
        torch.manual_seed(0)
        x = torch.randn(batch, 1, size, size, size)
        y = torch.randint(0, 6, (batch, size, size, size))
        results, t_model = {}, time.perf_counter()
        for way in ("seed", "rtseg"):
            torch.manual_seed(0)
            model = create_model(mname, n_classes=6, base_filters=args.base_filters)
            if way == "rtseg" and args.compile and device.type == "cuda":
                model = torch.compile(model)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t_way = time.perf_counter()
            sec = time_steps(model, x, y, device, way == "rtseg", steps, warmup=2 if device.type == "cpu" else 5,
                             channels_last=channels_last)
            results[way] = sec
            peak = peak_mem_gib(device)
            print(f"{mname:<20}{way:<8}{sec:>9.3f}{batch * size**3 / sec / 1e6:>9.2f}{peak:>10.2f}")
            tag = f"train_step.{mname}{'.compiled' if way == 'rtseg' and args.compile else ''}.{way}"
            extra = {"device": name, "input": f"{batch}x1x{size}^3", "base_filters": args.base_filters,
                     "channels_last": args.channels_last}
            record(args.figures, f"{tag}.s_per_step", sec, "s", time.perf_counter() - t_way, **extra)
            record(args.figures, f"{tag}.peak_memory", peak, "GiB", time.perf_counter() - t_way, **extra)
            del model
        ratio = results["seed"] / results["rtseg"]
        print(f"{mname:<20}ratio rtseg/seed throughput: {ratio:.2f}x")
        record(args.figures, f"train_step.{mname}{'.compiled' if args.compile else ''}.ratio_vs_seed", ratio, "x",
               time.perf_counter() - t_model, device=name)


if __name__ == "__main__":
    main()
