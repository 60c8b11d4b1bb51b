"""What the coordinating centre runs around the rounds: ``init`` writes the first prior and
``aggregate`` turns the committed updates of round t into the prior of round t + 1.

A prior is the mean mu under the model's keys; with a learned prior (``algorithm.prior``
diagonal or icnn) the prior of round t + 1 also holds the state the server fitted to the sites'
theta_k, under ``prior/...`` keys, so the sites of the next round train under the learned prior.
Round 1 (and a warm start) is mu alone: every tensor falls back to N(mu, sigma^2)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fedmap.audit import AuditLog
from fedmap.initialisation import initialise
from fedmap.messages import Manifest, encode_params, make_manifest, sha256_hex
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.server import Candidate, Checks, RoundSummary, aggregate_round
from fedmap.signing import CENTRE
from site_tasks import privacy, trust
from site_tasks.centre import private
from site_tasks.federation import FederationConfig
from site_tasks.site.train import fetch_prior, model_specs
from site_tasks.storage import Keys, ObjectStore, first, versions

log = logging.getLogger("site_tasks")


def _commit_prior(
    config: FederationConfig, store: ObjectStore, round_: int, params: Params, extra: dict[str, Any]
) -> Manifest:
    """Sign the prior of round_ with the centre's key and write it (tensors, then manifest)."""
    blob = encode_params(params)
    manifest = trust.signed(
        config, CENTRE, make_manifest("prior", round_, params, blob, extra=extra)
    )
    tensors_key, manifest_key = Keys.of(config).prior(round_)
    audited = trust.audited(config, CENTRE, store)
    # the manifest is the commit marker and write-once; a tensor file without one is an
    # unfinished write that a retry may replace (nobody reads it before its manifest)
    audited.put(tensors_key, blob, once=False)
    audited.put(manifest_key, manifest.to_json().encode())
    return manifest


def init(
    config: FederationConfig, store: ObjectStore, warm: tuple[Params, str] | None = None
) -> Manifest:
    """The prior of round 1: ``warm`` (parameters and where they came from, e.g. the registry's
    champion; its mean mu only) when given, else Algorithm 1, line 1: a randomly chosen site's
    initial model.

    The tensors are deterministic in the inputs; the manifest is signed by the centre (whose key
    is made and enrolled on first use). When the round-1 prior is already committed (a retried
    ``start``), it is left as it is: storage is write-once.
    """
    trust.enrol(config, CENTRE)
    committed = store.get(Keys.of(config).prior(1)[1])
    if committed is not None:  # a retried start: the centre's own prior, or a forgery
        manifest = Manifest.from_json(committed)
        trust.verify_prior(config, manifest)
        return manifest
    extra: dict[str, Any] = {"model": config.model.name, "n_features": config.model.n_features}
    section = config.federation.privacy
    if section.secure:
        privacy.centre_context(config)  # no public CKKS context: refused before round 1
    if section.dp:  # refused here when the plan alone is over the budget, or none is left
        extra["privacy"] = privacy.plan_run(config)
    if warm is not None:
        params, source = prior_mean(warm[0]), warm[1]
        manifest = _commit_prior(config, store, 1, params, {**extra, "warm_start_from": source})
        log.info("round 1 prior warm-started from %s", source)
        return manifest
    sites = sorted(config.sites)
    start = initialise(
        lambda: build_model(config.model.name, config.model.n_features), sites, config.seed
    )
    manifest = _commit_prior(config, store, 1, start.prior, {**extra, "seed_site": start.seed_site})
    log.info("round 1 prior seeded by %s", start.seed_site)
    return manifest


def uploads(
    store: ObjectStore, keys: Keys, round_: int, seen: dict[str, dict[str, Any]] | None = None
) -> Iterator[Candidate]:
    """Every site's upload for the round, in site order, pairing tensor files with manifests by
    site name, each read at its **first** version: what the site committed, not what it may
    have put over it since (``storage.first``; on a store without versions, the only one).
    Lazy: the listing of versions is read first (keys only), then each site's manifest when the
    next candidate is asked for, and its tensor file only when the aggregate calls for it, so a
    consumer that drops each one before taking the next holds one tensor file at a time.

    ``seen``, when given, is filled as the listing is read (at the first candidate), for the
    audit log: site -> ``manifest_key`` and ``tensors_key`` (None when absent), ``versions``
    (the most versions either file has: above 1, the site overwrote its upload, which is
    logged and ignored) and ``first_written`` (ISO time of the manifest's first version, else
    the tensor file's; None where the store does not say)."""
    prefix = keys.updates(round_)
    history = versions(store, prefix)
    found: dict[str, dict[str, str]] = {}
    for key in history:
        site, _, ext = key.removeprefix(prefix).rpartition(".")
        if ext in ("json", "safetensors") and "/" not in site:
            found.setdefault(site, {})[ext] = key
    for site, parts in sorted(found.items()):
        count = max(len(history[key]) for key in parts.values())
        if count > 1:
            log.warning(
                "round %d: %s overwrote its upload (%d versions); the first is used",
                round_,
                site,
                count,
            )
        if seen is not None:
            written = history[parts.get("json") or parts["safetensors"]][0].written
            seen[site] = {
                "manifest_key": parts.get("json"),
                "tensors_key": parts.get("safetensors"),
                "versions": count,
                "first_written": None if written is None else written.isoformat(),
            }
    for site, parts in sorted(found.items()):
        tensors = parts.get("safetensors")
        yield Candidate(
            site,
            first(store, parts["json"]) if "json" in parts else None,
            None if tensors is None else functools.partial(first, store, tensors),
        )


def collect(config: FederationConfig, store: ObjectStore, round_: int) -> list[Candidate]:
    """Every site's upload for the round at once (``uploads``, held in memory: tests, tools)."""
    return list(uploads(store, Keys.of(config), round_))


def accepted_nonces(audit: AuditLog, round_: int) -> dict[str, tuple[str, str]]:
    """site -> (nonce, tensors' SHA-256) of the update the centre accepted for round_ in an
    earlier attempt."""
    return {
        str(e["details"]["site"]): (str(e["details"]["nonce"]), str(e["sha256"]))
        for e in audit.entries()
        if e["action"] == "aggregate"
        and e["outcome"] == "accepted"
        and e.get("details", {}).get("round") == round_
    }


def record(
    audit: AuditLog, keys: Keys, summary: RoundSummary, seen: dict[str, dict[str, Any]]
) -> None:
    """One centre audit entry per upload of the round: who sent which object with which hash
    (the tensors' SHA-256 its signed manifest names), when it was first written, and whether it
    was accepted and why not; plus one entry per upload its site tried to overwrite after the
    commit (storage kept the first version, which is the one used)."""
    t = summary.round
    for site, facts in sorted(seen.items()):
        if int(facts.get("versions") or 1) > 1:
            audit.append(
                site,
                "overwrite",
                str(facts.get("manifest_key", "")),
                "",
                "ignored",
                f"{facts['versions']} versions in storage; the first is used",
                round=t,
                site=site,
            )
    for site in summary.contributed:
        audit.append(
            site,
            "aggregate",
            keys.update(t, site)[1],
            summary.sha256.get(site, ""),
            "accepted",
            round=t,
            site=site,
            nonce=summary.nonces.get(site, ""),
            first_written=seen.get(site, {}).get("first_written"),
            weight=summary.weights.get(site),
            update_norm=summary.update_norms.get(site),
        )
    for site, reason in summary.rejected.items():
        audit.append(
            site, "aggregate", keys.update(t, site)[1], "", "rejected", reason, round=t, site=site
        )


class QuorumNotMet(RuntimeError):
    """Fewer accepted updates than the federation's min_sites; names the missing sites."""


class PriorConflict(RuntimeError):
    """The next prior is already committed with other content; it is never silently replaced."""


def aggregate(config: FederationConfig, store: ObjectStore, round_: int) -> RoundSummary:
    """Check round_'s updates and write the prior of round_ + 1, then the round summary.

    The summary records every site that contributed with its weight w_k, every rejected site with
    the reason (uploads from outside the federation's tier-1 sites included), the members that sent
    nothing, and the metrics the sites reported. The updates stream (``uploads`` into
    ``fedmap.server.aggregate_round``): memory is O(model), not O(sites x model), for the
    Gaussian and diagonal priors; the ICNN prior also keeps its ``icnn_samples`` entries per
    tensor of every site (``ICNNPrior.needs``). Below the quorum (min_sites) only the summary is
    written and QuorumNotMet names the missing sites; NoValidUpdates when nothing passes at all.
    Re-running a round rewrites identical bytes; if the committed next prior differs (an update
    arrived late), PriorConflict is raised instead of replacing a prior sites may be using.
    """
    keys = Keys.of(config)
    members = [name for name, site in config.sites.items() if site.tier == 1]
    audit = trust.audit_log(config, CENTRE)
    checks = Checks(
        config.name,
        config.run,
        trust.keyring(config),
        config.federation.bounds,
        accepted_nonces(audit, round_),
    )
    # one update in memory at a time: read, checked, folded into the running sums, dropped
    seen: dict[str, dict[str, Any]] = {}
    candidates = uploads(store, keys, round_, seen)
    facts: dict[str, Any] | None = None
    if config.federation.privacy.active:  # sums of releases, never one theta_k (private.py)
        done = private.aggregate(config, store, round_, candidates, members, checks)
        new_prior, summary, extra, facts = done.prior, done.summary, done.extra, done.facts
    else:
        prior_manifest, prior = fetch_prior(config, store, round_)
        expected = model_specs(prior_manifest.tensors)  # an update is a model: mu's keys
        new_prior, summary = aggregate_round(
            config.method, round_, candidates, expected, members, prior, checks
        )
        extra = dict(prior_manifest.extra)
    record(audit, keys, summary, seen)
    for site, reason in summary.rejected.items():
        log.warning("round %d: rejected %s: %s", round_, site, reason)
    body = {**asdict(summary), "audit_head": audit.head()}
    if facts is not None:
        body["privacy"] = facts
    summary_json = (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()
    centre_store = trust.audited(config, CENTRE, store)
    if len(summary.contributed) < config.min_sites:
        centre_store.put(keys.summary(round_), summary_json, once=False)
        missing = sorted(set(members) - set(summary.contributed))
        raise QuorumNotMet(
            f"round {round_}: {len(summary.contributed)} accepted update(s), quorum is "
            f"{config.min_sites}; missing: {', '.join(missing) or 'none'}"
        )
    manifest_key = keys.prior(round_ + 1)[1]
    raw = store.get(manifest_key)
    committed = None if raw is None else Manifest.from_json(raw)
    if committed is not None:
        trust.verify_prior(config, committed)  # the centre's, not a forgery
    if committed is not None and committed.sha256 != sha256_hex(encode_params(new_prior)):
        raise PriorConflict(
            f"{manifest_key} is already committed with other content; clear the round's later "
            "state before aggregating it again"
        )
    if committed is None:
        _commit_prior(config, store, round_ + 1, new_prior, extra)
    centre_store.put(keys.summary(round_), summary_json, once=False)
    log.info(
        "round %d: %d site(s) aggregated, %d rejected, %d missing -> %s",
        round_,
        len(summary.contributed),
        len(summary.rejected),
        len(summary.missing),
        manifest_key,
    )
    return summary
