"""``rtseg adapt prepare | contour | update`` as functions (the CLI only parses and calls these).

``contour`` writes through ``inference.pipeline.predict_case``: the same formats, names and writers as
``rtseg predict`` (NIfTI, RTSTRUCT with TG-263 names, SEG, QA JSON, review page), with the adapt predictor
(``methods.AdaptPredictor``) in place of the network and the adapt review (``review.AdaptReview``).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.adapt.finetune import FinetuneOptions, finetune
from rtseg.adapt.methods import AdaptOptions, AdaptPredictor, fusion_weights
from rtseg.adapt.patient import (FRACTIONS, PATIENT_MODEL, POPULATION, PatientDir, create_patient_dir, file_sha256,
                                 open_patient_dir, read_contours, read_ct, volume_patient_hash)
from rtseg.adapt.review import AdaptReview
from rtseg.errors import DataError
from rtseg.inference.bundle import load_bundle
from rtseg.io.fingerprint import ModelIdentity, model_identity
from rtseg.review.gate import DEFAULT_POLICY, QaGate
from rtseg.inference.pipeline import CaseInput, CaseOutputs, CaseRun, PredictOptions, find_cases, predict_case
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")


def prepare(checkpoint: str | Path, plan_ct: str | Path, plan_contours: str | Path, out: str | Path,
            options: FinetuneOptions = FinetuneOptions()) -> PatientDir:
    """A new PATIENT_DIR: planning CT and contours, provenance, the population model's copy and (``minutes`` > 0)
    the patient model. Nothing is left behind on failure."""
    bundle = load_bundle(checkpoint)[0]
    ct = read_ct(plan_ct)
    labels = read_contours(plan_contours, ct, bundle.class_names)
    root = Path(out)
    created = not root.exists()
    pdir = create_patient_dir(root, checkpoint, ct, labels, bundle.class_names)
    try:
        pdir.manifest["fusion"] = plan_fusion(pdir, ct, labels)
        pdir.save()
        if options.minutes > 0:
            facts = finetune(pdir.path(POPULATION), [(ct, labels)], pdir.contoured, pdir.path(PATIENT_MODEL), options)
            pdir.manifest["patient_model"] = facts
            pdir.save()
    except BaseException:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return pdir


def plan_fusion(pdir: PatientDir, ct: Volume, labels: Volume) -> dict[str, Any]:
    """How well the population model contours the planning scan (Dice per contoured organ) and the fused shares
    that follow (``methods.fusion_weights``): the better the network does on this patient, the more the networks
    count; ``weight`` is the propagated contours' share."""
    from rtseg.inference.ensemble import load_predictor

    net = load_predictor(pdir.path(POPULATION), "cpu", AdaptOptions().network)
    pred, truth = net.predict_labels(ct), np.asarray(labels.array)
    dice = {}
    for c in sorted(pdir.contoured):
        a, b = pred == c, truth == c
        if b.any():
            dice[pdir.class_names[c]] = round(2.0 * float(np.count_nonzero(a & b)) / (a.sum() + b.sum()), 4)
    mean = float(np.mean(list(dice.values()))) if dice else float("nan")
    weights = fusion_weights(mean)
    return {"population_plan_dice": dice, "mean": round(mean, 4) if dice else None, "weight": weights["propagated"],
            "weights": weights}


def check_fraction_patient(pdir: PatientDir, volume: Volume, where: str) -> None:
    """A DICOM fraction whose PatientID hashes to another patient is refused before any registration."""
    got, want = volume_patient_hash(volume), pdir.patient_hash
    if got is not None and want is not None and got != want:
        raise DataError(f"{where}: the fraction belongs to another patient than {pdir.root} (hashed patient IDs differ)")


@dataclass
class ContourResult:
    run: CaseRun
    facts: dict[str, Any]
    seconds: float


def contour(patient: str | Path, ct: str | Path, out: str | Path, options: AdaptOptions = AdaptOptions(),
            formats: Sequence[str] = ("nifti",), html: bool = False, roi_names: Optional[str | Path] = None,
            population: Optional[str | Path] = None, qa_policy: str = DEFAULT_POLICY) -> ContourResult:
    """Contour one fraction (a NIfTI CT or a DICOM series folder) from the patient's own plan, through the QA gate
    of ``qa_policy`` (``run.verdict``: a held fraction's RTSTRUCT/SEG are under ``out/held/``)."""
    pdir = open_patient_dir(patient)
    if population is not None:
        pdir.check_population(file_sha256(population), load_bundle(population)[0].class_names, str(population))
    cases = find_cases(ct)
    if len(cases) != 1:
        raise DataError(f"{ct}: expected one fraction CT (a NIfTI file or one DICOM series folder), found {len(cases)}")
    return contour_case(pdir, cases[0], Path(out), options, formats, html, roi_names, qa_policy)


def contour_case(pdir: PatientDir, case: CaseInput, out_dir: Path, options: AdaptOptions = AdaptOptions(),
                 formats: Sequence[str] = ("nifti",), html: bool = False,
                 roi_names: Optional[str | Path] = None, qa_policy: str = DEFAULT_POLICY) -> ContourResult:
    """One fraction's outputs, named after ``case.name``, through ``rtseg predict``'s case pipeline and QA gate
    (the population model's training statistics; a doubtful registration is held under ``clinical``)."""
    t0 = time.perf_counter()
    predictor = AdaptPredictor(pdir, options)
    popts = PredictOptions(formats=tuple(f for f in formats if f != "html") + (("html",) if html else ()),
                           device=options.device, network=options.network, roi_names=roi_names)
    outputs = CaseOutputs.resolve(popts, predictor.bundle, review=True, model=adapt_identity(pdir, options.method))
    gate = QaGate(predictor.bundle, qa_policy)
    reviewer = AdaptReview(predictor.bundle, lambda: predictor.last, html=html)
    case = _checked_case(case, pdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = predict_case(predictor, case, out_dir, outputs, reviewer, gate)
    facts = {k: v for k, v in predictor.last.items() if k != "labels"}
    facts["seconds"] = dict(predictor.stats.seconds, **run.seconds)
    facts["qa"] = reviewer.qas.pop(case.name, None)
    return ContourResult(run, facts, time.perf_counter() - t0)


def adapt_identity(pdir: PatientDir, method: str) -> ModelIdentity:
    """What adapt's outputs name as their model: ``adapt-<method>`` and the SHA-256 of the population model's
    and (if made) the patient model's digests."""
    files = [pdir.path(POPULATION)] + ([pdir.path(PATIENT_MODEL)] if pdir.has_patient_model else [])
    if len(files) == 1:
        return ModelIdentity(f"adapt-{method} {files[0].name}", model_identity(files).sha256)
    return model_identity(files, source=f"adapt-{method}")


def _checked_case(case: CaseInput, pdir: PatientDir) -> CaseInput:
    if case.kind == "dicom":
        check_fraction_patient(pdir, read_ct(case.path), str(case.path))
    return case


def update(patient: str | Path, ct: str | Path, contours: str | Path,
           options: FinetuneOptions = FinetuneOptions(minutes=4.0)) -> PatientDir:
    """Add an approved fraction to the patient's training set and refresh the patient model from its current
    weights on every scan so far (planning + approved fractions)."""
    pdir = open_patient_dir(patient)
    volume = read_ct(ct)
    check_fraction_patient(pdir, volume, str(ct))
    labels = read_contours(contours, volume, pdir.class_names)
    k = len(pdir.manifest.get("fractions", [])) + 1
    fdir = pdir.path(FRACTIONS)
    fdir.mkdir(exist_ok=True)
    names = {"ct": f"{k:03d}_ct.nii.gz", "labels": f"{k:03d}_labels.nii.gz"}
    write_nifti(volume, fdir / names["ct"])
    write_nifti(labels, fdir / names["labels"], dtype=np.uint8)
    pairs = [(pdir.plan_ct(), pdir.plan_labels())]
    from rtseg.io.nifti import read_nifti

    pairs += [(read_nifti(c), read_nifti(lab)) for c, lab in pdir.fractions()]
    pairs.append((volume, labels))
    init = pdir.path(PATIENT_MODEL) if pdir.has_patient_model else None
    tmp = pdir.path(PATIENT_MODEL + ".new")
    try:
        facts = finetune(pdir.path(POPULATION), pairs, pdir.contoured, tmp, options, init=init)
    except BaseException:
        for p in (tmp, fdir / names["ct"], fdir / names["labels"]):
            p.unlink(missing_ok=True)
        raise
    tmp.replace(pdir.path(PATIENT_MODEL))
    pdir.manifest.setdefault("fractions", []).append({**names, "patient_hash": volume_patient_hash(volume)})
    pdir.manifest["patient_model"] = {**facts, "updates": len(pdir.manifest["fractions"])}
    pdir.save()
    return pdir
