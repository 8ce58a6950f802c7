"""Ramp-up schedule of the unsupervised loss weights (SS-Net, Wu et al., MICCAI 2022).

Copy-ready: imports only numpy and the standard library.

SS-Net weights both unsupervised terms with the sigmoid ramp-up of Laine &
Aila (2017, "Temporal Ensembling", arXiv:1610.02242):

    w(t) = consistency * exp(-5 * (1 - min(e, R) / R)^2),   e = iteration // 150

with consistency 1.0 and R = 40 on LA, 0.1 and R = 200 on ACDC; the total loss
is ``dice + w(t) * (lds + 0.1 * (sep_labeled + sep_unlabeled))``.

Why numpy and not ``math``: numpy's ``exp`` (its SIMD version on AVX-512 CPUs)
and libm's ``math.exp`` differ in the last bit for about 5% of the arguments,
among them ones met in training (e.g. ``sigmoid_rampup(8, 40)`` is
0.040762203978366204 with numpy 2.4 on AVX-512, 0.04076220397836621 with
``math.exp``); ``np.exp`` gives what the released code (SSL4MIS ``ramps.py``)
gives on the same machine.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sigmoid_rampup", "consistency_weight"]


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid-shaped ramp-up ``exp(-5 * (1 - t)^2)``, ``t = min(current, L) / L``.

    Returns 1.0 when ``rampup_length`` is 0 and for every ``current >= L``
    (the ramp saturates, as in the released code).

    Raises:
        ValueError: for a negative ``current`` or ``rampup_length``.
    """
    if current < 0:
        raise ValueError(f"sigmoid_rampup: current must be >= 0 (an epoch or iteration count), got {current}.")
    if rampup_length < 0:
        raise ValueError(f"sigmoid_rampup: the ramp length must be >= 0, got {rampup_length}.")
    if rampup_length == 0:
        return 1.0
    t = min(float(current), float(rampup_length)) / float(rampup_length)
    phase = 1.0 - t
    return float(np.exp(-5.0 * phase * phase))


def consistency_weight(iteration: int, consistency: float, rampup_length: float,
                       iterations_per_step: int = 150) -> float:
    """SS-Net's unsupervised weight ``consistency * sigmoid_rampup(iteration // 150, R)``.

    Args:
        iteration: the training iteration (the released 3D script passes the
            count after the increment, the 2D script the count before it).
        consistency: the final weight (LA 1.0, ACDC 0.1).
        rampup_length: R in "epochs" of ``iterations_per_step`` iterations (LA 40, ACDC 200).
        iterations_per_step: 150 in the released code.

    Raises:
        ValueError: for ``iterations_per_step < 1`` (and see :func:`sigmoid_rampup`).
    """
    if iterations_per_step < 1:
        raise ValueError(f"consistency_weight: iterations_per_step must be >= 1, got {iterations_per_step}.")
    return consistency * sigmoid_rampup(iteration // iterations_per_step, rampup_length)
