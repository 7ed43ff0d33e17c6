"""Per-step wall-clock timers inside one ``rtseg predict`` process, without touching rtseg's code.

``run_timed(argv, out_json)`` wraps the functions each step runs (module attributes looked up at call
time), runs ``rtseg`` with ``argv`` in this process and writes the seconds per step to ``out_json``:
read (DICOM series reader), preprocess (network grid + body box), network (sliding window),
way_back (logits -> labels and probabilities on the input grid), qa (contour QA), nifti,
contours (marching squares + simplification inside the RTSTRUCT writer), rtstruct_write (the rest
of the RTSTRUCT writer). ``startup`` is the process's time before the case (interpreter, imports,
model load) and the process's user+system CPU seconds are recorded too.
"""
from __future__ import annotations

import functools
import json
import resource
import sys
import time
from collections import defaultdict
from typing import Any, Callable

SECONDS: dict[str, float] = defaultdict(float)
T_START = time.perf_counter()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SECONDS[name] += time.perf_counter() - t0

    return wrapper


def install() -> None:
    import rtseg.data.preprocess as pre
    import rtseg.inference.pipeline as pipeline
    import rtseg.inference.predictor as predictor
    import rtseg.io.nifti as nifti
    import rtseg.io.rtstruct.write as rw
    import rtseg.review.batch as batch

    pipeline.read_case = _timed("read", pipeline.read_case)
    predictor.to_network_grid = _timed("preprocess", predictor.to_network_grid)
    predictor.body_box = _timed("preprocess", predictor.body_box)
    predictor.sliding_window_predict = _timed("network", predictor.sliding_window_predict)
    for meth in ("restore_labels", "restore_probabilities", "restore_full"):
        if hasattr(pre.GridInfo, meth):
            setattr(pre.GridInfo, meth, _timed("way_back", getattr(pre.GridInfo, meth)))
    pipeline.postprocess = _timed("postprocess", pipeline.postprocess)
    batch.BatchReview.assess = _timed("qa", batch.BatchReview.assess)  # the QA the gate judges (before writing)
    batch.BatchReview.after = _timed("qa", batch.BatchReview.after)  # qa.json (and the page, with html)
    nifti.write_nifti = _timed("nifti", nifti.write_nifti)
    rw._roi_polygons = _timed("contours", rw._roi_polygons)
    rw.write_rtstruct = _timed("rtstruct", rw.write_rtstruct)
    pipeline.predict_case = _timed("case", pipeline.predict_case)


def run_timed(argv: list[str], out_json: str) -> int:
    install()
    from rtseg.cli.main import main

    rc = main(argv)
    total = time.perf_counter() - T_START
    s = dict(SECONDS)
    s["rtstruct_write"] = s.pop("rtstruct", 0.0) - s.get("contours", 0.0)
    s["startup"] = total - s.get("case", 0.0)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    s["cpu_user"], s["cpu_system"], s["process_in_python"] = ru.ru_utime, ru.ru_stime, total
    s["peak_rss_gib"] = ru.ru_maxrss / 2**20
    with open(out_json, "w") as fh:
        json.dump(s, fh)
    return rc or 0


if __name__ == "__main__":
    sys.exit(run_timed(sys.argv[2:], sys.argv[1]))
