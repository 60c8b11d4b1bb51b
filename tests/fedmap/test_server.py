"""The server step: accepted updates are averaged with w = softmax(log omega), every bad one is
dropped with its reason, and the others are never affected; streamed one upload at a time, it
forms the same prior as the batch aggregate."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from fedmap.algorithms import FedMAP
from fedmap.messages import encode_params, make_manifest, specs_of
from fedmap.server import Candidate, NoValidUpdates, accept, aggregate_round


def theta(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), value), "b": torch.full((2,), -value)}


def upload(site: str, value: float, log_omega: float, round_: int = 1, n: int = 10) -> Candidate:
    p = theta(value)
    blob = encode_params(p)
    manifest = make_manifest(
        "update", round_, p, blob, site=site, num_examples=n, log_omega=log_omega
    )
    return Candidate(site, manifest.to_json().encode(), blob)


EXPECTED = specs_of(theta(0.0))


def test_weights_are_softmax_of_log_omega_and_prior_is_weighted_mean() -> None:
    cands = [upload("a", 1.0, -2.0), upload("b", 3.0, -2.0 + math.log(3.0))]
    prior, summary = aggregate_round(FedMAP(), 1, cands, EXPECTED)
    assert summary.weights == pytest.approx({"a": 0.25, "b": 0.75}, abs=1e-12)
    assert torch.allclose(prior["w"], torch.full((2, 2), 0.25 * 1.0 + 0.75 * 3.0))
    assert torch.allclose(prior["b"], torch.full((2,), -2.5))
    assert summary.contributed == ("a", "b")
    assert summary.rejected == {}
    assert summary.log_omega == {"a": -2.0, "b": pytest.approx(-2.0 + math.log(3.0))}


def test_sample_weighting_switch() -> None:
    cands = [upload("a", 1.0, 0.0, n=30), upload("b", 3.0, -0.1, n=10)]
    prior, summary = aggregate_round(FedMAP(weighting="samples"), 1, cands, EXPECTED)
    assert summary.weights == pytest.approx({"a": 0.75, "b": 0.25})
    assert torch.allclose(prior["w"], torch.full((2, 2), 1.5))


def test_extreme_log_omegas_do_not_underflow() -> None:
    cands = [upload("a", 1.0, -1e4), upload("b", 3.0, -1e4 + math.log(3.0))]
    _, summary = aggregate_round(FedMAP(), 1, cands, EXPECTED)
    assert summary.weights == pytest.approx({"a": 0.25, "b": 0.75}, abs=1e-9)


def test_bad_updates_are_rejected_with_reasons_and_others_kept() -> None:
    good = upload("a", 1.0, 0.0)
    truncated = upload("b", 2.0, 0.0)
    truncated = Candidate("b", truncated.manifest, (truncated.read() or b"")[:40])
    other_round = upload("c", 2.0, 0.0, round_=2)
    no_tensor = Candidate("d", upload("d", 2.0, 0.0).manifest, None)
    no_manifest = Candidate("e", None, upload("e", 2.0, 0.0).tensors)
    wrong_site = Candidate("f", upload("g", 2.0, 0.0).manifest, upload("g", 2.0, 0.0).tensors)
    prior, summary = aggregate_round(
        FedMAP(), 1, [good, truncated, other_round, no_tensor, no_manifest, wrong_site], EXPECTED
    )
    assert summary.contributed == ("a",)
    assert summary.weights == {"a": 1.0}
    assert torch.equal(prior["w"], theta(1.0)["w"])
    assert set(summary.rejected) == {"b", "c", "d", "e", "f"}
    assert "checksum mismatch" in summary.rejected["b"]
    assert "for round 2, not round 1" in summary.rejected["c"]
    assert summary.rejected["d"] == "manifest without its tensor file"
    assert "without a manifest" in summary.rejected["e"]
    assert "names site 'g'" in summary.rejected["f"]


def test_no_valid_update_raises_with_every_reason() -> None:
    with pytest.raises(NoValidUpdates, match=r"a: manifest without its tensor file"):
        aggregate_round(
            FedMAP(), 1, [Candidate("a", upload("a", 1.0, 0.0).manifest, None)], EXPECTED
        )
    with pytest.raises(NoValidUpdates, match="no uploads"):
        aggregate_round(FedMAP(), 1, [], EXPECTED)


def test_positive_log_omega_is_rejected() -> None:
    """log omega = -mean NLL - R/N is never positive; a larger claim would buy a site the prior."""
    _, summary = aggregate_round(
        FedMAP(), 1, [upload("a", 1.0, -0.5), upload("b", 0.0, 50.0)], EXPECTED
    )
    assert summary.contributed == ("a",)
    assert "log omega must be finite and <= 0" in summary.rejected["b"]


@pytest.mark.parametrize(
    "field",
    [
        '"num_examples": Infinity',
        '"round": 1e400',
        '"num_examples": 10.9',
        '"num_examples": true',
        '"log_omega": NaN',
        '"metrics": {"x": Infinity}',
        '"tensors": []',
    ],
)
def test_malformed_manifest_fields_are_rejected_not_crashes(field: str) -> None:
    good = upload("a", 1.0, -0.5)
    bad = upload("b", 2.0, -0.5)
    body = json.loads(bad.manifest or b"")
    key = field.split(":")[0].strip('"')
    text = json.dumps(body).replace(f'"{key}": ', f'"{key}_old": ', 1)
    text = text[:-1] + ", " + field + "}"
    _, summary = aggregate_round(
        FedMAP(), 1, [good, Candidate("b", text.encode(), bad.tensors)], EXPECTED
    )
    assert summary.contributed == ("a",)
    assert "b" in summary.rejected


def test_deeply_nested_manifest_is_rejected() -> None:
    good = upload("a", 1.0, -0.5)
    _, summary = aggregate_round(
        FedMAP(), 1, [good, Candidate("b", b"[" * 100_000, b"x")], EXPECTED
    )
    assert summary.contributed == ("a",)
    assert "malformed manifest" in summary.rejected["b"]


def model_theta(seed: int) -> dict[str, torch.Tensor]:
    """A two-layer model's entries; "in" is the input layer (first in sorted key order)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "in.weight": torch.randn(3, 2, generator=gen),
        "out.bias": torch.randn(5, generator=gen),
        "out.weight": 2.0 * torch.randn(5, 3, generator=gen),
    }


def model_upload(site: str, seed: int, log_omega: float, n: int) -> Candidate:
    p = model_theta(seed)
    blob = encode_params(p)
    manifest = make_manifest(
        "update", 1, p, blob, site=site, num_examples=n, log_omega=log_omega, extra={"worker": site}
    )
    return Candidate(site, manifest.to_json().encode(), blob)


MODEL_EXPECTED = specs_of(model_theta(0))
LOG_OMEGAS = [-1e4, -1e4 + 1.0, -1e4 + 2.5, -1e4 + 0.3, -1e4 - 0.5, -1e4 + 2.0]  # spread weights
COUNTS = [20, 300, 5, 80, 1, 44]


@pytest.mark.parametrize(
    "method",
    [
        FedMAP(),
        FedMAP(weighting="samples"),
        FedMAP(prior="diagonal", min_variance=0.01),
        FedMAP(prior="diagonal", min_variance=0.01, weighting="samples"),
        FedMAP(prior="icnn", min_variance=0.01, icnn_samples=8, icnn_steps=20),
    ],
    ids=["gaussian", "gaussian-samples", "diagonal", "diagonal-samples", "icnn"],
)
def test_streamed_round_equals_batch_aggregate_in_any_order(method: FedMAP) -> None:
    """The round's prior (mean and learned state) is FedMAP.aggregate of the accepted updates at
    once, whatever order the uploads arrive in, and the summary is the same."""
    cands = [
        model_upload(f"s{k}", k, lo, n)
        for k, (lo, n) in enumerate(zip(LOG_OMEGAS, COUNTS, strict=True))
    ]
    cands.append(Candidate("bad", cands[0].manifest, None))
    updates = [accept(c, 1, MODEL_EXPECTED) for c in cands[:-1]]
    current = {**model_theta(99), "prior/out.bias/log_var": torch.zeros(5)}
    batch = method.aggregate(updates, current)
    batch_weights = method.weights(updates)
    summaries = []
    for seed in (0, 1, 2):
        order = torch.randperm(len(cands), generator=torch.Generator().manual_seed(seed)).tolist()
        prior, summary = aggregate_round(
            method, 1, (cands[k] for k in order), MODEL_EXPECTED, prior=current
        )
        assert set(prior) == set(batch)
        for key, value in batch.items():
            torch.testing.assert_close(prior[key], value, rtol=1e-6, atol=1e-6)
        for k, u in enumerate(updates):
            assert summary.weights[u.site] == pytest.approx(float(batch_weights[k]), rel=1e-9)
        summaries.append(summary)
    assert summaries[0] == summaries[1] == summaries[2]
    assert summaries[0].contributed == tuple(f"s{k}" for k in range(6))
    assert summaries[0].rejected == {"bad": "manifest without its tensor file"}
    assert summaries[0].workers == {f"s{k}": f"s{k}" for k in range(6)}
    if method.prior != "gaussian":
        assert any(k.startswith("prior/out.weight/") for k in batch)
        assert not any(k.startswith("prior/in.weight/") for k in batch)  # sigma^2 = inf: not fitted


def test_round_reads_each_upload_once_and_lists_missing_members() -> None:
    taken: list[str] = []

    def lazily() -> Iterator[Candidate]:
        for site, value in (("a", 1.0), ("b", 3.0), ("x", 9.0)):
            taken.append(site)
            yield upload(site, value, -1.0)

    prior, summary = aggregate_round(
        FedMAP(), 1, lazily(), EXPECTED, members={"a", "b", "c"}, prior=None
    )
    assert taken == ["a", "b", "x"]
    assert summary.contributed == ("a", "b")
    assert summary.rejected == {"x": "not a member of this federation"}
    assert summary.missing == ("c",)
    assert torch.allclose(prior["w"], torch.full((2, 2), 2.0))


def signed_upload(
    site: str, value: float, log_omega: float, ring: dict[str, bytes], run: str = "r"
) -> Candidate:
    from fedmap.signing import generate, load_private, seal

    if site not in ring:
        ring[site] = generate()[0]
    p = theta(value)
    blob = encode_params(p)
    m = make_manifest("update", 1, p, blob, site=site, num_examples=10, log_omega=log_omega)
    m = seal(m, load_private(ring[site]), "f", run, nonce=site)
    return Candidate(site, m.to_json().encode(), blob)


def keyring_of(ring: dict[str, bytes]) -> Any:
    from fedmap.signing import Keyring, load_private, public_bytes

    keys = Keyring()
    for site, pem in ring.items():
        keys = keys.enrol(site, public_bytes(load_private(pem)))
    return keys


def test_checks_cap_weights_and_refold_without_a_bad_tensor_file() -> None:
    """An inflated log omega is capped at max_weight; a tensor file that fails in the second
    pass drops out and the weights are formed again among the rest, cap included."""
    from fedmap.schema import Bounds
    from fedmap.server import Checks

    ring: dict[str, bytes] = {}
    honest = [signed_upload(s, v, -3.0, ring) for s, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    greedy = signed_upload("g", 50.0, 0.0, ring)
    broken = signed_upload("x", 1.0, -3.0, ring)
    broken = Candidate("x", broken.manifest, b"garbage")
    checks = Checks("f", "r", keyring_of(ring), Bounds(max_weight=0.4, max_update_norm=1e9))
    prior, summary = aggregate_round(
        FedMAP(), 1, [*honest, greedy, broken], EXPECTED, prior=theta(0.0), checks=checks
    )
    assert summary.contributed == ("a", "b", "c", "g")
    assert "checksum mismatch" in summary.rejected["x"]
    assert summary.weights["g"] == pytest.approx(0.4)
    assert summary.capped == ("g",)
    assert summary.weights["a"] == pytest.approx(0.2)
    assert torch.allclose(prior["w"], torch.full((2, 2), 0.2 * 6.0 + 0.4 * 50.0), atol=1e-5)


def test_checks_reject_replays_and_large_updates() -> None:
    from fedmap.schema import Bounds
    from fedmap.server import Checks

    ring: dict[str, bytes] = {}
    ok = signed_upload("a", 1.0, -0.7, ring)
    other_run = signed_upload("b", 1.0, -0.7, ring, run="old")
    far = signed_upload("c", 100.0, -0.7, ring)
    low = signed_upload("d", 1.0, -30.0, ring)
    checks = Checks("f", "r", keyring_of(ring), Bounds(max_update_norm=10.0))
    _, summary = aggregate_round(
        FedMAP(), 1, [ok, other_run, far, low], EXPECTED, prior=theta(0.0), checks=checks
    )
    assert summary.contributed == ("a",)
    assert "replay: signed for f/old" in summary.rejected["b"]
    assert "update too large" in summary.rejected["c"]
    assert "below bounds.min_log_omega" in summary.rejected["d"]
    assert summary.update_norms["a"] == pytest.approx(
        float(torch.cat([theta(1.0)[k].flatten() for k in ("b", "w")]).norm())
    )
