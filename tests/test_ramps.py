"""Tests for code/utils/ramps.py: closed-form values of the ramp schedule, and bit-identity with the
released numpy formula on every argument training uses (``math.exp`` would not give it: on AVX-512
CPUs numpy's exp differs from libm's in the last bit for ~5% of the arguments)."""
from __future__ import annotations
import math

import numpy as np
import pytest

from utils.ramps import consistency_weight, sigmoid_rampup


@pytest.mark.parametrize("current, length, expected", [
    (0, 40, math.exp(-5.0)),
    (20, 40, math.exp(-5.0 * 0.25)),
    (30, 40, math.exp(-5.0 * 0.0625)),
    (40, 40, 1.0),
    (1000, 40, 1.0),  # saturates
    (7, 0, 1.0),  # no ramp
])
def test_sigmoid_rampup(current, length, expected):
    assert sigmoid_rampup(current, length) == pytest.approx(expected, rel=1e-12)


def test_sigmoid_rampup_is_increasing():
    values = [sigmoid_rampup(e, 200) for e in range(0, 201, 10)]
    assert all(a < b for a, b in zip(values, values[1:]))


def _released_sigmoid_rampup(current, rampup_length):
    """SSL4MIS / SS-Net ``ramps.sigmoid_rampup`` as released (numpy clip and exp)."""
    if rampup_length == 0:
        return 1.0
    current = np.clip(current, 0.0, rampup_length)
    phase = 1.0 - current / rampup_length
    return float(np.exp(-5.0 * phase * phase))


def _training_arguments():
    """(current, L) of every sigmoid_rampup call in training, and the consistency weight's lambda."""
    for lam, ramp in ((1.0, 40), (0.1, 200), (0.1, 40), (1.0, 200)):  # SS-Net and the baselines' own
        yield from ((t, lam, ramp) for t in range(0, 30002))  # consistency_weight(t, lam, L), t // 150
    for n in (12, 1200, 2400):  # code/demo.py: --consistency_rampup max(n / 150, 1) over n iterations
        yield from ((t, 1.0, max(n / 150.0, 1.0)) for t in range(0, n + 2))


def test_consistency_weight_is_bit_identical_to_the_released_formula():
    wrong = [(t, lam, ramp) for t, lam, ramp in _training_arguments()
             if consistency_weight(t, lam, ramp) != lam * _released_sigmoid_rampup(t // 150, ramp)]
    assert not wrong, f"{len(wrong)} arguments differ, e.g. {wrong[:5]}"


@pytest.mark.parametrize("length", [15000, 30000, 150, 15, 12, 1200, 2400])
def test_sigmoid_rampup_is_bit_identical_to_the_released_formula(length):
    """UA-MT's threshold ramp sigmoid_rampup(t, T_max) (LA 15000, ACDC 30000, the demo's runs) and
    two_moons.py's sigmoid_rampup(it, iters // 4) (600 and 60 iterations), t = 0..length + 1."""
    wrong = [t for t in range(0, length + 2) if sigmoid_rampup(t, length) != _released_sigmoid_rampup(t, length)]
    assert not wrong, f"{len(wrong)} arguments differ, e.g. {wrong[:5]}"


def test_consistency_weight_follows_ssnet_schedule():
    # LA: consistency 1.0, R = 40 "epochs" of 150 iterations
    assert consistency_weight(0, 1.0, 40) == pytest.approx(math.exp(-5.0))
    assert consistency_weight(3000, 1.0, 40) == pytest.approx(math.exp(-5.0 * 0.25))  # 3000 // 150 = 20
    assert consistency_weight(3149, 1.0, 40) == pytest.approx(math.exp(-5.0 * 0.25))  # floor division
    assert consistency_weight(15000, 1.0, 40) == pytest.approx(1.0)
    # ACDC: consistency 0.1, R = 200
    assert consistency_weight(15000, 0.1, 200) == pytest.approx(0.1 * math.exp(-5.0 * 0.25))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="current must be >= 0"):
        sigmoid_rampup(-1, 40)
    with pytest.raises(ValueError, match="ramp length"):
        sigmoid_rampup(1, -2)
    with pytest.raises(ValueError, match="iterations_per_step"):
        consistency_weight(10, 1.0, 40, iterations_per_step=0)
