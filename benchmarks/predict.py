"""Benchmark: ``rtseg predict`` end to end vs the same pipeline with MONAI's sliding window, same model.

A synthetic pelvic CT (default 512x512x160 at 0.98x0.98x2.5 mm, HU: air, a body
ellipse with a fat rim, bladder, prostate, rectum, femoral heads) and a ResUnet_3D
checkpoint built here (BASE_FILTERS 16, network grid 1.96x1.96x2.5 mm, patch
128x128x64): its weights are set, not trained, so that it segments the phantom by
density plus a context-dependent shift from the randomly initialised deep path
(see ``build_checkpoint``): like a trained model it labels air background and its
labels near organ boundaries depend on where the windows fall. Each
method runs in its own process (so peak RSS is its own), from the CT ``Volume``
in memory to uint8 labels on the input grid:

* ``monai``: ``to_network_grid`` -> ``monai.inferers.sliding_window_inference``
  (same model, ROI, overlap, ``mode="gaussian"``, same batch of windows) over the
  whole network grid -> ``GridInfo.restore_labels`` (the one way back).
* ``rtseg``: ``Predictor.predict_labels`` (body box, channels-last, folded BatchNorm, in-place blending).

Prints seconds, peak RSS, the speed ratio, and checks the labels agree (share of
equal voxels >= 99.9 %, Dice of every organ vs the baseline >= 0.99).

    .venv/bin/python benchmarks/predict.py                      # full: 512x512x160
    .venv/bin/python benchmarks/predict.py --quick              # smoke run: 512x512x64
    .venv/bin/python benchmarks/predict.py --shape 512 512 300 --only rtseg   # memory of a long CT
    python benchmarks/predict.py --device cuda --repeat 3 --figures figures.jsonl   # a GPU: best of 3 after a warm-up

``--precision bf16`` runs rtseg in bf16 (``Predictor(precision="bf16")``: bf16 weights on the CPU)
and MONAI's sliding window under ``torch.autocast(device, dtype=torch.bfloat16)``: the same precision
for both; the default fp32 is fp32 for both. ``--ort`` adds a third method in the same run: rtseg's
pipeline with the network run by ONNX Runtime (CPU, fp32, the model as ``rtseg export`` writes it) in
place of PyTorch; its labels are compared with rtseg's.

    .venv/bin/python benchmarks/predict.py --precision bf16 --ort

On a GPU both methods run there (rtseg: bf16 autocast, channels-last; MONAI: fp32, its defaults);
``--repeat N`` runs each method N times in its process after one untimed warm-up (cuDNN picks
its kernels on the first call) and reports the fastest.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

# The phantom (constants are used by build_checkpoint to place its density thresholds).
from rtseg.synthetic.ellipsoids import AIR_HU, FAT_HU, SOFT_HU  # noqa: F401
from rtseg.synthetic.ellipsoids import CT_ORGANS as ORGANS
from rtseg.synthetic.ellipsoids import CT_SPACING as SPACING
from rtseg.synthetic.ellipsoids import ellipsoid_ct as make_ct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402

NAMES = ["background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]
COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (229, 255, 204)]
CONTEXT_HU = 10.0  # std of the context-dependent shift the deep path adds to the density (see build_checkpoint)


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _identity_bn(bn: torch.nn.BatchNorm3d, bias: torch.Tensor | float = 0.0) -> None:
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.fill_(1.0)
    bn.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand_as(bn.bias))


def _delta(conv: torch.nn.Conv3d) -> None:
    conv.weight.zero_()
    conv.bias.zero_()
    k = conv.kernel_size[0] // 2
    for c in range(min(conv.in_channels, conv.out_channels)):
        conv.weight[c, c, k, k, k] = 1.0


def build_checkpoint(path: Path, args: argparse.Namespace) -> None:
    """ResUnet_3D with weights set, not trained, so that it segments the phantom like a trained model would.

    Full-resolution path: the density -> 16 copies -> hinges ``LeakyReLU(x - t_k)`` at
    thresholds between the class densities -> the 1x1x1 head sums hinges into per-class step functions
    (logit margin 4). The rest of the U-Net keeps its random initialisation and feeds the last decoder
    stage with a gain set so it shifts the density by ~CONTEXT_HU: labels near organ boundaries then
    depend on context and on where windows fall, as with a real network, and air is background.
    """
    from rtseg.data.normalization import Normalization
    from rtseg.data.preprocess import Preprocessing, to_network_grid
    from rtseg.inference.bundle import InferenceBundle, save_bundle
    from rtseg.io.volume import Volume, affine_from_spacing
    from rtseg.models.spec import build_model, model_spec

    torch.manual_seed(0)
    bf = args.base_filters
    spec = model_spec("ResUnet_3D", 1, len(NAMES), bf, 0.0)
    model = build_model(spec).eval()
    pre = Preprocessing(Normalization("ct_window", (-1000.0, 1000.0)), tuple(args.target_spacing))
    scale = 1000.0  # HU per normalized unit
    # class of each density interval, sorted by density; boundaries halfway between neighbours
    levels = sorted([(AIR_HU, 0), (FAT_HU, 0), (SOFT_HU, 0)] + [(hu, lab) for lab, _, _, hu in ORGANS])
    bounds, owners = [], [levels[0][1]]
    for (h0, c0), (h1, c1) in zip(levels, levels[1:]):
        if c1 != c0:
            bounds.append((h0 + h1) / 2.0 / scale)
            owners.append(c1)
    if 2 * len(bounds) > bf:
        raise SystemExit(f"--base-filters must be >= {2 * len(bounds)} for this phantom")
    delta = 0.01  # ramp half-width: 10 HU
    thresholds = [t for b in bounds for t in (b - delta, b + delta)]
    with torch.no_grad():
        inc = model.inc
        inc.body[-1].weight.zero_()
        inc.body[-1].bias.zero_()
        _delta(inc.skip[0])
        inc.skip[0].weight[:, 0, 1, 1, 1] = 1.0
        _identity_bn(inc.skip[1])
        last = model.up[-1]
        last.fuse.weight.zero_()
        last.fuse.bias.zero_()
        for c in range(bf):
            last.fuse.weight[c, bf + c] = 1.0
        ctx = torch.randn(1, bf, generator=torch.Generator().manual_seed(1)).expand(bf, bf)  # one shift, all copies
        res = last.res
        t = torch.zeros(bf)
        t[: len(thresholds)] = torch.tensor(thresholds)
        _identity_bn(res.body[0], -t)
        _delta(res.body[3])
        _identity_bn(res.body[4])
        _delta(res.body[7])
        res.skip[0].weight.zero_()
        res.skip[0].bias.zero_()
        _identity_bn(res.skip[1])
        # head: step_j = (h_2j - h_2j+1) / (2 delta); class score = sum of its intervals' indicators
        w = torch.zeros(len(NAMES), bf)
        b = torch.zeros(len(NAMES))
        b[owners[0]] += 1.0
        for j in range(len(bounds)):
            step = torch.zeros(bf)
            step[2 * j], step[2 * j + 1] = 1.0 / (2 * delta), -1.0 / (2 * delta)
            w[owners[j + 1]] += step  # interval j+1 starts here ...
            w[owners[j]] -= step  # ... and interval j ends
        model.head.weight.copy_(4.0 * w[:, :, None, None, None])
        model.head.bias.copy_(4.0 * b)
        # gain of the context path: measured on one window of a phantom
        ct, _ = make_ct((256, 256, 64), seed=1)
        image, _ = to_network_grid(Volume(ct, affine_from_spacing(SPACING)), pre)
        roi = [min(r, s) for r, s in zip(args.roi, image.shape)]
        sl = tuple(slice((s - r) // 2, (s - r) // 2 + r) for s, r in zip(image.shape, roi))
        captured = {}
        hook = last.up.register_forward_hook(lambda m, i, o: captured.setdefault("up", o))
        model(torch.from_numpy(image[sl])[None, None])
        hook.remove()
        shift = torch.einsum("oc,ncdhw->nodhw", ctx, captured["up"])
        gain = (CONTEXT_HU / scale) / float(shift.std())
        last.fuse.weight[:, :bf] = gain * ctx[:, :, None, None, None]
        last.fuse.bias.fill_(-gain * float(shift.mean()))  # a shift, not a bias
    save_bundle(path, InferenceBundle(spec, tuple(NAMES), tuple(COLORS), pre, tuple(args.roi)), model.state_dict())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def monai_predict(vol, loaded, args: argparse.Namespace, device: torch.device) -> tuple[np.ndarray, dict]:  # noqa: ANN001
    """The baseline: rtseg's grid mapping around MONAI's sliding window (fp32), on ``device``."""
    from monai.inferers import sliding_window_inference

    from rtseg.data.preprocess import to_network_grid

    t0 = time.perf_counter()
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), cast:
        image, info = to_network_grid(vol, loaded.bundle.preprocessing)
        t1 = time.perf_counter()
        logits = sliding_window_inference(torch.from_numpy(image)[None, None].to(device), loaded.bundle.patch_size,
                                          args.batch_size, loaded.model, overlap=args.overlap, mode="gaussian").float()
        _sync(device)
        t2 = time.perf_counter()
        labels = info.restore_labels(logits[0])
    t3 = time.perf_counter()
    return labels, {"preprocess": t1 - t0, "network": t2 - t1, "labels": t3 - t2}


def run_one(args: argparse.Namespace) -> None:
    """Child process: one method, timed (fastest of --repeat after a warm-up on a GPU), labels saved."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))  # a set OMP_NUM_THREADS wins
    from rtseg.inference.predictor import Predictor, load_model, plan_summary
    from rtseg.io.volume import Volume, affine_from_spacing

    device = torch.device(args.device)
    ct, _ = make_ct(tuple(args.shape))
    vol = Volume(ct, affine_from_spacing(SPACING))
    del ct
    loaded = load_model(args.checkpoint, device)
    rss_before = rss_gib()
    result: dict = {"method": args.only, "seconds": float("inf")}
    if args.only in ("rtseg", "ort"):
        predictor = Predictor(loaded, device, overlap=args.overlap, batch_size=args.batch_size,
                              channels_last=not args.contiguous, skip_air=not args.no_skip,
                              progress=sys.stderr.isatty(), precision="fp32" if args.only == "ort" else args.precision)
        if args.only == "ort":
            predictor._run = ort_runner(args.checkpoint)  # the same pipeline, the network in ONNX Runtime
    else:
        import monai.inferers  # noqa: F401 - imported here so that its import time stays outside the timing
    runs = args.repeat + (1 if device.type == "cuda" else 0)
    for i in range(runs):
        t0 = time.perf_counter()
        if args.only in ("rtseg", "ort"):
            labels = predictor.predict_labels(vol)
            parts = dict(predictor.stats.seconds)
        else:
            labels, parts = monai_predict(vol, loaded, args, device)
        seconds = time.perf_counter() - t0
        if (device.type != "cuda" or i > 0) and seconds < result["seconds"]:
            result.update(seconds=seconds, parts=parts)
    if args.only in ("rtseg", "ort"):
        result["plan"] = plan_summary(predictor.stats)
    result["peak_rss_gib"] = rss_gib()
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["rss_before_gib"] = rss_before
    if args.labels_out:
        np.save(args.labels_out, labels)
    print(json.dumps(result))


def ort_runner(checkpoint: str):  # noqa: ANN201
    """Windows -> float32 logits through ONNX Runtime (CPU provider, this process's torch thread count)."""
    import onnxruntime as ort

    from rtseg.inference.export import export_model

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_model(checkpoint, path, "onnx", check=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: torch.from_numpy(sess.run(None, {name: x.float().contiguous().numpy()})[0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 160], help="CT size (default 512 512 160)")
    ap.add_argument("--quick", action="store_true", help="smoke run on a 512x512x64 CT")
    ap.add_argument("--roi", type=int, nargs=3, default=[128, 128, 64], help="patch size (default 128 128 64)")
    ap.add_argument("--overlap", type=float, default=0.5, help="window overlap (default 0.5)")
    ap.add_argument("--batch-size", type=int, default=2, help="windows per network call, both methods (default 2)")
    ap.add_argument("--base-filters", type=int, default=16, help="ResUnet_3D BASE_FILTERS (default 16)")
    ap.add_argument("--target-spacing", type=float, nargs=3, default=[1.96, 1.96, 2.5],
                    help="network grid spacing in mm (default 1.96 1.96 2.5: 512x512 -> 256x256 in-plane)")
    ap.add_argument("--contiguous", action="store_true", help="rtseg: NCDHW instead of channels-last (to isolate gains)")
    ap.add_argument("--no-skip", action="store_true", help="rtseg: run the network on the whole volume (no body box)")
    ap.add_argument("--only", choices=("rtseg", "monai", "ort"), help="run one method (peak memory of a long CT)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="both methods: fp32 (default), or bf16 (rtseg --precision bf16; MONAI under bf16 autocast)")
    ap.add_argument("--ort", action="store_true", help="also run rtseg's pipeline with ONNX Runtime as the network (fp32)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where both methods run")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per method, fastest reported (default 1)")
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--labels-out", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.shape = [512, 512, 64]
    return args


def run_child(method: str, ckpt: Path, out: Path, args: argparse.Namespace) -> dict:
    """One method in its own process (its own peak RSS); its result with the labels loaded."""
    cmd = [sys.executable, __file__, "--child", "--only", method, "--checkpoint", str(ckpt), "--labels-out", str(out),
           "--shape", *map(str, args.shape), "--roi", *map(str, args.roi), "--overlap", str(args.overlap),
           "--batch-size", str(args.batch_size), "--base-filters", str(args.base_filters),
           "--target-spacing", *map(str, args.target_spacing), "--device", args.device, "--repeat", str(args.repeat),
           "--precision", args.precision]
    cmd += (["--contiguous"] if args.contiguous else []) + (["--no-skip"] if args.no_skip else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["labels"] = np.load(out)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in res["parts"].items())
    gpu = f", peak GPU {res['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in res else ""
    print(f"{method:6s} {res['seconds']:8.2f} s  ({parts})  peak RSS {res['peak_rss_gib']:.2f} GiB "
          f"(before predict {res['rss_before_gib']:.2f}){gpu}  {res.get('plan', '')}")
    return res


def record_figures(args: argparse.Namespace, res: dict, seconds: float, agreement: Optional[float]) -> None:
    """One JSON line per figure: each method's total and network seconds, the speed-up, the agreement."""
    shape = "x".join(map(str, args.shape))
    extra = {"device": args.device, "ct": shape, "precision": args.precision, "load": round(os.getloadavg()[0], 2)}
    for m, r in res.items():
        record(args.figures, f"predict.{m}.total", r["seconds"], "s", seconds, **extra)
        record(args.figures, f"predict.{m}.network", r["parts"]["network"], "s", seconds, **extra)
    if agreement is not None:
        record(args.figures, "predict.speedup_vs_monai", res["monai"]["seconds"] / res["rtseg"]["seconds"], "x",
               seconds, **extra)
        record(args.figures, "predict.equal_voxels_vs_monai", 100.0 * agreement, "%", seconds, **extra)


def main() -> int:
    args = parse_args()
    if args.child:
        run_one(args)
        return 0
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.pt"
        t0 = time.perf_counter()
        build_checkpoint(ckpt, args)
        print(f"checkpoint built in {time.perf_counter() - t0:.1f} s "
              f"(ResUnet_3D, BASE_FILTERS {args.base_filters}, roi {args.roi}, target spacing {args.target_spacing} mm)")
        methods = [args.only] if args.only else ["monai", "rtseg"] + (["ort"] if args.ort else [])
        res = {m: run_child(m, ckpt, Path(tmp) / f"{m}.npy", args) for m in methods}
    _, gt = make_ct(tuple(args.shape))
    for m in methods:
        d = [dice(res[m]["labels"] == c, gt == c) for c in range(1, len(NAMES))]
        print(f"{m:6s} Dice vs phantom truth: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(NAMES[1:], d)))
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    print(f"machine: {where}, torch {torch.__version__}; CT {args.shape} at {SPACING} mm; precision {args.precision}; "
          f"load average {os.getloadavg()[0]:.2f}")
    if "ort" in res and "rtseg" in res:
        eq = float(np.mean(res["ort"]["labels"] == res["rtseg"]["labels"]))
        print(f"ONNX Runtime vs rtseg (PyTorch, {args.precision}): {res['rtseg']['seconds'] / res['ort']['seconds']:.2f}x "
              f"the speed, network {res['ort']['parts']['network']:.2f} vs {res['rtseg']['parts']['network']:.2f} s; "
              f"equal voxels {100 * eq:.4f} %")
    if len(methods) < 2:
        record_figures(args, res, time.perf_counter() - t_all, None)
        return 0
    a, b = res["rtseg"]["labels"], res["monai"]["labels"]
    equal = float(np.mean(a == b))
    dices = {n: dice(a == c, b == c) for c, n in enumerate(NAMES) if c and (b == c).any()}
    ratio = res["monai"]["seconds"] / res["rtseg"]["seconds"]
    print(f"speed-up {ratio:.2f}x; equal voxels {100 * equal:.4f} %; Dice rtseg vs MONAI: "
          + ", ".join(f"{n} {v:.4f}" for n, v in dices.items()))
    ok = equal >= 0.999 and all(v >= 0.99 for v in dices.values()) and len(dices) == len(NAMES) - 1
    print("agreement check:", "PASS" if ok else "FAIL")
    record_figures(args, res, time.perf_counter() - t_all, equal)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
