"""Random fields both synthetic generators use (:mod:`dataloaders.synthetic_la`,
:mod:`dataloaders.synthetic_acdc`): smooth noise and a smooth intensity bias."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["smooth_noise", "bias_field"]


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (f - f.mean()) / (f.std() + 1e-8)


def bias_field(rng: np.random.Generator, shape: Sequence[int], strength: float) -> np.ndarray:
    """Smooth multiplicative field 1 + strength * (random quadratic polynomial in [-1, 1]^d)."""
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape], indexing="ij")
    field = np.zeros(shape, np.float32)
    for g in grids:
        field += rng.uniform(-1, 1) * g + rng.uniform(-0.5, 0.5) * g * g
    field /= max(float(np.abs(field).max()), 1e-6)
    return 1.0 + strength * field
