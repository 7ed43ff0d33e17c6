"""Serve's adapt route: a CT of a patient with a patient directory on file is contoured by ``rtseg adapt``.

With ``adapt_patients`` (a folder of PATIENT_DIRs made by ``rtseg adapt prepare``) in the node's config,
each series' hashed PatientID is looked up in that registry. A match whose patient directory was made
from the rule's population model (same sha256 and classes) is contoured by ``adapt`` (``fused``); the
registration's plausibility check still applies, and a refusal (another patient under the same ID,
implausible registration) falls back to the population model with the reason. Any other series goes to
the population model as before. The route is written into each RTSTRUCT's StructureSetDescription and
into the job's timings (``rtseg serve status``: ``adapt fused N s`` or ``population model N s``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from rtseg.adapt.api import adapt_identity, contour_case
from rtseg.adapt.methods import AdaptOptions
from rtseg.adapt.patient import MANIFEST, file_sha256, open_patient_dir, volume_patient_hash
from rtseg.errors import RtsegError
from rtseg.inference.pipeline import CaseInput
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.jsonfile import read_json
from rtseg.io.naming import RTSTRUCT_SUFFIX
from rtseg.io.rtstruct.describe import describe_rtstruct
from rtseg.review.gate import DEFAULT_POLICY
from rtseg.review.qa import summary_columns
from rtseg.serve.contour import Contoured, Contourer

log = logging.getLogger("rtseg.serve")


def find_patient(registry: Path, patient_hash: Optional[str]) -> Optional[Path]:
    """The patient directory under ``registry`` whose planning hashed PatientID is ``patient_hash``."""
    if not patient_hash or not registry.is_dir():
        return None
    for manifest in sorted(registry.glob(f"*/{MANIFEST}")):
        try:
            data = read_json(manifest, "patient manifest")
        except RtsegError:
            continue
        if isinstance(data, dict) and (data.get("planning") or {}).get("patient_hash") == patient_hash:
            return manifest.parent
    return None


def _adapt(contourer: Contourer, pdir_path: Path, series_dir: Path, out_dir: Path, name: str,
           formats: Sequence[str], roi_names: Optional[str], qa_policy: str) -> Contoured:
    pdir = open_patient_dir(pdir_path)
    bundle = contourer.predictor.bundle
    pdir.check_population(file_sha256(contourer.checkpoint), bundle.class_names, contourer.checkpoint.name)
    res = contour_case(pdir, CaseInput(name, series_dir, "dicom"), out_dir, AdaptOptions(device=str(contourer.device)),
                       formats=[f for f in formats if f != "html"], html="html" in formats, roi_names=roi_names,
                       qa_policy=qa_policy)
    qa = summary_columns(res.facts["qa"]) if res.facts.get("qa") else {"n_flags": 0, "flags": ""}
    return Contoured(res.run.outputs, dict(res.run.seconds, **res.facts["seconds"]), qa, res.run.verdict,
                     str(adapt_identity(pdir, "fused")))


def route_contour(contourer: Contourer, registry: Optional[str], series_dir: Path, out_dir: Path, name: str,
                  formats: Sequence[str], roi_names: Optional[str], qa_policy: str = DEFAULT_POLICY) -> Contoured:
    """Contour one received series by the adapt route when its patient is on file, else by the population model;
    either way through the QA gate of ``qa_policy``."""
    if not registry:
        return contourer.contour(series_dir, out_dir, name, formats, roi_names, qa_policy)
    t0 = time.perf_counter()
    pdir_path = find_patient(Path(registry), volume_patient_hash(read_dicom_series(series_dir)))
    route, done = "population model (no patient directory on file)", None
    if pdir_path is not None:
        try:
            done = _adapt(contourer, pdir_path, series_dir, out_dir, name, formats, roi_names, qa_policy)
            route = "adapt fused (from the patient's plan)"
        except RtsegError as exc:  # the folder's name may name the patient: it stays out of logs and files
            route = f"population model (adapt refused: {str(exc).replace(str(pdir_path), 'PATIENT_DIR')})"
            log.warning("job %s: %s", name, route)
    if done is None:
        done = contourer.contour(series_dir, out_dir, name, formats, roi_names, qa_policy)
    key = "adapt fused" if route.startswith("adapt") else "population model"
    done.seconds[key] = time.perf_counter() - t0
    for p in done.outputs:
        if p.name.endswith(RTSTRUCT_SUFFIX):
            describe_rtstruct(p, f"rtseg route: {route}"[:1024])
    done.qa["route"] = route
    return done
