"""Survival analysis: the Cox partial likelihood a site minimises and the C-index it is scored by.

A survival target is a pair (t_i, delta_i) per row: the follow-up time and the event indicator
(1 = event observed at t_i, 0 = censored at t_i). The model outputs the log relative risk
r_i = phi(x_i; theta) of the proportional-hazards model h(t | x_i) = h_0(t) exp(r_i) (Cox 1972);
the baseline hazard h_0 cancels from the partial likelihood, so the model has no intercept to learn.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor


def cox_partial_nll(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """-(1/N) log PL(r) = (1/N) sum_i delta_i [log sum_{j : t_j >= t_i} exp(r_j) - r_i].

    Cox's negative log partial likelihood with Breslow's handling of tied times: every row whose
    time equals t_i is in the risk set of row i, and tied events each contribute their own term.
    The sum is divided by N, all rows (censored ones included), so it is a per-sample mean like the
    binary cross-entropy: N times it is the whole negative log partial likelihood, and FedMAP's
    log omega_k = -mean NLL - R / N_k (eq. 8) stays a per-sample geometric mean. FLamby's loss
    (fed_tcga_brca/loss.py) divides by all rows of the batch too, but its risk set of row i holds
    only the tied rows sorted before it, so the two agree whenever no two times in the batch are
    equal.

    The log-sum-exp over each risk set is one cumulative log-sum-exp over the rows sorted by
    decreasing time: O(N log N), stable for risks of any size, and unchanged when a constant is
    added to every r_i. Rows without an event contribute 0 (with a zero gradient, never NaN); so
    does an empty batch.
    """
    if risk.ndim != 1 or risk.shape != time.shape or risk.shape != event.shape:
        raise ValueError(
            "need one risk, time and event per row (three 1-D tensors of equal length), got "
            f"{tuple(risk.shape)}, {tuple(time.shape)} and {tuple(event.shape)}"
        )
    n = risk.shape[0]
    if n == 0:
        return risk.sum()
    order = torch.argsort(time, descending=True, stable=True)
    r, t, d = risk[order], time[order], event[order].to(risk.dtype)
    log_cumulative = torch.logcumsumexp(r, dim=0)
    # Breslow: the risk set of row i runs to the last row whose time equals t_i
    _, counts = torch.unique_consecutive(t, return_counts=True)
    last_tied = torch.repeat_interleave(torch.cumsum(counts, dim=0) - 1, counts)
    return torch.sum(d * (log_cumulative[last_tied] - r)) / n


def _survival_arrays(
    time: ArrayLike, event: ArrayLike, risk: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event, dtype=np.float64).ravel()
    r = np.asarray(risk, dtype=np.float64).ravel()
    if not (t.shape == e.shape == r.shape) or t.size == 0:
        raise ValueError(
            f"need equal, non-empty time, event and risk arrays, got {t.shape}, {e.shape}, {r.shape}"
        )
    if np.isnan(t).any() or np.isnan(r).any():
        raise ValueError("time and risk must not hold NaN")
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError("event must hold only 0 (censored) and 1 (event observed)")
    return t, e.astype(bool), r


def c_index(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> float:
    """Harrell's C: sum over comparable pairs (i, j) of [1(r_i > r_j) + 1/2 1(r_i = r_j)] / #pairs.

    (i, j) is comparable when i's event is observed first: delta_i = 1 and t_i < t_j, or
    delta_i = 1, delta_j = 0 and t_i = t_j (a row censored at the time of an event is taken to
    outlive it). Two events at the same time are not comparable, nor is a pair whose earlier time
    is censored. This is ``lifelines.utils.concordance_index(t, -r, delta)``, the C-index FLamby
    reports; NaN when no pair is comparable (where lifelines raises ZeroDivisionError).
    O(E N) time and memory with E the number of events.
    """
    t, observed, r = _survival_arrays(time, event, risk)
    first_t, first_r = t[observed][:, None], r[observed][:, None]
    comparable = (first_t < t) | ((first_t == t) & ~observed)
    pairs = int(comparable.sum())
    if pairs == 0:
        return float("nan")
    concordant = int(np.sum(comparable & (first_r > r)))
    tied = int(np.sum(comparable & (first_r == r)))
    return (concordant + 0.5 * tied) / pairs
