"""The node's only door into inference: checkpoint -> model loaded once; series folder -> RTSTRUCT.

It calls the pieces ``rtseg predict`` uses (``inference.pipeline``), with
predict's defaults, so the node's RTSTRUCT is the one ``rtseg predict --format
rtstruct`` writes for the same series. If the inference API is renamed, this
module is the one place to adapt.
"""
from __future__ import annotations

import time
from pathlib import Path

from rtseg.device import resolve_device
from rtseg.inference.pipeline import CaseInput, read_case
from rtseg.inference.ensemble import load_predictor
from rtseg.io.rtstruct import write_rtstruct


class Contourer:
    """One loaded model (per worker: a Predictor is not shared between threads)."""

    def __init__(self, checkpoint: str | Path, device: str = "auto") -> None:
        dev = resolve_device(device)
        self.checkpoint = Path(checkpoint)
        self.predictor = load_predictor(checkpoint, dev)  # a checkpoint, or an ensemble file / CV folder as predict reads

    def contour(self, series_dir: Path, out_path: Path) -> dict[str, float]:
        """Read the series (the DICOM reader's checks apply), predict, write the RTSTRUCT atomically.

        Returns seconds spent reading, in inference and writing."""
        t0 = time.perf_counter()
        volume = read_case(CaseInput(series_dir.name, series_dir, "dicom"))
        t1 = time.perf_counter()
        labels = self.predictor.predict_labels(volume)
        t2 = time.perf_counter()
        bundle = self.predictor.bundle
        write_rtstruct(labels, volume, list(bundle.class_names), list(bundle.colors), out_path)
        t3 = time.perf_counter()
        return {"read": t1 - t0, "inference": t2 - t1, "write": t3 - t2}
