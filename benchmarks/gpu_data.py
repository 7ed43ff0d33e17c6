"""Copy a subset of the OpenKBP cases into a git-ignored folder that travels to a lent GPU machine.

The GPU machine receives the repository alone (tracked files plus the ignored paths a
call names in ``carry``, 64 MiB in all), not ``../shared``. This copies the first
``--train`` cases of ``configs/openkbp_splits.json``'s train split and the first ``--val``
of its val split, unchanged (NIfTI, ~0.3 MB a case), writes ``splits.json`` for them and
copies the partial-label table, then prints what would travel.

    python benchmarks/gpu_data.py                       # .gpudata/openkbp: 80 train + 34 val (make gpu-data)
    python benchmarks/gpu_data.py --train 4 --val 2 --out /tmp/tiny   # the dry run's data
    python benchmarks/gpu_data.py --size-only           # what would travel now
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = ("_ct.nii.gz", "_labels.nii.gz")
LIMIT_MIB = 64.0


def copy_subset(source: Path, out: Path, splits: Path, n_train: int, n_val: int) -> dict[str, list[str]]:
    """Copy the chosen cases and write ``out/splits.json`` (train/val) and ``out/train.json``."""
    table = json.loads(splits.read_text())
    chosen = {"train": table["train"][:n_train], "val": table["val"][:n_val]}
    missing = [source / f"{c}{s}" for cases in chosen.values() for c in cases for s in SUFFIXES
               if not (source / f"{c}{s}").is_file()]
    if missing:
        raise SystemExit(f"gpu_data: {missing[0]}: not found ({len(missing)} file(s) missing in {source})")
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c}{s}" for cases in chosen.values() for c in cases for s in SUFFIXES}
    for stale in out.glob("*.nii.gz"):
        if stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        if not (out / name).exists() or (out / name).stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, out / name)
    (out / "splits.json").write_text(json.dumps(chosen, indent=1))
    if (source / "train.json").is_file():  # per-case contoured organs (partial labels)
        shutil.copyfile(source / "train.json", out / "train.json")
    return chosen


def tree_size(repo: Path, carried: list[Path]) -> dict[str, float]:
    """MiB that a device call would send: tracked + untracked-not-ignored files, and each carried path."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    sizes = {"working tree": sum((repo / f).stat().st_size for f in listed if f and (repo / f).is_file()) / 2**20}
    for path in carried:
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        sizes[str(path.relative_to(repo))] = sum(f.stat().st_size for f in files) / 2**20
    return sizes


def print_size(repo: Path, carried: list[Path]) -> int:
    sizes = tree_size(repo, [p for p in carried if p.exists()])
    for name, mib in sizes.items():
        print(f"{name:<24} {mib:7.1f} MiB")
    total = sum(sizes.values())
    print(f"{'travels in all':<24} {total:7.1f} MiB (limit {LIMIT_MIB:.0f} MiB)")
    if total > LIMIT_MIB:
        print("gpu_data: too large to travel: pick fewer cases (--train/--val) or fewer wheels", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "openkbp" / "train",
                    help="OpenKBP NIfTI folder (default ../shared/data/openkbp/train)")
    ap.add_argument("--splits", type=Path, default=REPO / "configs" / "openkbp_splits.json",
                    help="train/val split to take the cases from (default configs/openkbp_splits.json)")
    ap.add_argument("--out", type=Path, default=REPO / ".gpudata" / "openkbp", help="destination (default .gpudata/openkbp)")
    ap.add_argument("--train", type=int, default=80, help="training cases to copy (default 80 of 136)")
    ap.add_argument("--val", type=int, default=34, help="validation cases to copy (default 34: the whole val split)")
    ap.add_argument("--carry", type=Path, nargs="*", default=[REPO / ".whl", REPO / ".gpudata"],
                    help="carried paths counted in the size report (default .whl .gpudata)")
    ap.add_argument("--size-only", action="store_true", help="only print what would travel")
    args = ap.parse_args()
    if not args.size_only:
        chosen = copy_subset(args.source, args.out, args.splits, args.train, args.val)
        print(f"copied {len(chosen['train'])} train + {len(chosen['val'])} val cases to {args.out}")
    if args.out.resolve().is_relative_to(REPO) or args.size_only:
        return print_size(REPO, [p.resolve() for p in args.carry])
    return 0


if __name__ == "__main__":
    sys.exit(main())
