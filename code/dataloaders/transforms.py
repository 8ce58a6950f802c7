"""Training/validation transforms of the released SS-Net code, on sample dicts.

A sample is ``{"image": array, "label": array}`` (extra keys are passed on).
3D (LA) arrays are (x, y, z); 2D (ACDC) slices are (H, W).

The random draws are made from the global ``numpy.random`` and ``random``
generators in the same order as the released code, so a run seeded the same
way produces the same augmentations:

- ``RandomRotFlip``: ``np.random.randint(0, 4)`` (k), then ``np.random.randint(0, 2)`` (flip axis).
- ``RandomCrop``: ``np.random.randint`` for the x, y, z corners, in that order.
- ``RandomGenerator``: ``random.random()`` (rot+flip if > 0.5), else ``random.random()``
  again (rotation if > 0.5) and then ``np.random.randint(-20, 20)`` for the angle.
"""
from __future__ import annotations

import random
from typing import Any, Callable
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Compose", "random_rot_flip", "random_rotate", "RandomRotFlip", "RandomCrop",
           "ToTensor", "RandomGenerator"]

Sample = dict[str, Any]


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(s) == t2(t1(s))``."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _check_pair(image: np.ndarray, label: np.ndarray, ndim: int, name: str) -> None:
    if image.ndim != ndim or label.shape != image.shape:
        raise ValueError(f"{name}: expected image and label of the same {ndim}D shape, got "
                         f"image {image.shape} and label {label.shape}.")


def _with(sample: Sample, image: Any, label: Any) -> Sample:
    out = dict(sample)
    out["image"] = image
    out["label"] = label
    return out


def random_rot_flip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by k*90 degrees in the plane of axes (0, 1), k ~ U{0..3}, then flip axis 0 or 1.

    Works for 2D (H, W) and 3D (x, y, z) arrays; image and label get the same k and axis.
    Released behaviour: a rotation followed by a flip is always a mirror image, so the
    result is one of the 4 reflections of the plane, never the identity or a pure rotation.
    """
    k = np.random.randint(0, 4)
    image = np.rot90(image, k)
    label = np.rot90(label, k)
    axis = np.random.randint(0, 2)
    image = np.flip(image, axis=axis).copy()
    label = np.flip(label, axis=axis).copy()
    return image, label


def random_rotate(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a 2D pair by an integer angle in [-20, 20) degrees, nearest neighbour, same shape."""
    angle = np.random.randint(-20, 20)
    image = ndimage.rotate(image, angle, order=0, reshape=False)
    label = ndimage.rotate(label, angle, order=0, reshape=False)
    return image, label


class RandomRotFlip:
    """3D (LA) augmentation: ``random_rot_flip`` on (x, y, z) arrays (rotation in the x-y plane)."""

    def __call__(self, sample: Sample) -> Sample:
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        _check_pair(image, label, 3, "RandomRotFlip")
        image, label = random_rot_flip(image, label)
        return _with(sample, image, label)


def _pad_for_crop(image: np.ndarray, label: np.ndarray,
                  size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Released padding rule: if ANY side is <= the crop size, zero-pad every axis by
    ``max((size - side) // 2 + 3, 0)`` on both ends (so a side equal to the crop
    size still gets 3 voxels each side)."""
    if any(s <= o for s, o in zip(label.shape, size)):
        pads = [(max((o - s) // 2 + 3, 0),) * 2 for s, o in zip(label.shape, size)]
        image = np.pad(image, pads, mode="constant", constant_values=0)
        label = np.pad(label, pads, mode="constant", constant_values=0)
    return image, label


def _size3(output_size: Sequence[int], name: str) -> tuple[int, int, int]:
    size = tuple(int(s) for s in output_size)
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f"{name}: output_size must be three positive ints (x, y, z), got {output_size!r}.")
    return size  # type: ignore[return-value]


class RandomCrop:
    """Random (x, y, z) crop of ``output_size`` (LA: 112x112x80), zero-padding first if needed.

    Corner ``c_i = np.random.randint(0, side_i - size_i)`` for x, y, z in that
    order (released behaviour: the last possible corner ``side - size`` is never drawn).
    """

    def __init__(self, output_size: Sequence[int]) -> None:
        self.output_size = _size3(output_size, "RandomCrop")

    def __call__(self, sample: Sample) -> Sample:
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        _check_pair(image, label, 3, "RandomCrop")
        image, label = _pad_for_crop(image, label, self.output_size)
        (w, h, d), (ow, oh, od) = image.shape, self.output_size
        w1 = np.random.randint(0, w - ow)
        h1 = np.random.randint(0, h - oh)
        d1 = np.random.randint(0, d - od)
        sl = (slice(w1, w1 + ow), slice(h1, h1 + oh), slice(d1, d1 + od))
        return _with(sample, image[sl], label[sl])


class ToTensor:
    """(x, y, z) arrays -> image float32 tensor (1, x, y, z), label uint8 tensor (x, y, z).

    The released transform gives an int64 label; the values are the same, and the
    trainer casts to int64 on the device. uint8 ships 8x fewer bytes through the
    workers' shared memory (/dev/shm: an LA batch's int64 label is 32 MB).

    Raises:
        ValueError: a label value outside 0..255.
    """

    def __call__(self, sample: Sample) -> Sample:
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        _check_pair(image, label, 3, "ToTensor")
        image = image.reshape(1, *image.shape).astype(np.float32)
        if label.dtype != np.uint8:
            if label.size and (label.min() < 0 or label.max() > 255):
                raise ValueError(f"ToTensor: label values must be class indices in 0..255, got "
                                 f"{label.min()}..{label.max()}")
            label = label.astype(np.uint8)
        out = _with(sample, torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(label)))
        if "onehot_label" in sample:
            out["onehot_label"] = torch.from_numpy(np.asarray(sample["onehot_label"])).long()
        return out


def random_geometry_2d(image: np.ndarray, label: np.ndarray,
                       output_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The released 2D geometry: rot90 + flip (p 0.5), else a rotation (p 0.25), then a zoom to
    ``output_size`` (order 0); draws from Python's ``random`` as released. image, label: (H, W)."""
    if random.random() > 0.5:
        image, label = random_rot_flip(image, label)
    elif random.random() > 0.5:
        image, label = random_rotate(image, label)
    x, y = image.shape
    factors = (output_size[0] / x, output_size[1] / y)
    return ndimage.zoom(image, factors, order=0), ndimage.zoom(label, factors, order=0)


class RandomGenerator:
    """2D (ACDC) training transform: random rot90+flip or rotation, then zoom to ``output_size``.

    With probability 0.5 ``random_rot_flip``; otherwise with probability 0.5
    ``random_rotate`` (so 0.25 overall); then both image and label are zoomed
    to ``output_size`` (256x256) with order 0 (nearest). Returns image float32
    tensor (1, H, W) and label uint8 tensor (H, W) (released dtype).
    """

    def __init__(self, output_size: Sequence[int]) -> None:
        size = tuple(int(s) for s in output_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"RandomGenerator: output_size must be two positive ints (H, W), "
                             f"got {output_size!r}.")
        self.output_size = size

    def __call__(self, sample: Sample) -> Sample:
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        _check_pair(image, label, 2, "RandomGenerator")
        image, label = random_geometry_2d(image, label, self.output_size)
        return _with(sample, torch.from_numpy(image.astype(np.float32)).unsqueeze(0),
                     torch.from_numpy(label.astype(np.uint8)))
