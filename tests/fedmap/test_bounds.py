"""The weight cap (water-filling), the update norm and the log-sum-exp softmax."""

from __future__ import annotations

import math

import pytest
import torch

from fedmap.bounds import cap_weights, softmax, update_norm


def test_cap_redistributes_the_excess_in_proportion() -> None:
    capped = cap_weights([0.9, 0.06, 0.04], 0.5)
    assert capped == pytest.approx([0.5, 0.3, 0.2])
    assert math.fsum(capped) == pytest.approx(1.0)


def test_cap_that_binds_twice_and_one_that_does_not() -> None:
    capped = cap_weights([0.6, 0.3, 0.05, 0.05], 0.4)
    assert capped == pytest.approx([0.4, 0.4, 0.1, 0.1])
    assert cap_weights([0.2, 0.3, 0.5], 0.5) == pytest.approx([0.2, 0.3, 0.5])


def test_infeasible_cap_gives_equal_weights_and_zeros_stay_zero() -> None:
    assert cap_weights([0.7, 0.3], 0.25) == pytest.approx([0.5, 0.5])
    assert cap_weights([1.0, 0.0, 1.0], 0.5) == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="not all 0"):
        cap_weights([0.0, 0.0], 0.5)
    with pytest.raises(ValueError, match="cap"):
        cap_weights([1.0], 0.0)


def test_update_norm_over_float_entries_only() -> None:
    theta = {"w": torch.tensor([3.0, 4.0]), "n": torch.tensor(7)}
    mu = {"w": torch.zeros(2), "n": torch.tensor(0)}
    assert update_norm(theta, mu) == pytest.approx(5.0)


def test_softmax_is_stable() -> None:
    assert softmax([-1e4, -1e4 + math.log(3)]) == pytest.approx([0.25, 0.75])
    assert softmax([0.0, -math.inf]) == [1.0, 0.0]
