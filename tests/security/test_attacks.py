"""Attacks on a deployed round, each against the real servers (SeaweedFS with one identity per
party; ``rclone serve s3`` where a store that enforces nothing is the point), each asserting that
nothing of the attack is accepted and that the honest sites' work is intact: their updates
accepted and the next prior formed from them alone. docs/security.md maps attack to mechanism."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from fedmap.bounds import softmax
from fedmap.messages import Manifest, decode_params, encode_params, make_manifest, sha256_hex
from fedmap.models import build_model
from fedmap.signing import CENTRE, SignatureError, generate, key_id, load_private, seal
from site_tasks import cli, trust
from site_tasks.centre import server
from site_tasks.site.train import PriorUnavailable, state_path
from site_tasks.storage import StorageError
from tests.security.heart import (
    SITES,
    Heart,
    MakeHeart,
    assert_formed_from,
    distance,
    sign_with,
    weighted,
)

pytestmark = pytest.mark.security

HONEST = ("site-1", "site-2")
ATTACKER = "site-10"


def denied(call: Callable[..., object], *args: object) -> None:
    """The store call fails with SeaweedFS's AccessDenied."""
    with pytest.raises(StorageError, match="AccessDenied"):
        call(*args)


def honest_round(heart: Heart, sites: tuple[str, ...] = HONEST) -> None:
    for site in sites:
        heart.train(site)


def attack(heart: Heart, manifest: Manifest, blob: bytes, site: str = ATTACKER) -> None:
    """The attacker sends its update for round 1 with its own storage identity."""
    heart.send(site, 1, site, blob, manifest)


# --- storage identities (site_tasks.access rendered into SeaweedFS) -----------------------------


def test_a_site_cannot_write_the_prior(make_heart: MakeHeart) -> None:
    heart = make_heart()
    heart.start()
    tensors, manifest = heart.keys.prior(1)
    committed = (heart.centre.get(tensors), heart.centre.get(manifest))
    attacker = heart.stores[ATTACKER]
    forged = encode_params(build_model("mlp", 30).state_dict())
    for key in (*heart.keys.prior(1), *heart.keys.prior(2)):  # this round's and the next
        denied(attacker.put, key, forged)
    assert (heart.centre.get(tensors), heart.centre.get(manifest)) == committed
    assert heart.centre.get(heart.keys.prior(2)[1]) is None
    honest_round(heart, SITES)
    assert_formed_from(heart, heart.aggregate(), SITES)


def test_a_site_cannot_write_or_delete_another_sites_update(make_heart: MakeHeart) -> None:
    heart = make_heart()
    heart.start()
    victim = heart.train("site-1")
    blob, manifest = heart.signed(ATTACKER, 1, heart.fit(ATTACKER).update.params, -0.01)
    attacker = heart.stores[ATTACKER]
    tensors_key, manifest_key = heart.keys.update(1, "site-1")
    denied(attacker.put, tensors_key, blob)
    denied(attacker.put, manifest_key, manifest.to_json().encode())
    for key in (tensors_key, manifest_key):
        with pytest.raises(ClientError, match="AccessDenied"):
            attacker.client.delete_object(Bucket=attacker.bucket, Key=key)
    assert Manifest.from_json(heart.centre.get(manifest_key) or b"") == victim
    honest_round(heart, ("site-2", ATTACKER))
    summary = heart.aggregate()
    assert summary.sha256["site-1"] == victim.sha256
    assert_formed_from(heart, summary, SITES)


def test_a_site_cannot_read_or_list_another_sites_update(make_heart: MakeHeart) -> None:
    heart = make_heart()
    heart.start()
    heart.train("site-1")
    attacker = heart.stores[ATTACKER]
    for key in heart.keys.update(1, "site-1"):
        denied(attacker.get, key)
    denied(attacker.list, heart.keys.updates(1))
    denied(attacker.list, "")
    honest_round(heart, ("site-2", ATTACKER))
    assert_formed_from(heart, heart.aggregate(), SITES)


def test_a_site_cannot_overwrite_its_own_committed_update(make_heart: MakeHeart) -> None:
    """A plain PUT puts a new latest version over the site's committed update (SeaweedFS keeps
    the first one under Object Lock); the centre reads the first, so only the original counts."""
    heart = make_heart()
    heart.start()
    honest_round(heart, SITES)
    originals = {s: heart.theta(s) for s in SITES}
    original = Manifest.from_json(heart.centre.get(heart.keys.update(1, ATTACKER)[1]) or b"")
    shifted = {k: v + 0.5 for k, v in originals[ATTACKER].items()}
    blob, manifest = heart.signed(ATTACKER, 1, shifted, 0.0)  # genuinely signed, new nonce
    client, bucket = heart.stores[ATTACKER].client, heart.stores[ATTACKER].bucket
    tensors_key, manifest_key = heart.keys.update(1, ATTACKER)
    client.put_object(Bucket=bucket, Key=tensors_key, Body=blob)
    client.put_object(Bucket=bucket, Key=manifest_key, Body=manifest.to_json().encode())
    summary = heart.aggregate()
    assert summary.sha256[ATTACKER] == original.sha256 != manifest.sha256
    assert summary.nonces[ATTACKER] == original.nonce
    assert summary.log_omega[ATTACKER] == original.log_omega
    assert_formed_from(heart, summary, SITES, thetas=originals)
    audit = trust.audit_log(heart.config, CENTRE)
    logged = [(e["action"], e["outcome"], e["sha256"]) for e in audit.entries()]
    assert [e for e in logged if e[0] in ("aggregate", "overwrite")] == [
        ("overwrite", "ignored", ""),  # the centre saw the second version and used the first
        *[("aggregate", "accepted", summary.sha256[s]) for s in sorted(SITES)],
    ]
    assert summary.sha256[ATTACKER] == original.sha256


# --- signed manifests (fedmap.signing, fedmap.server.screen) ------------------------------------


def test_an_unsigned_update_is_rejected(make_heart: MakeHeart) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart)
    fitted = heart.fit(ATTACKER)
    blob, manifest = heart.signed(ATTACKER, 1, fitted.update.params, fitted.update.log_omega)
    attack(heart, replace(manifest, signature=""), blob)
    summary = heart.aggregate()
    assert summary.rejected == {ATTACKER: f"unsigned manifest (no signature from {ATTACKER})"}
    assert_formed_from(heart, summary, HONEST)


@pytest.mark.parametrize(
    "forgery",
    [
        "other-key",
        pytest.param("flipped-signature", marks=pytest.mark.exhaustive),
        pytest.param("edited-after-signing", marks=pytest.mark.exhaustive),
    ],
)
def test_a_forged_signature_is_rejected(make_heart: MakeHeart, forgery: str) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart)
    fitted = heart.fit(ATTACKER)
    blob, manifest = heart.signed(ATTACKER, 1, fitted.update.params, fitted.update.log_omega)
    if forgery == "other-key":  # a key of the attacker's own, claiming the enrolled key's id
        manifest = sign_with(heart.config, generate()[0], manifest.key_id, manifest)
    elif forgery == "flipped-signature":
        raw = bytearray(base64.b64decode(manifest.signature))
        raw[7] ^= 0x01
        manifest = replace(manifest, signature=base64.b64encode(bytes(raw)).decode())
    else:  # a genuinely signed manifest whose log omega is raised afterwards
        manifest = replace(manifest, log_omega=-0.001)
    attack(heart, manifest, blob)
    summary = heart.aggregate()
    enrolled = trust.keyring(heart.config).active(ATTACKER)[0].key_id
    assert summary.rejected == {
        ATTACKER: f"bad signature: does not verify under {ATTACKER}'s key {enrolled}"
    }
    assert_formed_from(heart, summary, HONEST)


@pytest.mark.exhaustive
def test_an_update_signed_with_an_unenrolled_key_is_rejected(make_heart: MakeHeart) -> None:
    """Someone with the site's storage key but not its signing key signs with a key of their own."""
    heart = make_heart()
    heart.start()
    honest_round(heart)
    fitted = heart.fit(ATTACKER)
    blob, manifest = heart.signed(ATTACKER, 1, fitted.update.params, fitted.update.log_omega)
    pem, public = generate()
    attack(heart, sign_with(heart.config, pem, key_id(public), manifest), blob)
    summary = heart.aggregate()
    assert summary.rejected == {
        ATTACKER: f"signed with key {key_id(public)}, which is not enrolled for {ATTACKER}"
    }
    assert_formed_from(heart, summary, HONEST)


@pytest.mark.parametrize("across", ["run", pytest.param("round", marks=pytest.mark.exhaustive)])
def test_a_replayed_update_is_rejected(make_heart: MakeHeart, across: str) -> None:
    """A genuinely signed update of run A (round 1) copied into run B, or into round 2."""
    heart = make_heart(rounds=2)
    heart.start()
    if across == "run":
        heart.train(ATTACKER)
        target, round_ = heart.with_run(heart.config.run + "-b"), 1
        target.start()
        honest_round(target)
        expected = f"replay: signed for heart/{heart.config.run}, not heart/{target.config.run}"
    else:
        honest_round(heart, SITES)
        heart.aggregate()
        target, round_ = heart, 2
        for site in HONEST:
            heart.train(site, 2)
        expected = "replay: manifest is for round 1, not round 2"
    attacker = heart.stores[ATTACKER]
    old = heart.keys.update(1, ATTACKER)
    new = target.keys.update(round_, ATTACKER)
    for source, destination in zip(old, new, strict=True):
        attacker.put(destination, attacker.get(source) or b"")  # its own keys: allowed
    summary = target.aggregate(round_)
    assert summary.rejected == {ATTACKER: expected}
    assert_formed_from(target, summary, HONEST, round_)


def test_an_update_signed_with_a_revoked_key_is_rejected(make_heart: MakeHeart) -> None:
    """site-2's key was stolen and revoked; the thief signs with it and uploads as site-2."""
    heart = make_heart()
    heart.start()
    stolen = trust.key_path(heart.config, "site-2").read_bytes()
    kid = trust.keyring(heart.config).active("site-2")[0].key_id
    trust.revoke(heart.config, "site-2")
    with pytest.raises(SignatureError, match="revoked"):  # the site's own task signs nothing
        heart.train("site-2")
    assert heart.centre.list(heart.keys.updates(1)) == []
    honest_round(heart, ("site-1", ATTACKER))
    fitted = heart.fit("site-2")
    theta = fitted.update.params
    blob = encode_params(theta)
    unsigned = make_manifest(
        "update", 1, theta, blob, site="site-2", num_examples=120, log_omega=-0.01
    )
    heart.send("site-2", 1, "site-2", blob, sign_with(heart.config, stolen, kid, unsigned))
    summary = heart.aggregate()
    assert list(summary.rejected) == ["site-2"]
    assert summary.rejected["site-2"].startswith(f"signed with key {kid} of site-2, revoked at ")
    assert_formed_from(heart, summary, ("site-1", ATTACKER))


# --- centre-signed priors (site_tasks.trust.verify_prior in fetch_prior) ------------------------


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ("unsigned", "unsigned manifest (no signature from centre)"),
        ("other-key", "bad signature: does not verify under centre's key"),
        ("own-key", "which is not enrolled for centre"),
        ("other-run", "the prior is signed for heart/"),
    ],
)
def test_a_forged_prior_is_refused_by_the_site(
    make_heart: MakeHeart, forgery: str, reason: str
) -> None:
    """Someone with the centre's storage key but not its signing key writes the round-1 prior."""
    heart = make_heart()
    forger = heart.centre
    tensors_key, manifest_key = heart.keys.prior(1)
    if forgery == "other-run":  # a genuine prior of another run of the same federation
        other = heart.with_run(heart.config.run + "-old")
        other.start()
        for source, destination in zip(other.keys.prior(1), heart.keys.prior(1), strict=True):
            forger.put(destination, forger.get(source) or b"")
    else:
        params = build_model("mlp", 30).state_dict()
        blob = encode_params(params)
        prior = make_manifest("prior", 1, params, blob, extra={"model": "mlp", "n_features": 30})
        centre_kid = trust.keyring(heart.config).active(CENTRE)[0].key_id
        pem, public = generate()
        kid = {"unsigned": "", "other-key": centre_kid, "own-key": key_id(public)}[forgery]
        prior = sign_with(heart.config, pem, kid, prior)
        if forgery == "unsigned":
            prior = replace(prior, key_id=centre_kid, signature="")
        forger.put(tensors_key, blob)
        forger.put(manifest_key, prior.to_json().encode())
    with pytest.raises(PriorUnavailable, match="fails its checks") as refused:
        heart.train("site-1")
    assert reason in str(refused.value)
    assert heart.centre.list(heart.keys.updates(1)) == []
    assert not state_path(heart.config, "site-1", 1).exists()
    sent = [e["key"] for e in trust.audit_log(heart.config, "site-1").entries()]
    assert sent == [heart.keys.validation("site-1")]  # nothing but its validation report left


@pytest.mark.exhaustive
def test_a_prior_replaced_after_commit_is_refused_and_earlier_work_kept(
    make_heart: MakeHeart,
) -> None:
    """The forger overwrites the committed prior (the centre's storage key may): a site that
    trained before keeps its update; one that trains after refuses the prior and sends nothing."""
    heart = make_heart()
    heart.start()
    before = heart.train("site-1")
    params = {k: v + 1.0 for k, v in heart.prior(1).items()}
    blob = encode_params(params)
    forged = make_manifest("prior", 1, params, blob, extra={"model": "mlp", "n_features": 30})
    centre_kid = trust.keyring(heart.config).active(CENTRE)[0].key_id
    forged = sign_with(heart.config, generate()[0], centre_kid, forged)
    tensors_key, manifest_key = heart.keys.prior(1)
    heart.centre.put(tensors_key, blob)
    heart.centre.put(manifest_key, forged.to_json().encode())
    with pytest.raises(PriorUnavailable, match="bad signature"):
        heart.train("site-2")
    assert heart.centre.list(heart.keys.updates(1)) == sorted(heart.keys.update(1, "site-1"))
    committed = heart.centre.get(heart.keys.update(1, "site-1")[1]) or b""
    assert Manifest.from_json(committed) == before
    assert sha256_hex(heart.centre.get(heart.keys.update(1, "site-1")[0]) or b"") == before.sha256


# --- bounds (fedmap.bounds, fedmap.schema.Bounds) -----------------------------------------------


@pytest.mark.parametrize(
    ("sites", "bounds"),
    [
        pytest.param(("site-1", ATTACKER), {}, id="default-cap-two-sites"),
        pytest.param(
            SITES, {"max_weight": 0.34}, id="cap-0.34-three-sites", marks=pytest.mark.exhaustive
        ),
    ],
)
def test_an_inflated_log_omega_is_capped(
    make_heart: MakeHeart, sites: tuple[str, ...], bounds: dict[str, float]
) -> None:
    """The attacker claims log omega 0 (the most a site may: a perfect fit) for a theta far from
    the others'. Honest log omega is about -0.67 here, so its uncapped share would be 0.66 of
    two sites (0.49 of three); the cap holds it to max_weight, and the prior moves from the
    honest mean by exactly max_weight, not the uncapped share, times the attacker's distance."""
    heart = make_heart(sites, **({"bounds": bounds} if bounds else {}))
    cap = heart.config.federation.bounds.max_weight
    honest = tuple(s for s in sites if s != ATTACKER)
    heart.start()
    honest_round(heart, honest)
    fitted = heart.fit(ATTACKER)
    far = {k: v + 1.0 for k, v in fitted.update.params.items()}
    blob, manifest = heart.signed(ATTACKER, 1, far, 0.0)
    attack(heart, manifest, blob)
    summary = heart.aggregate()
    assert summary.rejected == {} and summary.capped == (ATTACKER,)
    assert summary.weights[ATTACKER] == pytest.approx(cap, abs=1e-12)
    assert_formed_from(heart, summary, sites)
    # what the same uploads would have made without the cap
    order = sorted(sites)
    uncapped = dict(zip(order, softmax([summary.log_omega[s] for s in order]), strict=True))
    assert uncapped[ATTACKER] > cap + 0.1
    thetas = {s: heart.theta(s) for s in sites}
    share = sum(summary.weights[s] for s in honest)
    honest_mean = weighted(thetas, {s: summary.weights[s] / share for s in honest})
    prior = {k: v for k, v in heart.prior(2).items() if k in honest_mean}
    gap = distance(thetas[ATTACKER], honest_mean)
    assert distance(prior, honest_mean) == pytest.approx(cap * gap, rel=1e-5)
    without_cap = distance(weighted(thetas, uncapped), honest_mean)
    assert without_cap == pytest.approx(uncapped[ATTACKER] * gap, rel=1e-5)
    assert distance(prior, honest_mean) < 0.8 * without_cap


@pytest.mark.exhaustive
@pytest.mark.parametrize(
    ("log_omega", "reason"),
    [
        (-25.0, "log omega -25 is below bounds.min_log_omega -20.0"),
        (0.5, "log omega must be finite and <= 0, got 0.5"),
    ],
)
def test_an_implausible_log_omega_is_rejected(
    make_heart: MakeHeart, log_omega: float, reason: str
) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart)
    blob, manifest = heart.signed(ATTACKER, 1, heart.fit(ATTACKER).update.params, log_omega)
    attack(heart, manifest, blob)
    summary = heart.aggregate()
    assert summary.rejected == {ATTACKER: reason}
    assert_formed_from(heart, summary, HONEST)


def test_an_oversized_update_is_rejected(make_heart: MakeHeart) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart)
    mu = heart.prior(1)
    floats = sum(v.numel() for v in mu.values() if v.is_floating_point())
    step = 150.0 / floats**0.5  # ||theta - mu|| = 150 > max_update_norm 100
    theta = {k: v + step if v.is_floating_point() else v for k, v in mu.items()}
    blob, manifest = heart.signed(ATTACKER, 1, theta, -0.6)
    attack(heart, manifest, blob)
    summary = heart.aggregate()
    assert summary.rejected == {
        ATTACKER: "update too large: ||theta - mu|| = 150 > bounds.max_update_norm 100.0"
    }
    assert ATTACKER not in summary.update_norms
    assert_formed_from(heart, summary, HONEST)


# --- the centre's duplicate check (its audit log of accepted nonces) ------------------------------


def accepted_then_missed_quorum(make_open_heart: MakeHeart) -> tuple[Heart, Manifest, bytes]:
    """A round on rclone (no write-once, as ``make demo`` runs) whose first attempt accepted
    site-1's update but missed the quorum: the heart, that update's manifest, and the tensor
    file of a replacement (its theta + 0.1)."""
    heart = make_open_heart(min_sites=2)
    heart.start()
    first = heart.train("site-1")
    with pytest.raises(server.QuorumNotMet):
        heart.aggregate()
    blob = encode_params({k: v + 0.1 for k, v in heart.theta("site-1").items()})
    return heart, first, blob


def test_a_second_update_for_an_accepted_round_is_a_duplicate(make_open_heart: MakeHeart) -> None:
    """A site replaces the update the centre already accepted in an attempt that missed the
    quorum; the next attempt drops it."""
    heart, first, blob = accepted_then_missed_quorum(make_open_heart)
    _, second = heart.signed("site-1", 1, decode_params(blob), first.log_omega)
    heart.send("site-1", 1, "site-1", blob, second)
    honest_round(heart, ("site-2", ATTACKER))
    summary = heart.aggregate()
    assert summary.rejected == {
        "site-1": f"duplicate: an update with nonce {first.nonce[:12]} and tensors "
        f"{first.sha256[:12]} was already accepted from site-1 for round 1"
    }
    assert_formed_from(heart, summary, ("site-2", ATTACKER))


@pytest.mark.exhaustive
def test_a_replaced_update_reusing_the_accepted_nonce_is_a_duplicate(
    make_open_heart: MakeHeart,
) -> None:
    """The signer picks its own nonce: a replacement re-signed with the accepted nonce is still
    caught, by the tensors' SHA-256 the centre recorded with it."""
    heart, first, blob = accepted_then_missed_quorum(make_open_heart)
    theta = decode_params(blob)
    unsigned = make_manifest(
        "update", 1, theta, blob, site="site-1", num_examples=120, log_omega=first.log_omega
    )
    pem, _ = trust.own_key(heart.config, "site-1")
    reused = seal(
        unsigned, load_private(pem), heart.config.name, heart.config.run, nonce=first.nonce
    )
    heart.send("site-1", 1, "site-1", blob, reused)
    honest_round(heart, ("site-2", ATTACKER))
    summary = heart.aggregate()
    assert summary.rejected["site-1"].startswith(
        f"duplicate: an update with nonce {first.nonce[:12]}"
    )
    assert_formed_from(heart, summary, ("site-2", ATTACKER))


# --- hash-chained audit logs (fedmap.audit, site-task audit verify) -----------------------------


def audit_verify(
    log: Path, capsys: pytest.CaptureFixture[str], head: str | None = None
) -> tuple[int, str]:
    code = cli.main(["audit", "verify", str(log), *(["--head", head] if head else [])])
    return code, capsys.readouterr().err


def test_an_edited_audit_log_is_detected(
    make_heart: MakeHeart, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart, SITES)
    heart.aggregate()
    log = trust.audit_log(heart.config, CENTRE).path
    lines = log.read_text().splitlines(keepends=True)
    head = json.loads(heart.centre.get(heart.keys.summary(1)) or b"{}")["audit_head"]
    assert audit_verify(log, capsys)[0] == 0

    def variant(name: str, kept: list[str]) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(kept))
        return path

    accepted = next(i for i, line in enumerate(lines) if '"accepted"' in line)
    entry = json.loads(lines[accepted])
    entry["sha256"] = "0" * 64  # another tensor file than the one the centre accepted
    edited = variant(
        "edited", [*lines[:accepted], json.dumps(entry) + "\n", *lines[accepted + 1 :]]
    )
    code, err = audit_verify(edited, capsys)
    assert code == 2 and f"entry {entry['seq']} was edited" in err

    deleted = variant("deleted", [*lines[:accepted], *lines[accepted + 1 :]])
    code, err = audit_verify(deleted, capsys)
    assert code == 2 and "an entry was deleted, inserted or moved" in err

    at_head = next(i for i, line in enumerate(lines) if json.loads(line)["hash"] == head)
    assert audit_verify(variant("as-of-summary", lines[: at_head + 1]), capsys, head)[0] == 0
    cut = variant("cut", lines[:at_head])  # the tail cut, up to the head entry itself
    assert audit_verify(cut, capsys)[0] == 0  # a shorter chain is still a chain...
    code, err = audit_verify(cut, capsys, head)  # ...caught only against the recorded head
    assert code == 2 and "entries were cut" in err


@pytest.mark.exhaustive
def test_an_intact_audit_log_verifies_against_its_recorded_head(
    make_heart: MakeHeart, capsys: pytest.CaptureFixture[str]
) -> None:
    heart = make_heart()
    heart.start()
    honest_round(heart, SITES)
    heart.aggregate()
    log = trust.audit_log(heart.config, CENTRE).path
    head = json.loads(heart.centre.get(heart.keys.summary(1)) or b"{}")["audit_head"]
    assert audit_verify(log, capsys, head)[0] == 0
