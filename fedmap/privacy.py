"""Client-level differential privacy of a federation: the ``privacy`` section of the federation
file, and the accountant that turns a plan into epsilon.

The mechanism (``fedmap.dp``) runs at each site, every round: the site's step
Delta_k = theta_k - mu is clipped to norm C, weighted by a_k = exp(clamp(log omega_k, -R, 0)),
and released with Gaussian noise,

    N_k = a_k clip_C(Delta_k) + N(0, z^2 C^2 I),     D_k = a_k + N(0, z^2)

(``weights: equal``, the default under DP, sends no D_k: a_k = 1 and the denominator is the
count of sites, fixed in advance). Nothing else the site computed leaves it: no metrics, no N_k, no log omega in the clear.
Under add/remove of a site's whole dataset, (N_k, D_k) / (C, 1) moves by at most sqrt(2) (1 for
``equal``), so one round is the Gaussian mechanism with noise multiplier z / sqrt(2) (z), and T
rounds compose in the accountant. Every site takes part in every round (q = 1, no amplification:
the centre sees who sent). The guarantee holds for each message on its own, so it does not rest
on the centre's honesty nor on secure aggregation, which hides even the noisy N_k from it.

Accounting is Opacus's (RDP by default, or PRV); this module only imports it when asked for a
number, so the schema, which imports :class:`Privacy`, stays standard-library only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Accountant = Literal["rdp", "prv"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
Weights = Literal["auto", "omega", "equal"]
SECURE = ("none", "ckks")


class BudgetExceeded(ValueError):
    """A plan whose epsilon is above the federation's budget; the message has the numbers."""


@dataclass(frozen=True)
class Privacy:
    """``privacy``: the budget and the mechanism of client-level DP, and secure aggregation."""

    epsilon: float = math.inf
    """The budget epsilon(delta) over every run of the federation; inf: no differential privacy."""
    delta: float = 1e-5
    noise_multiplier: float | None = None
    """z; None: the smallest z that fits the planned rounds into ``epsilon`` (``noise_for``)."""
    clip: float = 1.0
    """C: the largest ||theta_k - mu|| a site sends; larger steps are scaled down to C."""
    weights: Weights = "auto"
    """``omega``: a_k from the site's clamped log omega, released (with noise under DP);
    ``equal``: a_k = 1, weights fixed in advance (one Gaussian mechanism per round instead of
    two); ``auto``: omega without DP, equal with it. Under DP a small consortium cannot afford
    omega: the noise on sum_k D_k is of the order of the sum itself (docs/privacy.md)."""
    log_omega_range: float = 5.0
    """R: log omega is clamped to [-R, 0] before a_k = exp(log omega) is formed, so a_k is in
    [exp(-R), 1]: one site moves the denominator by at most 1, and none weighs more than
    exp(R) times another (what ``bounds.max_weight`` does in the clear)."""
    accountant: Accountant = "rdp"
    secure_aggregation: str = "none"
    """``ckks``: each site sends Enc(N_k) and Enc(D_k) under the sites' CKKS key (TenSEAL); the
    centre adds ciphertexts and never sees one site's update (``fedmap.secure``)."""
    register_personal: tuple[str, ...] = ()
    """Sites that opt in to registering their personalised theta_k in the centre's MLflow; under
    DP or secure aggregation no other site's model leaves it."""

    @property
    def dp(self) -> bool:
        return math.isfinite(self.epsilon)

    @property
    def secure(self) -> bool:
        return self.secure_aggregation == "ckks"

    @property
    def active(self) -> bool:
        """Whether updates travel as (N_k, D_k) rather than (theta_k, log omega_k)."""
        return self.dp or self.secure

    @property
    def weighting(self) -> str:
        """The weights in force: omega or equal (``auto`` resolved)."""
        if self.weights == "auto":
            return "equal" if self.dp else "omega"
        return self.weights

    @property
    def mechanisms(self) -> int:
        """Gaussian mechanisms of equal multiplier a site releases per round: N_k, and D_k."""
        return 2 if self.weighting == "omega" else 1


def check_privacy(value: Privacy) -> Privacy:
    """The section with every rule checked; ValueError naming the key (the schema adds the file)."""

    def number(key: str, ok: Callable[[float], bool], rule: str) -> None:
        got = getattr(value, key)
        if isinstance(got, bool) or not isinstance(got, int | float) or not ok(got):
            raise ValueError(f"privacy.{key} must be {rule}, got {got!r}")

    number("epsilon", lambda v: v > 0, "a positive number (.inf: no differential privacy)")
    number("delta", lambda v: 0 < v < 1, "in (0, 1)")
    number("clip", lambda v: 0 < v < math.inf, "a positive number")
    number("log_omega_range", lambda v: 0 < v <= 50, "in (0, 50]")
    if value.noise_multiplier is not None:
        number("noise_multiplier", lambda v: 0 < v < math.inf, "a positive number")
    if value.weights not in ("auto", "omega", "equal"):
        raise ValueError(f"privacy.weights must be auto, omega or equal, got {value.weights!r}")
    if value.accountant not in ACCOUNTANTS:
        raise ValueError(f"privacy.accountant must be rdp or prv, got {value.accountant!r}")
    if value.secure_aggregation not in SECURE:
        raise ValueError(
            f"privacy.secure_aggregation must be none or ckks, got {value.secure_aggregation!r}"
        )
    if not value.dp and value.noise_multiplier is not None:
        raise ValueError(
            "privacy.noise_multiplier needs privacy.epsilon (the budget it is held to)"
        )
    return value


@dataclass(frozen=True)
class Spent:
    """One stretch of rounds a site released under one noise multiplier (a run, or part of one)."""

    rounds: int
    noise_multiplier: float
    """z of each of its Gaussian mechanisms (N_k and, with ``omega``, D_k)."""
    mechanisms: int = 2
    sample_rate: float = 1.0


def _accountant(name: str) -> Any:
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if name == "rdp" else PRVAccountant()


def epsilon(history: Sequence[Spent], delta: float, accountant: str = "rdp") -> float:
    """epsilon(delta) of the composition of every stretch in history (0 for none).

    A round of m equal Gaussian mechanisms with multiplier z, each of sensitivity 1 after
    normalising, is one Gaussian mechanism of L2 sensitivity sqrt(m): multiplier z / sqrt(m).
    """
    steps = [
        (s.noise_multiplier / math.sqrt(s.mechanisms), s.sample_rate, s.rounds) for s in history
    ]
    steps = [s for s in steps if s[2] > 0]
    if not steps:
        return 0.0
    account = _accountant(accountant)
    account.history = steps
    with (
        warnings.catch_warnings()
    ):  # PRV at q = 1: log(0) in an unused branch; RDP: optimal order at the edge
        warnings.simplefilter("ignore")
        return float(account.get_epsilon(delta))


def plan_epsilon(privacy: Privacy, rounds: int, z: float | None = None) -> float:
    """epsilon of ``rounds`` rounds under the section's mechanism (z: its noise multiplier)."""
    multiplier = z if z is not None else noise_multiplier(privacy, rounds)
    return epsilon(
        [Spent(rounds, multiplier, privacy.mechanisms)], privacy.delta, privacy.accountant
    )


def noise_for(
    target: float,
    delta: float,
    steps: int,
    sample_rate: float = 1.0,
    accountant: str = "rdp",
    mechanisms: int = 1,
) -> float:
    """The smallest z (to 0.01 in epsilon) with epsilon(z, q, steps, delta) <= target."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            z = get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        except ValueError as exc:  # Opacus: "The privacy budget is too low."
            raise ValueError(
                f"no noise multiplier fits epsilon = {target:g} at delta = {delta:g} over "
                f"{steps} rounds at q = {sample_rate:g} ({accountant}): {exc} Raise the budget "
                "or plan fewer rounds"
            ) from exc
    return float(z) * math.sqrt(mechanisms)


def noise_multiplier(privacy: Privacy, rounds: int) -> float:
    """z of the section, or the one that spends exactly the budget over ``rounds`` rounds."""
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    return noise_for(
        privacy.epsilon, privacy.delta, rounds, 1.0, privacy.accountant, privacy.mechanisms
    )


def affordable_rounds(privacy: Privacy, spent: Sequence[Spent], rounds: int, z: float) -> int:
    """The most rounds t <= rounds with epsilon(spent + t rounds at z) <= the budget.

    Raises BudgetExceeded, with the numbers, when the plan alone (``rounds`` at z, nothing spent
    before) would exceed the budget: such a run is refused before round 1.
    """
    alone = plan_epsilon(privacy, rounds, z)
    if alone > privacy.epsilon * (1 + 1e-9):
        raise BudgetExceeded(
            f"the plan exceeds the privacy budget: {rounds} rounds at noise multiplier {z:.4g} "
            f"give epsilon = {alone:.4g} at delta = {privacy.delta:g} ({privacy.accountant}), "
            f"above privacy.epsilon = {privacy.epsilon:g}; raise noise_multiplier to "
            f"{noise_multiplier(_budget_only(privacy), rounds):.4g}, or plan fewer rounds"
        )
    low, high = 0, rounds
    while low < high:  # epsilon grows with the rounds: the last t that fits
        mid = (low + high + 1) // 2
        history = [*spent, Spent(mid, z, privacy.mechanisms)]
        fits = epsilon(history, privacy.delta, privacy.accountant) <= privacy.epsilon * (1 + 1e-9)
        low, high = (mid, high) if fits else (low, mid - 1)
    return low


def _budget_only(privacy: Privacy) -> Privacy:
    return Privacy(
        epsilon=privacy.epsilon,
        delta=privacy.delta,
        weights=privacy.weights,
        accountant=privacy.accountant,
    )
