"""What a site does differently under the federation's ``privacy`` section (docs/privacy.md).

- ``read_prior``: the prior of a round as the site trains under it. Round 1 and priors formed in
  the clear are read as they are, with the noise variance tau^2 their signed manifest states; an
  encrypted prior (secure aggregation) is decrypted here, with the sites' secret CKKS context,
  from the site's own mu of the round before (each decrypted mu is kept on the site's disk).
- ``privatise``: the release of a round, (N_k, D_k) with noise drawn from the operating system's
  entropy (never from a seed the centre could know), spent against the site's own ledger before
  anything is sent, as the message's tensors and the manifest fields it may carry.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedmap import secure
from fedmap.dp import release
from fedmap.messages import Manifest, decode_params, encode_params
from fedmap.params import Params
from fedmap.priors import prior_mean
from fedmap.private_round import form, open_secure_prior, release_tensors
from fedmap.secure import CIPHERTEXT, from_tensor
from site_tasks import privacy
from site_tasks.federation import FederationConfig

log = logging.getLogger("site_tasks")


@dataclass(frozen=True)
class SitePrior:
    manifest: Manifest
    params: Params
    """mu (and a learned prior's state) in the clear."""
    tau2: float
    """The variance the sites' noise has added to each coordinate of mu so far."""


def _cache(config: FederationConfig, site: str, round_: int, sha: str) -> Path:
    folder = config.state_dir / config.name / config.run / site
    return folder / f"prior-round-{round_}-{sha[:16]}.safetensors"


def read_prior(
    config: FederationConfig,
    site: str,
    round_: int,
    fetch: Any,
) -> SitePrior:
    """The prior of round_ in the clear, at a site. ``fetch(t)`` returns the checked
    (manifest, tensors) of round t's prior as stored (``site_tasks.site.train.fetch_prior``)."""
    manifest, params = fetch(round_)
    tau2 = float(manifest.extra.get("tau2", 0.0))
    if manifest.extra.get("secure") != "ckks":
        return SitePrior(manifest, params, tau2)
    path = _cache(config, site, round_, manifest.sha256)
    if path.exists():
        cached = decode_params(path.read_bytes())
        tau = float(cached.pop("dp/tau2").item())
        return SitePrior(manifest, cached, tau)
    sites = int(manifest.extra.get("sites", 0))
    if sites < max(2, config.min_sites):
        raise secure.SecureError(
            f"the encrypted prior of round {round_} claims a sum of {sites} site(s), below the "
            f"quorum {max(2, config.min_sites)}: decrypting it could reveal one site's update"
        )
    before = read_prior(config, site, round_ - 1, fetch)
    mu, tau = open_secure_prior(
        prior_mean(before.params),
        before.tau2,
        from_tensor(params[CIPHERTEXT]),
        sites,
        privacy.section(config),
        privacy.noise_multiplier(config),
        privacy.site_context(config),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_params({**mu, "dp/tau2": torch.tensor(tau, dtype=torch.float64)}))
    return SitePrior(manifest, mu, tau)


def _release_path(config: FederationConfig, site: str, round_: int) -> Path:
    """Where the site keeps the release of round_ it drew (its own disk)."""
    return (
        config.state_dir / config.name / config.run / site / f"release-round-{round_}.safetensors"
    )


@dataclass(frozen=True)
class Privatised:
    """A round's release as a message: its tensors and the manifest fields it carries."""

    tensors: Params
    blob: bytes
    extra: dict[str, Any]
    epsilon: float
    """The site's epsilon once this round is released (its own ledger); 0 without DP."""


def privatise(
    config: FederationConfig, site: str, round_: int, theta: Params, mu: Params, log_omega: float
) -> Privatised:
    """The site's release of round_: spent against its ledger first (BudgetExceeded before
    anything is drawn or sent), then clipped, weighted, noised and, under secure aggregation,
    encrypted."""
    section = privacy.section(config)
    spent = privacy.spend(config, site, round_) if section.dp else 0.0
    kept = _release_path(config, site, round_)
    if kept.exists():  # drawn before (a retry, a cleared round): the same release, not a new one
        blob = kept.read_bytes()
        return Privatised(decode_params(blob), blob, {"privacy": form(section)}, spent)
    noise = torch.Generator().manual_seed(secrets.randbits(63))
    z = privacy.noise_multiplier(config)
    out = release(theta, mu, log_omega, section, z, noise)
    context = privacy.site_context(config) if section.secure else None
    tensors = release_tensors(out, section, context)
    blob = encode_params(tensors)
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = kept.with_name(kept.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, kept)  # kept before it is sent
    log.info(
        "%s: round %d: released under %s (z %.4g); epsilon %.4g of %g",
        site,
        round_,
        form(section),
        z,
        spent,
        section.epsilon,
    )
    log.debug(  # data-dependent: never in a log that may reach the centre (edge3 pushes INFO)
        "%s: round %d: ||theta - mu|| %.4g%s", site, round_, out.norm, " (clipped)" * out.clipped
    )
    return Privatised(tensors, blob, {"privacy": form(section)}, spent)
