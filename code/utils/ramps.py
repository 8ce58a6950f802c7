"""Ramp-up schedules for the unsupervised loss weights (SS-Net, Wu et al., MICCAI 2022).

Copy-ready: imports only numpy and the standard library.

SS-Net weights both unsupervised terms with the sigmoid ramp-up of Laine &
Aila (2017, "Temporal Ensembling", arXiv:1610.02242):

    w(t) = consistency * exp(-5 * (1 - min(e, R) / R)^2),   e = iteration // 150

with consistency 1.0 and R = 40 on LA, 0.1 and R = 200 on ACDC; the total loss
is ``dice + w(t) * (lds + 0.1 * (sep_labeled + sep_unlabeled))``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sigmoid_rampup", "linear_rampup", "cosine_rampup", "cosine_rampdown", "consistency_weight"]


def _check(current: float, length: float, name: str) -> None:
    if current < 0:
        raise ValueError(f"{name}: current must be >= 0 (an epoch or iteration count), got {current}.")
    if length < 0:
        raise ValueError(f"{name}: the ramp length must be >= 0, got {length}.")


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid-shaped ramp-up ``exp(-5 * (1 - t)^2)``, ``t = min(current, L) / L``.

    Returns 1.0 when ``rampup_length`` is 0 and for every ``current >= L``
    (the ramp saturates, as in the released code).

    Raises:
        ValueError: for a negative ``current`` or ``rampup_length``.
    """
    _check(current, rampup_length, "sigmoid_rampup")
    if rampup_length == 0:
        return 1.0
    t = min(float(current), float(rampup_length)) / float(rampup_length)
    phase = 1.0 - t
    return float(np.exp(-5.0 * phase * phase))


def linear_rampup(current: float, rampup_length: float) -> float:
    """Linear ramp-up ``min(current / L, 1)``; 1.0 when ``L`` is 0.

    Raises:
        ValueError: for a negative ``current`` or ``rampup_length``.
    """
    _check(current, rampup_length, "linear_rampup")
    if current >= rampup_length:
        return 1.0
    return float(current) / float(rampup_length)


def cosine_rampup(current: float, rampup_length: float) -> float:
    """Half-cosine ramp-up ``0.5 * (1 - cos(pi * min(current, L) / L))``; 1.0 when ``L`` is 0.

    Raises:
        ValueError: for a negative ``current`` or ``rampup_length``.
    """
    _check(current, rampup_length, "cosine_rampup")
    if current >= rampup_length:
        return 1.0
    return float(0.5 * (1.0 - np.cos(np.pi * float(current) / float(rampup_length))))


def cosine_rampdown(current: float, rampdown_length: float) -> float:
    """Cosine ramp-down ``0.5 * (cos(pi * current / L) + 1)`` of Loshchilov & Hutter (SGDR).

    Raises:
        ValueError: unless ``0 <= current <= rampdown_length`` and ``rampdown_length > 0``.
    """
    if rampdown_length <= 0 or not 0 <= current <= rampdown_length:
        raise ValueError(
            f"cosine_rampdown: need 0 <= current <= rampdown_length and rampdown_length > 0, "
            f"got current={current}, rampdown_length={rampdown_length}."
        )
    return float(0.5 * (np.cos(np.pi * float(current) / float(rampdown_length)) + 1.0))


def consistency_weight(iteration: int, consistency: float, rampup_length: float,
                       iterations_per_step: int = 150) -> float:
    """SS-Net's unsupervised weight ``consistency * sigmoid_rampup(iteration // 150, R)``.

    Args:
        iteration: the training iteration (the released 3D script passes the
            count after the increment, the 2D script the count before it).
        consistency: the final weight (LA 1.0, ACDC 0.1).
        rampup_length: R in "epochs" of ``iterations_per_step`` iterations (LA 40, ACDC 200).
        iterations_per_step: 150 in the released code.
    """
    if iterations_per_step < 1:
        raise ValueError(f"consistency_weight: iterations_per_step must be >= 1, got {iterations_per_step}.")
    return consistency * sigmoid_rampup(iteration // iterations_per_step, rampup_length)
