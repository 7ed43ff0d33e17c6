"""Planning CT -> fraction CT registration with itk-elastix, and what we do with its transform.

elastix does the registration (rigid Euler, then cubic B-spline; the parameter maps are the files in
``params/``, documented in docs/ADAPT.md), then SimpleITK's demons refines the B-spline's result
(``demons.py``). We only convert volumes to ITK images (RAS+ affine to ITK's LPS origin/spacing/direction),
ask transformix for the dense displacement field on the fraction's grid, and then:

- turn it into sampling coordinates on the planning grid (``Registration.coords``), so planning
  labels are warped as per-organ probabilities (linear interpolation of one-hot masks; argmax gives
  the contours, the probabilities feed the fused method);
- measure how plausible it is: the normalised cross-correlation of the fraction with the warped
  planning CT inside the body, and the Jacobian determinant of the deformation (a value <= 0 is a
  fold, which no anatomy does). :func:`refusal_reasons` turns these into reasons to refuse, :func:`quality_problems` into QA flags.

Two fallbacks keep a same-patient fraction from being refused for elastix's sake: a run that errors is
repeated once from the images' geometric centres (``_elastix``), and a B-spline result that would be refused
where the rigid one would not is replaced by rigid + demons, always flagged (``_without_bspline``).
"""
from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from scipy import ndimage as ndi

from rtseg.adapt.demons import DemonsOptions, refine
from rtseg.errors import DataError
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")

Kind = Literal["rigid", "deformable"]
PARAM_FILES: dict[str, str] = {"rigid": "rigid.txt", "bspline": "bspline.txt"}
LPS = np.diag([-1.0, -1.0, 1.0])
BODY_HU = -500.0
FALLBACK_START = "GeometricalCenter"  # elastix's start when the maps' centre-of-gravity start fails (docs/ADAPT.md)


@dataclass(frozen=True)
class QualityLimits:
    """When a registration is doubtful (flagged: delivered with a QA flag) or implausible (refused): docs/ADAPT.md.

    Similarity is the NCC of the fraction and the registered planning CT inside the body. Calibrated on
    simulated fractions: same-patient phantom fractions reach 0.82-0.87 rigid, 0.94-0.95 deformable; another
    phantom patient 0.60 rigid; simulated OpenKBP fractions of the same patient 0.65-0.81 rigid, 0.82-0.94
    deformable (their articulated neck motion is not rigid)."""

    flag_rigid_similarity: float = 0.70
    flag_similarity: float = 0.85
    min_rigid_similarity: float = 0.50
    min_similarity: float = 0.75
    max_folding_fraction: float = 0.0  # share of body voxels with Jacobian determinant <= 0
    min_jacobian: float = 0.05  # a local volume change by 20x is not anatomy (a bladder halving: ~0.2)
    max_jacobian: float = 20.0


@dataclass
class Registration:
    """One transform from the fraction grid (fixed) into the planning grid (moving)."""

    kind: Kind
    coords: np.ndarray  # (3, *fixed shape) float32: planning-grid voxel coordinates of each fraction voxel
    similarity: float
    jacobian: dict[str, float]
    seconds: float
    rigid_matrix: Optional[np.ndarray] = None  # 4x4 RAS world mm: fraction point -> planning point (rigid only)
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {"kind": self.kind, "similarity": round(self.similarity, 4),
                "jacobian": {k: round(v, 4) for k, v in self.jacobian.items()}, "seconds": round(self.seconds, 2),
                **{k: round(v, 2) for k, v in self.extra.items()}}


def param_path(name: str) -> str:
    """The elastix parameter map file shipped in the package (``rigid`` or ``bspline``)."""
    return str(resources.files("rtseg.adapt") / "params" / PARAM_FILES[name])


def _lps(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing, direction, origin) of a RAS+ volume in ITK's LPS convention."""
    a = LPS @ volume.affine[:3, :3]
    spacing = np.linalg.norm(a, axis=0)
    return spacing, a / spacing, LPS @ volume.affine[:3, 3]


def to_itk(volume: Volume):  # type: ignore[no-untyped-def]
    """A float32 ITK image with the volume's geometry (array axes i, j, k = ITK's x, y, z)."""
    import itk

    arr = np.ascontiguousarray(np.asarray(volume.array, dtype=np.float32).transpose(2, 1, 0))
    img = itk.image_from_array(arr)
    spacing, direction, origin = _lps(volume)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return img


def _parameter_object(names: tuple[str, ...], iterations: Optional[int] = None):  # type: ignore[no-untyped-def]
    """The shipped maps; ``iterations`` (per resolution) overrides theirs (tests use fewer)."""
    import itk

    pobj = itk.ParameterObject.New()
    for i, n in enumerate(names):
        pobj.AddParameterFile(param_path(n))
        if iterations is not None:
            pobj.SetParameter(i, "MaximumNumberOfIterations", str(int(iterations)))
    return pobj


def _fixed_points(fixed: Volume) -> np.ndarray:
    """(3, *shape) LPS mm of every fraction voxel centre."""
    idx = np.indices(fixed.shape, dtype=np.float32)
    a = (LPS @ fixed.affine[:3, :3]).astype(np.float32)
    o = (LPS @ fixed.affine[:3, 3]).astype(np.float32)
    return np.einsum("ij,j...->i...", a, idx) + o[:, None, None, None]


def _to_moving_voxels(points_lps: np.ndarray, moving: Volume) -> np.ndarray:
    inv = np.linalg.inv(moving.affine)
    ras = LPS @ points_lps.reshape(3, -1)
    vox = inv[:3, :3] @ ras + inv[:3, 3:4]
    return vox.reshape(points_lps.shape).astype(np.float32)


def _to_lps_points(coords: np.ndarray, moving: Volume) -> np.ndarray:
    """(3, *shape) LPS mm of planning-grid voxel coordinates (the inverse of ``_to_moving_voxels``)."""
    a = (LPS @ moving.affine[:3, :3]).astype(np.float32)
    o = (LPS @ moving.affine[:3, 3]).astype(np.float32)
    return np.einsum("ij,j...->i...", a, coords) + o[:, None, None, None]


def _displacements(moving_img, transform_object) -> np.ndarray:  # type: ignore[no-untyped-def]
    """transformix's displacement field (LPS mm) on the fixed grid, as (3, i, j, k). transformix also writes the
    field as deformationField.nii into its output directory (the working directory unless told): a temporary one."""
    import tempfile

    import itk

    with tempfile.TemporaryDirectory(prefix="rtseg-transformix-") as tmp:
        field_img = itk.transformix_deformation_field(moving_img, transform_object, output_directory=tmp,
                                                      log_to_console=False)
        arr = np.asarray(itk.array_from_image(field_img), dtype=np.float32)  # (k, j, i, 3)
    return np.ascontiguousarray(arr.transpose(3, 2, 1, 0))


def jacobian_stats(points_lps: np.ndarray, spacing: np.ndarray, body: np.ndarray) -> dict[str, float]:
    """Jacobian determinant of x -> x + u(x) over the body (finite differences on the fixed grid)."""
    grads = [np.gradient(points_lps[c], *[float(s) for s in spacing]) for c in range(3)]
    j = np.empty((3, 3) + points_lps.shape[1:], np.float32)
    for r in range(3):
        for c in range(3):
            j[r, c] = grads[r][c]
    det = np.linalg.det(np.moveaxis(j, (0, 1), (-2, -1)))
    # the fixed grid's own direction matrix has determinant +-1: divide it out
    base = float(np.sign(np.median(det))) or 1.0
    det = det * base
    vals = det[body] if body.any() else det.ravel()
    return {"min": float(vals.min()), "max": float(vals.max()),
            "folding_fraction": float((vals <= 0).mean())}


def coords_jacobian(fixed: Volume, moving: Volume, coords: np.ndarray) -> dict[str, float]:
    """``jacobian_stats`` of a transform given as planning-grid voxel coordinates of each fraction voxel, over the
    fraction's body (above ``BODY_HU``): what ``register`` reports and ``refusal_reasons`` judges."""
    return jacobian_stats(_to_lps_points(coords, moving), _lps(fixed)[0], np.asarray(fixed.array) > BODY_HU)


def _similarity(fixed: Volume, moving: Volume, coords: np.ndarray, body: np.ndarray) -> float:
    """Normalised cross-correlation of the fraction and the warped planning CT inside the fraction's body."""
    warped = ndi.map_coordinates(np.asarray(moving.array, np.float32), coords, order=1, mode="constant", cval=np.nan)
    inside = body & np.isfinite(warped)
    if inside.sum() < 100:
        return 0.0
    a = np.clip(np.asarray(fixed.array, np.float32)[inside], -1000, 1500)
    b = np.clip(warped[inside], -1000, 1500)
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _rigid_matrix(points_lps: np.ndarray, moved_lps: np.ndarray) -> np.ndarray:
    """Least-squares 4x4 (RAS mm) mapping fraction points to planning points, from a rigid field."""
    p = (LPS @ points_lps.reshape(3, -1)[:, ::97]).T
    q = (LPS @ moved_lps.reshape(3, -1)[:, ::97]).T
    a = np.c_[p, np.ones(len(p))]
    m, *_ = np.linalg.lstsq(a, q, rcond=None)
    out = np.eye(4)
    out[:3, :] = m.T
    return out


def body_mask(volume: Volume, dilate: int = 2) -> np.ndarray:
    """The patient's body: the largest connected region above ``BODY_HU`` (not the couch, not noise), holes filled,
    grown by ``dilate`` voxels so the skin's edge counts."""
    inside = np.asarray(volume.array) > BODY_HU
    lab, n = ndi.label(inside)
    if n > 1:
        sizes = ndi.sum_labels(inside, lab, index=np.arange(1, n + 1))
        inside = lab == (int(np.argmax(sizes)) + 1)
    inside = ndi.binary_fill_holes(inside)
    return ndi.binary_dilation(inside, iterations=dilate) if dilate else inside


def _mask_image(mask: np.ndarray, like):  # type: ignore[no-untyped-def]
    import itk

    img = itk.image_from_array(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    img.CopyInformation(like)
    return img


def _available_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _refined(fixed: Volume, moving: Volume, coords: np.ndarray, jac: dict[str, float], demons: DemonsOptions,
             limits: QualityLimits) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """The B-spline's ``coords`` refined by demons, unless the refined transform's Jacobian is implausible (folds,
    or changes local volume beyond ``limits``) where the B-spline's was not: a refinement may not turn a
    plausible registration into one ``refusal_reasons`` refuses (then the B-spline's is kept, ``demons_used`` 0
    says so)."""
    refined, seconds = refine(fixed, moving, coords, demons)
    refined_jac = coords_jacobian(fixed, moving, refined)
    if _jacobian_problems(refined_jac, limits) and not _jacobian_problems(jac, limits):
        log.info("registration: demons refinement dropped (Jacobian %.3f..%.2f, folding %.4f %% of the body)",
                 refined_jac["min"], refined_jac["max"], 100 * refined_jac["folding_fraction"])
        return coords, jac, {"demons_seconds": seconds, "demons_used": 0.0}
    return refined, refined_jac, {"demons_seconds": seconds, "demons_used": 1.0}


def register(fixed: Volume, moving: Volume, deformable: bool = True, threads: Optional[int] = None,
             iterations: Optional[int] = None, demons: Optional[DemonsOptions] = DemonsOptions(),
             limits: QualityLimits = QualityLimits()) -> dict[str, Registration]:
    """Register the planning CT (``moving``) to the fraction (``fixed``): ``{"rigid": ..., "deformable": ...}``.

    One elastix run gives both: the rigid result is the first of its transforms alone. elastix samples the
    fraction's body only (``body_mask``): air, couch and noise outside the patient are not anatomy. The
    deformable result is then refined by demons (``demons``; None: the B-spline's alone), unless that makes it
    implausible by ``limits`` (the ones ``refusal_reasons`` will apply)."""
    import itk

    t0 = time.perf_counter()
    fixed_img, moving_img = to_itk(fixed), to_itk(moving)
    names = ("rigid", "bspline") if deformable else ("rigid",)
    # always an explicit thread count (default: the CPUs this process may use): left to elastix, the rigid stage of
    # one simulated OpenKBP fraction converged elsewhere (similarity 0.36 instead of 0.77 with 1 or 2 threads)
    kwargs: dict[str, object] = {"number_of_threads": int(threads or _available_cpus())}
    mask = body_mask(fixed)
    if mask.sum() >= 1000:  # elastix needs enough samples inside the mask; a tiny body: sample everywhere
        kwargs["fixed_mask"] = _mask_image(mask, fixed_img)
    tp, fallback = _elastix(fixed_img, moving_img, names, iterations, kwargs)
    t_reg = time.perf_counter() - t0
    points = _fixed_points(fixed)
    body = np.asarray(fixed.array) > BODY_HU
    spacing = _lps(fixed)[0]
    out: dict[str, Registration] = {}
    for kind in (("rigid", "deformable") if deformable else ("rigid",)):
        t1 = time.perf_counter()
        if kind == "rigid" and deformable:
            only = itk.ParameterObject.New()
            only.AddParameterMap(tp.GetParameterMap(0))
            disp = _displacements(moving_img, only)
        else:
            disp = _displacements(moving_img, tp)
        moved = points + disp
        coords = _to_moving_voxels(moved, moving)
        extra: dict[str, float] = {"fallback_start": 1.0} if fallback else {}
        jac = jacobian_stats(moved, spacing, body) if kind == "deformable" else {"min": 1.0, "max": 1.0, "folding_fraction": 0.0}
        if kind == "deformable" and demons is not None:
            coords, jac, refined = _refined(fixed, moving, coords, jac, demons, limits)
            extra.update(refined)
        sim = _similarity(fixed, moving, coords, body)
        rigid = _rigid_matrix(points, moved) if kind == "rigid" else None
        out[kind] = Registration(kind, coords, sim, jac, t_reg + time.perf_counter() - t1, rigid, extra)
        log.info("registration %s: similarity %.3f, Jacobian %.2f..%.2f", kind, sim, jac["min"], jac["max"])
    if deformable and demons is not None and refusal_reasons({"deformable": out["deformable"]}, limits) \
            and not refusal_reasons({"rigid": out["rigid"]}, limits):
        out["deformable"] = _without_bspline(fixed, moving, out["rigid"], demons, limits, body)
    return out


def _without_bspline(fixed: Volume, moving: Volume, rigid: Registration, demons: DemonsOptions, limits: QualityLimits,
                     body: np.ndarray) -> Registration:
    """The rigid result refined by demons alone, for a fraction whose B-spline registration ran away (implausible
    where the rigid one is not: phantom 1005's first fraction). The same checks then judge it, and
    ``quality_problems`` flags it (``bspline_dropped``): a reviewer looks before it is used."""
    t0 = time.perf_counter()
    start = {"min": 1.0, "max": 1.0, "folding_fraction": 0.0}
    coords, jac, extra = _refined(fixed, moving, rigid.coords.copy(), start, demons, limits)
    sim = _similarity(fixed, moving, coords, body)
    log.info("registration deformable without the B-spline: similarity %.3f, Jacobian %.2f..%.2f", sim, jac["min"], jac["max"])
    return Registration("deformable", coords, sim, jac, rigid.seconds + time.perf_counter() - t0, None,
                        {**rigid.extra, **extra, "bspline_dropped": 1.0})


def _elastix(fixed_img, moving_img, names: tuple[str, ...], iterations: Optional[int],  # type: ignore[no-untyped-def]
             kwargs: dict[str, object]) -> tuple[object, bool]:
    """elastix's transform parameters, and whether they needed the fallback start. The shipped maps start from the
    images' centres of gravity; where that start leaves too few of the fraction's samples inside the planning CT
    (one of ten same-patient phantom fractions: 973 of 4000), elastix stops with an error, and the run is repeated
    once from the images' geometric centres. The plausibility checks judge either result alike; elastix's own
    reason, read from its log, names a failure of both."""
    import itk

    reason = ""
    for start in (None, FALLBACK_START):
        pobj = _parameter_object(names, iterations)
        if start:
            pobj.SetParameter(0, "AutomaticTransformInitializationMethod", start)
        with tempfile.TemporaryDirectory(prefix="rtseg-elastix-") as logdir:
            try:
                _, tp = itk.elastix_registration_method(fixed_img, moving_img, parameter_object=pobj, log_to_console=False,
                                                        log_to_file=True, output_directory=logdir, **kwargs)
                return tp, start is not None
            except RuntimeError as exc:
                reason = _elastix_reason(Path(logdir) / "elastix.log", exc)
        if start is None:
            log.warning("registration from the centres of gravity failed (%s); again from the geometric centres", reason)
    raise DataError(f"registration of the planning CT to the fraction failed: {reason}")


def _elastix_reason(log_file: Path, exc: RuntimeError) -> str:
    """The reason elastix gives in its log ("Too many samples map outside moving image buffer: 973 / 4000"), else the
    exception's last line."""
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    found = re.findall(r"Description: ITK ERROR: [^\n]*?\): ([^\n]+)", text)
    return (found[-1] if found else str(exc).strip().splitlines()[-1]).strip()[:200]


def warp_probabilities(reg: Registration, labels: np.ndarray, n_classes: int,
                       known: Optional[set[int]] = None) -> np.ndarray:
    """(C, *fraction shape) float32: each class's planning mask sampled linearly; outside the planning
    field of view background. Classes not in ``known`` (not contoured in the plan) stay 0."""
    lab = np.asarray(labels)
    out = np.zeros((n_classes,) + reg.coords.shape[1:], np.float32)
    for c in range(1, n_classes):
        if known is not None and c not in known:
            continue
        mask = lab == c
        if not mask.any():
            continue
        out[c] = ndi.map_coordinates(mask.astype(np.float32), reg.coords, order=1, mode="constant", cval=0.0)
    out[0] = np.clip(1.0 - out[1:].sum(axis=0), 0.0, 1.0)
    return out


def _similarity_below(regs: dict[str, Registration], rigid_limit: float, limit: float) -> list[str]:
    out = []
    for kind, reg in regs.items():
        least = rigid_limit if kind == "rigid" else limit
        if reg.similarity < least:
            out.append(f"{kind} registration similarity {reg.similarity:.2f} < {least:.2f} "
                       "(is this fraction the same patient?)")
    return out


def quality_problems(regs: dict[str, Registration], limits: QualityLimits = QualityLimits()) -> list[str]:
    """Why these registrations are doubtful (flagged in the QA; empty: nothing to say)."""
    dropped = ["the B-spline registration was implausible: the plan follows rigid registration and demons only"
               for r in regs.values() if r.extra.get("bspline_dropped")]
    return _similarity_below(regs, limits.flag_rigid_similarity, limits.flag_similarity) + dropped


def refusal_reasons(regs: dict[str, Registration], limits: QualityLimits = QualityLimits()) -> list[str]:
    """Why these registrations cannot be used at all (the fraction is refused; empty: plausible)."""
    problems = _similarity_below(regs, limits.min_rigid_similarity, limits.min_similarity)
    reg = regs.get("deformable")
    return problems + (_jacobian_problems(reg.jacobian, limits) if reg is not None else [])


def _jacobian_problems(j: dict[str, float], limits: QualityLimits) -> list[str]:
    if j["folding_fraction"] > limits.max_folding_fraction:
        return [f"deformable registration folds {100 * j['folding_fraction']:.2f} % of the body "
                "(Jacobian determinant <= 0)"]
    if j["min"] < limits.min_jacobian or j["max"] > limits.max_jacobian:
        return [f"deformable registration changes local volume implausibly (Jacobian "
                f"{j['min']:.2f}..{j['max']:.2f}, expected {limits.min_jacobian}..{limits.max_jacobian})"]
    return []
