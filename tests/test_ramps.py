"""Tests for code/utils/ramps.py: closed-form values of the ramp schedules."""
import math

import pytest

from utils.ramps import consistency_weight, cosine_rampdown, cosine_rampup, linear_rampup, sigmoid_rampup


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


@pytest.mark.parametrize("fn, current, length, expected", [
    (linear_rampup, 0, 10, 0.0),
    (linear_rampup, 2.5, 10, 0.25),
    (linear_rampup, 12, 10, 1.0),
    (linear_rampup, 3, 0, 1.0),
    (cosine_rampup, 0, 10, 0.0),
    (cosine_rampup, 5, 10, 0.5),
    (cosine_rampup, 10, 10, 1.0),
    (cosine_rampdown, 0, 10, 1.0),
    (cosine_rampdown, 5, 10, 0.5),
    (cosine_rampdown, 10, 10, 0.0),
])
def test_other_ramps(fn, current, length, expected):
    assert fn(current, length) == pytest.approx(expected, abs=1e-12)


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
        linear_rampup(1, -2)
    with pytest.raises(ValueError, match="cosine_rampdown"):
        cosine_rampdown(11, 10)
    with pytest.raises(ValueError, match="iterations_per_step"):
        consistency_weight(10, 1.0, 40, iterations_per_step=0)
