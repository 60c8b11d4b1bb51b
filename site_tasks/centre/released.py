"""What the registry takes from a run under a ``privacy`` section, where a site's update is a
release, not a model (docs/privacy.md): the final prior as the sites decrypted it (secure
aggregation: the centre holds no key), a site's own model only when it opted in, and the
parent run's privacy record. ``site_tasks.centre.registry.register`` calls these."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fedmap.messages import decode_params, encode_params
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import prior_mean
from site_tasks import trust
from site_tasks.federation import FederationConfig
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


def _json(store: ObjectStore, key: str) -> dict[str, Any]:
    raw = store.get(key)
    return dict(json.loads(raw)) if raw else {}


def _signed_by(
    config: FederationConfig, store: ObjectStore, site: str, keys: tuple[str, str], round_: int
) -> tuple[Params, str] | None:
    """The params a site signed and sent under keys, checked (its enrolled key, this run, the
    hash, the model's specs), with their SHA-256; None, with the reason logged, otherwise."""
    from fedmap.messages import Manifest, MessageError, open_message, specs_of
    from fedmap.signing import SignatureError

    raw, blob = store.get(keys[1]), store.get(keys[0])
    if raw is None or blob is None:
        return None
    expected = specs_of(build_model(config.model.name, config.model.n_features).state_dict())
    try:
        manifest = Manifest.from_json(raw)
        trust.keyring(config).check(site, manifest.key_id, manifest.body(), manifest.signature)
        if (manifest.federation, manifest.run, manifest.site) != (config.name, config.run, site):
            raise SignatureError(f"signed for {manifest.federation}/{manifest.run}/{manifest.site}")
        return open_message(manifest, blob, "prior", round_, expected), manifest.sha256
    except (MessageError, SignatureError) as exc:
        log.warning("%s: %s cannot be used: %s", site, keys[0], exc)
        return None


def read_final_prior(
    config: FederationConfig, store: ObjectStore, rounds: int
) -> tuple[Params, tuple[str, str]]:
    """mu of the run's final prior and the (tensors, manifest) keys it is read from. Under secure
    aggregation the centre cannot decrypt it: it takes the decryption a majority of the tier-1
    sites signed (honest decryptions are byte-identical), names any site whose decryption
    differs, and registers nothing without a majority."""
    keys = Keys.of(config)
    if not config.federation.privacy.secure:
        blob = store.get(keys.prior(rounds + 1)[0])
        if blob is None:
            raise RuntimeError(
                f"the final prior {keys.prior(rounds + 1)[0]} is missing: the last round did "
                "not finish, so nothing is registered"
            )
        return prior_mean(decode_params(blob)), keys.prior(rounds + 1)
    found: list[tuple[str, Params, str]] = []
    for site in sorted(n for n, s in config.sites.items() if s.tier == 1):
        got = _signed_by(config, store, site, keys.released(site), rounds + 1)
        if got is not None:
            found.append((site, *got))
    if not found:
        raise RuntimeError(
            "no tier-1 site sent its decryption of the final prior (secure aggregation: the "
            "centre holds no key), so nothing is registered"
        )
    votes: dict[str, list[str]] = {}
    for site, _, sha in found:
        votes.setdefault(sha, []).append(site)
    sha, agreeing = max(votes.items(), key=lambda item: len(item[1]))
    members = sum(1 for s in config.sites.values() if s.tier == 1)
    if len(agreeing) * 2 <= members:
        raise RuntimeError(
            f"no majority of the {members} tier-1 sites sent the same decryption of the final "
            f"prior ({', '.join(f'{len(v)} for {k[:12]}' for k, v in votes.items())}): nothing "
            "is registered"
        )
    for other, sites in votes.items():
        if other != sha:
            log.warning("%s: decryption of the final prior differs from the majority's", sites)
    site = agreeing[0]
    params = next(p for s, p, _ in found if s == site)
    return params, keys.released(site)


def shared_model(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> bytes | None:
    """Under a privacy section: the site's own theta_k when it opted in and sent it, else None
    (the registry then holds the prior and the site's metrics only)."""
    if site not in config.federation.privacy.register_personal:
        log.info("%s: personalised model not registered (privacy: the site did not opt in)", site)
        return None
    got = _signed_by(config, store, site, Keys.of(config).model(site), rounds + 1)
    return None if got is None else encode_params(got[0])


def log_privacy(config: FederationConfig, store: ObjectStore, rounds: int) -> None:
    """The parent run's privacy record: the section as params, epsilon after every round."""
    import mlflow

    section = config.federation.privacy
    mlflow.log_params(
        {
            "privacy_epsilon_budget": section.epsilon,
            "privacy_delta": section.delta,
            "privacy_clip": section.clip,
            "privacy_weights": section.weighting,
            "privacy_accountant": section.accountant,
            "privacy_secure_aggregation": section.secure_aggregation,
            "privacy_register_personal": ",".join(section.register_personal) or "none",
        }
    )
    spent = math.nan
    for t in range(1, rounds + 1):
        facts = _json(store, Keys.of(config).summary(t)).get("privacy", {})
        if "epsilon" in facts:
            spent = float(facts["epsilon"])
            mlflow.log_metric("privacy_epsilon", spent, step=t)
            mlflow.log_metric("privacy_noise_multiplier", float(facts["noise_multiplier"]), step=t)
    mlflow.set_tag("privacy_epsilon", f"{spent:.4f}")
