"""The five ways ``rtseg adapt contour`` contours a fraction, and the per-organ agreement check.

- ``rigid``: the planning contours after rigid registration of the planning CT to the fraction;
- ``propagated``: the planning contours after rigid + B-spline registration (elastix, ``register.py``) refined
  by demons (SimpleITK, ``demons.py``);
- ``population``: the population model alone (as ``rtseg predict``);
- ``finetuned``: the patient model (``adapt prepare``);
- ``fused`` (default): per organ the plan contours, w x the propagated contours (linearly interpolated one-hot
  masks) + (1 - w) x the networks' probabilities (the patient model's, averaged with the population model's where
  that counts too); the shares are set by ``adapt prepare`` from the population model's Dice on the planning scan
  (``fusion_weights``): propagated alone for a network much worse than registration, one third each for one as good;
  background and the organs the plan does not contour share what those leave, in the networks' proportions;
  labels: the plan's organ where it beats that leftover, else the networks' choice (``fused_labels``).

Every method that registers first checks the registration's plausibility: an implausible one
(``register.refusal_reasons``: very low similarity, folding) is refused (``DataError``), never delivered as
adapted; a doubtful one (``register.quality_problems``: low similarity) is delivered with a QA flag. The agreement check
compares the organs of the patient model and of the propagated contours (HD95, mm); an organ where they
differ by more than ``disagree_mm`` is named in the QA ("Brainstem: methods disagree by N mm: check this organ").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from rtseg.adapt.patient import PATIENT_MODEL, POPULATION, PatientDir
from rtseg.adapt.register import (QualityLimits, Registration, quality_problems, refusal_reasons, register,
                                  warp_probabilities)
from rtseg.errors import ConfigError, DataError
from rtseg.evaluation.surface import organ_metrics
from rtseg.inference.predictor import NetworkOptions, Prediction, PredictStats
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")

METHODS = ("fused", "finetuned", "propagated", "population", "rigid")
PROPAGATED_WEIGHT = 1.0  # fused: the propagated contours' share when nothing is known of the networks (docs/ADAPT.md)
PLAN_DICE_RANGE = (0.85, 0.90)  # population Dice on the planning scan at which the networks start to count / count fully
NEEDS = {"fused": ("deformable", "finetuned"), "finetuned": ("rigid", "finetuned"), "propagated": ("deformable",),
         "population": ("population",), "rigid": ("rigid",)}


@dataclass
class AdaptOptions:
    method: str = "fused"
    device: str = "cpu"
    network: NetworkOptions = field(default_factory=lambda: NetworkOptions(overlap=0.25))
    limits: QualityLimits = field(default_factory=QualityLimits)
    disagree_mm: float = 6.0
    iterations: Optional[int] = None  # elastix iterations per resolution (None: the parameter files')
    check_registration: bool = True  # False: flag instead of refuse (benchmarks, never the CLI default)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: expected one of {', '.join(METHODS)}")


def fuse(network: np.ndarray, propagated: np.ndarray, contoured: set[int],
         weight: float = PROPAGATED_WEIGHT) -> np.ndarray:
    """For the organs the plan contours, ``weight`` x the propagated contours' probability + (1 - ``weight``) x the
    network's (the patient model's, or its average with the population model's: ``networks``). What they leave of a
    voxel (1 - their sum) goes to background and to the organs the plan does not contour, in the network's
    proportions: an organ no physician drew there may not take a voxel from one the plan has (the label maps do not
    overlap), only share what the plan's organs leave. Where the plan's organs
    sum to more than 1 (the two methods give a voxel to different organs) they are renormalised: every voxel sums to
    1. With ``weight`` > 0.5 the plan decides away from the propagated surface; near it, where that probability
    falls from 1 to 0, the network moves the boundary."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"fusion weight {weight}: expected a number from 0 to 1")
    planned = sorted(c for c in contoured if 0 < c < network.shape[0])
    rest_classes = [c for c in range(network.shape[0]) if c not in planned]  # background first
    out = np.empty_like(network)
    for c in planned:
        out[c] = weight * propagated[c] + (1.0 - weight) * network[c]
    taken = out[planned].sum(axis=0) if planned else np.zeros(network.shape[1:], network.dtype)
    left = np.clip(1.0 - taken, 0.0, 1.0)
    share = network[rest_classes].sum(axis=0)
    empty = share <= np.finfo(np.float32).tiny  # the network gave everything to the plan's organs
    ratio = np.divide(left, share, out=np.zeros_like(left), where=~empty)
    for c in rest_classes:
        out[c] = network[c] * ratio
    out[0][empty] = left[empty]  # there what the plan's organs leave is background
    out /= np.maximum(out.sum(axis=0, keepdims=True), np.finfo(np.float32).tiny)
    return out


def fused_labels(probabilities: np.ndarray, contoured: set[int]) -> np.ndarray:
    """The labels of ``fuse``'s probabilities, in two steps: a voxel goes to the plan's most likely organ where that
    beats everything the plan's organs leave (background and the organs the plan does not contour, together);
    elsewhere to the most likely of those. A plain argmax would let the leftover's split between background and an
    organ only the patient model sees hand the plan's organ a voxel that propagation gives to background; with
    w = 1 these labels are the propagated contours' for every organ the plan has."""
    planned = sorted(c for c in contoured if 0 < c < probabilities.shape[0])
    rest = [c for c in range(probabilities.shape[0]) if c not in planned]
    rest_labels = np.asarray(rest, np.uint8)[np.argmax(probabilities[rest], axis=0)]
    if not planned:
        return rest_labels
    plan = probabilities[planned]
    best = np.argmax(plan, axis=0)
    wins = np.take_along_axis(plan, best[None], axis=0)[0] > probabilities[rest].sum(axis=0)
    return np.where(wins, np.asarray(planned, np.uint8)[best], rest_labels).astype(np.uint8)


def fusion_weights(plan_dice: float) -> dict[str, float]:
    """The shares of the propagated contours, the patient model and the population model in ``fused``, for a patient
    whose planning scan the population model contours with mean Dice ``plan_dice`` (``adapt prepare`` measures it):
    propagated alone up to 0.85 (a network much worse than registration on the fractions costs with every share it
    gets; a scan the population model may have been trained on flatters it), one third each from 0.90 (three
    estimates about as good: any two outvote the third), linear between; the two networks always share alike.
    Chosen on simulated fractions of training patients and of phantoms neither the benchmark nor the population
    model uses (docs/ADAPT.md "Fusion")."""
    lo, hi = PLAN_DICE_RANGE
    t = float(np.clip((plan_dice - lo) / (hi - lo), 0.0, 1.0)) if np.isfinite(plan_dice) else 0.0
    each = round(t / 3.0, 4)
    return {"propagated": round(1.0 - 2.0 * each, 4), "finetuned": each, "population": each}


def networks(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The networks' side of ``fused``: the patient model's probabilities, averaged with the population model's in
    proportion to their shares when that has one (with no share for either, the patient model's)."""
    a, b = weights.get("finetuned", 0.0), weights.get("population", 0.0)
    if b <= 0.0 or "population" not in probs:
        return probs["finetuned"]
    return (a * probs["finetuned"] + b * probs["population"]) / (a + b)


def agreement(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], class_names: tuple[str, ...],
              classes: set[int], limit_mm: float, names: tuple[str, str]) -> list[dict[str, Any]]:
    """Per organ: HD95 (mm) and Dice between two methods' labels; ``check`` when HD95 > ``limit_mm``."""
    rows = []
    for c in sorted(classes):
        m = organ_metrics(a == c, b == c, spacing)
        hd = float(m["hd95"])
        check = not (hd <= limit_mm)
        row = {"organ": class_names[c], "methods": list(names), "hd95_mm": round(hd, 2) if np.isfinite(hd) else None,
               "dice": round(float(m["dice"]), 4), "check": check}
        if check:  # named like every other organ flag: the gate's summary and the CLI line list texts only
            name = class_names[c]
            row["text"] = (f"{name}: methods disagree by {hd:.0f} mm: check this organ" if np.isfinite(hd)
                           else f"{name}: one method finds this organ, the other does not: check this organ")
        rows.append(row)
    return rows


class AdaptPredictor:
    """What ``inference.pipeline.predict_case`` needs (``predict_full``, ``predict_labels``, ``stats``, ``bundle``),
    contouring each fraction from the patient's own plan."""

    def __init__(self, patient: PatientDir, options: AdaptOptions) -> None:
        from rtseg.inference.ensemble import load_predictor

        self.patient, self.options = patient, options
        needs = NEEDS[options.method]
        self.nets = {}
        if "finetuned" in needs:
            if not patient.has_patient_model:
                raise DataError(f"{patient.root}: no patient model yet (run 'rtseg adapt prepare' with fine-tuning)")
            self.nets["finetuned"] = load_predictor(patient.path(PATIENT_MODEL), options.device, options.network)
        joins = options.method == "fused" and self.fusion_weights["population"] > 0  # the population model's share
        if "population" in needs or not self.nets or joins:
            self.nets["population"] = load_predictor(patient.path(POPULATION), options.device, options.network)
        first = next(iter(self.nets.values()))
        self.bundle = first.bundle
        if tuple(self.bundle.class_names) != patient.class_names:
            raise DataError(f"{patient.root}: model classes {list(self.bundle.class_names)} are not the patient "
                            f"directory's {list(patient.class_names)}")
        self.stats = PredictStats()
        self.plan_ct, self.plan_labels = patient.plan_ct(), patient.plan_labels()
        self.last: dict[str, Any] = {}

    def _register(self, volume: Volume, deformable: bool) -> dict[str, Registration]:
        regs = register(volume, self.plan_ct, deformable=deformable, iterations=self.options.iterations,
                        limits=self.options.limits)
        refusals = refusal_reasons(regs, self.options.limits)
        self.last["registration"] = {k: r.summary() for k, r in regs.items()}
        self.last["problems"] = refusals + quality_problems(regs, self.options.limits)
        if refusals and self.options.check_registration:
            raise DataError("fraction refused, registration to the planning CT is implausible: " + "; ".join(refusals))
        return regs

    def method_probabilities(self, volume: Volume) -> dict[str, np.ndarray]:
        """The probabilities of every method the chosen one needs, on the fraction's grid."""
        t0 = time.perf_counter()
        needs = NEEDS[self.options.method]
        n, known = len(self.patient.class_names), self.patient.contoured
        out: dict[str, np.ndarray] = {}
        if "rigid" in needs or "deformable" in needs:
            regs = self._register(volume, deformable="deformable" in needs)
            for kind, reg in regs.items():
                out["propagated" if kind == "deformable" else "rigid"] = warp_probabilities(reg, self.plan_labels.array, n, known)
        t1 = time.perf_counter()
        for name, net in self.nets.items():
            out[name] = net.predict_full(volume).probabilities
            self.stats = net.stats  # the network run's windows and box (logged by the pipeline)
        self.stats.seconds.update({"registration": t1 - t0, "networks": time.perf_counter() - t1})
        return out

    def predict_full(self, volume: Volume) -> Prediction:
        method = self.options.method
        probs = self.method_probabilities(volume)
        if method == "fused":
            p = self.fused(probs)
            labels = fused_labels(p, self.patient.contoured)
            self.last["weights"] = self.fusion_weights  # the QA JSON says what counted how much
        else:
            p = probs[method]
            labels = np.argmax(p, axis=0).astype(np.uint8)
        self.last["method"] = method
        self.last["agreement"] = self._agreement(probs, volume)
        self.last["labels"] = {k: np.argmax(v, axis=0).astype(np.uint8) for k, v in probs.items()}
        self.last["labels"][method] = labels
        return Prediction(labels, p.astype(np.float32), labels_are_argmax=method != "fused")

    def fused(self, probs: dict[str, np.ndarray]) -> np.ndarray:
        """``fused``'s probabilities from the methods' (``method_probabilities``), with the patient's shares."""
        w = self.fusion_weights
        return fuse(networks(probs, w), probs["propagated"], self.patient.contoured, w["propagated"])

    @property
    def fusion_weights(self) -> dict[str, float]:
        """The patient directory's shares (``adapt prepare``); a directory that has only the propagated share
        (made before the population model joined): the rest is the patient model's; none: ``PROPAGATED_WEIGHT``."""
        fusion = self.patient.manifest.get("fusion") or {}
        if isinstance(fusion.get("weights"), dict):
            return {k: float(fusion["weights"].get(k, 0.0)) for k in ("propagated", "finetuned", "population")}
        w = float(fusion.get("weight", PROPAGATED_WEIGHT))
        return {"propagated": w, "finetuned": 1.0 - w, "population": 0.0}

    def predict_labels(self, volume: Volume) -> np.ndarray:
        return self.predict_full(volume).labels

    def _agreement(self, probs: dict[str, np.ndarray], volume: Volume) -> list[dict[str, Any]]:
        pair = [k for k in ("finetuned", "propagated") if k in probs]
        if len(pair) < 2:
            return []
        a, b = (np.argmax(probs[k], axis=0) for k in pair)
        spacing = tuple(float(s) for s in np.linalg.norm(volume.affine[:3, :3], axis=0))
        return agreement(a, b, spacing, self.patient.class_names, self.patient.contoured, self.options.disagree_mm,
                         (pair[0], pair[1]))
