"""On-the-fly augmentation with MONAI transforms, seeded per sample so a sample can be replayed.

No left-right flips: they would swap paired organs (femoral heads, parotids).
"""
from __future__ import annotations

from typing import Callable

import torch


def build_augmentation(mirror: bool = False) -> Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]:
    from monai.data import set_track_meta
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    set_track_meta(False)
    mirrors = [RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=a) for a in (1, 2)] if mirror else []
    chain = Compose(
        mirrors
        + [
            RandAffined(
                keys=("image", "label"),
                prob=0.3,
                rotate_range=(0.26, 0.26, 0.26),
                scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            RandGaussianSmoothd(keys="image", prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandGaussianNoised(keys="image", prob=0.15, std=0.05),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.15),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.15),
        ]
    )

    def apply(sample: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        chain.set_random_state(seed=seed % (2**32 - 1))
        out = chain({"image": sample["image"], "label": sample["label"].float()})
        return {"image": torch.as_tensor(out["image"]), "label": torch.as_tensor(out["label"]).round().long()}

    return apply
