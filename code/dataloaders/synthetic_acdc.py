"""Synthetic ACDC stand-in: the ACDC-like patient generator and its writer (see ``dataloaders.synthetic``).

Short-axis stacks (S, H, W), two frames (ED = frame01, ES = frame02, smaller cavity
and thicker wall): LV blood pool (3) with dark papillary muscles, myocardial ring (2),
RV crescent (1) that shrinks towards the apex, unlabeled bright and dark structures
around the heart, per-patient intensity, blur, bias and noise; in-plane sizes and
slice counts vary across patients like the real data (defaults 80-140 px, 6-10
slices, kept small). Like the real training set, patients come from ACDC's five
pathology groups, numbered group by group in fifths (DCM: dilated LV, thin wall, weak
contraction; HCM: thick wall, small cavity; MINF: enlarged LV with a thinned infarct
sector; NOR; RV: dilated RV), so a few labeled patients do not cover the test
patients' anatomy. Measured (1200 iterations, 64x64 slices, supervised U-Net, 30
patients): 3 labeled patients give 77.5 % mean Dice on the test volumes, all 21
training patients 84.7 % (with every patient NOR-like, as before the groups, the gap
was only 83.6 vs 85.1 %).

:func:`make_acdc` writes the preprocessed layout (``data/*.h5``, ``data/slices/*.h5`` and
the four lists) or, with ``raw``, the raw challenge layout (``patientXXX/patientXXX_frame01.nii.gz``,
a later ES frame ``patientXXX_frameNN.nii.gz``, their ``_gt`` files and ``Info.cfg``).
Split 70/10/20 patients (at least one val and one test patient); every patient is
drawn from its own generator seeded by (seed, patient number).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dataloaders.acdc_data_processing import normalise_minmax, write_acdc_volume
from dataloaders.splits import write_list
from dataloaders.synthetic_fields import bias_field, smooth_noise

__all__ = ["ACDC_DEFAULT_HW", "ACDC_DEFAULT_SLICES", "ACDC_GROUPS", "acdc_group", "acdc_patient", "acdc_split",
           "make_acdc"]

ACDC_DEFAULT_HW = (80, 140)
ACDC_DEFAULT_SLICES = (6, 10)
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def _radial(rng: np.random.Generator, n: int = 3, amp: float = 0.08) -> list[tuple[int, float, float]]:
    return [(k, rng.uniform(0, amp), rng.uniform(0, 2 * np.pi)) for k in range(2, 2 + n)]


def _shape_r(base: float, theta: np.ndarray, harm: list[tuple[int, float, float]]) -> np.ndarray:
    r = np.ones_like(theta)
    for k, a, p in harm:
        r = r + a * np.cos(k * theta + p)
    return base * r


def acdc_group(patient: int, patients: int) -> str:
    """The pathology group of synthetic patient ``patient`` (1..``patients``).

    As in the real ACDC training set (1-20 DCM, 21-40 HCM, 41-60 MINF, 61-80
    NOR, 81-100 RV), patients are numbered group by group in equal fifths.
    """
    if not 1 <= patient <= patients:
        raise ValueError(f"patient must be in 1..{patients}, got {patient}.")
    return ACDC_GROUPS[(patient - 1) * len(ACDC_GROUPS) // patients]


def _group_shape(rng: np.random.Generator, group: str) -> dict[str, float]:
    """Multipliers, and the ES factors and infarct that replace NOR's, for a heart of ``group``.

    DCM: dilated LV, thin wall, weak contraction. HCM: thick wall, small
    cavity, strong contraction. MINF: enlarged LV, weak contraction and a
    thinned (infarcted) wall sector. RV: dilated, weakly contracting RV.
    Nothing is drawn for NOR, so NOR hearts are those of the group-free generator.
    """
    g: dict[str, float] = dict(lv=1.0, wall=1.0, rv=1.0)
    if group == "DCM":
        g.update(lv=rng.uniform(1.25, 1.45), wall=rng.uniform(0.65, 0.85), es_lv=rng.uniform(0.85, 0.95),
                 es_myo=rng.uniform(1.0, 1.15))
    elif group == "HCM":
        g.update(lv=rng.uniform(0.75, 0.9), wall=rng.uniform(1.6, 2.1), es_lv=rng.uniform(0.4, 0.55),
                 es_myo=rng.uniform(1.3, 1.6))
    elif group == "MINF":
        g.update(lv=rng.uniform(1.15, 1.35), es_lv=rng.uniform(0.8, 0.9), es_myo=rng.uniform(1.0, 1.2),
                 scar=rng.uniform(0.4, 0.6), scar_dir=rng.uniform(0, 2 * np.pi), scar_width=rng.uniform(0.5, 1.0))
    elif group == "RV":
        g.update(rv=rng.uniform(1.3, 1.55), es_rv=rng.uniform(0.85, 0.95))
    elif group != "NOR":
        raise ValueError(f"group must be one of {ACDC_GROUPS}, got {group!r}.")
    return g


def acdc_patient(rng: np.random.Generator, hw_range: Sequence[int] = ACDC_DEFAULT_HW,
                 slice_range: Sequence[int] = ACDC_DEFAULT_SLICES, group: str = "NOR"
                 ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One ACDC-like patient: ((ED image, ED label), (ES image, ES label)), each (S, H, W).

    Images are raw-like float32 intensities (>= 0); labels uint8 0 bg, 1 RV, 2 Myo, 3 LV.
    ``group`` is one of ACDC's pathology groups (``ACDC_GROUPS``), see ``_group_shape``.
    """
    h = int(rng.integers(hw_range[0], hw_range[1] + 1))
    w = int(rng.integers(hw_range[0], hw_range[1] + 1))
    s = int(rng.integers(slice_range[0], slice_range[1] + 1))
    m = min(h, w)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    r_lv0 = rng.uniform(0.1, 0.15) * m
    t_myo0 = max(2.0, rng.uniform(0.035, 0.06) * m)
    rv_dir = np.pi + rng.uniform(-0.6, 0.6)  # RV on the image's left, as in short-axis views
    rv_scale = rng.uniform(1.2, 1.7)
    lv_h, myo_h, rv_h = _radial(rng), _radial(rng, amp=0.15), _radial(rng)
    tissue, blood, myo_i = rng.uniform(0.25, 0.45), rng.uniform(0.7, 1.0), rng.uniform(0.12, 0.28)
    gain = rng.uniform(300, 900)
    # unlabeled context: bright blobs (fat, vessels, liver) and a dark lung region
    n_ctx = int(rng.integers(2, 5))
    ctx = [(rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.12) * m,
            rng.uniform(0.6, 1.0) * blood) for _ in range(n_ctx)]
    lung = (rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.15))
    blur, noise, bias = rng.uniform(0.5, 1.3), rng.uniform(0.02, 0.06), rng.uniform(0.1, 0.3)
    texture_sigma = rng.uniform(1.5, 3.0)
    g = _group_shape(rng, group)
    r_lv0 *= g["lv"]
    t_myo0 *= g["wall"]
    rv_scale *= g["rv"] / g["lv"]  # the RV keeps its own size when the LV is dilated or shrunk
    es_nor = (rng.uniform(0.6, 0.75), rng.uniform(1.2, 1.45), rng.uniform(0.6, 0.8))  # LV, wall, RV
    es = tuple(g.get(k, v) for k, v in zip(("es_lv", "es_myo", "es_rv"), es_nor))
    out = []
    for frame, (lv_f, myo_f, rv_f) in enumerate(((1.0, 1.0, 1.0), es)):
        dy, dx = rng.normal(0, 1.0, 2) if frame else (0.0, 0.0)
        img = np.empty((s, h, w), np.float32)
        lab = np.zeros((s, h, w), np.uint8)
        for k in range(s):
            t = k / max(s - 1, 1)  # 0 = base, 1 = apex
            py, px = cy + dy + 2.0 * t * np.sin(rv_dir), cx + dx + 2.0 * t * np.cos(rv_dir)
            rho = np.hypot(yy - py, xx - px)
            theta = np.arctan2(yy - py, xx - px)
            r_lv = _shape_r(r_lv0 * lv_f * (1 - 0.75 * t ** 1.5), theta, lv_h)
            t_myo = _shape_r(t_myo0 * myo_f * (1 + 0.2 * t), theta, myo_h)
            if "scar" in g:  # MINF: the infarcted sector's wall is thinned
                off = np.angle(np.exp(1j * (theta - g["scar_dir"])))
                t_myo = t_myo * (1 - g["scar"] * np.exp(-0.5 * (off / (0.5 * g["scar_width"])) ** 2))
            lv = rho < r_lv
            myo = (rho >= r_lv) & (rho < r_lv + t_myo)
            if t > 0.9 and rng.random() < 0.5:  # apical cap: only muscle left
                myo |= lv
                lv[:] = False
            rv = np.zeros((h, w), bool)
            if t < 0.8:
                r_rv = r_lv0 * rv_scale * rv_f * (1 - 0.9 * t)
                d = 0.8 * (r_lv0 * lv_f + t_myo0 * myo_f) + 0.2 * r_rv  # the RV sits on the wall
                qy, qx = py + d * np.sin(rv_dir), px + d * np.cos(rv_dir)
                a_y, a_x = yy - qy, xx - qx
                along = a_x * np.cos(rv_dir) + a_y * np.sin(rv_dir)
                across = -a_x * np.sin(rv_dir) + a_y * np.cos(rv_dir)
                th_rv = np.arctan2(across, along)
                rr = _shape_r(1.0, th_rv, rv_h)
                rv = (along / (0.75 * r_rv)) ** 2 + (across / (1.35 * r_rv)) ** 2 < rr ** 2
                rv &= rho >= r_lv + t_myo
            rv_wall = ndimage.binary_dilation(rv, iterations=1) & ~rv & ~myo & ~lv
            # papillary muscles: dark spots inside the LV cavity that keep the LV label
            pap = np.zeros((h, w), bool)
            if lv.sum() > 40:
                for ang in (rv_dir + 2.3, rv_dir + 3.6):
                    rp = 0.7 * float(np.median(r_lv[lv])) if lv.any() else 0.0
                    sy_, sx_ = py + rp * np.sin(ang), px + rp * np.cos(ang)
                    pap |= np.hypot(yy - sy_, xx - sx_) < max(1.0, 0.18 * r_lv0)
                pap &= lv
            sl = tissue + 0.06 * smooth_noise(rng, (h, w), texture_sigma)
            lung_mask = np.cos(np.arctan2(yy - cy, xx - cx) - lung[0]) > 0.75
            lung_mask &= np.hypot(yy - cy, xx - cx) > r_lv0 * 3.2
            sl = np.where(lung_mask, lung[1], sl)
            for by, bx, br, bi in ctx:
                sl = np.where(np.hypot(yy - by, xx - bx) < br * (1 - 0.3 * t), bi, sl)
            sl = np.where(lv | rv, blood * (1 + 0.05 * smooth_noise(rng, (h, w), 2.0)), sl)
            sl = np.where(myo | rv_wall | pap, myo_i, sl)
            img[k] = ndimage.gaussian_filter(sl.astype(np.float32), blur)
            lab[k][rv] = 1
            lab[k][myo] = 2
            lab[k][lv] = 3
        img *= bias_field(rng, (h, w), bias)[None]
        img += noise * rng.standard_normal(img.shape).astype(np.float32)
        out.append((np.clip(img, 0, None) * gain, lab))
    return out[0], out[1]


def acdc_split(patients: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Patient numbers 1..N split 70/10/20 (>= 1 val, >= 1 test): (train order, val, test)."""
    if patients < 3:
        raise ValueError(f"--cases must be >= 3 for ACDC (train, val and test patients), got {patients}.")
    n_test = max(1, int(round(0.2 * patients)))
    n_val = max(1, int(round(0.1 * patients)))
    perm = [int(p) + 1 for p in np.random.default_rng([seed, 11]).permutation(patients)]
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _cases(patients: Sequence[int]) -> list[str]:
    return [f"patient{p:03d}_frame{f:02d}" for p in patients for f in (1, 2)]


def make_acdc(out: str, patients: int = 10, seed: int = 1337, hw_range: Sequence[int] = ACDC_DEFAULT_HW,
              slice_range: Sequence[int] = ACDC_DEFAULT_SLICES, raw: bool = False,
              progress: bool = False) -> dict[str, list[str]]:
    """Write ``patients`` synthetic ACDC patients to ``out``; return the lists written.

    Args:
        out: output folder.
        patients: number of patients (>= 3).
        seed: global seed.
        hw_range: (min, max) of the in-plane sides H and W (each drawn per patient).
        slice_range: (min, max) number of slices per patient.
        raw: write the raw challenge layout (NIfTI + Info.cfg) instead of h5.
        progress: show a tqdm bar.

    Returns:
        ``{"train", "val", "test"}`` volume lists and, without ``raw``, ``"train_slices"``.
    """
    from tqdm import tqdm
    if len(hw_range) != 2 or not 16 <= hw_range[0] <= hw_range[1]:
        raise ValueError(f"hw_range must be (min, max) with 16 <= min <= max, got {tuple(hw_range)}.")
    if len(slice_range) != 2 or not 1 <= slice_range[0] <= slice_range[1]:
        raise ValueError(f"slice_range must be (min, max) with 1 <= min <= max, got {tuple(slice_range)}.")
    train, val, test = acdc_split(patients, seed)
    lists = {"train": _cases(train), "val": _cases(val), "test": _cases(test)}
    slices_of: dict[str, list[str]] = {}
    for p in tqdm(sorted(train + val + test), desc="synthetic ACDC", disable=not progress):
        rng = np.random.default_rng([seed, p])
        group = acdc_group(p, patients)
        (ed_img, ed_lab), (es_img, es_lab) = acdc_patient(rng, hw_range, slice_range, group)
        name = f"patient{p:03d}"
        if raw:
            import SimpleITK as sitk
            d = os.path.join(out, name)
            os.makedirs(d, exist_ok=True)
            es_no = int(rng.integers(8, 16))
            for no, im, lb in ((1, ed_img, ed_lab), (es_no, es_img, es_lab)):
                for arr, suffix in ((np.round(im).astype(np.int16), ""), (lb, "_gt")):
                    itk = sitk.GetImageFromArray(arr)
                    itk.SetSpacing((1.5, 1.5, 10.0))
                    sitk.WriteImage(itk, os.path.join(d, f"{name}_frame{no:02d}{suffix}.nii.gz"))
            with open(os.path.join(d, "Info.cfg"), "w", encoding="utf-8") as f:
                f.write(f"ED: 1\nES: {es_no}\nGroup: {group}\nHeight: 170.0\nNbFrame: {es_no + 10}\nWeight: 70.0\n")
        else:
            for fno, im, lb in ((1, ed_img, ed_lab), (2, es_img, es_lab)):
                case = f"{name}_frame{fno:02d}"
                slices_of[case] = write_acdc_volume(out, case, normalise_minmax(im, case), lb)
    for s, names in lists.items():
        write_list(os.path.join(out, f"{s}.list"), names)
    if not raw:
        lists["train_slices"] = [n for c in lists["train"] for n in slices_of[c]]
        write_list(os.path.join(out, "train_slices.list"), lists["train_slices"])
    return lists

