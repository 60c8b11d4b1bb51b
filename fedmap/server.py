"""The server's step of a deployed round: check every committed update, drop the bad ones with a
reason, and aggregate the rest into the next prior (eq. 9) with their weights on record.

Pure: it works on manifests and tensor bytes handed to it one upload at a time; reading and
writing object storage is the caller's job (``site_tasks.centre.server.aggregate``).

Two passes. The first reads only the manifests and checks what they claim: the site, kind,
federation, run and round, the signature under the site's enrolled key (``Checks``), log omega
and N_k. The weights follow from those alone: w = softmax(log omega), capped per site
(``fedmap.bounds.cap_weights``). The second reads each tensor file once, checks it against its
signed hash and the model's specs and its step ||theta_k - mu|| against the bound, and folds it
into the running mean with its fixed weight. Should a tensor file fail there, the weights are
formed again without it and the second pass repeats, so the cap holds among the sites accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from fedmap.aggregation import StreamingMean
from fedmap.algorithms.fedmap import FedMAP
from fedmap.algorithms.protocol import SiteUpdate
from fedmap.bounds import cap_weights, log_weight, softmax, update_norm
from fedmap.messages import Manifest, MessageError, TensorSpec, open_message
from fedmap.params import Params
from fedmap.schema import Bounds
from fedmap.signing import Keyring, SignatureError

Tensors = bytes | Callable[[], bytes | None] | None


@dataclass(frozen=True)
class Candidate:
    """One site's upload for the round as found in storage; either half may be missing. The
    tensor file may be given as a function that reads it, called only once the manifest passed."""

    site: str
    manifest: bytes | None
    tensors: Tensors

    def read(self) -> bytes | None:
        return self.tensors() if callable(self.tensors) else self.tensors


@dataclass(frozen=True)
class Checks:
    """What a deployed round checks beyond the message's own integrity (docs/security.md)."""

    federation: str
    run: str
    keyring: Keyring
    """Every update must be signed by its site's active, enrolled key."""
    bounds: Bounds = field(default_factory=Bounds)
    accepted: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """site -> (nonce, tensors' SHA-256) of the update the centre accepted for this round before
    (its audit log): any other update from the same site for the same round is a duplicate."""


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
    capped: tuple[str, ...] = ()
    """Sites whose weight the cap (``bounds.max_weight``) lowered."""
    update_norms: Mapping[str, float] = field(default_factory=dict)
    """||theta_k - mu|| of every accepted update (what ``bounds.max_update_norm`` is set against)."""
    nonces: Mapping[str, str] = field(default_factory=dict)
    """The nonce of every accepted update: what a later attempt of the round must match."""
    sha256: Mapping[str, str] = field(default_factory=dict)
    """The SHA-256 of every accepted update's tensor file (checked against its signed manifest)."""


class NoValidUpdates(RuntimeError):
    """Every update of the round was missing or rejected, so no prior can be formed."""


def screen(candidate: Candidate, round_: int, checks: Checks | None = None) -> Manifest:
    """The candidate's manifest if everything it claims passes (first pass), else MessageError."""
    if candidate.manifest is None:
        raise MessageError("tensor file without a manifest (upload never committed)")
    if candidate.tensors is None:
        raise MessageError("manifest without its tensor file")
    manifest = Manifest.from_json(candidate.manifest)
    if manifest.site != candidate.site:
        raise MessageError(
            f"manifest names site {manifest.site!r}, stored under {candidate.site!r}"
        )
    if manifest.kind != "update":
        raise MessageError(f"manifest is a {manifest.kind}, expected a update")
    if checks is not None:
        try:
            checks.keyring.check(
                manifest.site, manifest.key_id, manifest.body(), manifest.signature
            )
        except SignatureError as exc:
            raise MessageError(str(exc)) from exc
        claimed = (manifest.federation, manifest.run)
        if claimed != (checks.federation, checks.run):
            raise MessageError(
                f"replay: signed for {claimed[0]}/{claimed[1]}, not {checks.federation}/{checks.run}"
            )
    if manifest.round != round_:
        raise MessageError(f"replay: manifest is for round {manifest.round}, not round {round_}")
    if not math.isfinite(manifest.log_omega) or manifest.log_omega > 0:
        raise MessageError(f"log omega must be finite and <= 0, got {manifest.log_omega}")
    if manifest.num_examples <= 0:
        raise MessageError(f"number of examples must be positive, got {manifest.num_examples}")
    if checks is not None:
        low = checks.bounds.min_log_omega
        if manifest.log_omega < low:
            raise MessageError(
                f"log omega {manifest.log_omega:.4g} is below bounds.min_log_omega {low}"
            )
        if not manifest.nonce:
            raise MessageError("signed manifest without a nonce")
        before = checks.accepted.get(manifest.site)
        if before is not None and before != (manifest.nonce, manifest.sha256):
            raise MessageError(
                f"duplicate: an update with nonce {before[0][:12]} and tensors {before[1][:12]} "
                f"was already accepted from {manifest.site} for round {round_}"
            )
    return manifest


def admit(
    candidate: Candidate,
    round_: int,
    members: Collection[str] | None = None,
    checks: Checks | None = None,
) -> Manifest:
    """``screen``, after the membership check: an upload from a name outside ``members`` is
    rejected (nobody outside the federation may move the prior)."""
    if members is not None and candidate.site not in members:
        raise MessageError("not a member of this federation")
    return screen(candidate, round_, checks)


Provenance = tuple[dict[str, str], dict[str, str], dict[str, str]]


def provenance(accepted: Mapping[str, Manifest]) -> Provenance:
    """The summary's record of who sent each accepted update: the worker that ran it (when its
    manifest said), its nonce and its tensors' SHA-256, each by site."""
    sites = sorted(accepted)
    return (
        {s: str(w) for s in sites if (w := accepted[s].extra.get("worker", ""))},
        {s: accepted[s].nonce for s in sites if accepted[s].nonce},
        {s: accepted[s].sha256 for s in sites},
    )


def accept(candidate: Candidate, round_: int, expected: Mapping[str, TensorSpec]) -> SiteUpdate:
    """The SiteUpdate in candidate, or MessageError saying why it cannot be used."""
    manifest = screen(candidate, round_)
    blob = candidate.read()
    if blob is None:
        raise MessageError("manifest without its tensor file")
    params = open_message(manifest, blob, "update", round_, expected)
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
    candidates: Iterable[Candidate],
    expected: Mapping[str, TensorSpec],
    members: Collection[str] | None = None,
    prior: Params | None = None,
    checks: Checks | None = None,
) -> tuple[Params, RoundSummary]:
    """The next prior from the updates that pass every check: ``method.aggregate``, i.e.
    mu_{t+1} = sum_k w_k theta_k, plus a learned prior's state refitted with the same w_k (eq. 9).

    ``prior`` is the current prior (mean and any ``prior/...`` state, which warm-starts the fit
    and is what ||theta_k - mu|| is measured from). ``expected`` (the model's tensor specs, without
    prior state) is what every update must match. When ``members`` is given, an upload from any
    other name is rejected (nobody outside the federation may move the prior) and members that
    uploaded nothing are listed as missing. ``checks`` (a deployment always gives them) adds the
    signature, replay and duplicate checks and the bounds: w_k capped at ``max_weight``, log
    omega at least ``min_log_omega``, and ||theta_k - mu|| at most ``max_update_norm``.

    It streams: manifests are small and kept, each tensor file is read, checked, folded into
    ``method.stream`` and dropped before the next, so the server holds one update and O(model)
    running sums at a time. The prior does not depend on the order of the candidates (to
    rounding). Raises NoValidUpdates (with every site's reason) when none passes.
    """
    seen: set[str] = set()
    rejected: dict[str, str] = {}
    screened: list[tuple[Candidate, Manifest]] = []
    for candidate in candidates:
        seen.add(candidate.site)
        try:
            screened.append((candidate, admit(candidate, round_, members, checks)))
        except MessageError as exc:
            rejected[candidate.site] = str(exc)
    mu = prior or {}
    while True:
        outcome = _fold(method, round_, screened, expected, mu, checks, rejected)
        if outcome is not None:
            break
        screened = [(c, m) for c, m in screened if c.site not in rejected]
    new_prior, weights, capped, norms = outcome
    accepted = {m.site: m for _, m in screened if m.site not in rejected}
    sites = sorted(accepted)
    workers, nonces, sha256 = provenance(accepted)
    summary = RoundSummary(
        round=round_,
        contributed=tuple(sites),
        weights={s: weights[s] for s in sites},
        log_omega={s: accepted[s].log_omega for s in sites},
        num_examples={s: accepted[s].num_examples for s in sites},
        rejected=dict(sorted(rejected.items())),
        metrics={s: dict(accepted[s].metrics) for s in sites},
        missing=tuple(sorted(set(members or ()) - seen)),
        capped=tuple(sorted(capped)),
        update_norms={s: norms[s] for s in sites if s in norms},
        workers=workers,
        nonces=nonces,
        sha256=sha256,
    )
    return new_prior, summary


Folded = tuple[Params, dict[str, float], list[str], dict[str, float]]
"""The new prior, w_k by site, the sites the cap lowered, and ||theta_k - mu|| by site."""


def _fold(
    method: FedMAP,
    round_: int,
    screened: list[tuple[Candidate, Manifest]],
    expected: Mapping[str, TensorSpec],
    mu: Params,
    checks: Checks | None,
    rejected: dict[str, str],
) -> Folded | None:
    """The second pass: every screened update's tensors read, checked and folded in with its
    (capped) weight. None when one fails here (it joins ``rejected``: the caller re-forms the
    weights without it and folds again)."""
    if not screened:
        detail = "; ".join(f"{s}: {r}" for s, r in sorted(rejected.items())) or "no uploads"
        raise NoValidUpdates(f"round {round_}: no valid update ({detail})")
    # finite: screen rejects a non-finite log omega, and N_k > 0
    logs = [log_weight(m.log_omega, m.num_examples, method.weighting) for _, m in screened]
    plain = softmax(logs)
    weights = cap_weights(plain, checks.bounds.max_weight) if checks is not None else plain
    capped = [
        m.site for (_, m), w, p in zip(screened, weights, plain, strict=True) if w < p - 1e-12
    ]
    stream: StreamingMean | None = None
    norms: dict[str, float] = {}
    for (candidate, manifest), w in zip(screened, weights, strict=True):
        try:
            blob = candidate.read()
            if blob is None:
                raise MessageError("its tensor file disappeared after its manifest was read")
            params = open_message(manifest, blob, "update", round_, expected)
            if mu:
                norms[manifest.site] = norm = update_norm(params, mu)
                bound = checks.bounds.max_update_norm if checks is not None else math.inf
                if norm > bound:
                    raise MessageError(
                        f"update too large: ||theta - mu|| = {norm:.4g} > bounds.max_update_norm {bound}"
                    )
        except MessageError as exc:
            rejected[manifest.site] = str(exc)
            return None
        if stream is None:
            stream = method.stream(params, weighting="omega")
        stream.add(
            manifest.site, params, math.log(w) if w > 0 else -math.inf, manifest.num_examples
        )
        del params, blob
    assert stream is not None
    new_prior = method.aggregate_stream(stream, dict(mu))
    by_site = {m.site: w for (_, m), w in zip(screened, weights, strict=True)}
    return new_prior, by_site, capped, norms
