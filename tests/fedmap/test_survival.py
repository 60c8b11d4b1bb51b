"""The Cox partial likelihood and Harrell's C-index against hand-computed values and references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmap.survival import c_index, cox_partial_nll

# Five rows (time, event, exp(risk)): a tie between two events at t = 3 and two censored rows.
TIME = [1.0, 3.0, 3.0, 4.0, 2.0]
EVENT = [1.0, 1.0, 1.0, 0.0, 0.0]
HAZARD = [2.0, 1.0, 3.0, 2.0, 1.0]


def _cox_rows(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    risk = torch.log(torch.tensor(HAZARD, dtype=dtype))
    return risk, torch.tensor(TIME, dtype=dtype), torch.tensor(EVENT, dtype=dtype)


def test_cox_hand_computed_with_tie_and_censored_rows() -> None:
    """Risk sets {j : t_j >= t_i} (Breslow), written as sums of exp(r_j):
    row 0 (t = 1, event):    all five rows        2 + 1 + 3 + 2 + 1 = 9  -> log 9 - log 2
    row 1 (t = 3, event):    rows 1, 2, 3         1 + 3 + 2 = 6          -> log 6 - log 1
    row 2 (t = 3, event):    rows 1, 2, 3 (tied)  6                      -> log 6 - log 3
    rows 3, 4 (censored):    no term
    sum = log(9 * 6 * 6 / (2 * 1 * 3)) = log 54, divided by the 5 rows: log(54) / 5 = 0.79780."""
    risk, time, event = _cox_rows()
    assert float(cox_partial_nll(risk, time, event)) == pytest.approx(math.log(54) / 5, rel=1e-12)
    # Breslow's risk sets do not depend on the order of the rows
    perm = torch.tensor([3, 2, 4, 0, 1])
    value = cox_partial_nll(risk[perm], time[perm], event[perm])
    assert float(value) == pytest.approx(math.log(54) / 5, rel=1e-12)


def test_cox_matches_flamby_when_no_times_tie() -> None:
    """FLamby's loss (fed_tcga_brca/loss.py): sort by decreasing time, row i's risk set is the rows
    sorted before it and itself, events only, mean over every row of the batch."""
    gen = torch.Generator().manual_seed(0)
    risk = torch.randn(40, generator=gen, dtype=torch.float64)
    time = torch.randperm(40, generator=gen).to(torch.float64)
    event = (torch.rand(40, generator=gen) < 0.4).to(torch.float64)
    order = torch.argsort(time, descending=True)
    s, d = risk[order], event[order]
    terms = torch.stack([torch.logsumexp(s[: i + 1], 0) - s[i] for i in range(40)])
    flamby = (terms * d).mean()
    torch.testing.assert_close(cox_partial_nll(risk, time, event), flamby, rtol=1e-12, atol=0)


def test_cox_matches_pairwise_reference_with_many_ties() -> None:
    gen = torch.Generator().manual_seed(1)
    risk = 3.0 * torch.randn(60, generator=gen, dtype=torch.float64)
    time = torch.randint(0, 8, (60,), generator=gen).to(torch.float64)  # many ties
    event = (torch.rand(60, generator=gen) < 0.5).to(torch.float64)
    at_risk = time[None, :] >= time[:, None]
    log_sets = torch.logsumexp(risk[None, :].masked_fill(~at_risk, -math.inf), dim=1)
    expected = (event * (log_sets - risk)).sum() / 60
    torch.testing.assert_close(cox_partial_nll(risk, time, event), expected, rtol=1e-12, atol=0)


def test_cox_without_events_is_zero_with_a_finite_gradient() -> None:
    risk = torch.tensor([0.3, -2.0, 5.0], requires_grad=True)
    loss = cox_partial_nll(risk, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    assert float(loss.detach()) == 0.0
    torch.autograd.backward(loss)
    assert risk.grad is not None and torch.equal(risk.grad, torch.zeros(3))
    empty = torch.zeros(0, requires_grad=True)
    assert float(cox_partial_nll(empty, torch.zeros(0), torch.zeros(0)).detach()) == 0.0


@pytest.mark.parametrize("shift", [-50.0, 3.0, 1000.0])
def test_cox_is_invariant_to_a_constant_added_to_every_risk(shift: float) -> None:
    risk, time, event = _cox_rows()
    base = cox_partial_nll(risk, time, event)
    torch.testing.assert_close(cox_partial_nll(risk + shift, time, event), base, rtol=1e-12, atol=0)
    # float32 too: exp(1000) overflows, the log-sum-exp does not (r + 1000 keeps ~4 decimals)
    r32, t32, e32 = _cox_rows(torch.float32)
    shifted = cox_partial_nll(r32 + shift, t32, e32)
    assert torch.isfinite(shifted)
    assert float(shifted) == pytest.approx(math.log(54) / 5, abs=5e-4)


def test_cox_gradcheck() -> None:
    gen = torch.Generator().manual_seed(2)
    risk = torch.randn(12, generator=gen, dtype=torch.float64, requires_grad=True)
    time = torch.tensor([1, 2, 2, 3, 5, 5, 5, 6, 7, 8, 8, 9], dtype=torch.float64)
    event = torch.tensor([1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: cox_partial_nll(r, time, event), (risk,))


def test_cox_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="1-D tensors of equal length"):
        cox_partial_nll(torch.zeros(3, 1), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="1-D tensors of equal length"):
        cox_partial_nll(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def _lifelines_reference(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """lifelines.utils.concordance._concordance_summary_statistics with predicted = -risk, written
    out: sweep the exit times upwards; at each time the events are compared with the pool of
    earlier events first, then join the pool; the censored rows of that time are compared with
    the pool (which now holds the events of the same time) and never join it."""
    pred = -risk
    died = event == 1
    d_order, c_order = np.argsort(time[died]), np.argsort(time[~died])
    died_t, died_p = time[died][d_order], pred[died][d_order]
    cens_t, cens_p = time[~died][c_order], pred[~died][c_order]
    pool: list[float] = []
    pairs = correct = tied = 0.0
    ci = di = 0

    def batch(times: np.ndarray, preds: np.ndarray, start: int) -> int:
        nonlocal pairs, correct, tied
        end = start
        while end < len(times) and times[end] == times[start]:
            end += 1
        for p in preds[start:end]:
            pairs += len(pool)
            correct += sum(q < p for q in pool)
            tied += sum(q == p for q in pool)
        return end

    while ci < len(cens_t) or di < len(died_t):
        if ci < len(cens_t) and (di == len(died_t) or died_t[di] > cens_t[ci]):
            ci = batch(cens_t, cens_p, ci)
        else:
            end = batch(died_t, died_p, di)
            pool.extend(died_p[di:end])
            di = end
    return (correct + 0.5 * tied) / pairs


def test_c_index_hand_computed_with_ties_and_censoring() -> None:
    """Comparable pairs (i, j): i an event and t_i < t_j, or t_i = t_j with j censored.
    row 0 (t 1, r .9) vs rows 1-5 (r .5 .5 .7 .1 .7): 5 concordant
    row 2 (t 2, r .5) vs row 1 (t 2, censored, r .5): tie, 1/2; vs 3 (.7): no; 4 (.1): yes;
                                                         5 (.7): no
    row 3 (t 3, r .7) vs row 5 (t 4, r .7): tie, 1/2; vs row 4 (t 3, event): not comparable
    row 4 (t 3, r .1) vs row 5 (r .7): no
    rows 1 and 5 are censored: they never come first.
    (5 + 1 + 1/2 + 1/2 + 0) / (5 + 4 + 1 + 1) = 7 / 11."""
    time = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 4.0])
    event = np.array([1, 0, 1, 1, 1, 0])
    risk = np.array([0.9, 0.5, 0.5, 0.7, 0.1, 0.7])
    assert c_index(time, event, risk) == pytest.approx(7 / 11, abs=1e-15)
    assert _lifelines_reference(time, event, risk) == pytest.approx(7 / 11, abs=1e-15)


def test_c_index_perfect_reversed_and_constant() -> None:
    time = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    event = np.array([1, 1, 0, 1, 1])
    assert c_index(time, event, -time) == 1.0  # the shorter the time, the higher the risk
    assert c_index(time, event, time) == 0.0
    assert c_index(time, event, np.zeros(5)) == 0.5


def test_c_index_nan_without_comparable_pairs() -> None:
    assert math.isnan(c_index([1.0, 2.0, 3.0], [0, 0, 0], [0.1, 0.2, 0.3]))  # all censored
    assert math.isnan(c_index([2.0, 2.0, 1.0], [1, 1, 0], [0.1, 0.2, 0.3]))  # tied events only
    assert c_index([1.0, 1.0], [1, 0], [0.2, 0.1]) == 1.0  # censored at the event's time: longer


@pytest.mark.parametrize("seed", range(6))
def test_c_index_matches_lifelines_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 80
    time = rng.integers(0, 15, n).astype(np.float64)  # many tied times
    event = (rng.random(n) < 0.4).astype(np.int64)
    risk = rng.integers(0, 6, n) / 5.0  # many tied risks
    assert c_index(time, event, risk) == pytest.approx(
        _lifelines_reference(time, event, risk), abs=1e-12
    )


def test_c_index_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        c_index([1.0, 2.0], [1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal, non-empty"):
        c_index([], [], [])
    with pytest.raises(ValueError, match="only 0"):
        c_index([1.0, 2.0], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        c_index([1.0, 2.0], [1, 1], [0.1, math.nan])
