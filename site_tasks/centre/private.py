"""The centre's round under a ``privacy`` section: sum the sites' releases (in the clear, or as
CKKS ciphertexts it cannot read) into the next prior, and say what the round spent.

``site_tasks.centre.server.aggregate`` calls ``aggregate`` here instead of FedMAP's weighted mean
and writes what it returns as it writes any prior: signed, then the round summary, which gains a
``privacy`` block (epsilon so far, the budget, delta, z, tau^2, the form of the releases).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fedmap import secure
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.private_round import aggregate_private_round, form, next_prior
from fedmap.server import Candidate, Checks, NoValidUpdates, RoundSummary
from site_tasks import privacy
from site_tasks.federation import FederationConfig
from site_tasks.site.train import fetch_prior, model_specs
from site_tasks.storage import ObjectStore

log = logging.getLogger("site_tasks")
CARRIED = ("secure", "sites", "tau2")
"""Extras of a prior that describe that round only; the rest (model, seed site, the privacy
grant) is carried from round to round."""


@dataclass(frozen=True)
class PrivateRound:
    prior: Params
    """The next prior's tensors: mu' in the clear, or the one ``ckks`` ciphertext."""
    extra: dict[str, Any]
    summary: RoundSummary
    facts: dict[str, Any]
    """The summary's ``privacy`` block."""


def aggregate(
    config: FederationConfig,
    store: ObjectStore,
    round_: int,
    candidates: Iterable[Candidate],
    members: list[str],
    checks: Checks,
) -> PrivateRound:
    """The next prior from the round's releases that pass every check (NoValidUpdates when
    none does). The centre never holds a secret key: under secure aggregation it adds
    ciphertexts under the public context and publishes their sum."""
    section = privacy.section(config)
    z = privacy.noise_multiplier(config)
    first_manifest, _ = fetch_prior(config, store, 1)  # round 1 is always in the clear
    model = model_specs(first_manifest.tensors)
    context = privacy.centre_context(config) if section.secure else None
    total, summary = aggregate_private_round(
        section, round_, candidates, model, members, checks, context
    )
    if not summary.contributed:
        detail = "; ".join(f"{s}: {r}" for s, r in summary.rejected.items()) or "no uploads"
        raise NoValidUpdates(f"round {round_}: no valid update ({detail})")
    manifest, current = fetch_prior(config, store, round_)
    extra = {k: v for k, v in manifest.extra.items() if k not in CARRIED}
    extra["sites"] = total.sites
    if section.secure:
        assert total.ciphertext is not None
        prior: Params = {secure.CIPHERTEXT: secure.as_tensor(total.ciphertext)}
        extra["secure"] = "ckks"
        tau2 = None  # the sites form it as they decrypt (it depends on the encrypted sum D)
    else:
        prior, tau2 = next_prior(
            prior_mean(current), total, section, z, float(manifest.extra.get("tau2", 0.0))
        )
        extra["tau2"] = tau2
    spent = privacy.epsilon_after(config, round_) if section.dp else 0.0
    if section.dp:
        privacy.settle(config, round_)
    facts = {
        "form": form(section),
        "epsilon": spent,
        "budget": section.epsilon,
        "delta": section.delta,
        "noise_multiplier": z,
        "clip": section.clip,
        "weights": section.weighting,
        "accountant": section.accountant,
        "tau2": tau2,
        "sites": total.sites,
    }
    if section.dp:
        log.info(
            "round %d: privacy: epsilon %.4g of budget %g spent (delta %g, %s, z %.4g, %s "
            "releases of %d site(s))",
            round_,
            spent,
            section.epsilon,
            section.delta,
            section.accountant,
            z,
            form(section),
            total.sites,
        )
    return PrivateRound(prior, extra, summary, facts)
