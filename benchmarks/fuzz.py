"""Fuzz run: mutated real files thrown at the five readers (NIfTI, seed .npy, DICOM slice, DICOM series, RTSTRUCT).

The same mutations as tests/test_fuzz_readers.py (tests/fuzz_targets.py), with a larger
budget. Every input must end in a correct read or one ``RtsegError`` line; the run prints a
table per reader (read / refused / uncaught / hang, seconds) and every finding with the
hypothesis seed to replay it, and exits 1 if there is any uncaught exception or hang.

    PYTHONPATH=src .venv/bin/python benchmarks/fuzz.py [--examples 500] [--seed 16] [--readers nifti npy ...]
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_targets as ft  # noqa: E402  (shared with the CI test)

OUTCOMES = ("read", "refused", "uncaught", "hang")


def fuzz_reader(reader: str, corpus: ft.Corpus, examples: int, run_seed: int, limit_s: float,
                folder: Path) -> tuple[Counter, list[tuple[str, str]], float]:
    """Outcome counts, findings (what happened, the input) and seconds for ``examples`` written inputs."""
    counts: Counter = Counter()
    findings: list[tuple[str, str]] = []

    @seed(run_seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        mutation = data.draw(ft.cases(reader, corpus))
        files = mutation.build()
        assume(files is not None)  # pydicom would not write that mutation: not an input rtseg can meet
        outcome, detail = ft.classify(reader, files, folder, limit_s)
        counts[outcome] += 1
        if outcome in ("uncaught", "hang"):
            findings.append((detail, repr(mutation)[:400]))

    t0 = time.perf_counter()
    one()
    return counts, findings, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500, help="mutated inputs per reader")
    ap.add_argument("--seed", type=int, default=16, help="hypothesis seed (same seed, same inputs)")
    ap.add_argument("--readers", nargs="+", default=list(ft.READERS), choices=ft.READERS, help="readers to fuzz")
    ap.add_argument("--series-slices", type=int, default=5, help="real CT slices in each mutated DICOM series")
    ap.add_argument("--limit", type=float, default=20.0, help="seconds before a read counts as a hang")
    args = ap.parse_args()
    if not ft.DATA.is_dir():
        print(f"real data not found at {ft.DATA}", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    corpus = ft.load_corpus(args.series_slices)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"seed {args.seed}, {args.examples} inputs per reader")
    print(f"{'reader':<14}{'inputs':>8}{'read':>7}{'refused':>9}{'uncaught':>10}{'hang':>6}{'seconds':>9}")
    total: Counter = Counter()
    all_findings: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for reader in args.readers:
            counts, findings, secs = fuzz_reader(reader, corpus, args.examples, args.seed, args.limit, Path(tmp) / reader)
            n = sum(counts[k] for k in OUTCOMES)
            total.update(counts)
            total["seconds"] += int(round(secs))
            all_findings += [(f"{reader}: {what}", mutation) for what, mutation in findings]
            print(f"{reader:<14}{n:>8}{counts['read']:>7}{counts['refused']:>9}{counts['uncaught']:>10}{counts['hang']:>6}{secs:>9.1f}")
    n = total["read"] + total["refused"] + total["uncaught"] + total["hang"]
    print(f"{'total':<14}{n:>8}{total['read']:>7}{total['refused']:>9}{total['uncaught']:>10}{total['hang']:>6}{total['seconds']:>9}")
    kinds: dict[str, list[str]] = {}
    for what, mutation in all_findings:  # one line per exception type and place, with its first input
        kinds.setdefault(re.sub(r"file position [0-9A-F]+|: '.*?' in", "...", what), []).append(mutation)
    for what, inputs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        print(f"  finding ({len(inputs)}x): {what}\n      e.g. {inputs[0]}")
    return 1 if total["uncaught"] or total["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
