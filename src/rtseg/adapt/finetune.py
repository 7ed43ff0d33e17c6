"""The patient model: the population model fine-tuned on the patient's own planning CT (and approved fractions).

Training pieces are the project's own: the network grid (``data.preprocess.to_network_grid``), the loss
(``training.losses.SegmentationLoss``, Dice + cross-entropy, with the marginal partial-label formulation: organs
the plan does not contour are unknown, their probability merges into background, as ``DATASET.PARTIAL_LABELS``
does), deep supervision's weights and the checkpoint writer (``inference.bundle.save_bundle``). What is specific
here is the strong augmentation a single patient needs (MONAI transforms: setup shifts and rotations, scaling,
elastic deformation, intensity and noise) and the wall-clock budget. The loss is unweighted, so the population
model's prior correction and temperature are not carried over to the patient model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from rtseg.config.schema import LossConfig
from rtseg.data.preprocess import to_network_grid
from rtseg.inference.bundle import CALIBRATION_KEY, PRIOR_KEY, InferenceBundle, load_bundle, save_bundle
from rtseg.io.volume import Volume
from rtseg.models.spec import build_model
from rtseg.training.losses import SegmentationLoss

log = logging.getLogger("rtseg")


@dataclass(frozen=True)
class FinetuneOptions:
    minutes: float = 8.0
    max_iterations: int = 2000
    batch_size: int = 2
    lr: float = 3e-4
    fg_fraction: float = 0.8
    seed: int = 0
    threads: Optional[int] = None


def strong_augmentation():  # type: ignore[no-untyped-def]
    """MONAI chain for one patient: setup rotations (+-0.15 rad) and shifts, scale +-10 %, elastic deformation,
    intensity scale/shift, blur and noise (no left-right flips: paired organs)."""
    from monai.data import set_track_meta
    from monai.transforms import (Compose, Rand3DElasticd, RandAffined, RandGaussianNoised, RandGaussianSmoothd,
                                  RandScaleIntensityd, RandShiftIntensityd)

    set_track_meta(False)
    keys = ("image", "label")
    return Compose([
        RandAffined(keys=keys, prob=0.8, rotate_range=(0.15, 0.15, 0.15), translate_range=(4, 4, 4),
                    scale_range=(0.1, 0.1, 0.1), mode=("bilinear", "nearest"), padding_mode="border"),
        Rand3DElasticd(keys=keys, prob=0.4, sigma_range=(5, 8), magnitude_range=(40, 120),
                       mode=("bilinear", "nearest"), padding_mode="border"),
        RandGaussianSmoothd(keys="image", prob=0.15, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        RandGaussianNoised(keys="image", prob=0.3, std=0.05),
        RandScaleIntensityd(keys="image", factors=0.15, prob=0.3),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
    ])


@dataclass
class Example:
    image: np.ndarray  # network grid, normalised
    label: np.ndarray  # uint8
    known: np.ndarray  # (C,) bool
    organ_voxels: list[np.ndarray] = field(default_factory=list)  # flat indices of each contoured organ present

    def __post_init__(self) -> None:
        if not self.organ_voxels:
            flat = self.label.ravel()
            self.organ_voxels = [v for c in np.flatnonzero(self.known)[1:] if (v := np.flatnonzero(flat == c)).size]


def make_examples(pairs: Sequence[tuple[Volume, Volume]], bundle: InferenceBundle, contoured: set[int]) -> list[Example]:
    known = np.zeros(bundle.n_classes, bool)
    known[0] = True
    known[sorted(contoured)] = True
    out = []
    for ct, lab in pairs:
        image, _ = to_network_grid(ct, bundle.preprocessing)
        label, _ = to_network_grid(lab, bundle.preprocessing, is_label=True)
        out.append(Example(image.astype(np.float32), label, known.copy()))
    return out


def _patch(ex: Example, patch: Sequence[int], rng: np.random.Generator, fg_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A patch centred on a voxel of a random organ (``fg_fraction`` of the time; each organ the scan contours
    equally often, so the spinal cord and the oesophagus are seen as often as the mandible) or anywhere; padded
    where the volume is smaller than the patch."""
    shape = np.array(ex.image.shape)
    size = np.array(patch)
    if rng.random() < fg_fraction and ex.organ_voxels:
        voxels = ex.organ_voxels[int(rng.integers(len(ex.organ_voxels)))]
        centre = np.array(np.unravel_index(voxels[rng.integers(len(voxels))], ex.label.shape))
        lo = centre - size // 2 + rng.integers(-size // 4, size // 4 + 1)
    else:
        lo = np.array([rng.integers(0, max(int(s - p), 0) + 1) for s, p in zip(shape, size)])
    lo = np.clip(lo, 0, np.maximum(shape - size, 0))
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(lo, size))
    img, lab = ex.image[sl], ex.label[sl]
    pad = [(0, int(p - s)) for p, s in zip(size, img.shape)]
    if any(p[1] for p in pad):
        img = np.pad(img, pad, mode="edge")
        lab = np.pad(lab, pad, mode="constant")
    return img, lab


def _batch(examples: list[Example], patch: Sequence[int], rng: np.random.Generator, opts: FinetuneOptions,
           augment) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    imgs, labs, knowns = [], [], []
    for _ in range(opts.batch_size):
        ex = examples[int(rng.integers(len(examples)))]
        img, lab = _patch(ex, patch, rng, opts.fg_fraction)
        augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = augment({"image": torch.from_numpy(img[None].copy()), "label": torch.from_numpy(lab[None].astype(np.float32))})
        imgs.append(torch.as_tensor(out["image"]))
        labs.append(torch.as_tensor(out["label"]).round().long()[0])
        knowns.append(torch.from_numpy(ex.known))
    return {"image": torch.stack(imgs).float(), "label": torch.stack(labs), "known": torch.stack(knowns)}


def finetune(population: str | Path, pairs: Sequence[tuple[Volume, Volume]], contoured: set[int], out: str | Path,
             options: FinetuneOptions = FinetuneOptions(), init: Optional[str | Path] = None) -> dict[str, Any]:
    """Fine-tune ``init`` (default the population model) on ``pairs`` (CT, approved labels) for at most
    ``options.minutes``; the patient model is written to ``out``. Returns what was done (for the manifest)."""
    if options.threads:
        torch.set_num_threads(int(options.threads))
    torch.manual_seed(options.seed)
    bundle, weights, _ = load_bundle(init or population)
    model = build_model(bundle.model_spec)
    model.load_state_dict(weights)
    model.train()
    examples = make_examples(pairs, bundle, contoured)
    criterion = SegmentationLoss(LossConfig(name="dice_ce"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=3e-5)
    rng = np.random.default_rng(options.seed)
    augment = strong_augmentation()
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * options.minutes
    it, losses = 0, []
    while it < options.max_iterations and time.perf_counter() < deadline:
        batch = _batch(examples, bundle.patch_size, rng, options, augment)
        loss = criterion(model(batch["image"]), batch["label"], batch["known"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        it += 1
        if it % 50 == 0:
            log.info("fine-tune iteration %d: loss %.4f (%.0f s)", it, float(np.mean(losses[-50:])), time.perf_counter() - t0)
    model.eval()
    facts = {"iterations": it, "seconds": round(time.perf_counter() - t0, 1), "minutes_budget": options.minutes,
             "scans": len(pairs), "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
             "lr": options.lr, "augmentation": "strong (affine, elastic, intensity, noise)"}
    extras = {k: v for k, v in bundle.extras.items() if k not in (PRIOR_KEY, CALIBRATION_KEY)}
    extras["adapt"] = {"patient_model": True, **facts}
    save_bundle(out, replace(bundle, extras=extras, iteration=bundle.iteration + it), model.state_dict())
    return facts
