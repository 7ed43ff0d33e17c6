"""Scanner effects: tissue texture, the point-spread function (blur) and correlated noise, then int16 HU."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from rtseg.synthetic.frame import Frame, Spacing3


@dataclass(frozen=True)
class Scanner:
    noise_sd: float  # HU
    psf_mm: np.ndarray  # Gaussian sigma (mm) in x, y, z


def draw_scanner(rng: np.random.Generator) -> Scanner:
    noise_sd = rng.uniform(10, 15)
    psf_mm = np.array([rng.uniform(1.0, 1.6)] * 2 + [rng.uniform(1.5, 2.5)])
    return Scanner(noise_sd, psf_mm)


def draw_noise(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def acquire(hu: np.ndarray, frame: Frame, scanner: Scanner, noise: np.ndarray, spacing: Spacing3) -> np.ndarray:
    """Texture soft tissue and fat, blur by the PSF, add noise of the drawn SD; int16 HU clipped to CT range."""
    soft = (hu > -200) & (hu < 150)
    hu[soft] += 5.0 * frame.tex_soft[soft]
    fat = (hu > -200) & (hu <= -50)
    hu[fat] += 8.0 * frame.tex_fat[fat]
    hu = ndi.gaussian_filter(hu, sigma=np.maximum(scanner.psf_mm / np.asarray(spacing), 0.45), mode="nearest")
    noise = ndi.gaussian_filter(noise, sigma=(0.6, 0.6, 0.3), mode="wrap")
    noise *= scanner.noise_sd / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
