"""Synthetic LA stand-in: the LA-like volume generator and its writer (see ``dataloaders.synthetic``).

(x, y, z) volumes: a lobulated bright atrium with 3-5 thin tubular "pulmonary veins"
(label 1), an unlabeled bright "aorta" tube and other bright blobs of similar
intensity next to it, textured background, blurred boundaries, a multiplicative
bias field and noise; size, position, shape, contrast and noise vary per case.

:func:`make_la` writes the preprocessed layout (``2018LA_Seg_Training Set/<ID>/mri_norm2.h5``
+ ``train.list``/``test.list``) or, with ``raw``, the raw challenge layout (``<ID>/lgemri.nrrd``
+ ``laendo.nrrd`` with atrium 255). Split 80/20 train/test (at least one test case); every
case is drawn from its own generator seeded by (seed, case number).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dataloaders.la_heart import la_case_path
from dataloaders.la_heart_processing import write_la_h5
from dataloaders.splits import write_list
from dataloaders.synthetic_fields import bias_field, smooth_noise

__all__ = ["LA_DEFAULT_SIZE", "la_case", "la_split", "make_la"]

LA_DEFAULT_SIZE = (96, 96, 64)


def _tubes(shape: Sequence[int], curves: list[np.ndarray], radii: list[float]) -> np.ndarray:
    """Boolean mask of tubes around sampled centre lines (points (n, 3)) with per-curve radius."""
    seeds = np.zeros(shape, bool)
    radius_at = np.zeros(shape, np.float32)
    for pts, r in zip(curves, radii):
        idx = np.round(pts).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
        idx = idx[ok]
        seeds[tuple(idx.T)] = True
        radius_at[tuple(idx.T)] = r
    if not seeds.any():
        return seeds
    dist, inds = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return dist <= radius_at[tuple(inds)]


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, step: float = 0.5) -> np.ndarray:
    n = max(int(np.linalg.norm(p2 - p0) / step) + 2, 2)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def la_case(rng: np.random.Generator, shape: Sequence[int],
            anatomy: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One LA-like volume: intensity (x, y, z) float32 roughly in [0, 1] and label uint8 0/1.

    Args:
        rng: the case's generator.
        shape: (x, y, z) volume size.
        anatomy: (x, y, z) size the structures are scaled to (default ``shape``); a raw
            scanner volume is larger than the anatomy it is cropped around.
    """
    shape = tuple(int(s) for s in shape)
    sx, sy, sz = shape
    ax, ay, az_ = (shape if anatomy is None else tuple(int(a) for a in anatomy))
    x, y, z = np.ogrid[:sx, :sy, :sz]
    x, y, z = (a.astype(np.float32) for a in (x, y, z))
    # atrium: rotated, lobulated ellipsoid
    c = np.array([sx / 2 + rng.uniform(-0.12, 0.12) * ax, sy / 2 + rng.uniform(-0.12, 0.12) * ay,
                  sz / 2 + rng.uniform(-0.1, 0.1) * az_])
    rad = np.array([rng.uniform(0.14, 0.21) * ax, rng.uniform(0.14, 0.21) * ay, rng.uniform(0.18, 0.26) * az_])
    th = rng.uniform(0, np.pi)
    u = (x - c[0]) * np.cos(th) + (y - c[1]) * np.sin(th)
    v = -(x - c[0]) * np.sin(th) + (y - c[1]) * np.cos(th)
    w = z - c[2]
    r = np.sqrt((u / rad[0]) ** 2 + (v / rad[1]) ** 2 + (w / rad[2]) ** 2)
    phi = np.arctan2(v, u)
    psi = np.arctan2(w, np.sqrt(u * u + v * v) + 1e-6)
    lobes = np.ones_like(r)
    for _ in range(3):
        lobes = lobes + rng.uniform(0.04, 0.12) * np.cos(rng.integers(1, 4) * phi + rng.uniform(0, 2 * np.pi)) \
            * np.cos(rng.integers(1, 3) * psi + rng.uniform(0, 2 * np.pi))
    atrium = r < lobes
    # pulmonary veins: thin curved tubes leaving the atrium outwards
    curves, radii = [], []
    for _ in range(int(rng.integers(3, 6))):
        az, el = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5)
        d = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        start = c + 0.6 * rad * d
        length = rng.uniform(0.12, 0.25) * min(ax, ay)
        end = c + (rad * d) + length * d
        bend = 0.5 * (start + end) + rng.normal(0, 0.15 * length, 3)
        curves.append(_bezier(start, bend, end))
        radii.append(float(rng.uniform(1.0, 2.6)))
    veins = _tubes(shape, curves, radii)
    label = (atrium | veins).astype(np.uint8)
    # distractors of similar brightness: an aorta-like tube along z and 1-3 blobs (unlabeled)
    a_dir = rng.uniform(0, 2 * np.pi)
    a_off = (rad[:2].max() + rng.uniform(4, 10)) * np.array([np.cos(a_dir), np.sin(a_dir)])
    a_c = c[:2] + a_off
    a_r = rng.uniform(0.05, 0.08) * min(ax, ay)
    aorta = ((x - a_c[0]) ** 2 + (y - a_c[1]) ** 2 + 0 * z) < a_r ** 2
    others = np.zeros(shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        bc = np.array([rng.uniform(0.1, 0.9) * sx, rng.uniform(0.1, 0.9) * sy, rng.uniform(0.1, 0.9) * sz])
        br = rng.uniform(0.05, 0.1) * min(ax, ay)
        others |= ((x - bc[0]) ** 2 + (y - bc[1]) ** 2 + ((z - bc[2]) * 1.3) ** 2) < br ** 2
    distract = (aorta | others) & (label == 0)
    # intensities: textured tissue, blood pool with inhomogeneity, similar-intensity distractors
    tissue = rng.uniform(0.22, 0.32)
    blood = tissue + rng.uniform(0.18, 0.3)
    img = tissue + 0.05 * smooth_noise(rng, shape, 2.5)
    img = np.where(label > 0, blood * (1 + 0.08 * smooth_noise(rng, shape, 3.0)), img)
    img = np.where(distract, blood * rng.uniform(0.85, 1.1), img).astype(np.float32)
    img = ndimage.gaussian_filter(img, rng.uniform(0.8, 1.6))
    img *= bias_field(rng, shape, rng.uniform(0.1, 0.3))
    img += rng.uniform(0.03, 0.07) * rng.standard_normal(shape).astype(np.float32)
    return img.astype(np.float32), label


def _case_size(rng: np.random.Generator, size: Sequence[int]) -> tuple[int, int, int]:
    jit = (rng.uniform(0.88, 1.12), rng.uniform(0.88, 1.12), rng.uniform(0.9, 1.1))
    return tuple(max(8, int(round(s * j))) for s, j in zip(size, jit))  # type: ignore[return-value]


def la_split(cases: int, seed: int) -> tuple[list[str], list[str]]:
    """Case IDs ``LASYN000``.. split 80/20 (>= 1 test case): (train sorted, test sorted)."""
    if cases < 2:
        raise ValueError(f"--cases must be >= 2 for LA (one train, one test), got {cases}.")
    ids = [f"LASYN{i:03d}" for i in range(cases)]
    n_test = max(1, int(round(0.2 * cases)))
    perm = np.random.default_rng([seed, 7]).permutation(cases)
    test = sorted(ids[i] for i in perm[:n_test])
    train = sorted(ids[i] for i in perm[n_test:])
    return train, test


def _write_nrrd_xyz(path: str, arr: np.ndarray, spacing: Sequence[float]) -> None:
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(img, path, True)


def make_la(out: str, cases: int = 10, seed: int = 1337, size: Sequence[int] = LA_DEFAULT_SIZE,
            raw: bool = False, progress: bool = False) -> dict[str, list[str]]:
    """Write ``cases`` synthetic LA cases to ``out``; return ``{"train": [...], "test": [...]}``.

    Args:
        out: output folder.
        cases: number of cases (>= 2).
        seed: global seed.
        size: mean (x, y, z) size; each case varies by about +-12 % in x, y and +-10 % in z.
            With ``raw`` the x, y sides are 1.5x larger (uncropped scanner field of view).
        raw: write ``<ID>/lgemri.nrrd`` (uint8) and ``<ID>/laendo.nrrd`` (0/255) instead of h5.
        progress: show a tqdm bar.
    """
    from tqdm import tqdm
    if len(size) != 3 or min(size) < 8:
        raise ValueError(f"size must be three sides >= 8 (x y z), got {tuple(size)}.")
    train, test = la_split(cases, seed)
    for name in tqdm(sorted(train + test), desc="synthetic LA", disable=not progress):
        rng = np.random.default_rng([seed, int(name[5:])])
        anatomy = _case_size(rng, size)
        shape = (int(anatomy[0] * 1.5), int(anatomy[1] * 1.5), anatomy[2]) if raw else anatomy
        img, lab = la_case(rng, shape, anatomy)
        if raw:
            d = os.path.join(out, name)
            os.makedirs(d, exist_ok=True)
            img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
            _write_nrrd_xyz(os.path.join(d, "lgemri.nrrd"), img8, (0.625, 0.625, 1.25))
            _write_nrrd_xyz(os.path.join(d, "laendo.nrrd"), (lab * 255).astype(np.uint8), (0.625, 0.625, 1.25))
        else:
            z = ((img - img.mean()) / img.std()).astype(np.float32)
            write_la_h5(la_case_path(out, name), z, lab)
    write_list(os.path.join(out, "train.list"), train)
    write_list(os.path.join(out, "test.list"), test)
    return {"train": train, "test": test}

