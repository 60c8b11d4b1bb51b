"""What the coordinating centre runs around the rounds: ``init`` writes the first prior and
``aggregate`` turns the committed updates of round t into the prior of round t + 1.

A prior is the mean mu under the model's keys; with a learned prior (``algorithm.prior``
diagonal or icnn) the prior of round t + 1 also holds the state the server fitted to the sites'
theta_k, under ``prior/...`` keys, so the sites of the next round train under the learned prior.
Round 1 (and a warm start) is mu alone: every tensor falls back to N(mu, sigma^2)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict

from fedmap.initialisation import initialise
from fedmap.messages import Manifest, encode_params, make_manifest
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.server import Candidate, RoundSummary, aggregate_round
from site_tasks.federation import FederationConfig
from site_tasks.site.train import fetch_prior, model_specs
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


def init(
    config: FederationConfig, store: ObjectStore, warm: tuple[Params, str] | None = None
) -> Manifest:
    """The prior of round 1: ``warm`` (parameters and where they came from, e.g. the registry's
    champion; its mean mu only) when given, else Algorithm 1, line 1: a randomly chosen site's
    initial model.

    Deterministic in its inputs, so running it twice writes the same bytes.
    """
    keys = Keys.of(config)
    if warm is not None:
        params, source = prior_mean(warm[0]), warm[1]
        blob = encode_params(params)
        extra = {
            "model": config.model.name,
            "n_features": config.model.n_features,
            "warm_start_from": source,
        }
        manifest = make_manifest("prior", 1, params, blob, extra=extra)
        store.put(keys.prior(1)[0], blob)
        store.put(keys.prior(1)[1], manifest.to_json().encode())
        log.info("round 1 prior warm-started from %s", source)
        return manifest
    sites = sorted(config.sites)
    start = initialise(
        lambda: build_model(config.model.name, config.model.n_features), sites, config.seed
    )
    blob = encode_params(start.prior)
    extra = {
        "model": config.model.name,
        "n_features": config.model.n_features,
        "seed_site": start.seed_site,
    }
    manifest = make_manifest("prior", 1, start.prior, blob, extra=extra)
    tensors_key, manifest_key = Keys.of(config).prior(1)
    store.put(tensors_key, blob)
    store.put(manifest_key, manifest.to_json().encode())
    log.info("round 1 prior seeded by %s -> %s", start.seed_site, manifest_key)
    return manifest


def uploads(store: ObjectStore, keys: Keys, round_: int) -> Iterator[Candidate]:
    """Every site's upload for the round, in site order, pairing tensor files with manifests by
    site name. Lazy: the listing is read first (keys only), then each site's two objects are
    fetched only when the next candidate is asked for, so a consumer that drops each one before
    taking the next holds one upload at a time."""
    found: dict[str, dict[str, str]] = {}
    for key in store.list(keys.updates(round_)):
        name = key.removeprefix(keys.updates(round_))
        site, _, ext = name.rpartition(".")
        if ext in ("json", "safetensors") and "/" not in site:
            found.setdefault(site, {})[ext] = key
    for site, parts in sorted(found.items()):
        yield Candidate(
            site,
            store.get(parts["json"]) if "json" in parts else None,
            store.get(parts["safetensors"]) if "safetensors" in parts else None,
        )


def collect(config: FederationConfig, store: ObjectStore, round_: int) -> list[Candidate]:
    """Every site's upload for the round at once (``uploads``, held in memory: tests, tools)."""
    return list(uploads(store, Keys.of(config), round_))


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
    prior_manifest, prior = fetch_prior(config, store, round_)
    members = [name for name, site in config.sites.items() if site.tier == 1]
    expected = model_specs(prior_manifest.tensors)  # an update is a model: mu's keys, no state
    # one update in memory at a time: read, checked, folded into the running sums, dropped
    new_prior, summary = aggregate_round(
        config.method, round_, uploads(store, keys, round_), expected, members, prior
    )
    for site, reason in summary.rejected.items():
        log.warning("round %d: rejected %s: %s", round_, site, reason)
    summary_json = (json.dumps(asdict(summary), indent=1, sort_keys=True) + "\n").encode()
    if len(summary.contributed) < config.min_sites:
        store.put(keys.summary(round_), summary_json)
        missing = sorted(set(members) - set(summary.contributed))
        raise QuorumNotMet(
            f"round {round_}: {len(summary.contributed)} accepted update(s), quorum is "
            f"{config.min_sites}; missing: {', '.join(missing) or 'none'}"
        )
    blob = encode_params(new_prior)
    manifest = make_manifest("prior", round_ + 1, new_prior, blob, extra=dict(prior_manifest.extra))
    tensors_key, manifest_key = keys.prior(round_ + 1)
    committed = store.get(manifest_key)
    if committed is not None and Manifest.from_json(committed).sha256 != manifest.sha256:
        raise PriorConflict(
            f"{manifest_key} is already committed with other content; clear the round's later "
            "state before aggregating it again"
        )
    if committed is None:
        store.put(tensors_key, blob)
        store.put(manifest_key, manifest.to_json().encode())
    store.put(keys.summary(round_), summary_json)
    log.info(
        "round %d: %d site(s) aggregated, %d rejected, %d missing -> %s",
        round_,
        len(summary.contributed),
        len(summary.rejected),
        len(summary.missing),
        manifest_key,
    )
    return summary
