"""AD-MT's training views (released ``WeakStrongAugment`` of ``dataloaders/dataset_3d.py`` and
``dataset_2d.py``, github ZhenZHAO/AD-MT): each item gives a weak view, a strong (photometric) view
of that same weak view, and the label.

A transformed sample holds ``"image"``: a float32 tensor with TWO channels, ``[weak, strong]``
stacked on the channel axis ((2, x, y, z) for LA, (2, H, W) for ACDC), and ``"label"`` (uint8,
the label of the weak view). :class:`methods.admt.ADMT` splits the channels; validation and test
read 1-channel volumes as for every method.

* LA (:class:`LAWeakStrong`): weak = ``RandomRotFlip`` then ``RandomCrop`` (SS-Net's, same
  draws); strong = the weak crop, then ``RandomBrightnessContrast(0.5, 0.5, p=0.8)``
  (:func:`brightness_contrast_3d`) and ``RandomGaussianNoise(sigma=[0.1, 1], p=0.2)``
  (:func:`gaussian_noise_3d`), numpy draws.
* ACDC (:class:`ACDCWeakStrong`): weak = the released 2D geometry (python ``random`` picks
  rot90+flip or rotation, numpy parametrises) and the order-0 zoom to the patch (as
  :class:`dataloaders.transforms.RandomGenerator`); strong = :func:`strong_2d`: the weak slice
  quantised to uint8 (``(x * 255).astype(uint8)``), then with ``np.random.random() < 0.8``
  torchvision's ``ColorJitter(0.5, 0.5, 0.5, 0.25)`` on the 'L' image (:func:`color_jitter_l`),
  then with ``random.random() < 0.2`` PIL's ``GaussianBlur(radius=np.random.uniform(0.1, 2.0))``,
  back to float ``/ 255``.

torchvision is not needed: :func:`color_jitter_l` is ``ColorJitter.forward`` of torchvision 0.8
(the version the release's README pins), which draws ``torch.randperm(4)`` and then, in that
order, one ``torch`` uniform per operation just before applying it (brightness, contrast and
saturation in [0.5, 1.5], hue in [-0.25, 0.25]); torchvision >= 0.9 draws the four factors up
front in the order b, c, s, h (``order="0.9"``); both make 1 randperm + 4 uniforms. On a
1-channel PIL image torchvision's PIL backend applies brightness and contrast with PIL's
``ImageEnhance.Brightness`` / ``ImageEnhance.Contrast`` (used here as it does), saturation with
``ImageEnhance.Color`` (a no-op on 'L': the degenerate image is the image itself) and returns
the image unchanged for hue. The blur is PIL's own ``ImageFilter.GaussianBlur``, as released.
PIL (Pillow) comes with scikit-image, a project requirement.
"""
from __future__ import annotations

import random
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch

from dataloaders.transforms import RandomCrop, RandomRotFlip, random_geometry_2d

__all__ = ["brightness_contrast_3d", "gaussian_noise_3d", "color_jitter_l", "strong_2d", "LAWeakStrong",
           "ACDCWeakStrong", "JITTER_RANGES"]

Sample = dict[str, Any]

#: ColorJitter(0.5, 0.5, 0.5, 0.25)'s factor ranges: brightness, contrast, saturation, hue
JITTER_RANGES = ((0.5, 1.5), (0.5, 1.5), (0.5, 1.5), (-0.25, 0.25))


# ---------------------------------------------------------------------------- LA (3D, float)
def brightness_contrast_3d(image: np.ndarray, brightness: float = 0.5, contrast: float = 0.5,
                           prob: float = 0.8) -> np.ndarray:
    """Released ``RandomBrightnessContrast``: ``alpha = 1 + U(-c, c)``, ``beta = U(-b, b)``, then with
    ``U() < prob``: ``x_n = (x - min) / (max - min)``, ``y = clip(alpha x_n + beta mean(alpha x_n), 0, 1)``,
    ``x = y (max - min) + min`` (float32; the three draws are made even when not applied).

    Rounding as the release computes it with numpy 1.x: ``alpha`` is a 1-tuple there, so
    ``x_n * alpha`` is a float64 product stored in float32; ``beta * mean`` is a float64 product
    added in float32.
    """
    image = np.asarray(image).astype(np.float32)
    alpha = 1.0 + np.random.uniform(-contrast, contrast)
    beta = 0.0 + np.random.uniform(-brightness, brightness)
    if np.random.uniform() < prob:
        lo, hi = image.min(), image.max()
        norm = (image - lo) / (hi - lo)
        if alpha != 1:
            norm = (norm.astype(np.float64) * alpha).astype(np.float32)
        if beta != 0:
            norm = norm + np.float32(float(beta) * float(np.mean(norm)))
        norm = np.clip(norm, 0, 1.0).astype(np.float32)
        image = norm * (hi - lo) + lo
    return image


def gaussian_noise_3d(image: np.ndarray, sigma: Sequence[float] = (0.1, 1.0), prob: float = 0.2) -> np.ndarray:
    """Released ``RandomGaussianNoise``: ``s = U(0.1, 1.0)`` (always drawn), then with ``U() < prob``
    ``x + clip(s * randn(x.shape), -2s, 2s)`` (float64 sum, as released; cast to float32 later)."""
    s = np.random.uniform(min(sigma), max(sigma))
    if np.random.uniform() < prob:
        noise = np.clip(s * np.random.randn(*image.shape), -2 * s, 2 * s)
        image = image + noise
    return image


class LAWeakStrong:
    """LA's released ``WeakStrongAugment(patch, p_color=0.8, p_blur=0.2, flag_rot=True)``:
    ``{"image": (2, x, y, z) [weak, strong], "label": (x, y, z) uint8}``."""

    def __init__(self, output_size: Sequence[int], p_color: float = 0.8, p_noise: float = 0.2) -> None:
        self.rotflip = RandomRotFlip()
        self.crop = RandomCrop(output_size)
        self.p_color, self.p_noise = p_color, p_noise

    def __call__(self, sample: Sample) -> Sample:
        sample = self.crop(self.rotflip(sample))
        weak, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        strong = brightness_contrast_3d(weak.copy(), prob=self.p_color)
        strong = gaussian_noise_3d(strong, prob=self.p_noise)
        views = np.stack([weak.astype(np.float32), strong.astype(np.float32)])
        out = dict(sample)
        out["image"] = torch.from_numpy(views)
        out["label"] = torch.from_numpy(np.ascontiguousarray(label).astype(np.uint8))
        return out


# ---------------------------------------------------------------------------- ACDC (2D, uint8)
def _uniform(lo: float, hi: float) -> float:
    """One float from the global torch generator, as ``torch.tensor(1.0).uniform_(lo, hi).item()``."""
    return torch.empty(()).uniform_(lo, hi).item()


def _apply(img: Any, op: int, factor: float) -> Any:
    from PIL import ImageEnhance

    if op == 0:
        return ImageEnhance.Brightness(img).enhance(factor)
    if op == 1:
        return ImageEnhance.Contrast(img).enhance(factor)
    if op == 2:
        return ImageEnhance.Color(img).enhance(factor)
    if img.mode in ("L", "1", "I", "F"):  # torchvision's adjust_hue leaves 1-channel images as they are
        return img
    raise ValueError(f"color_jitter_l: hue of a {img.mode!r} image is not implemented (1-channel images only)")


def color_jitter_l(img: Any, order: str = "0.8") -> Any:
    """torchvision's ``ColorJitter(0.5, 0.5, 0.5, 0.25)`` on a PIL image (see the module docstring).

    Args:
        img: a PIL image (mode 'L' in AD-MT).
        order: ``"0.8"`` (released README's torchvision: each factor drawn right before its
            operation, in the randperm order) or ``"0.9"`` (torchvision >= 0.9: b, c, s, h drawn
            after the randperm, then applied in its order).
    """
    if order not in ("0.8", "0.9"):
        raise ValueError(f"color_jitter_l: order must be '0.8' or '0.9', got {order!r}")
    perm = [int(k) for k in torch.randperm(4)]
    if order == "0.9":
        factors = [_uniform(*JITTER_RANGES[k]) for k in range(4)]
        for k in perm:
            img = _apply(img, k, factors[k])
        return img
    for k in perm:
        img = _apply(img, k, _uniform(*JITTER_RANGES[k]))
    return img


def strong_2d(image: np.ndarray, p_color: float = 0.8, p_blur: float = 0.2, order: str = "0.8") -> torch.Tensor:
    """Released ``func_strong_augs``: uint8 'L' image, ColorJitter with ``np.random.random() < p_color``,
    GaussianBlur with ``random.random() < p_blur`` (radius ``np.random.uniform(0.1, 2.0)``);
    returns a float32 tensor (1, H, W) in [0, 1]."""
    from PIL import Image, ImageFilter

    img = Image.fromarray((np.asarray(image) * 255).astype(np.uint8))
    if np.random.random() < p_color:
        img = color_jitter_l(img, order)
    if random.random() < p_blur:
        radius = np.random.uniform(0.1, 2.0)
        img = img.filter(ImageFilter.GaussianBlur(radius=radius))
    return torch.from_numpy(np.array(img)).unsqueeze(0).float() / 255.0


class ACDCWeakStrong:
    """ACDC's released ``WeakStrongAugment(patch)``:
    ``{"image": (2, H, W) [weak, strong], "label": (H, W) uint8}``."""

    def __init__(self, output_size: Sequence[int], p_color: float = 0.8, p_blur: float = 0.2,
                 order: str = "0.8") -> None:
        size = tuple(int(s) for s in output_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"ACDCWeakStrong: output_size must be two positive ints (H, W), got {output_size!r}")
        self.output_size = size
        self.p_color, self.p_blur, self.order = p_color, p_blur, order

    def __call__(self, sample: Sample) -> Sample:
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        image, label = random_geometry_2d(image, label, self.output_size)
        strong = strong_2d(image, self.p_color, self.p_blur, self.order)
        weak = torch.from_numpy(image.astype(np.float32)).unsqueeze(0)
        out = dict(sample)
        out["image"] = torch.cat([weak, strong], dim=0)
        out["label"] = torch.from_numpy(label.astype(np.uint8))
        return out
