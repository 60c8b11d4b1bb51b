"""The server's step of a deployed round: check every committed update, drop the bad ones with a
reason, and aggregate the rest into the next prior (eq. 9) with their weights on record.

Pure: it works on manifests and tensor bytes handed to it one upload at a time; reading and
writing object storage is the caller's job (``site_tasks.centre.server.aggregate``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from fedmap.aggregation import StreamingMean
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


@dataclass(frozen=True)
class _Counted:
    """What the summary keeps of an accepted update once its tensors are folded in."""

    log_omega: float
    num_examples: int
    metrics: dict[str, float]
    worker: str


class NoValidUpdates(RuntimeError):
    """Every update of the round was missing or rejected, so no prior can be formed."""


def accept(candidate: Candidate, round_: int, expected: Mapping[str, TensorSpec]) -> SiteUpdate:
    """The SiteUpdate in candidate, or MessageError saying why it cannot be used."""
    return _open(candidate, round_, expected)[0]


def _open(
    candidate: Candidate, round_: int, expected: Mapping[str, TensorSpec]
) -> tuple[SiteUpdate, Manifest]:
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
    update = SiteUpdate(
        manifest.site,
        manifest.round,
        params,
        manifest.num_examples,
        manifest.log_omega,
        dict(manifest.metrics),
    )
    return update, manifest


def aggregate_round(
    method: FedMAP,
    round_: int,
    candidates: Iterable[Candidate],
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

    It streams: each candidate is checked, folded into ``method.stream`` and dropped before the
    next is taken, so with a generator that reads each upload only when asked (as
    ``site_tasks.centre.server.aggregate`` does) the server holds one update and O(model) running
    sums at a time, however many sites there are. The prior does not depend on the order of the
    candidates (to rounding; integer buffers come from the first accepted), and the summary lists
    sites by name. Raises NoValidUpdates (with every site's reason) when none passes.
    """
    seen: set[str] = set()
    rejected: dict[str, str] = {}
    accepted: dict[str, _Counted] = {}
    stream: StreamingMean | None = None
    for candidate in candidates:
        seen.add(candidate.site)
        if members is not None and candidate.site not in members:
            rejected[candidate.site] = "not a member of this federation"
            continue
        try:
            update, manifest = _open(candidate, round_, expected)
        except MessageError as exc:
            rejected[candidate.site] = str(exc)
            continue
        if stream is None:
            stream = method.stream(update.params)
        stream.add(update.site, update.params, update.log_omega, update.num_examples)
        worker = str(manifest.extra.get("worker", ""))
        accepted[update.site] = _Counted(
            update.log_omega, update.num_examples, dict(update.metrics), worker
        )
    rejected = dict(sorted(rejected.items()))
    if stream is None:
        detail = "; ".join(f"{s}: {r}" for s, r in rejected.items()) or "no uploads"
        raise NoValidUpdates(f"round {round_}: no valid update ({detail})")
    new_prior = method.aggregate_stream(stream, dict(prior or {}))
    weights = stream.weights()
    sites = sorted(accepted)
    summary = RoundSummary(
        round=round_,
        contributed=tuple(sites),
        weights={s: weights[s] for s in sites},
        log_omega={s: accepted[s].log_omega for s in sites},
        num_examples={s: accepted[s].num_examples for s in sites},
        rejected=rejected,
        metrics={s: accepted[s].metrics for s in sites},
        missing=tuple(sorted(set(members or ()) - seen)),
        workers={s: accepted[s].worker for s in sites if accepted[s].worker},
    )
    return new_prior, summary
