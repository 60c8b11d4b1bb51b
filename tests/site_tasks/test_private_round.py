"""Deployed rounds under a ``privacy`` section, against the real local S3 server: what the sites
release, what the centre sums and publishes, the budget the centre and each site enforce, and
that the centre's storage, logs and audit trail never hold one site's theta_k."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmap import dp
from fedmap import secure as secure_module
from fedmap.dp import Release
from fedmap.messages import Manifest, TensorSpec, decode_params
from fedmap.params import Params
from fedmap.privacy import BudgetExceeded
from fedmap.private_round import DENOMINATOR
from fedmap.secure import CIPHERTEXT, SecureError
from site_tasks import privacy
from site_tasks.centre import server
from site_tasks.centre.released import read_final_prior
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.runs import granted_rounds
from site_tasks.site import release as release_module
from site_tasks.site.finalise import evaluate
from site_tasks.site.release import read_prior
from site_tasks.site.train import fetch_prior, state_path, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store

pytestmark = pytest.mark.privacy
SITES = ("site-01", "site-02", "site-03")


def setup(
    make_federation: Callable[..., Path],
    section: dict[str, object],
    rounds: int = 2,
    n_sites: int = 3,
) -> tuple[FederationConfig, S3Store]:
    """A federation under ``section`` (secure aggregation: a quorum of 2, as the schema asks)."""
    quorum = 2 if section.get("secure_aggregation") == "ckks" else 1
    path = make_federation(n_sites=n_sites, rounds=rounds, min_sites=quorum, privacy=section)
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    return config, store


def run_rounds(config: FederationConfig, store: S3Store, rounds: int) -> None:
    server.init(config, store)
    for site in SITES:
        assert validate(config, site, store).success
    for t in range(1, rounds + 1):
        for site in SITES:
            train(config, site, t, store)
        server.aggregate(config, store, t)


def theta_bytes(config: FederationConfig, site: str, round_: int) -> list[bytes]:
    """Byte strings of a site's own theta_k (its state on disk), to search the centre's side for."""
    own = decode_params(state_path(config, site, round_).read_bytes())
    return [v.detach().cpu().contiguous().numpy().tobytes()[:16] for v in own.values()]


def test_dp_round_releases_clipped_noisy_updates_and_states_epsilon(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation, {"epsilon": 8.0, "clip": 0.5})
    run_rounds(config, store, 2)
    keys = Keys.of(config)
    z = privacy.noise_multiplier(config)
    assert z > 0
    for t in (1, 2):
        summary = json.loads(store.get(keys.summary(t)) or b"{}")
        assert summary["contributed"] == list(SITES)
        assert summary["weights"] == {} and summary["log_omega"] == {}
        facts = summary["privacy"]
        assert facts["form"] == "dp" and facts["noise_multiplier"] == pytest.approx(z)
        assert 0 < facts["epsilon"] <= 8.0
        manifest = Manifest.from_json(store.get(keys.update(t, "site-01")[1]) or b"")
        assert manifest.metrics == {} and manifest.log_omega == 0 and manifest.num_examples == 1
        assert DENOMINATOR in manifest.tensors
    first = json.loads(store.get(keys.summary(1)) or b"{}")["privacy"]["epsilon"]
    second = json.loads(store.get(keys.summary(2)) or b"{}")["privacy"]["epsilon"]
    assert second > first  # rounds compose
    # the next prior is mu + sum N_k / K (equal weights under DP), with tau^2 on record
    mu1 = decode_params(store.get(keys.prior(1)[0]) or b"")
    releases = [decode_params(store.get(keys.update(1, s)[0]) or b"") for s in SITES]
    mu2_manifest, mu2 = fetch_prior(config, store, 2)
    for name, value in mu2.items():
        total = torch.stack([r[name].double() for r in releases]).sum(0)
        assert torch.allclose(value.double(), mu1[name].double() + total / 3, atol=1e-5)
    assert mu2_manifest.extra["tau2"] == pytest.approx((z * 0.5) ** 2 * 3 / 9)
    # each site's own ledger holds the two rounds it released
    ledger = json.loads(privacy.site_ledger(config, "site-02").read_text())["entries"]
    assert [e["round"] for e in ledger] == [1, 2]


def test_secure_round_centre_sums_ciphertexts_sites_decrypt(
    make_federation: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level("INFO")
    config, store = setup(make_federation, {"secure_aggregation": "ckks"}, rounds=2)
    sent: dict[tuple[int, str], Release] = {}
    real = dp.release

    def recording(theta: Params, mu: Params, log_omega: float, *args: Any) -> Release:
        out = real(theta, mu, log_omega, *args)
        sent[(len(sent) // 3 + 1, f"site-0{len(sent) % 3 + 1}")] = out
        return out

    monkeypatch.setattr(release_module, "release", recording)
    run_rounds(config, store, 2)
    keys = Keys.of(config)
    prior2, prior2_tensors = fetch_prior(config, store, 2)
    assert prior2.extra["secure"] == "ckks" and set(prior2_tensors) == {CIPHERTEXT}
    # a site decrypts the aggregate into mu + sum N_k / sum D_k, which without noise or
    # clipping is FedMAP's omega-weighted mean sum a_k theta_k / sum a_k
    seen = read_prior(config, "site-01", 2, lambda t: fetch_prior(config, store, t))
    mu1 = fetch_prior(config, store, 1)[1]
    round1 = [sent[(1, s)] for s in SITES]
    total = sum(r.denominator for r in round1)
    assert all(0 < r.denominator <= 1 and not r.clipped for r in round1)
    worst = 0.0
    for name, value in seen.params.items():
        numerator = torch.stack([r.numerator[name].double() for r in round1]).sum(0)
        plain = mu1[name].double() + numerator / total
        worst = max(
            worst, float(((value.double() - plain).abs() / plain.abs().clamp_min(1e-3)).max())
        )
    assert worst < 1e-5, f"secure sum differs from the plain one by {worst:.3g} relative"
    # finalise: the sites send their decryption of the final prior, signed, and no model
    for site in SITES:
        evaluate(config, store, site, 2)
        assert store.get(keys.released(site)[0]) is not None
        assert store.get(keys.model(site)[0]) is None  # nobody opted in
    # the sentinel scan: no byte string of any site's theta_k in any object, the centre's logs
    # or audit trail
    needles = [b for s in SITES for t in (1, 2) for b in theta_bytes(config, s, t)]
    centre_side = [store.get(k) or b"" for k in store.list("") if "/released/" not in k]
    audit = (config.state_dir / config.name / config.run / "centre" / "audit.jsonl").read_bytes()
    logs_text = caplog.text.encode()
    for needle in needles:
        assert all(needle not in blob for blob in centre_side)
        assert needle not in audit and needle not in logs_text
    # the registry takes the decryption a majority signed; a lying site is outvoted and named
    honest, _ = read_final_prior(config, store, 2)
    lie = {k: v + 1.0 for k, v in honest.items()}
    send_decryption(config, store, "site-03", lie, 3)
    chosen, where = read_final_prior(config, store, 2)
    assert all(torch.equal(chosen[k], honest[k]) for k in honest) and "site-03" not in where[0]
    assert "['site-03']: decryption of the final prior differs" in caplog.text
    send_decryption(config, store, "site-02", {k: v + 2.0 for k, v in honest.items()}, 3)
    with pytest.raises(RuntimeError, match="no majority of the 3 tier-1 sites"):
        read_final_prior(config, store, 2)


def send_decryption(
    config: FederationConfig, store: S3Store, site: str, params: Params, round_: int
) -> None:
    """What a site's ``finalise`` sends under secure aggregation, with params of its choosing."""
    from fedmap.messages import encode_params, make_manifest
    from site_tasks import trust

    blob = encode_params(params)
    manifest = trust.signed(config, site, make_manifest("prior", round_, params, blob, site=site))
    tensors_key, manifest_key = Keys.of(config).released(site)
    store.put(tensors_key, blob)
    store.put(manifest_key, manifest.to_json().encode())


def test_budget_refused_before_round_1_and_a_later_run_truncated(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation, {"epsilon": 3.0, "noise_multiplier": 2.0}, rounds=3)
    with pytest.raises(BudgetExceeded, match=r"epsilon = .* above privacy.epsilon = 3"):
        server.init(config, store)  # 3 rounds at z = 2 spend more than 3
    assert store.get(Keys.of(config).prior(1)[1]) is None  # nothing was written


def test_site_refuses_to_release_past_its_own_budget(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation, {"epsilon": 8.0, "noise_multiplier": 4.0}, rounds=1)
    assert privacy.plan_run(config)["rounds"] == 1
    ledger = privacy.site_ledger(config, "site-03")
    entries = [
        {"run": f"old-{i}", "round": 1, "noise_multiplier": 4.0, "mechanisms": 1}
        for i in range(200)
    ]
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text(json.dumps({"entries": entries}))
    with pytest.raises(BudgetExceeded, match="site-03: releasing round 1"):
        privacy.spend(config, "site-03", 1)
    assert granted_rounds(config, store) == 1


def test_a_tampered_ciphertext_is_rejected_and_a_dropout_leaves_the_others_mean(
    make_federation: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store = setup(make_federation, {"secure_aggregation": "ckks"}, rounds=1, n_sites=4)
    keys = Keys.of(config)
    sent: dict[str, Release] = {}
    real = dp.release

    def recording(theta: Params, mu: Params, log_omega: float, *args: Any) -> Release:
        sent[f"site-0{len(sent) + 1}"] = out = real(theta, mu, log_omega, *args)
        return out

    monkeypatch.setattr(release_module, "release", recording)
    server.init(config, store)
    for site in ("site-01", "site-02", "site-03", "site-04"):
        assert validate(config, site, store).success
    for site in ("site-01", "site-02", "site-03"):  # site-04 drops out: it never sends
        train(config, site, 1, store)
    tensors_key = keys.update(1, "site-02")[0]
    blob = bytearray(store.get(tensors_key) or b"")
    blob[len(blob) // 2] ^= 0x01  # one bit of the ciphertext, after the site signed its hash
    store.put(tensors_key, bytes(blob))
    summary = server.aggregate(config, store, 1)
    assert summary.contributed == ("site-01", "site-03")
    assert "checksum mismatch" in summary.rejected["site-02"]
    assert summary.missing == ("site-04",)
    # the sum of the two left decrypts to their own weighted mean
    seen = read_prior(config, "site-04", 2, lambda t: fetch_prior(config, store, t))
    mu1 = fetch_prior(config, store, 1)[1]
    kept = [sent["site-01"], sent["site-03"]]
    total = sum(r.denominator for r in kept)
    for name, value in seen.params.items():
        numerator = torch.stack([r.numerator[name].double() for r in kept]).sum(0)
        assert torch.allclose(value.double(), mu1[name].double() + numerator / total, atol=1e-6)


def test_sites_refuse_to_decrypt_a_sum_of_one(make_federation: Callable[..., Path]) -> None:
    """A centre that publishes one site's ciphertext as 'the sum' learns nothing from it: the
    other sites refuse to decrypt a prior that claims fewer sites than the quorum."""
    config, store = setup(make_federation, {"secure_aggregation": "ckks"}, rounds=2)
    run_rounds(config, store, 1)
    manifest, tensors = fetch_prior(config, store, 2)
    forged = replace(manifest, extra={**manifest.extra, "sites": 1})

    def fetch(t: int) -> tuple[Manifest, Params]:
        return (forged, tensors) if t == 2 else fetch_prior(config, store, t)

    with pytest.raises(SecureError, match="claims a sum of 1 site"):
        read_prior(config, "site-01", 2, fetch)


def test_a_retry_resends_the_release_it_drew(make_federation: Callable[..., Path]) -> None:
    """A cleared round retrains, but the site sends the release it drew before, byte for byte:
    two independent noisy releases of one round would spend the budget twice."""
    config, store = setup(make_federation, {"epsilon": 8.0}, rounds=1)
    server.init(config, store)
    assert validate(config, "site-01", store).success
    train(config, "site-01", 1, store)
    keys = Keys.of(config)
    first = store.get(keys.update(1, "site-01")[0])
    for key in keys.update(1, "site-01"):  # the round's upload cleared (rclone: no versions)
        store.client.delete_object(Bucket=store.bucket, Key=key)
    train(config, "site-01", 1, store)
    assert store.get(keys.update(1, "site-01")[0]) == first
    ledger = json.loads(privacy.site_ledger(config, "site-01").read_text())["entries"]
    assert len(ledger) == 1


def test_keygen_never_replaces_a_copied_secret(make_federation: Callable[..., Path]) -> None:
    config, _ = setup(make_federation, {"secure_aggregation": "ckks"}, rounds=1)
    keys = privacy.keygen(config)
    privacy.public_path(config).unlink()  # a site that was sent only the secret
    again = privacy.keygen(config)
    assert again.secret == keys.secret == privacy.secret_path(config).read_bytes()
    assert privacy.public_path(config).exists()
    public = secure_module.public_context(again.public)
    blob = secure_module.encrypt({"w": torch.ones(3)}, 1.0, public)
    total, d = secure_module.decrypt(
        blob, secure_module.secret_context(keys.secret), {"w": TensorSpec((3,), "float32")}
    )
    assert d == pytest.approx(1.0, abs=1e-6) and torch.allclose(total["w"], torch.ones(3))
