"""The server's step of a deployed round: check every committed update, drop the bad ones with a
reason, and aggregate the rest into the next prior (eq. 9) with their weights on record.

Pure: it works on manifests and tensor bytes already fetched; reading and writing object storage
is the caller's job (``site_tasks.aggregate``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from fedmap.algorithms.fedmap import FedMAP
from fedmap.algorithms.protocol import SiteUpdate
from fedmap.messages import Manifest, MessageError, TensorSpec, open_message
from fedmap.params import Params


@dataclass(frozen=True)
class Candidate:
    """One site's upload for the round as found in storage; either half may be missing."""

    site: str
    manifest: bytes | None
    tensors: bytes | None


@dataclass(frozen=True)
class RoundSummary:
    """What the server records about a round: who counted, with which weight, and who did not."""

    round: int
    contributed: tuple[str, ...]
    weights: Mapping[str, float]
    log_omega: Mapping[str, float]
    num_examples: Mapping[str, int]
    rejected: Mapping[str, str]
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    """Members that uploaded nothing at all for the round."""
    workers: Mapping[str, str] = field(default_factory=dict)
    """Which worker ran each contributing site's training (from its manifest), when it said."""


class NoValidUpdates(RuntimeError):
    """Every update of the round was missing or rejected, so no prior can be formed."""


def accept(candidate: Candidate, round_: int, expected: Mapping[str, TensorSpec]) -> SiteUpdate:
    """The SiteUpdate in candidate, or MessageError saying why it cannot be used."""
    if candidate.manifest is None:
        raise MessageError("tensor file without a manifest (upload never committed)")
    if candidate.tensors is None:
        raise MessageError("manifest without its tensor file")
    manifest = Manifest.from_json(candidate.manifest)
    if manifest.site != candidate.site:
        raise MessageError(
            f"manifest names site {manifest.site!r}, stored under {candidate.site!r}"
        )
    params = open_message(manifest, candidate.tensors, "update", round_, expected)
    return SiteUpdate(
        manifest.site,
        manifest.round,
        params,
        manifest.num_examples,
        manifest.log_omega,
        dict(manifest.metrics),
    )


def aggregate_round(
    method: FedMAP,
    round_: int,
    candidates: Sequence[Candidate],
    expected: Mapping[str, TensorSpec],
    members: Collection[str] | None = None,
    prior: Params | None = None,
) -> tuple[Params, RoundSummary]:
    """The next prior from the updates that pass every check: ``method.aggregate``, i.e.
    mu_{t+1} = sum_k w_k theta_k, plus a learned prior's state refitted with the same w_k (eq. 9).

    ``prior`` is the current prior (mean and any ``prior/...`` state, which warm-starts the fit);
    a Gaussian prior with fixed sigma^2 needs only the accepted theta_k. ``expected`` (the model's
    tensor specs, without prior state) is what every update must match. When
    ``members`` is given, an upload from any other name is rejected (nobody outside the federation
    may move the prior) and members that uploaded nothing are listed as missing.

    Raises NoValidUpdates (with every site's reason) when none passes.
    """
    accepted: list[SiteUpdate] = []
    rejected: dict[str, str] = {}
    for candidate in sorted(candidates, key=lambda c: c.site):
        if members is not None and candidate.site not in members:
            rejected[candidate.site] = "not a member of this federation"
            continue
        try:
            accepted.append(accept(candidate, round_, expected))
        except MessageError as exc:
            rejected[candidate.site] = str(exc)
    if not accepted:
        detail = "; ".join(f"{s}: {r}" for s, r in rejected.items()) or "no uploads"
        raise NoValidUpdates(f"round {round_}: no valid update ({detail})")
    weights = method.weights(accepted)
    new_prior = method.aggregate(accepted, dict(prior or {}))
    summary = RoundSummary(
        round=round_,
        contributed=tuple(u.site for u in accepted),
        weights={u.site: float(w) for u, w in zip(accepted, weights.tolist(), strict=True)},
        log_omega={u.site: u.log_omega for u in accepted},
        num_examples={u.site: u.num_examples for u in accepted},
        rejected=rejected,
        metrics={u.site: dict(u.metrics) for u in accepted},
        missing=tuple(sorted(set(members or ()) - {c.site for c in candidates})),
        workers={u.site: w for u in accepted if (w := _worker(candidates, u.site))},
    )
    return new_prior, summary


def _worker(candidates: Sequence[Candidate], site: str) -> str:
    """The ``worker`` an accepted update's manifest names (``extra.worker``), or ''."""
    for c in candidates:
        if c.site == site and c.manifest is not None:
            return str(Manifest.from_json(c.manifest).extra.get("worker", ""))
    return ""
