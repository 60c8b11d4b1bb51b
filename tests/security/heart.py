"""A small federation ``heart`` on a real S3 server for the attack tests: three tier-1 sites
(``site-1``, ``site-2``, ``site-10``) with tiny label-skew data, the centre's key pair in the
federation file, and each party acting through its own store (its own SeaweedFS identity).

``Heart`` drives a round the way the deployment does (``server.init``, each site's ``validate``
then ``train``, ``server.aggregate``) and gives an attacker the pieces a real one would have: a
genuinely trained theta_k (``fit``) and a correctly bound, signed manifest for it (``signed``),
which the tests then tamper with and send with the attacker's own storage identity (``send``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from fedmap.bounds import cap_weights, softmax
from fedmap.messages import Manifest, decode_params, encode_params, make_manifest
from fedmap.params import Params
from fedmap.server import RoundSummary
from fedmap.signing import load_private, seal
from site_tasks import trust
from site_tasks.centre import server
from site_tasks.federation import FederationConfig, StorageConfig, load_federation
from site_tasks.site.train import Fitted, fit_site, prepare, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store
from tests.federation_files import synthetic_federation

SITES = ("site-1", "site-2", "site-10")
FEDERATION = "heart"


def write_sites(
    root: Path, names: Sequence[str] = SITES, n_train: int = 120, n_val: int = 40
) -> dict[str, Path]:
    """The first len(names) label-skew sites (seed 0), renamed and cut to n_train/n_val rows."""
    from fedmap.data import write_site
    from fedmap.synthetic import generate

    folders = {}
    for split, name in zip(generate("label-skew", 0), names, strict=False):
        small = replace(
            split,
            name=name,
            x_train=split.x_train[:n_train],
            y_train=split.y_train[:n_train],
            x_val=split.x_val[:n_val],
            y_val=split.y_val[:n_val],
        )
        write_site(small, root)
        folders[name] = root / name
    return folders


def write_federation(
    path: Path,
    data: Mapping[str, Path],
    storage: StorageConfig,
    rounds: int = 1,
    min_sites: int = 1,
    **overrides: Any,
) -> FederationConfig:
    """Write federation ``heart`` (fresh run name, state under path's folder) and enrol every
    site's and the centre's key (``trust.enrol_all``, one machine)."""
    body = synthetic_federation(
        FEDERATION,
        f"sec-{secrets.token_hex(4)}",
        {name: {"data": str(folder)} for name, folder in data.items()},
        {
            "bucket": storage.bucket,
            "endpoint_url": storage.endpoint_url,
            "access_key_id": storage.access_key_id,
            "secret_access_key": storage.secret_access_key,
        },
        str(path.parent / "state"),
        rounds,
        min_sites,
        **overrides,
    )
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    config = load_federation(path)
    trust.enrol_all(config)
    return config


class Heart:
    """One run of the federation, each party with its own store."""

    def __init__(self, config: FederationConfig, stores: Mapping[str, S3Store]) -> None:
        self.config, self.stores = config, dict(stores)
        self._validated: set[str] = set()

    @property
    def keys(self) -> Keys:
        return Keys.of(self.config)

    @property
    def centre(self) -> S3Store:
        return self.stores["centre"]

    def with_run(self, run: str) -> Heart:
        """The same federation, keys and stores in another run."""
        return Heart(replace(self.config, run=run), self.stores)

    def start(self) -> Manifest:
        return server.init(self.config, self.centre)

    def validated(self, site: str) -> None:
        if site not in self._validated:
            assert validate(self.config, site, self.stores[site]).success
            self._validated.add(site)

    def train(self, site: str, round_: int = 1) -> Manifest:
        """The site's honest task: validate (once per run), train, upload its signed update."""
        self.validated(site)
        return train(self.config, site, round_, self.stores[site]).manifest

    def fit(self, site: str, round_: int = 1) -> Fitted:
        """A genuine local step at the site, uploaded nowhere (what an attacker starts from)."""
        self.validated(site)
        ready = prepare(self.config, site, round_, self.stores[site])
        return fit_site(self.config, site, round_, ready)

    def signed(
        self,
        site: str,
        round_: int,
        theta: Params,
        log_omega: float,
        num_examples: int = 120,
    ) -> tuple[bytes, Manifest]:
        """(tensor file, manifest) for theta, bound to this run and signed with site's own key."""
        blob = encode_params(theta)
        manifest = make_manifest(
            "update",
            round_,
            theta,
            blob,
            site=site,
            num_examples=num_examples,
            log_omega=log_omega,
        )
        return blob, trust.signed(self.config, site, manifest)

    def send(self, who: str, round_: int, site: str, blob: bytes, manifest: Manifest) -> None:
        """Upload site's update for round_ with ``who``'s store, manifest last (the commit)."""
        tensors, manifest_key = self.keys.update(round_, site)
        self.stores[who].put(tensors, blob)
        self.stores[who].put(manifest_key, manifest.to_json().encode())

    def aggregate(self, round_: int = 1) -> RoundSummary:
        return server.aggregate(self.config, self.centre, round_)

    def prior(self, round_: int) -> Params:
        return decode_params(self.centre.get(self.keys.prior(round_)[0]) or b"")

    def theta(self, site: str, round_: int = 1) -> Params:
        """The site's committed theta_k as the centre reads it now."""
        return decode_params(self.centre.get(self.keys.update(round_, site)[0]) or b"")


MakeHeart = Callable[..., Heart]
"""The fixtures' factory: ``make_heart(sites=SITES, **federation file overrides)``."""


def sign_with(config: FederationConfig, pem: bytes, kid: str, manifest: Manifest) -> Manifest:
    """What someone holding private key ``pem`` can sign: the manifest bound to config's run,
    with a fresh nonce and the key id it chooses to claim."""
    return seal(manifest, load_private(pem), config.name, config.run, kid)


def weighted(thetas: Mapping[str, Params], weights: Mapping[str, float]) -> Params:
    """sum_k w_k theta_k in float64 over the sites of ``weights``."""
    names = next(iter(thetas.values())).keys()
    return {
        name: torch.stack([weights[s] * thetas[s][name].double() for s in weights]).sum(0)
        for name in names
        if thetas[next(iter(weights))][name].is_floating_point()
    }


def distance(a: Params, b: Params) -> float:
    """||a - b||_2 over a's entries, in float64."""
    return math.sqrt(math.fsum(float((a[n].double() - b[n].double()).square().sum()) for n in a))


def assert_formed_from(
    heart: Heart,
    summary: RoundSummary,
    honest: Sequence[str],
    round_: int = 1,
    thetas: Mapping[str, Params] | None = None,
) -> None:
    """The honest sites, and only they, made the next prior: each accepted with the capped
    softmax weight of its own log omega, and the committed prior of round_ + 1 is
    sum_k w_k theta_k over their committed theta_k (``thetas`` when given: the originals)."""
    sites = tuple(sorted(honest))
    assert summary.contributed == sites
    logs = [summary.log_omega[s] for s in sites]
    cap = heart.config.federation.bounds.max_weight
    expected = dict(zip(sites, cap_weights(softmax(logs), cap), strict=True))
    assert summary.weights == {s: expected[s] for s in sites}
    own = thetas or {s: heart.theta(s, round_) for s in sites}
    mean = weighted(own, summary.weights)
    prior = heart.prior(round_ + 1)
    assert set(mean) <= set(prior)
    for name, value in mean.items():
        assert torch.allclose(prior[name].double(), value, atol=1e-6), name
