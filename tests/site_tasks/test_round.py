"""A whole deployed round against the real local S3 server: init, validate, train at each site,
aggregate; idempotent re-runs; and every kind of bad update is dropped with its reason while the
other sites' updates still make the next prior."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedmap.messages import Manifest, decode_params, encode_params, make_manifest
from site_tasks import trust
from site_tasks.centre import server
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.site.contracts import DataContractError
from site_tasks.site.train import PriorUnavailable, state_path, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store

SITES = ("site-01", "site-02", "site-03")


def setup(make_federation: Callable[..., Path], **kw: object) -> tuple[FederationConfig, S3Store]:
    config = load_federation(make_federation(**kw))
    store = S3Store(config.storage)
    store.ensure_bucket()
    return config, store


def validated(config: FederationConfig, store: S3Store, *sites: str) -> None:
    """Each site's validate task of the run: train checks its files against this record."""
    for site in sites:
        assert validate(config, site, store).success


def run_round_1(config: FederationConfig, store: S3Store) -> None:
    server.init(config, store)
    for site in SITES:
        assert validate(config, site, store).success
        train(config, site, 1, store)


def test_round_trip_init_train_aggregate(make_federation: Callable[..., Path]) -> None:
    config, store = setup(make_federation)
    keys = Keys.of(config)
    run_round_1(config, store)
    summary = server.aggregate(config, store, 1)
    assert summary.contributed == SITES
    assert summary.rejected == {}
    assert sum(summary.weights.values()) == pytest.approx(1.0, abs=1e-12)
    # w = softmax(log omega), as the sites reported it
    logw = torch.tensor([summary.log_omega[s] for s in SITES], dtype=torch.float64)
    assert [summary.weights[s] for s in SITES] == pytest.approx(torch.softmax(logw, 0).tolist())
    # the prior of round 2 is the weighted mean of the three theta_k
    thetas = [decode_params(store.get(keys.update(1, s)[0]) or b"") for s in SITES]
    prior2 = decode_params(store.get(keys.prior(2)[0]) or b"")
    for name, value in prior2.items():
        expected = torch.stack(
            [summary.weights[s] * t[name].double() for s, t in zip(SITES, thetas, strict=True)]
        ).sum(0)
        assert torch.allclose(value.double(), expected, atol=1e-6)
    recorded = json.loads(store.get(keys.summary(1)) or b"{}")
    assert recorded["contributed"] == list(SITES) and recorded["rejected"] == {}
    # round 2 trains from the site's own theta_1, under prior 2
    manifest2 = train(config, "site-01", 2, store).manifest
    assert manifest2.round == 2 and manifest2.site == "site-01"
    assert state_path(config, "site-01", 2).is_file()


def test_train_is_idempotent(make_federation: Callable[..., Path]) -> None:
    config, store = setup(make_federation)
    server.init(config, store)
    validated(config, store, "site-02")
    first = train(config, "site-02", 1, store)
    keys_before = store.list("")
    blob_before = store.get(Keys.of(config).update(1, "site-02")[0])
    second = train(config, "site-02", 1, store)
    assert store.list("") == keys_before
    assert store.get(Keys.of(config).update(1, "site-02")[0]) == blob_before
    assert first.manifest == second.manifest
    assert first.device == "cpu"


def test_train_without_a_committed_prior_writes_nothing(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation)
    validated(config, store, "site-01")
    with pytest.raises(PriorUnavailable, match="round 1 is not committed"):
        train(config, "site-01", 1, store)
    assert store.list("") == [Keys.of(config).validation("site-01")]


def _break_data(kind: str, folder: Path) -> tuple[str, str]:
    """Damage site-02's files in one way; return (file, text the error must contain)."""
    train_csv = folder / "train.csv"
    rows = [line.split(",") for line in train_csv.read_text().splitlines()]

    def save(table: list[list[str]]) -> None:
        train_csv.write_text("\n".join(",".join(r) for r in table) + "\n")

    if kind == "missing-file":
        (folder / "val.csv").unlink()
        return "val.csv", "file_exists"
    if kind == "empty-file":
        train_csv.write_text("")
        return "train.csv", "file_not_empty"
    if kind == "missing-column":
        save([r[:3] + r[4:] for r in rows])
        return "train.csv", "x03"
    if kind == "unexpected-column":
        save([[*r[:-1], "extra" if i == 0 else "1", r[-1]] for i, r in enumerate(rows)])
        return "train.csv", "extra"
    if kind == "wrong-dtype":
        rows[4][2] = "abc"
        save(rows)
        return "train.csv", "x02"
    if kind == "nan":
        rows[5][0] = "nan"
        save(rows)
        return "train.csv", "x00"
    if kind == "out-of-range":
        rows[6][9] = "1e12"
        save(rows)
        return "train.csv", "x09"
    if kind == "single-class":
        save([rows[0], *[[*r[:-1], "0"] for r in rows[1:]]])
        return "train.csv", "label"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing-file",
        "empty-file",
        "missing-column",
        "unexpected-column",
        "wrong-dtype",
        "nan",
        "out-of-range",
        "single-class",
    ],
)
def test_bad_site_data_excludes_only_that_site(
    kind: str, make_federation: Callable[..., Path]
) -> None:
    config, store = setup(make_federation, n_sites=2, n_train=100, n_val=40)
    file, needle = _break_data(kind, config.site("site-02").data)
    server.init(config, store)
    summary = validate(config, "site-02", store)
    assert not summary.success
    assert any(e.startswith(f"site-02: {file}") and needle in e for e in summary.errors), (
        summary.errors
    )
    with pytest.raises(DataContractError, match=f"site-02: {file}"):
        train(config, "site-02", 1, store)
    assert not any("updates/site-02" in k for k in store.list(""))
    assert not state_path(config, "site-02", 1).exists()
    validated(config, store, "site-01")
    train(config, "site-01", 1, store)
    result = server.aggregate(config, store, 1)
    assert result.contributed == ("site-01",)
    assert result.weights == {"site-01": 1.0}


def _corrupt(kind: str, config: FederationConfig, store: S3Store) -> str:
    """Damage site-03's round-1 upload in one way; return the expected reason."""
    tensors_key, manifest_key = Keys.of(config).update(1, "site-03")
    blob = store.get(tensors_key) or b""
    manifest = Manifest.from_json(store.get(manifest_key) or b"")
    params = decode_params(blob)

    def rewrite(p: dict[str, torch.Tensor], round_: int = 1) -> None:
        b = encode_params(p)
        m = make_manifest(
            "update",
            round_,
            p,
            b,
            site="site-03",
            num_examples=manifest.num_examples,
            log_omega=manifest.log_omega,
        )
        m = trust.signed(config, "site-03", m)  # the site itself sends it: signed
        store.put(tensors_key, b)
        store.put(manifest_key, m.to_json().encode())

    if kind == "truncated":
        store.put(tensors_key, blob[: len(blob) // 3])
        return "checksum mismatch"
    if kind == "nan":
        params["head.bias"] = torch.tensor([math.nan])
        rewrite(params)
        return "holds NaN or inf"
    if kind == "inf":
        params["body.0.weight"][0, 0] = math.inf
        rewrite(params)
        return "holds NaN or inf"
    if kind == "shape":
        params["head.weight"] = torch.zeros(1, 8)
        rewrite(params)
        return "shape [1, 8], expected [1, 16]"
    if kind == "checksum":
        store.put(tensors_key, encode_params({k: v + 1 for k, v in params.items()}))
        return "checksum mismatch"
    if kind == "other-round":
        rewrite(params, round_=2)
        return "for round 2, not round 1"
    if kind == "no-tensor-file":
        store.client.delete_object(Bucket=store.bucket, Key=tensors_key)
        return "manifest without its tensor file"
    if kind == "no-manifest":
        store.client.delete_object(Bucket=store.bucket, Key=manifest_key)
        return "tensor file without a manifest"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "nan",
        "inf",
        "shape",
        "checksum",
        "other-round",
        "no-tensor-file",
        "no-manifest",
    ],
)
def test_bad_update_is_rejected_and_others_aggregate(
    kind: str, make_federation: Callable[..., Path]
) -> None:
    config, store = setup(make_federation, n_train=120, n_val=40)
    run_round_1(config, store)
    reason = _corrupt(kind, config, store)
    summary = server.aggregate(config, store, 1)
    assert summary.contributed == ("site-01", "site-02")
    assert reason in summary.rejected["site-03"]
    assert sum(summary.weights.values()) == pytest.approx(1.0)
    prior2 = decode_params(store.get(Keys.of(config).prior(2)[0]) or b"")
    assert all(bool(torch.isfinite(v).all()) for v in prior2.values())
    recorded = json.loads(store.get(Keys.of(config).summary(1)) or b"{}")
    assert reason in recorded["rejected"]["site-03"]


def test_uploads_from_outside_the_federation_are_rejected_and_silent_members_listed(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation, n_train=100, n_val=40)
    server.init(config, store)
    validated(config, store, "site-01", "site-02")
    train(config, "site-01", 1, store)
    train(config, "site-02", 1, store)
    # an intruder copies site-01's update under its own name and claims a huge omega
    keys = Keys.of(config)
    blob = store.get(keys.update(1, "site-01")[0]) or b""
    theta = decode_params(blob)
    fake = make_manifest(
        "update", 1, theta, blob, site="intruder", num_examples=10, log_omega=-0.01
    )
    store.put(keys.update(1, "intruder")[0], blob)
    store.put(keys.update(1, "intruder")[1], fake.to_json().encode())
    summary = server.aggregate(config, store, 1)
    assert summary.contributed == ("site-01", "site-02")
    assert summary.rejected == {"intruder": "not a member of this federation"}
    assert summary.missing == ("site-03",)


def test_round_two_is_idempotent_and_a_changed_round_cannot_replace_its_prior(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation, n_train=100, n_val=40)
    run_round_1(config, store)
    server.aggregate(config, store, 1)
    keys = Keys.of(config)
    first = train(config, "site-01", 2, store).manifest
    assert train(config, "site-01", 2, store).manifest == first  # warm start from theta_1, again
    assert server.aggregate(config, store, 1).contributed == SITES  # same bytes: allowed
    store.client.delete_object(Bucket=store.bucket, Key=keys.update(1, "site-03")[1])
    with pytest.raises(server.PriorConflict, match=r"round-2/prior\.json is already committed"):
        server.aggregate(config, store, 1)


def test_a_prior_for_another_model_is_refused(make_federation: Callable[..., Path]) -> None:
    config, store = setup(make_federation, n_train=100, n_val=40)
    from dataclasses import replace as dc_replace

    from site_tasks.federation import ModelConfig

    server.init(dc_replace(config, model=ModelConfig("mlp", 29)), store)
    validated(config, store, "site-01")
    with pytest.raises(PriorUnavailable, match="does not fit this site's mlp model on 30 features"):
        train(config, "site-01", 1, store)
    assert not any("updates/" in k for k in store.list(""))


def test_diverging_training_uploads_nothing(make_federation: Callable[..., Path]) -> None:
    from dataclasses import replace as dc_replace

    from fedmap.training import LocalTraining
    from site_tasks.site.train import TrainingDiverged

    config, store = setup(make_federation, n_train=100, n_val=40)
    server.init(config, store)
    validated(config, store, "site-01")
    wild = dc_replace(config, training=LocalTraining(epochs=3, batch_size=8, lr=1e20))
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        train(wild, "site-01", 1, store)
    assert not any("updates/" in k for k in store.list(""))
    assert not state_path(config, "site-01", 1).exists()
