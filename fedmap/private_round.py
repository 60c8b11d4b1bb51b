"""A deployed round under the ``privacy`` section: what a site's release looks like as a message,
the centre's sum of the releases, and a site's reading of the next prior.

A release (``fedmap.dp``) travels as an ordinary update message (safetensors plus a signed
manifest) whose tensors are either N_k under the model's keys plus ``dp/denominator`` (DP in
the clear), or the single uint8 tensor ``ckks``, Enc([N_k, D_k]) (secure aggregation). Its
manifest withholds everything else: log omega 0, N_k 1, no metrics, and says which form it is
(``extra["privacy"]``). The centre checks each manifest as in the clear (``fedmap.server.screen``:
signature, replay, duplicates), checks each file against its signed hash and form, and sums:

- in the clear: sum_k N_k and sum_k D_k, then mu' = mu + sum N_k / max(sum D_k, floor) and the
  noise variance tau^2 it added (``fedmap.dp``), both published with the prior;
- encrypted: Enc(sum_k [N_k, D_k]) by adding ciphertexts under the public context; that
  ciphertext is the next prior, and each site decrypts it and forms mu' and tau^2 itself
  (``open_secure_prior``).

The per-site checks the clear round applies to theta_k (the weight cap, ||theta_k - mu||) have
no meaning here: under DP the site clips its own step to C, with omega weights it clamps its
weight to [exp(-R), 1], and secure aggregation alone bounds neither (docs/privacy.md says what
each does and does not protect against).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedmap import secure
from fedmap.dp import Release, noise_variance, private_mean
from fedmap.messages import Manifest, MessageError, TensorSpec, open_message, specs_of
from fedmap.params import Params
from fedmap.privacy import Privacy
from fedmap.server import Candidate, Checks, RoundSummary, admit, provenance

DENOMINATOR = "dp/denominator"


def form(privacy: Privacy) -> str:
    """What ``extra["privacy"]`` of every update must say: ``ckks`` or ``dp``."""
    return "ckks" if privacy.secure else "dp"


def release_tensors(release: Release, privacy: Privacy, context: Any = None) -> Params:
    """The tensors of a site's release message (``context``: the CKKS one, under secure
    aggregation)."""
    if privacy.secure:
        blob = secure.encrypt(release.numerator, release.denominator, context)
        return {secure.CIPHERTEXT: secure.as_tensor(blob)}
    return {
        **release.numerator,
        DENOMINATOR: torch.tensor(release.denominator, dtype=torch.float64),
    }


def release_specs(model: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """The specs a release in the clear must have: the model's, plus the denominator."""
    return {**model, DENOMINATOR: TensorSpec((), "float64")}


@dataclass(frozen=True)
class PrivateSum:
    """The centre's sum of one round's accepted releases."""

    sites: int
    numerator: Params | None = None
    denominator: float | None = None
    """In the clear (None under secure aggregation)."""
    ciphertext: bytes | None = None
    """Enc(sum_k [N_k, D_k]) under secure aggregation."""


def _open(
    manifest: Manifest,
    blob: bytes,
    round_: int,
    model: Mapping[str, TensorSpec],
    privacy: Privacy,
    context: Any,
) -> Params | Any:
    """One release checked: its form, its hash and tensors; a ciphertext parsed at its size."""
    if manifest.extra.get("privacy") != form(privacy):
        raise MessageError(
            f"under privacy.secure_aggregation {privacy.secure_aggregation!r} an update must be "
            f"a {form(privacy)} release, this one says {manifest.extra.get('privacy')!r}"
        )
    if privacy.secure:
        params = open_message(manifest, blob, "update", round_, manifest.tensors)
        if set(params) != {secure.CIPHERTEXT} or params[secure.CIPHERTEXT].dtype != torch.uint8:
            raise MessageError(
                f"a ckks release holds exactly one uint8 tensor {secure.CIPHERTEXT!r}"
            )
        try:
            return secure.ciphertext(
                secure.from_tensor(params[secure.CIPHERTEXT]), context, secure.size(model)
            )
        except secure.SecureError as exc:
            raise MessageError(str(exc)) from exc
    return open_message(manifest, blob, "update", round_, release_specs(model))


def aggregate_private_round(
    privacy: Privacy,
    round_: int,
    candidates: Iterable[Candidate],
    model: Mapping[str, TensorSpec],
    members: Collection[str] | None,
    checks: Checks | None,
    context: Any = None,
) -> tuple[PrivateSum, RoundSummary]:
    """The sum of the round's releases that pass every check, one release in memory at a time,
    and the round summary (no weights, log omega or N_k: the centre never learns them).
    ``context``: the centre's public CKKS context under secure aggregation."""
    rejected: dict[str, str] = {}
    seen: set[str] = set()
    accepted: dict[str, Manifest] = {}
    numerator: dict[str, torch.Tensor] = {}
    denominator = 0.0
    total: Any = None
    for candidate in candidates:
        seen.add(candidate.site)
        try:
            manifest = admit(candidate, round_, members, checks)
            blob = candidate.read()
            if blob is None:
                raise MessageError("manifest without its tensor file")
            opened = _open(manifest, blob, round_, model, privacy, context)
        except MessageError as exc:
            rejected[candidate.site] = str(exc)
            continue
        if privacy.secure:
            try:
                total = opened if total is None else total + opened
            except (ValueError, RuntimeError) as exc:  # TenSEAL: e.g. "scale mismatch"
                rejected[candidate.site] = f"its ciphertext cannot be added to the others: {exc}"
                continue
        accepted[manifest.site] = manifest
        if not privacy.secure:
            for key in model:
                value = opened[key].double()
                numerator[key] = numerator[key] + value if key in numerator else value
            denominator += float(opened[DENOMINATOR])
        del blob, opened
    sites = sorted(accepted)
    workers, nonces, sha256 = provenance(accepted)
    summary = RoundSummary(
        round=round_,
        contributed=tuple(sites),
        weights={},
        log_omega={},
        num_examples={},
        rejected=dict(sorted(rejected.items())),
        missing=tuple(sorted(set(members or ()) - seen)),
        workers=workers,
        nonces=nonces,
        sha256=sha256,
    )
    if privacy.secure:
        blob = None if total is None else bytes(total.serialize())
        return PrivateSum(len(sites), ciphertext=blob), summary
    return PrivateSum(len(sites), numerator or None, denominator), summary


def next_prior(
    mu: Params, total: PrivateSum, privacy: Privacy, z: float, tau2: float
) -> tuple[Params, float]:
    """In the clear: mu' = mu + sum N_k / max(sum D_k, floor), and tau^2 + the round's noise
    variance (``fedmap.dp.noise_variance``)."""
    if total.numerator is None or total.denominator is None:
        raise ValueError("next_prior needs a sum in the clear")
    added = noise_variance(privacy, z, total.sites, total.denominator)
    return private_mean(mu, total.numerator, total.denominator, total.sites, privacy), tau2 + added


def open_secure_prior(
    mu: Params,
    tau2: float,
    ciphertext: bytes,
    sites: int,
    privacy: Privacy,
    z: float,
    context: Any,
) -> tuple[Params, float]:
    """A site's reading of an encrypted prior: decrypt Enc(sum [N_k, D_k]) with the sites'
    secret context, then mu' and tau^2 as ``next_prior`` forms them at the centre in the clear."""
    numerator, denominator = secure.decrypt(ciphertext, context, specs_of(mu))
    if privacy.weighting == "equal" and abs(denominator - sites) > 1e-3:
        raise secure.SecureError(
            f"the encrypted prior claims {sites} site(s), but its denominator decrypts to "
            f"{denominator:.6g}: not the sum of that many releases"
        )
    return next_prior(mu, PrivateSum(sites, numerator, denominator), privacy, z, tau2)
